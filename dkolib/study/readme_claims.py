"""The README's results at a glance: each claim of the paper, what this repository measures, a grade.

:func:`claims_table` reads a profile's committed tables and writes one markdown table, one row per
claim: what the paper says, what is measured here (value, 95 % interval, budget, evaluation mode
and the CSV it comes from) and a grade. Every claim is read as a ratio E2E / DKO, above 1 in DKO's
favour: E2E's AbsRel over DKO's at the same budget (``equal_budget_summary.csv``, paired bootstrap
over seeds), the budget E2E needs to come within 1.25x the electronic network's AbsRel over DKO's
(``time_to_accuracy.csv``, budgets in multiples of ``C_ref``, one full DKO run), the seconds of a
whole run and the peak memory of one step at the paper's size (``results/costs.csv``, seconds and
MB), the standard deviation of AbsRel across seeds (the stability claim, :func:`~dkolib.study.stats.spread_ratio`).

:func:`grade` compares the interval with the size the paper claims (2 for "about twice the
accuracy", 100 for "hundreds of times", 1 where it names only a direction); :data:`GRADES_SENTENCE`
states the rule in the README. A cost measured once has no interval: it is graded on x/1.1 to x1.1 of its value.
A missing CSV gives a row that names it and the command that makes it. :func:`splice_claims`
puts the section between the README's ``<!-- claims:start -->`` / ``<!-- claims:end -->`` markers.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from .equal_budget_text import AXIS_NAMES, EVAL_NAMES, HUNDREDS, need_text, reference_name
from .markdown import _fmt, _read, _table, splice_between
from .paths import ProfilePaths
from .stats import CLAIM_FACTOR, bootstrap_median_ratio, claim_class, spread_ratio

CLAIMS_START, CLAIMS_END = "<!-- claims:start -->", "<!-- claims:end -->"
TTA_TARGET = 1.25
"""Time to accuracy: the budget to come within this factor of the electronic network's AbsRel."""
GRADES = {"holds": "reproduced", "dko_better_less": "reproduced in direction, smaller",
          "no_difference": "not reproduced", "e2e_better": "reversed"}
"""The grade of each :func:`~dkolib.study.stats.claim_class`."""
NOT_MEASURED = "not measured"
SINGLE_SPREAD = 1.1
"""A cost measured once is graded on ``[v / SINGLE_SPREAD, v * SINGLE_SPREAD]``: one run's timer and
allocator noise, so that a 3 % difference in a single measurement is not read as a finding."""
GRADES_SENTENCE = (
    "Each claim is read as a ratio E2E / DKO (above 1 in DKO's favour) with its 95 % interval and graded "
    "**reproduced** when the interval lies above 1 and reaches the size the paper claims, **reproduced in "
    "direction, smaller** when it lies above 1 but stays below that size, **not reproduced** when it contains "
    "1 (no significant difference) and **reversed** when it lies below 1 (E2E significantly better); a cost "
    f"measured once has no interval, and is given one of x/{SINGLE_SPREAD:g} to x{SINGLE_SPREAD:g} for the timer "
    "and allocator noise of one run.")


def grade(ratio: float, lo: float, hi: float, claimed: float) -> str:
    """Grade an E2E / DKO ratio (above 1 in DKO's favour) by its 95 % interval ``[lo, hi]`` against the
    size the paper claims, ``claimed >= 1`` (1: a direction only).

    ``reproduced``: ``lo > 1`` and ``hi >= claimed`` (significant in the paper's direction, and the
    claimed size is inside or below the interval); ``reproduced in direction, smaller``: ``lo > 1``,
    ``hi < claimed``; ``not reproduced``: ``lo <= 1 <= hi``; ``reversed``: ``hi < 1``. This is
    :func:`~dkolib.study.stats.claim_class`'s rule. Bounds may be ``+inf`` (E2E never gets there
    within the ladder); a NaN gives ``not measured``. A single measurement is ``lo = hi = ratio``.
    """
    if not claimed >= 1:
        raise ValueError(f"the claimed size is a ratio in DKO's favour, >= 1; got {claimed}")
    if any(math.isnan(x) for x in (ratio, lo, hi)):
        return NOT_MEASURED
    cap = 2.0 * claimed  # above both 1 and the claim: clipping +inf bounds to it changes no comparison
    return GRADES[claim_class(min(lo, cap), min(hi, cap), claimed)]


def _missing(path: str, profile: str) -> str:
    """The measured cell of a claim whose CSV is absent: which file, which command makes it."""
    flag = "" if profile == "default" else f" --config profile={profile}"
    return f"not measured: `{path}` is missing; `snakemake --cores 4 {path}{flag}` makes it"


def _row(claim: str, says: str, measured: str, verdict: str, claimed: float) -> dict:
    against = "direction only" if claimed == 1 else f"against the claimed {claimed:g}x"
    return {"claim": claim, "the paper says": says, "measured here": measured,
            "verdict": verdict if verdict == NOT_MEASURED else f"**{verdict}** ({against})"}


def _setting(engine: str, axis: str, eval_mode: str) -> str:
    return f"{engine} engine, {AXIS_NAMES.get(axis, axis)}, {EVAL_NAMES.get(eval_mode, eval_mode)}"


def _reference_fraction(fractions) -> float:
    """The ladder's budget nearest (in ratio) to 1x C_ref, one full DKO run."""
    return float(min(fractions, key=lambda f: abs(math.log(f))))


def _ci(lo: float, hi: float) -> str:
    return f"95 % CI {lo:.2f}-{hi:.2f}"


def _graded_rows(groups, read, claim: str, says: str, claimed: float, why: str) -> list[dict]:
    """One graded row per ``((engine, axis), table)`` of ``groups`` that ``read(engine, axis, table)``
    measures (it returns ``(measured text, (ratio, lo, hi))``, or None); the row "not measured:
    ``why``" where none is."""
    rows = []
    for (engine, axis), g in groups:
        got = read(engine, axis, g)
        if got is not None:
            text, (r, lo, hi) = got
            rows.append(_row(claim, says, text, grade(r, lo, hi, claimed), claimed))
    return rows or [_row(claim, says, f"not measured: {why}", NOT_MEASURED, claimed)]


def _listed(fractions) -> str:
    return ", ".join(f"{f:g}x" for f in fractions) if len(fractions) else "none"


def accuracy_rows(summary: pd.DataFrame, eval_mode: str, claim: str, says: str) -> list[dict]:
    """The "about 2x accuracy at equal budget" claim in ``eval_mode``, one row per (engine, axis):
    E2E from scratch's AbsRel over DKO's at the budget nearest 1x C_ref, and the ladder's budgets where
    DKO is significantly better and where the interval reaches 2x."""
    e2e = summary[(summary["method"] == "e2e_scratch") & (summary["eval"] == eval_mode)].dropna(
        subset=["ratio_vs_dko", "ratio_ci_lo", "ratio_ci_hi"])

    def read(engine, axis, g):
        g = g.sort_values("budget_fraction")
        f = _reference_fraction(g["budget_fraction"])
        r = g[np.isclose(g["budget_fraction"], f)].iloc[0]
        cls = [claim_class(lo, hi) for lo, hi in zip(g["ratio_ci_lo"], g["ratio_ci_hi"])]
        fracs = list(g["budget_fraction"])
        better = [fr for fr, c in zip(fracs, cls) if c in ("holds", "dko_better_less")]
        reach = [fr for fr, c in zip(fracs, cls) if c == "holds"]
        n = int(r["ratio_n_seeds"]) if "ratio_n_seeds" in r else int(r["n_seeds"])
        return (f"E2E from scratch's AbsRel is {r['ratio_vs_dko']:.2f}x DKO's ({_ci(r['ratio_ci_lo'], r['ratio_ci_hi'])}, "
                f"{n} seeds) at {f:g}x C_ref (C_ref: one full DKO run, stage 1 + stage 2); "
                f"{_setting(engine, axis, eval_mode)}. On the ladder {_listed(fracs)}: DKO significantly better at "
                f"{_listed(better)}; interval reaching {CLAIM_FACTOR:g}x at {_listed(reach)} "
                "(`equal_budget_summary.csv`)"), (r["ratio_vs_dko"], r["ratio_ci_lo"], r["ratio_ci_hi"])

    return _graded_rows(e2e.groupby(["engine", "budget_axis"], sort=True), read, claim, says, CLAIM_FACTOR,
                        f"`equal_budget_summary.csv` has no E2E rows in {EVAL_NAMES.get(eval_mode, eval_mode)}")


def stability_rows(summary: pd.DataFrame, claim: str, says: str, eval_mode: str = "crop") -> list[dict]:
    """Spread of AbsRel across seeds, E2E from scratch over DKO, at the budget nearest 1x C_ref, with
    the F interval of :func:`~dkolib.study.stats.spread_ratio` (normal errors assumed)."""

    def read(engine, axis, g):
        by = {m: h.set_index("budget_fraction") for m, h in g.groupby("method") if m in ("dko", "e2e_scratch")}
        common = sorted(set(by["dko"].index) & set(by["e2e_scratch"].index)) if len(by) == 2 else []
        if not common:
            return None
        f = _reference_fraction(common)
        e, d = by["e2e_scratch"].loc[f], by["dko"].loc[f]
        r, lo, hi = spread_ratio(e["abs_rel_std"], int(e["n_seeds"]), d["abs_rel_std"], int(d["n_seeds"]))
        return (f"standard deviation of AbsRel across seeds at {f:g}x C_ref: E2E from scratch {_fmt(e['abs_rel_std'])} "
                f"({int(e['n_seeds'])} seeds), DKO {_fmt(d['abs_rel_std'])} ({int(d['n_seeds'])} seeds); E2E's over "
                f"DKO's {r:.2f} ({_ci(lo, hi)}, F distribution, normal errors assumed); "
                f"{_setting(engine, axis, eval_mode)} (`equal_budget_summary.csv`)"), (r, lo, hi)

    s = summary[summary["eval"] == eval_mode]
    return _graded_rows(s.groupby(["engine", "budget_axis"], sort=True), read, claim, says, 1.0,
                        "`equal_budget_summary.csv` has no DKO and E2E rows at a common budget")


def speed_rows(tta: pd.DataFrame, claim: str, says: str, eval_mode: str = "crop") -> list[dict]:
    """Time to accuracy: the budget E2E from scratch needs over DKO's to reach AbsRel within
    :data:`TTA_TARGET` x the electronic network's, medians over seeds, paired bootstrap interval
    (:func:`~dkolib.study.stats.bootstrap_median_ratio`; ``inf`` = never within the ladder)."""

    def read(engine, axis, g):
        by = g.set_index("method")
        if not {"dko", "e2e_scratch"} <= set(by.index):
            return None
        e, k = by.loc["e2e_scratch"], by.loc["dko"]
        e_seeds, k_seeds = ([float(x) for x in str(row["per_seed"]).split(",")] for row in (e, k))
        r, lo, hi = (bootstrap_median_ratio(e_seeds, k_seeds) if len(e_seeds) == len(k_seeds)
                     else (math.nan,) * 3)
        return (f"budget to reach AbsRel <= {_fmt(k['threshold'])} ({TTA_TARGET:g}x the {reference_name(eval_mode)} "
                f"{_fmt(k['reference_value'])} at 1x C_ref), median seed: DKO {need_text(k)}, E2E from scratch "
                f"{need_text(e)}; E2E's over DKO's {r:.2f}x ({_ci(lo, hi)}, paired over {len(e_seeds)} seeds); "
                f"{_setting(engine, axis, eval_mode)} (`time_to_accuracy.csv`)"), (r, lo, hi)

    d = tta[(tta["eval"] == eval_mode) & (tta["metric"] == "abs_rel") & np.isclose(tta["target_ratio"], TTA_TARGET)]
    return _graded_rows(d.groupby(["engine", "axis"], sort=True), read, claim, says, 1.0,
                        f"`time_to_accuracy.csv` has no DKO and E2E rows at {TTA_TARGET:g}x")


def whole_run_ratios(costs: pd.DataFrame, stage1_steps: int, dko_steps: int, e2e_steps: int) -> dict:
    """E2E / DKO cost of whole runs at the paper's size from per-iteration seconds.

    Returns ``{"without_stage1": E2E / stage 2, "with_stage1": E2E / (stage 1 + stage 2)}``.
    """
    c = costs[costs["size"] == "paper"].set_index("method")["seconds_per_iter"]
    e2e = e2e_steps * c["e2e_step"]
    stage2 = dko_steps * c["dko_stage2"]
    stage1 = stage1_steps * c["stage1_step"]
    return {"without_stage1": e2e / stage2, "with_stage1": e2e / (stage1 + stage2)}


def paper_run_ratios(costs: pd.DataFrame | None) -> dict | None:
    """:func:`whole_run_ratios` with the paper's step counts (``config/paper.yaml``); None where
    ``costs`` lacks a paper-size row of stage 1, stage 2 or the E2E step."""
    if costs is None or not {"e2e_step", "dko_stage2", "stage1_step"} <= set(costs[costs["size"] == "paper"]["method"]):
        return None
    from ..config import load_config

    paper = load_config("paper")
    return whole_run_ratios(costs, paper.stage1.steps, paper.dko.steps, paper.e2e.steps)


def cost_rows(costs: pd.DataFrame, says: str, memory_says: str) -> list[dict]:
    """The "hundreds of times less computation and memory" claim at the paper's size: whole runs
    (stage 2 alone, then with stage 1 charged to DKO) and the peak memory of one step."""
    ratios = paper_run_ratios(costs)
    paper = costs[costs["size"] == "paper"].set_index("method")
    if ratios is None:
        return [_row("Computation", says, "not measured: `results/costs.csv` has no paper-size rows",
                     NOT_MEASURED, HUNDREDS)]
    how = ("measured" if "measured" in paper and paper["measured"].astype(bool).all()
           else "extrapolated from measured chunks")
    source = (f"seconds per step at the paper's size on this CPU ({how}), times the paper's step counts "
              "(`config/paper.yaml`); one measurement, no interval (`results/costs.csv`)")
    rows = []
    for key, claim, what in (("without_stage1", "Computation, stage 2 alone (electronic network trained anyway)",
                              "DKO's stage 2"),
                             ("with_stage1", "Computation, stage 1 charged to DKO", "DKO's stage 1 + stage 2")):
        v = float(ratios[key])
        rows.append(_row(claim, says, f"a whole E2E run costs {_fmt(v)}x {what}: {source}",
                         grade(v, v / SINGLE_SPREAD, v * SINGLE_SPREAD, HUNDREDS), HUNDREDS))
    if "peak_mem_mb" not in paper:
        return rows + [_row("Memory", memory_says, "not measured: `results/costs.csv` has no `peak_mem_mb`",
                            NOT_MEASURED, HUNDREDS)]
    mem = float(paper.loc["e2e_step", "peak_mem_mb"] / paper.loc["dko_stage2", "peak_mem_mb"])
    rows.append(_row("Memory", memory_says,
                     f"peak memory of one step at the paper's size ({how}): E2E {_fmt(paper.loc['e2e_step', 'peak_mem_mb'])} "
                     f"MB, DKO stage 2 {_fmt(paper.loc['dko_stage2', 'peak_mem_mb'])} MB: {_fmt(mem)}x; one measurement, "
                     "no interval (`results/costs.csv`)",
                     grade(mem, mem / SINGLE_SPREAD, mem * SINGLE_SPREAD, HUNDREDS), HUNDREDS))
    return rows


ACCURACY = ("Accuracy at equal budget", "about 2x the accuracy of E2E at the same compute budget (simulated, the PSF "
            "read as its 7 x 7 crop)")
ACCURACY_CAMERA = ("Accuracy at equal budget, read as a camera would", "not tested (the paper reads the crop only); "
                   "its 2x carried over to the image the sensor records")
SPEED = ("Faster training (time to accuracy)", "DKO trains faster than E2E")
COST = "hundreds of times less computation (E2E simulates every PSF at each of its steps)"
MEMORY = "hundreds of times less memory"
STABILITY = ("Stability", "more stable training than E2E")


def claims_table(profile: str, root: Path | None = None) -> str:
    """The markdown of the README's "Results at a glance" section for ``profile`` (heading, the grades'
    sentence, one table), from ``results/<profile>/`` and ``results/costs.csv`` under ``root``."""
    paths = ProfilePaths(profile) if root is None else ProfilePaths(profile, root)
    summary = _read(paths.results / "equal_budget_summary.csv")
    tta = _read(paths.results / "time_to_accuracy.csv")
    costs = _read(paths.root / "results" / "costs.csv")
    eb_path, tta_path = (f"results/{profile}/{n}.csv" for n in ("equal_budget_summary", "time_to_accuracy"))
    rows = []
    if summary is None:
        rows += [_row(c, s, _missing(eb_path, profile), NOT_MEASURED, 1.0) for c, s in (ACCURACY, ACCURACY_CAMERA)]
    else:
        rows += accuracy_rows(summary, "crop", *ACCURACY)
        noisy = [e for e in ("full_psf_noise", "full_psf") if e in set(summary["eval"])]
        rows += accuracy_rows(summary, noisy[0] if noisy else "full_psf_noise", *ACCURACY_CAMERA)
    rows += speed_rows(tta, *SPEED) if tta is not None else [_row(*SPEED, _missing(tta_path, profile), NOT_MEASURED, 1.0)]
    rows += (cost_rows(costs, COST, MEMORY) if costs is not None
             else [_row("Computation and memory", COST, _missing("results/costs.csv", profile), NOT_MEASURED, HUNDREDS)])
    rows += stability_rows(summary, *STABILITY) if summary is not None else [
        _row(*STABILITY, _missing(eb_path, profile), NOT_MEASURED, 1.0)]
    return (f"## Results at a glance (`{profile}` profile)\n\n" + GRADES_SENTENCE + " Every cell is read from the "
            "CSV it names by `dkolib/study/readme_claims.py`; the results section at the end of this README has the "
            "tables behind it and their caveats.\n\n" + _table(pd.DataFrame(rows)) + "\n")


def splice_claims(readme_text: str, section: str) -> str:
    """Replace what lies between the README's claims markers with ``section``."""
    return splice_between(readme_text, section, CLAIMS_START, CLAIMS_END)
