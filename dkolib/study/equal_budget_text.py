"""Sentences of the README's equal-budget verdicts, each computed from the tables.

Nothing here is a fixed judgement: every "holds", "fails", "first" or "only when" is the
outcome of a comparison in the function that writes it, by the rule stated in its text.

* :func:`tta_sentence`: how much budget (multiples of ``C_ref``, one full DKO run) each method
  needs to come within ``r`` x the electronic network's error, from
  :func:`~dkolib.study.stats.time_to_accuracy`, and which of DKO / E2E gets there first.
* :func:`claim_sentence`: the paper's "about 2x accuracy at equal budget" checked on AbsRel,
  delta < 1.25 (as the share of pixels outside it, ``1 - a1``) and RMSE at every compared budget,
  from :func:`~dkolib.study.stats.error_ratios`: holds everywhere, fails everywhere, or holds
  only at named budgets, and where the metrics disagree.
* :func:`cost_sentence`: the paper's "hundreds of times cheaper" with and without stage 1.
* :func:`references_table` / :func:`tta_table`: the constant predictor and the electronic
  network beside the equal-budget table, and the time-to-accuracy table.
"""

from __future__ import annotations

import math

import pandas as pd

from .markdown import _fmt
from .stats import CLAIM_FACTOR, HIGHER_IS_BETTER, spread_ratio

METHOD_NAMES = {"electronic": "the electronic network", "dko": "DKO", "dko_ft": "DKO + fine-tune",
                "e2e_scratch": "E2E from scratch", "e2e_warm": "E2E warm-started"}
METRIC_NAMES = {"abs_rel": "AbsRel", "a1": "delta < 1.25", "rmse": "RMSE", "sq_rel": "SqRel",
                "rmse_log": "RMSE log", "a2": "delta < 1.25^2", "a3": "delta < 1.25^3"}
AXIS_NAMES = {"flops": "FLOP budget", "wall": "wall-clock budget"}
EVAL_NAMES = {"crop": "idealised crop evaluation", "full_psf": "full-PSF evaluation",
              "full_psf_noise": "full-PSF evaluation with sensor noise"}
CLASS_NAMES = {"holds": "holds", "dko_better_less": "DKO better by less than 2x",
               "no_difference": "no significant difference", "e2e_better": "E2E more accurate"}
REFERENCE_NAMES = {"full_psf_noise": "electronic network's through ideal optics under the same noise"}
"""Whose accuracy the time-to-accuracy targets are multiples of, per eval mode (default below)."""


def reference_name(eval_mode: str) -> str:
    """``"electronic network's"``, or under sensor noise its reading through ideal optics with that noise."""
    return REFERENCE_NAMES.get(eval_mode, "electronic network's")


HUNDREDS = 100.0
"""The paper's "hundreds of times" cheaper: a whole-run cost ratio of at least this."""


def _n(x: float) -> str:
    """A number with 3 significant digits (``n/a`` for NaN)."""
    return _fmt(x)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _x(f: float) -> str:
    return f"{f:g}x"


def _setting(engine: str, axis: str) -> str:
    return f"{engine} engine, {AXIS_NAMES.get(axis, axis)}"


def need_text(row) -> str:
    """``1x C_ref (95 % CI 0.5-1x, 3 seeds)``, ``never within 2x (0 of 3 seeds)`` and the like."""
    n, reached, top = int(row["n_seeds"]), int(row["n_reached"]), _x(row["max_fraction"])
    if not math.isfinite(row["budget_needed"]):
        return f"never within {top} ({reached} of {n} seeds reach it)"
    lo = _x(row["ci_lo"]) if math.isfinite(row["ci_lo"]) else "n/a"
    hi = _x(row["ci_hi"]) if math.isfinite(row["ci_hi"]) else f"beyond {top}"
    seeds = f"{n} seeds" if reached == n else f"{reached} of {n} seeds reach it"
    return f"{_x(row['budget_needed'])} C_ref (95 % CI {lo}-{hi}, {seeds})"


def _first(tta_rows: pd.DataFrame, a: str, b: str) -> str | None:
    """Which of methods ``a`` / ``b`` needs less budget (NaN = never): ``a``, ``b``, ``tie`` or None."""
    need = tta_rows.set_index("method")["budget_needed"]
    if a not in need or b not in need:
        return None
    va = need[a] if math.isfinite(need[a]) else math.inf
    vb = need[b] if math.isfinite(need[b]) else math.inf
    if va == vb:
        return "tie_never" if math.isinf(va) else "tie"
    return a if va < vb else b


def tta_sentence(tta: pd.DataFrame | None, eval_mode: str = "crop", metric: str = "abs_rel",
                 target: float = 1.25) -> str:
    """The primary statement: budget each method needs to reach ``metric`` within ``target`` x the
    electronic network's (its mean at 1x C_ref, same engine and axis), per (engine, axis), and a
    count of the settings where DKO / E2E from scratch gets there first. Empty if no rows."""
    if tta is None or not len(tta):
        return ""
    d = tta[(tta["eval"] == eval_mode) & (tta["metric"] == metric) & (abs(tta["target_ratio"] - target) < 1e-9)]
    if not len(d):
        return ""
    rel = ">=" if metric in HIGHER_IS_BETTER else "<="
    name = METRIC_NAMES.get(metric, metric)
    parts, firsts = [], []
    for (engine, axis), g in d.groupby(["engine", "axis"], sort=True):
        ref = g.iloc[0]
        order = [m for m in METHOD_NAMES if m in set(g["method"]) and m != "electronic"]
        rows = g.set_index("method")
        said = ", ".join(f"{METHOD_NAMES[m]} {'needs ' if i == 0 else ''}{need_text(rows.loc[m])}"
                         for i, m in enumerate(order))
        if "electronic" in rows.index:
            who = "through ideal optics" if eval_mode in REFERENCE_NAMES else "itself"
            said += f"; the electronic network {who} {need_text(rows.loc['electronic'])}"
        parts.append(f"{_setting(engine, axis)} ({name} {rel} {_n(ref['threshold'])}, i.e. {target:g}x the "
                     f"{reference_name(eval_mode)} {_n(ref['reference_value'])} at 1x C_ref): {said}")
        firsts.append(_first(g, "dko", "e2e_scratch"))
    text = (f"{_cap(EVAL_NAMES.get(eval_mode, eval_mode))}: to reach {name} {rel} {target:g}x the "
            f"{reference_name(eval_mode)} (the budget at which the median seed first meets it, 95 % bootstrap interval "
            "over seeds), "
            + "; ".join(parts) + ".")
    known = [f for f in firsts if f is not None]
    if known:
        counts = {k: sum(f == k for f in known) for k in ("dko", "e2e_scratch", "tie", "tie_never")}
        text += (f" DKO gets there first in {counts['dko']} of {len(known)} settings, E2E from scratch in "
                 f"{counts['e2e_scratch']}, both at the same budget in {counts['tie']}"
                 + (f", neither within the ladder in {counts['tie_never']}" if counts["tie_never"] else "") + ".")
    return text


def _points_text(rows: pd.DataFrame) -> str:
    """``fast engine, FLOP budget at 1x, 2x; reference engine, ...`` for a set of budget points."""
    out = []
    for (engine, axis), g in rows.groupby(["engine", "budget_axis"], sort=True):
        out.append(f"{_setting(engine, axis)} at " + ", ".join(_x(f) for f in sorted(g["budget_fraction"])))
    return "; ".join(out)


def claim_sentence(ratios: pd.DataFrame | None, eval_mode: str = "crop", factor: float = CLAIM_FACTOR) -> str:
    """The paper's "about ``factor`` x accuracy at equal budget" for DKO over E2E from scratch.

    ``ratios``: :func:`~dkolib.study.stats.error_ratios` rows (``verdict`` per metric and budget
    point). The claim holds at a point if E2E's error / DKO's has a 95 % interval above 1 that
    reaches ``factor``. Verdict: holds (every point, every metric), size not reached (no point on any metric),
    or holds only at the named points; then where the metrics disagree.
    """
    if ratios is None or not len(ratios):
        return ""
    d = ratios[(ratios["eval"] == eval_mode) & (ratios["method"] == "e2e_scratch")]
    if not len(d):
        return ""
    metrics = list(dict.fromkeys(d["metric"]))
    names = ", ".join(METRIC_NAMES.get(m, m) for m in metrics)
    keys = ["engine", "budget_axis", "budget_fraction"]
    n_points = len(d[keys].drop_duplicates())
    head = (f"{_cap(EVAL_NAMES.get(eval_mode, eval_mode))}, checked on {names} "
            f"({'delta < 1.25 as the share of pixels outside it; ' if 'a1' in metrics else ''}"
            f"{n_points} budget point{'s' if n_points != 1 else ''}): ")
    holds = d[d["verdict"] == "holds"]
    counts = d["verdict"].value_counts()
    other = ", ".join(f"{CLASS_NAMES[c]} at {int(counts[c])}" for c in CLASS_NAMES if c != "holds" and c in counts)
    if len(holds) == len(d):
        text = head + "the claim holds at every compared budget on every metric."
    elif not len(holds):
        text = head + (f"the claimed size is not reached: at no budget does any metric show E2E's error "
                       f"{factor:g}x DKO's with DKO significantly better ({other} of {len(d)} metric-budget pairs; "
                       "the table at the top grades the direction).")
    else:
        per_metric = []
        for m in metrics:
            h = holds[holds["metric"] == m]
            per_metric.append(f"{METRIC_NAMES.get(m, m)} at " + (_points_text(h) if len(h) else "no budget"))
        text = (head + "the claim holds only at some budgets: " + "; ".join(per_metric)
                + f" (elsewhere: {other} of {len(d)} metric-budget pairs).")
    verdict_sets = d.groupby(keys, sort=True)["verdict"].agg(lambda v: tuple(v))
    disagree = verdict_sets[verdict_sets.map(lambda v: len(set(v)) > 1)]
    if len(metrics) > 1 and len(disagree):
        examples = []
        for key in disagree.index[:3]:
            rows = d[(d[keys] == pd.Series(key, index=keys)).all(axis=1)]
            examples.append(f"{_x(key[2])} ({key[0]} engine, {AXIS_NAMES.get(key[1], key[1])}): "
                            + ", ".join(f"{METRIC_NAMES.get(r.metric, r.metric)} {CLASS_NAMES[r.verdict]} "
                                        f"({r.ratio:.2f}, {r.ci_lo:.2f}-{r.ci_hi:.2f})" for r in rows.itertuples()))
        more = f"; {len(disagree) - 3} more" if len(disagree) > 3 else ""
        text += f" The metrics disagree at {len(disagree)} of {n_points} budget points: " + "; ".join(examples) + more + "."
    elif len(metrics) > 1:
        text += " The metrics agree at every budget point."
    return text


def ratios_from_summary(summary: pd.DataFrame) -> pd.DataFrame:
    """AbsRel-only :func:`~dkolib.study.stats.error_ratios`-like rows from the summary's ``ratio_vs_dko``."""
    from .stats import claim_class

    s = summary[(summary["method"] == "e2e_scratch")].dropna(subset=["ratio_vs_dko", "ratio_ci_lo", "ratio_ci_hi"])
    if "budget_axis" not in s:
        s = s.assign(budget_axis="n/a")
    return pd.DataFrame({"method": s["method"], "engine": s["engine"], "eval": s["eval"],
                         "budget_axis": s["budget_axis"], "budget_fraction": s["budget_fraction"],
                         "metric": "abs_rel", "ratio": s["ratio_vs_dko"], "ci_lo": s["ratio_ci_lo"],
                         "ci_hi": s["ratio_ci_hi"],
                         "verdict": [claim_class(lo, hi) for lo, hi in zip(s["ratio_ci_lo"], s["ratio_ci_hi"])]})


def cost_sentence(run_ratios: dict) -> str:
    """The paper's "hundreds of times cheaper" (whole runs) with and without charging stage 1 to DKO."""
    without, with_s1 = run_ratios["without_stage1"], run_ratios["with_stage1"]
    if with_s1 >= HUNDREDS:
        return f"The claim ({HUNDREDS:g}x or more) holds even when stage 1 is charged to DKO."
    if without >= HUNDREDS:
        return (f"The claim ({HUNDREDS:g}x or more) holds only when the electronic network is trained anyway "
                "(stage 1 not charged to DKO).")
    return f"The claim ({HUNDREDS:g}x or more) fails even when stage 1 is not charged to DKO."


def references_table(stage1_metrics: pd.DataFrame | None, tta: pd.DataFrame | None,
                     metrics=("abs_rel", "a1", "rmse"), split: str = "synthetic_test",
                     convergence: pd.DataFrame | None = None) -> pd.DataFrame:
    """The constant predictor and the electronic network after its full stage 1 (``stage1/metrics.csv``,
    rows of ``split``), the same network trained to convergence (``convergence``: the chosen row of
    ``stage1/convergence.csv``, its ``test_<metric>`` columns, when given and not the main chain's own
    stage 1), and the electronic network at 1x C_ref in this study (``tta``'s reference
    values, mean over seeds, per engine and axis), and under sensor noise that network through ideal
    optics with the same noise (the noisy targets' reference): one row each, one column per metric."""
    rows = []
    if stage1_metrics is not None and {"model", "split"} <= set(stage1_metrics.columns):
        table = stage1_metrics[stage1_metrics["split"] == split].set_index("model")
        for model, label in (("constant", "constant predictor"), ("electronic", "electronic network, full stage 1")):
            if model in table.index:
                rows.append({"reference": f"{label} (`stage1/metrics.csv`, {split})",
                             **{METRIC_NAMES[m]: float(table.loc[model, m]) for m in metrics if m in table}})
    if convergence is not None and "chosen" in convergence and convergence["chosen"].any():
        from .stage1_convergence import chosen_row

        chosen = chosen_row(convergence)
        if chosen.name != convergence.index[0]:  # row 0 is the main chain's stage 1, listed above
            rows.append({"reference": f"electronic network, best schedule of the stage-1 convergence study "
                                      f"(`stage1/convergence.csv`, `{chosen['schedule']}` chosen on validation, "
                                      "synthetic_test)",
                         **{METRIC_NAMES[m]: float(chosen[f"test_{m}"]) for m in metrics if f"test_{m}" in chosen}})
    if tta is not None and len(tta):
        for ev, label in (("crop", "electronic network at 1x C_ref"),
                          ("full_psf_noise", "electronic network through ideal optics, sensor noise, at 1x C_ref")):
            t = tta[tta["eval"] == ev]
            if ev != "crop" and "electronic" in set(t["method"]):
                e = t[t["method"] == "electronic"]  # a table made before the noisy reference repeats the crop one
                c = tta[(tta["eval"] == "crop") & (tta["method"] == "electronic")]
                if len(c) and set(e["reference_value"].round(12)) == set(c["reference_value"].round(12)):
                    continue
            ref = t.drop_duplicates(["engine", "axis", "metric"]).set_index(["engine", "axis", "metric"])["reference_value"]
            for engine, axis in sorted({k[:2] for k in ref.index}):
                rows.append({"reference": f"{label} ({_setting(engine, axis)})",
                             **{METRIC_NAMES[m]: float(ref[(engine, axis, m)]) for m in metrics
                                if (engine, axis, m) in ref}})
    return pd.DataFrame(rows)


def tta_table(tta: pd.DataFrame, eval_mode: str = "crop", metric: str = "abs_rel") -> pd.DataFrame:
    """Budget needed per (engine, axis, method), one column per target ratio (``never <= Nx`` for never)."""
    d = tta[(tta["eval"] == eval_mode) & (tta["metric"] == metric)]

    def cell(r) -> str:
        if not math.isfinite(r["budget_needed"]):
            return f"never <= {_x(r['max_fraction'])} ({int(r['n_reached'])}/{int(r['n_seeds'])})"
        lo = _x(r["ci_lo"]) if math.isfinite(r["ci_lo"]) else "n/a"
        hi = _x(r["ci_hi"]) if math.isfinite(r["ci_hi"]) else f">{_x(r['max_fraction'])}"
        return f"{_x(r['budget_needed'])} [{lo}, {hi}]"

    d = d.assign(cell=[cell(r) for _, r in d.iterrows()],
                 target=[f"within {t:g}x" for t in d["target_ratio"]])
    order = {m: i for i, m in enumerate(METHOD_NAMES)}
    wide = d.pivot_table(index=["engine", "axis", "method"], columns="target", values="cell", aggfunc="first")
    wide = wide[sorted(wide.columns, key=lambda c: -float(c.split()[1].rstrip("x")))].reset_index()
    wide["_o"] = wide["method"].map(order)
    return wide.sort_values(["engine", "axis", "_o"]).drop(columns="_o").reset_index(drop=True)


def stability_sentence(summary: pd.DataFrame | None, eval_mode: str = "crop",
                       methods: tuple = ("dko", "e2e_scratch")) -> str:
    """Which method's AbsRel spreads less across seeds, compared only at the budgets both have.

    Mean over the (engine, budget axis, budget fraction) points where every method of
    ``methods`` has at least two seeds; "" when there are none.
    """
    if summary is None or not len(summary):
        return ""
    s = summary[(summary["eval"] == eval_mode) & summary["method"].isin(methods) & (summary["n_seeds"] >= 2)]
    keys = ["engine", "budget_axis", "budget_fraction"]
    common = s.groupby(keys)["method"].nunique()
    common = common[common == len(methods)].index
    if not len(common):
        return ""
    s = s.set_index(keys).loc[common].reset_index()
    spread = s.groupby("method")["abs_rel_std"].mean()
    a, b = methods
    fracs = sorted(set(s["budget_fraction"]))
    name = {"dko": "DKO", "e2e_scratch": "E2E"}
    more = name.get(a, a) if spread[a] < spread[b] else name.get(b, b)
    # per point, is the ratio of the two spreads significant? (F interval; normal errors assumed)
    significant = 0
    for _, g in s.groupby(keys):
        r = g.set_index("method")
        _, lo, hi = spread_ratio(r.loc[b, "abs_rel_std"], int(r.loc[b, "n_seeds"]),
                                 r.loc[a, "abs_rel_std"], int(r.loc[a, "n_seeds"]))
        significant += bool(lo > 1 or hi < 1)
    return (f"**Stability** (standard deviation of AbsRel across seeds, mean over the {len(common)} budget points "
            f"both have: {', '.join(_x(f) for f in fracs)}): {name.get(a, a)} {spread[a]:.3g}, "
            f"{name.get(b, b)} {spread[b]:.3g}; {more} has the smaller spread on average, a difference significant "
            f"at {significant} of {len(common)} budget points (95 % F interval of the ratio of standard "
            "deviations, normal errors assumed).")
