"""Merging and summarising the equal-budget tables.

:func:`combine` merges the per-job tables (columns :data:`~dkolib.study.protocol.COLUMNS`);
:func:`summarize` gives, per (method, engine, eval, budget axis, budget fraction), the seed
count, mean and std of every metric and the AbsRel ratio to DKO with a paired bootstrap 95 %
interval over seeds (:func:`bootstrap_ratio`); :func:`catch_up` reads off from which budget
on each E2E method stays level with DKO (budget fractions of ``C_ref``); :func:`error_ratios`
gives the E2E / DKO error ratio on several metrics with the same interval, classified against
the paper's "about 2x" claim (:func:`claim_class`); :func:`time_to_accuracy` reads off the
budget each method needs to come within ``r`` x the electronic network's accuracy, and
:func:`bootstrap_median_ratio` compares two methods' budgets seed by seed;
:func:`spread_ratio` compares two methods' spread across seeds (the stability claim).

With ``n`` seeds a bootstrap that resamples seeds with replacement can draw only
``C(2n - 1, n)`` distinct multisets (:func:`n_distinct_resamples`: 10 for 3 seeds), however
many resamples it takes; the tables report that number beside each interval.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from .protocol import COLUMNS, METHODS, METRICS, REF_METHOD, REQUIRED_COLUMNS, to_frame


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


def n_distinct_resamples(n: int) -> int:
    """Distinct multisets of size ``n`` drawn with replacement from ``n`` seeds: ``C(2n - 1, n)``
    (0 for ``n = 0``). A bootstrap interval over ``n`` seeds rests on at most this many values."""
    if n < 0:
        raise ValueError(f"number of seeds must be >= 0, got {n}")
    return math.comb(2 * n - 1, n) if n else 0


def paired_difference_ci(a, b, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``a - b`` over paired samples (e.g. the same test images read by two designs) and its
    95 % percentile bootstrap interval, resampling the pairs with replacement. Returns
    ``(mean, lo, hi)``; a single pair gives a point (``lo = hi = mean``)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"paired samples must be two 1-D arrays of the same non-zero length, got {a.shape}, {b.shape}")
    d = a - b
    point = float(d.mean())
    if len(d) == 1:
        return point, point, point
    idx = np.random.default_rng(seed).integers(0, len(d), size=(n_boot, len(d)))
    lo, hi = np.percentile(d[idx].mean(1), [2.5, 97.5])
    return point, float(lo), float(hi)


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


def spread_ratio(std_num: float, n_num: int, std_den: float, n_den: int,
                 level: float = 0.95) -> tuple[float, float, float]:
    """Ratio of two independent samples' standard deviations ``std_num / std_den`` (ddof 1, over
    ``n_num`` / ``n_den`` values, e.g. seeds) and its ``level`` interval from the F distribution:
    for normal samples ``(s_num^2 / s_den^2) / (sigma_num^2 / sigma_den^2)`` follows
    ``F(n_num - 1, n_den - 1)``. Returns ``(ratio, lo, hi)``; NaNs when a sample has fewer than
    two values or a standard deviation is not positive (no spread to compare)."""
    from scipy.stats import f as f_dist

    if min(n_num, n_den) < 2 or not (std_num > 0 and std_den > 0):
        return (math.nan,) * 3
    q_lo, q_hi = f_dist.ppf([(1 - level) / 2, (1 + level) / 2], n_num - 1, n_den - 1)
    r2 = (std_num / std_den) ** 2
    return math.sqrt(r2), math.sqrt(r2 / q_hi), math.sqrt(r2 / q_lo)


GROUP = ["method", "engine", "eval", "budget_axis", "budget_fraction"]


def summarize(df: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per (method, engine, eval, budget_axis, budget_fraction): seeds, mean and std of each metric,
    and the AbsRel ratio to ``dko`` with its bootstrap 95 % CI (``ratio_vs_dko*``, NaN where DKO
    has no point; ``ratio_n_resamples``: the distinct resamples the interval had,
    :func:`n_distinct_resamples` of ``ratio_n_seeds``). Std over seeds (ddof 1; 0 for one seed)
    is the stability measure.
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
        row.update({"ratio_vs_dko": r, "ratio_ci_lo": lo, "ratio_ci_hi": hi, "ratio_n_seeds": n,
                    "ratio_n_resamples": n_distinct_resamples(n)})
        rows.append(row)
    return pd.DataFrame(rows)


def settled_from(fractions: Sequence[float], ok: Sequence[bool]) -> float:
    """The smallest budget fraction from which on ``ok`` holds at every larger fraction of the ladder.

    ``fractions``: the ladder, ascending; ``ok``: one bool per fraction. NaN when ``ok`` fails at
    the largest fraction (or the ladder is empty). No fraction at or above the answer is one where
    ``ok`` fails, so the answer cannot contradict any point of the ladder.
    """
    first = float("nan")
    for f, k in zip(reversed(list(fractions)), reversed(list(ok))):
        if not k:
            break
        first = float(f)
    return first


def catch_up(summary: pd.DataFrame, methods: Sequence[str] = ("e2e_scratch", "e2e_warm")) -> pd.DataFrame:
    """Where (if ever) each E2E method catches up with DKO, per engine / eval / axis, for good.

    Budget fractions are multiples of ``C_ref``. ``first_fraction_mean``: the smallest fraction
    from which on, at every larger fraction of the ladder, the E2E mean AbsRel is at most DKO's
    (ratio <= 1); ``first_fraction_ci``: the smallest from which on, at every larger fraction, DKO
    is no longer significantly better (the ratio's 95 % CI reaches 1: ``ratio_ci_lo <= 1``).
    NaN = not so at the largest fraction (for ``first_fraction_ci``: DKO still significantly
    better there). Both are :func:`settled_from`, so neither names a fraction below one where
    DKO is still ahead.
    """
    rows = []
    s = summary[summary["method"].isin(methods)]
    for key, g in s.groupby(["method", "engine", "eval", "budget_axis"], sort=True):
        g = g.dropna(subset=["ratio_vs_dko"]).sort_values("budget_fraction")
        rows.append({**dict(zip(["method", "engine", "eval", "budget_axis"], key)),
                     "fractions_compared": ",".join(f"{f:g}" for f in g["budget_fraction"]),
                     "first_fraction_mean": settled_from(g["budget_fraction"], g["ratio_vs_dko"] <= 1.0),
                     "first_fraction_ci": settled_from(g["budget_fraction"], g["ratio_ci_lo"] <= 1.0),
                     "ratio_at_largest": float(g["ratio_vs_dko"].iloc[-1]) if len(g) else float("nan")})
    return pd.DataFrame(rows, columns=["method", "engine", "eval", "budget_axis", "fractions_compared",
                                       "first_fraction_mean", "first_fraction_ci", "ratio_at_largest"])


# ----------------------------------------------------------------------------- error ratios and the 2x claim
HIGHER_IS_BETTER = ("a1", "a2", "a3")
"""Metrics where larger is better (share of pixels within a ratio of the truth); the rest are errors."""
CLAIM_FACTOR = 2.0
"""The paper's claim: DKO is about this many times more accurate than E2E at equal budget."""
CLAIM_CLASSES = ("holds", "dko_better_less", "no_difference", "e2e_better")


def error_of(values, metric: str) -> np.ndarray:
    """The error a metric measures, lower is better: the metric itself, or ``1 - value`` for
    ``a1``/``a2``/``a3`` (the share of pixels *outside* the ratio band)."""
    v = np.asarray(values, dtype=float)
    return 1.0 - v if metric in HIGHER_IS_BETTER else v


def claim_class(lo: float, hi: float, factor: float = CLAIM_FACTOR) -> str:
    """Classify an E2E / DKO error ratio by its 95 % interval ``[lo, hi]``:

    ``holds`` (DKO significantly better, ``lo > 1``, and the interval reaches ``factor``),
    ``dko_better_less`` (``lo > 1`` but ``hi < factor``), ``no_difference`` (``lo <= 1 <= hi``),
    ``e2e_better`` (``hi < 1``). A non-finite bound is an error.
    """
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"claim_class needs a finite interval, got [{lo}, {hi}]")
    if lo > 1.0:
        return "holds" if hi >= factor else "dko_better_less"
    return "e2e_better" if hi < 1.0 else "no_difference"


def error_ratios(runs: pd.DataFrame, metrics: Sequence[str] = ("abs_rel", "a1", "rmse"),
                 methods: Sequence[str] = ("e2e_scratch",), n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """E2E / DKO error ratio per (method, engine, eval, budget_axis, budget_fraction, metric).

    ``runs``: the merged runs table. The ratio is of mean errors (:func:`error_of`) over the seeds
    both methods have at that point, with the paired bootstrap 95 % interval of
    :func:`bootstrap_ratio`; ``n_resamples`` is :func:`n_distinct_resamples` of ``n_seeds``;
    ``verdict`` is :func:`claim_class` of the interval (a ratio above 1 means DKO's error is lower).
    Points where DKO or the method has no row are left out.
    """
    check_columns(runs)
    cols = ["method", "engine", "eval", "budget_axis", "budget_fraction", "metric", "ratio", "ci_lo", "ci_hi",
            "n_seeds", "n_resamples", "verdict"]
    if "budget_axis" not in runs or "budget_fraction" not in runs:
        raise ValueError("error_ratios needs the 'budget_axis' and 'budget_fraction' columns")
    keys = ["engine", "eval", "budget_axis", "budget_fraction"]
    dko = {k: g for k, g in runs[runs["method"] == REF_METHOD].groupby(keys)}
    rows = []
    for (method, *key), g in runs[runs["method"].isin(methods)].groupby(["method"] + keys, sort=True):
        den_rows = dko.get(tuple(key))
        if den_rows is None:
            continue
        for metric in metrics:
            num = dict(zip(g["seed"], error_of(g[metric], metric)))
            den = dict(zip(den_rows["seed"], error_of(den_rows[metric], metric)))
            r, lo, hi, n = bootstrap_ratio(num, den, n_boot, seed)
            if n == 0:
                continue
            rows.append({"method": method, **dict(zip(keys, key)), "metric": metric, "ratio": r, "ci_lo": lo,
                         "ci_hi": hi, "n_seeds": n, "n_resamples": n_distinct_resamples(n),
                         "verdict": claim_class(lo, hi)})
    return pd.DataFrame(rows, columns=cols)


# ----------------------------------------------------------------------------- time to accuracy
TTA_REFERENCE = "electronic"
"""The method whose mean at ``C_ref`` (fraction 1.0, crop evaluation) sets the accuracy target."""
TTA_COLUMNS = ["method", "engine", "eval", "axis", "metric", "target_ratio", "reference_value", "threshold",
               "budget_needed", "ci_lo", "ci_hi", "n_seeds", "n_reached", "n_resamples", "per_seed",
               "max_fraction", "budget_needed_flops", "budget_needed_s"]


def threshold_for(reference: float, ratio: float, metric: str) -> float:
    """The value a method must reach to be within ``ratio`` x the reference: ``ratio * reference``
    for an error (AbsRel, RMSE, ...), ``reference / ratio`` for ``a1``/``a2``/``a3``."""
    if ratio < 1:
        raise ValueError(f"target ratio must be >= 1 (1 = as good as the reference), got {ratio}")
    return reference / ratio if metric in HIGHER_IS_BETTER else ratio * reference


def first_reached(fractions, values, threshold: float, metric: str) -> float:
    """The smallest budget fraction whose value meets ``threshold`` (``<=`` for an error, ``>=`` for
    ``a1``/``a2``/``a3``); ``inf`` if none does. ``fractions``/``values``: one seed's ladder."""
    f = np.asarray(fractions, dtype=float)
    v = np.asarray(values, dtype=float)
    ok = v >= threshold if metric in HIGHER_IS_BETTER else v <= threshold
    return float(f[ok].min()) if ok.any() else math.inf


def bootstrap_median(x, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Median of ``x`` (may hold ``inf`` = never) and its 95 % percentile bootstrap interval,
    resampling the entries with replacement. The bounds are order statistics of the resampled
    medians (no interpolation, so ``inf`` stays ``inf``). Returns ``(median, lo, hi)``."""
    x = np.asarray(x, dtype=float)
    if not len(x):
        return (math.nan,) * 3
    point = float(np.median(x))
    if len(x) == 1:
        return point, point, point
    idx = np.random.default_rng(seed).integers(0, len(x), size=(n_boot, len(x)))
    meds = np.median(x[idx], axis=1)
    lo, hi = np.quantile(meds, [0.025, 0.975], method="inverted_cdf")
    return point, float(lo), float(hi)


def bootstrap_median_ratio(num, den, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Ratio of medians ``median(num) / median(den)`` of paired samples (entry ``i`` of both from
    the same seed; ``inf`` = never, as :func:`first_reached` writes it) and its 95 % percentile
    bootstrap interval, resampling the pairs with replacement (the resamples of
    :func:`bootstrap_median`). ``inf / x`` is ``inf``, ``x / inf`` is 0 and ``inf / inf`` (neither
    gets there) counts as 1, a tie. Bounds are order statistics (no interpolation). Returns
    ``(ratio, lo, hi)``; NaNs for no pairs."""
    a, b = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired samples must be two 1-D arrays of the same length, got {a.shape}, {b.shape}")
    if not len(a):
        return (math.nan,) * 3

    def ratio(x, y):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(np.isinf(x) & np.isinf(y), 1.0, np.asarray(x) / np.asarray(y))

    point = float(ratio(np.median(a), np.median(b)))
    if len(a) == 1:
        return point, point, point
    idx = np.random.default_rng(seed).integers(0, len(a), size=(n_boot, len(a)))
    lo, hi = np.quantile(ratio(np.median(a[idx], axis=1), np.median(b[idx], axis=1)), [0.025, 0.975],
                         method="inverted_cdf")
    return point, float(lo), float(hi)


def _finite(x: float) -> float:
    return x if math.isfinite(x) else math.nan


def _tta_references(runs: pd.DataFrame, metrics: Sequence[str]) -> dict:
    """``{(engine, axis, eval): {metric: mean over seeds}}`` of the reference method at fraction 1.0.

    Each evaluation mode is measured against the reference in the same mode: under sensor noise
    that is the electronic network read through ideal optics with the same noise (the
    ``electronic`` rows of ``full_psf_noise``), which no camera can beat. A mode the reference
    has no rows in falls back to its ``crop`` rows (in :func:`time_to_accuracy`).
    """
    ref = runs[(runs["method"] == TTA_REFERENCE) & np.isclose(runs["budget_fraction"], 1.0)]
    if not len(ref[ref["eval"] == "crop"]):
        raise ValueError(f"time_to_accuracy needs '{TTA_REFERENCE}' rows with eval 'crop' at budget_fraction "
                         "1.0 (the reference accuracy); the table has none")
    out = {}
    for (engine, axis, ev), g in ref.groupby(["engine", "budget_axis", "eval"]):
        per_seed = g.groupby("seed")[list(metrics)].mean()
        out[(engine, axis, ev)] = per_seed.mean().to_dict()
    return out


def time_to_accuracy(runs: pd.DataFrame, targets: Sequence[float] = (1.5, 1.25, 1.1),
                     metrics: Sequence[str] = ("abs_rel", "a1", "rmse"), n_boot: int = 2000,
                     seed: int = 0) -> pd.DataFrame:
    """The budget (multiple of ``C_ref``) each method needs to come within ``r`` x the electronic
    network's accuracy, per (method, engine, eval, axis, metric, target_ratio ``r``).

    ``runs``: the merged runs table (:data:`~dkolib.study.protocol.COLUMNS`). The reference is
    the ``electronic`` method's mean over seeds at fraction 1.0, same engine, budget axis and eval
    (``reference_value``; under ``full_psf_noise`` that is ideal optics with the same noise, see
    :func:`_tta_references`); ``threshold`` is :func:`threshold_for` it. Each seed's
    budget is :func:`first_reached` over the fractions that seed has (``per_seed``, ``inf`` =
    never within the ladder); ``budget_needed`` is their median (NaN when that median is
    ``inf``) with a 95 % bootstrap interval over seeds (:func:`bootstrap_median`; ``inf`` bounds
    become NaN), ``n_reached`` the seeds that reached it, ``n_resamples`` the distinct resamples
    (:func:`n_distinct_resamples`), ``max_fraction`` the largest fraction of the group's ladder.
    ``budget_needed_flops`` / ``budget_needed_s``: ``budget_needed`` times the mean of
    ``budget_flops / budget_fraction`` / ``budget_s / budget_fraction`` over the engine's rows on
    that axis (what ``C_ref`` is in FLOPs / seconds). Engine / axis pairs without a reference are
    left out.
    """
    check_columns(runs)
    for col in ("budget_fraction", "budget_axis"):
        if col not in runs:
            raise ValueError(f"time_to_accuracy needs the '{col}' column")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; expected some of {list(METRICS)}")
    refs = _tta_references(runs, metrics)
    order = {m: i for i, m in enumerate(METHODS)}
    rows = []
    for (engine, axis), ea in runs.groupby(["engine", "budget_axis"], sort=True):
        if (engine, axis, "crop") not in refs:
            continue
        pos = ea[ea["budget_fraction"] > 0]
        c_ref_flops = float((pos["budget_flops"] / pos["budget_fraction"]).mean())
        c_ref_s = float((pos["budget_s"] / pos["budget_fraction"]).mean())
        for (method, ev), g in ea.groupby(["method", "eval"], sort=True):
            max_fraction = float(g["budget_fraction"].max())
            for metric in metrics:
                curve = g.groupby(["seed", "budget_fraction"])[metric].mean().reset_index()
                for r in targets:
                    ref = float(refs.get((engine, axis, ev), refs[(engine, axis, "crop")])[metric])
                    thr = threshold_for(ref, float(r), metric)
                    per_seed = [first_reached(s["budget_fraction"], s[metric], thr, metric)
                                for _, s in curve.groupby("seed", sort=True)]
                    med, lo, hi = bootstrap_median(per_seed, n_boot, seed)
                    need = _finite(med)
                    rows.append({"method": method, "engine": engine, "eval": ev, "axis": axis, "metric": metric,
                                 "target_ratio": float(r), "reference_value": ref, "threshold": thr,
                                 "budget_needed": need, "ci_lo": _finite(lo), "ci_hi": _finite(hi),
                                 "n_seeds": len(per_seed), "n_reached": int(np.isfinite(per_seed).sum()),
                                 "n_resamples": n_distinct_resamples(len(per_seed)),
                                 "per_seed": ",".join(f"{f:g}" for f in per_seed), "max_fraction": max_fraction,
                                 "budget_needed_flops": need * c_ref_flops, "budget_needed_s": need * c_ref_s})
    out = pd.DataFrame(rows, columns=TTA_COLUMNS)
    if not len(out):
        return out
    out["_m"] = out["method"].map(order).fillna(len(order))
    return (out.sort_values(["metric", "target_ratio", "engine", "axis", "eval", "_m", "method"])
            .drop(columns="_m").reset_index(drop=True))
