"""Merging and summarising the equal-budget tables.

:func:`combine` merges the per-job tables (columns :data:`~dkolib.study.protocol.COLUMNS`);
:func:`summarize` gives, per (method, engine, eval, budget axis, budget fraction), the seed
count, mean and std of every metric and the AbsRel ratio to DKO with a paired bootstrap 95 %
interval over seeds (:func:`bootstrap_ratio`); :func:`catch_up` reads off where each E2E
method reaches DKO (budget fractions of ``C_ref``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from .protocol import COLUMNS, METRICS, REF_METHOD, REQUIRED_COLUMNS, to_frame


def check_columns(df: pd.DataFrame) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"equal-budget table is missing columns {missing}")


def combine(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    if not frames:
        return to_frame([])
    df = pd.concat(frames, ignore_index=True)
    check_columns(df)
    cols = list(COLUMNS) + [c for c in df.columns if c not in COLUMNS]
    return df.reindex(columns=cols).sort_values(
        ["method", "engine", "budget_axis", "budget_fraction", "eval", "seed"]).reset_index(drop=True)


def bootstrap_ratio(num: dict, den: dict, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float, int]:
    """Ratio of means ``mean(num) / mean(den)`` over the seeds present in both, and a 95 %
    percentile bootstrap interval resampling those seeds (paired, with replacement).

    ``num``/``den`` map seed -> value. Returns ``(ratio, lo, hi, n_seeds)`` (NaNs if no common seed).
    """
    common = sorted(set(num) & set(den))
    if not common:
        return float("nan"), float("nan"), float("nan"), 0
    a = np.array([num[s] for s in common], dtype=float)
    b = np.array([den[s] for s in common], dtype=float)
    point = float(a.mean() / b.mean())
    if len(common) == 1:
        return point, point, point, 1
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(common), size=(n_boot, len(common)))
    ratios = a[idx].mean(1) / b[idx].mean(1)
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return point, float(lo), float(hi), len(common)


GROUP = ["method", "engine", "eval", "budget_axis", "budget_fraction"]


def summarize(df: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per (method, engine, eval, budget_axis, budget_fraction): seeds, mean and std of each metric,
    and the AbsRel ratio to ``dko`` with its bootstrap 95 % CI (``ratio_vs_dko*``, NaN where DKO
    has no point). Std over seeds (ddof 1; 0 for one seed) is the stability measure.
    """
    check_columns(df)
    if not len(df):
        return pd.DataFrame(columns=GROUP + ["n_seeds"])
    rows = []
    ref = {k: dict(zip(g["seed"], g["abs_rel"]))
           for k, g in df[df["method"] == REF_METHOD].groupby(GROUP[1:])}
    for key, g in df.groupby(GROUP, sort=True):
        row = dict(zip(GROUP, key))
        row["n_seeds"] = int(g["seed"].nunique())
        for col in ("budget_s", "budget_flops", "spent_s", "cpu_s", "spent_flops", "lr"):
            if col in g:
                row[f"{col}_mean"] = float(g[col].mean())
        for m in METRICS:
            row[f"{m}_mean"] = float(g[m].mean())
            row[f"{m}_std"] = float(g[m].std(ddof=1)) if len(g) > 1 else 0.0
        den = ref.get(tuple(key[1:]))
        if den is not None:
            r, lo, hi, n = bootstrap_ratio(dict(zip(g["seed"], g["abs_rel"])), den, n_boot, seed)
        else:
            r, lo, hi, n = (float("nan"),) * 3 + (0,)
        row.update({"ratio_vs_dko": r, "ratio_ci_lo": lo, "ratio_ci_hi": hi, "ratio_n_seeds": n})
        rows.append(row)
    return pd.DataFrame(rows)


def catch_up(summary: pd.DataFrame, methods: Sequence[str] = ("e2e_scratch", "e2e_warm")) -> pd.DataFrame:
    """Where (if ever) each E2E method catches up with DKO, per engine / eval / axis.

    ``first_fraction_mean``: the smallest budget fraction at which the E2E mean AbsRel is at most
    DKO's (ratio <= 1); ``first_fraction_ci``: the smallest at which the ratio's CI reaches 1
    (not distinguishable from DKO). NaN = never within the ladder.
    """
    rows = []
    s = summary[summary["method"].isin(methods)]
    for key, g in s.groupby(["method", "engine", "eval", "budget_axis"], sort=True):
        g = g.dropna(subset=["ratio_vs_dko"]).sort_values("budget_fraction")
        hit = g[g["ratio_vs_dko"] <= 1.0]
        hit_ci = g[g["ratio_ci_lo"] <= 1.0]
        rows.append({**dict(zip(["method", "engine", "eval", "budget_axis"], key)),
                     "fractions_compared": ",".join(f"{f:g}" for f in g["budget_fraction"]),
                     "first_fraction_mean": float(hit["budget_fraction"].iloc[0]) if len(hit) else float("nan"),
                     "first_fraction_ci": float(hit_ci["budget_fraction"].iloc[0]) if len(hit_ci) else float("nan"),
                     "ratio_at_largest": float(g["ratio_vs_dko"].iloc[-1]) if len(g) else float("nan")})
    return pd.DataFrame(rows, columns=["method", "engine", "eval", "budget_axis", "fractions_compared",
                                       "first_fraction_mean", "first_fraction_ci", "ratio_at_largest"])
