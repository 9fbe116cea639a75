"""The README's claims table and the statistics behind it, against expectations worked out by hand.

Hand rules used below (none of them read from the code under test):

* a ratio of means over a bootstrap resample, ``sum(e2e) / sum(dko)`` over the drawn seeds, lies
  between the smallest and the largest per-seed ratio ``e2e_s / dko_s`` (the mediant inequality);
* with 3 seeds, each resample that draws one seed three times has probability 1/27 = 3.7 % > 2.5 %,
  so the 2.5 % and 97.5 % points of the resampled ratios are the smallest and the largest per-seed
  ratio: the interval is exactly their range;
* F(2, 2) has the CDF x / (1 + x): its 2.5 % and 97.5 % points are 1/39 and 39.
"""

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from dkolib.study import stats
from dkolib.study.protocol import METRICS
from dkolib.study.readme_claims import (CLAIMS_END, CLAIMS_START, NOT_MEASURED, claims_table, grade,
                                        splice_claims)

ROOT = Path(__file__).resolve().parent.parent
DKO = {3: 0.20, 7: 0.25, 11: 0.30}
"""DKO's AbsRel per seed (seed ids deliberately not 0, 1, 2)."""
# E2E's AbsRel per seed, with the per-seed ratios E2E / DKO they give and the claim class by hand
CASES = {
    "above 2": ({3: 0.50, 7: 0.70, 11: 0.90}, (2.5, 2.8, 3.0), "holds"),
    "above 1, below 2": ({3: 0.30, 7: 0.40, 11: 0.51}, (1.5, 1.6, 1.7), "dko_better_less"),
    "straddling 1": ({3: 0.16, 7: 0.25, 11: 0.36}, (0.8, 1.0, 1.2), "no_difference"),
    "below 1": ({3: 0.10, 7: 0.15, 11: 0.21}, (0.5, 0.6, 0.7), "e2e_better"),
    "straddling 2": ({3: 0.30, 7: 0.50, 11: 0.75}, (1.5, 2.0, 2.5), "holds"),
}


def _runs(e2e: dict, dko: dict = DKO, fraction: float = 1.0) -> pd.DataFrame:
    """An equal-budget runs table: one row per (method, seed), rows in a shuffled order."""
    rows = []
    for method, values in (("e2e_scratch", e2e), ("dko", dko)):
        for seed, v in values.items():
            row = {m: 0.5 for m in METRICS}
            row.update(method=method, engine="fast", seed=seed, eval="crop", budget_axis="flops",
                       budget_fraction=fraction, budget_s=10.0, budget_flops=1e9, abs_rel=v, rmse=10 * v, a1=1 - v)
            rows.append(row)
    return pd.DataFrame(rows).sample(frac=1.0, random_state=1).reset_index(drop=True)


@pytest.mark.parametrize("case", list(CASES))
def test_bootstrap_ratio_and_claim_class_on_seed_varying_tables(case):
    e2e, per_seed, expected = CASES[case]
    assert [round(e2e[s] / DKO[s], 9) for s in DKO] == list(per_seed)  # the table is what the case says
    point, lo, hi, n = stats.bootstrap_ratio(e2e, DKO)
    assert n == 3
    assert point == pytest.approx(sum(e2e.values()) / sum(DKO.values()))
    assert (lo, hi) == pytest.approx((min(per_seed), max(per_seed)))  # 3 seeds: the per-seed range
    assert hi - lo > 0.1  # the interval varies with the seeds: not collapsed to the point
    assert stats.claim_class(lo, hi) == expected
    # the same through the tables the README reads: the summary's ratio and error_ratios' verdict
    runs = _runs(e2e)
    summary = stats.summarize(runs)
    row = summary[summary["method"] == "e2e_scratch"].iloc[0]
    assert (row["ratio_ci_lo"], row["ratio_ci_hi"]) == pytest.approx((min(per_seed), max(per_seed)))
    verdict = stats.error_ratios(runs, metrics=("abs_rel",)).iloc[0]["verdict"]
    assert verdict == expected


def test_bootstrap_ratio_with_five_seeds_stays_inside_the_per_seed_range():
    dko = {0: 0.2, 1: 0.22, 2: 0.25, 3: 0.18, 4: 0.3}
    ratios = {0: 2.2, 1: 2.5, 2: 2.9, 3: 3.4, 4: 2.1}  # every seed above 2: so is every resample
    e2e = {s: dko[s] * r for s, r in ratios.items()}
    point, lo, hi, n = stats.bootstrap_ratio(e2e, dko)
    assert n == 5 and min(ratios.values()) <= lo < point < hi <= max(ratios.values())
    assert stats.claim_class(lo, hi) == "holds" and lo > 2
    # between 1 and 2 at every seed: DKO better by less than the claim
    ratios = {0: 1.1, 1: 1.3, 2: 1.5, 3: 1.9, 4: 1.2}
    e2e = {s: dko[s] * r for s, r in ratios.items()}
    point, lo, hi, _ = stats.bootstrap_ratio(e2e, dko)
    assert 1.1 <= lo < point < hi <= 1.9 and stats.claim_class(lo, hi) == "dko_better_less"


def _ladder(rows):
    """A summary of E2E from scratch on one ladder: ``(fraction, ratio, lo, hi)`` per budget."""
    return pd.DataFrame([{"method": "e2e_scratch", "engine": "fast", "eval": "crop", "budget_axis": "flops",
                          "budget_fraction": f, "ratio_vs_dko": r, "ratio_ci_lo": lo, "ratio_ci_hi": hi}
                         for f, r, lo, hi in rows])


def test_catch_up_is_not_reported_before_dko_pulls_ahead():
    # the committed study's shape: level at 0.25x, DKO significantly better at 0.5x-4x
    table = _ladder([(0.25, 1.03, 0.96, 1.13), (0.5, 1.36, 1.31, 1.42), (1.0, 1.73, 1.56, 1.91),
                     (2.0, 1.29, 1.23, 1.37), (4.0, 1.08, 1.03, 1.13)])
    old_definition = table[table["ratio_ci_lo"] <= 1.0]["budget_fraction"].min()  # first interval reaching 1
    assert old_definition == 0.25  # what the README used to say: "no longer significantly better from 0.25x"
    row = stats.catch_up(table).iloc[0]
    assert math.isnan(row["first_fraction_ci"]) and math.isnan(row["first_fraction_mean"])
    assert row["ratio_at_largest"] == 1.08 and row["fractions_compared"] == "0.25,0.5,1,2,4"


@pytest.mark.parametrize("rows,ci,mean", [
    # E2E level from 2x on (interval reaching 1 at 2x and 4x), its mean below DKO's at 4x only
    ([(0.5, 1.5, 1.2, 1.8), (1.0, 1.3, 1.1, 1.5), (2.0, 1.05, 0.9, 1.2), (4.0, 0.95, 0.8, 1.1)], 2.0, 4.0),
    # level at 0.5x and at 4x, DKO ahead at 1x and 2x in between: from 4x on only
    ([(0.5, 1.0, 0.9, 1.1), (1.0, 1.3, 1.1, 1.5), (2.0, 1.2, 1.05, 1.3), (4.0, 1.0, 0.9, 1.1)], 4.0, 4.0),
    # level everywhere: from the smallest budget on
    ([(0.5, 0.9, 0.8, 1.0), (1.0, 0.95, 0.9, 1.0), (2.0, 0.8, 0.7, 0.9)], 0.5, 0.5),
])
def test_catch_up_holds_from_its_fraction_on(rows, ci, mean):
    row = stats.catch_up(_ladder(rows)).iloc[0]
    assert row["first_fraction_ci"] == ci and row["first_fraction_mean"] == mean


@pytest.mark.parametrize("args,expected", [
    ((2.8, 2.5, 3.0, 2.0), "reproduced"),  # interval wholly above the claimed 2x
    ((2.0, 1.5, 2.5, 2.0), "reproduced"),  # straddling 2: consistent with the claim
    ((1.6, 1.2, 2.0, 2.0), "reproduced"),  # reaching 2 exactly
    ((1.73, 1.56, 1.91, 2.0), "reproduced in direction, smaller"),
    ((1.0, 0.8, 1.2, 2.0), "not reproduced"),
    ((1.1, 1.0, 1.2, 2.0), "not reproduced"),  # touching 1 is not significant
    ((0.6, 0.5, 0.7, 2.0), "reversed"),
    ((111.0, 111.0, 111.0, 100.0), "reproduced"),  # one measurement: its value is both bounds
    ((3.22, 3.22, 3.22, 100.0), "reproduced in direction, smaller"),
    ((4.0, 2.0, 4.0, 1.0), "reproduced"),  # a direction only: above 1 is the claim
    ((math.inf, 4.0, math.inf, 2.0), "reproduced"),  # E2E never gets there within the ladder
    ((math.inf, math.inf, math.inf, 100.0), "reproduced"),
    ((0.0, 0.0, 0.5, 1.0), "reversed"),  # DKO never gets there, E2E does
    ((math.nan, math.nan, math.nan, 2.0), NOT_MEASURED),
])
def test_grade(args, expected):
    assert grade(*args) == expected


def test_grade_needs_a_claim_in_dkos_favour():
    with pytest.raises(ValueError, match="claimed"):
        grade(1.0, 0.9, 1.1, 0.5)


def test_spread_ratio_by_hand():
    r, lo, hi = stats.spread_ratio(0.05, 3, 0.01, 3)  # F(2, 2): 2.5 % and 97.5 % points 1/39 and 39
    assert (r, lo, hi) == pytest.approx((5.0, 5.0 / math.sqrt(39.0), 5.0 * math.sqrt(39.0)))
    assert all(math.isnan(x) for x in stats.spread_ratio(0.05, 1, 0.01, 3))


def test_bootstrap_median_ratio_by_hand():
    # per-seed budgets (multiples of C_ref): E2E 2, 4, 4; DKO 1, 1, 1. A resample's E2E median is 2
    # when it draws the first seed at least twice, P = 7/27 > 2.5 %, else 4: interval [2, 4]
    assert stats.bootstrap_median_ratio([2, 4, 4], [1, 1, 1]) == pytest.approx((4.0, 2.0, 4.0))
    inf = math.inf
    assert stats.bootstrap_median_ratio([inf, inf, inf], [1, 1, 1]) == (inf, inf, inf)
    assert stats.bootstrap_median_ratio([inf, inf, inf], [inf, inf, inf]) == (1.0, 1.0, 1.0)  # a tie


# ----------------------------------------------------------------------------- the table from a results tree
def _summary_rows(eval_mode, e2e, dko=DKO, fraction=1.0):
    """Summary rows of DKO and E2E as stats.summarize writes them, worked out by hand from per-seed values."""
    per_seed = [e2e[s] / dko[s] for s in dko]
    rows = []
    for method, values in (("dko", dko), ("e2e_scratch", e2e)):
        v = np.array(list(values.values()))
        ratio = (v.mean() / np.mean(list(dko.values())), min(per_seed), max(per_seed)) if method != "dko" else (1, 1, 1)
        rows.append({"method": method, "engine": "fast", "eval": eval_mode, "budget_axis": "flops",
                     "budget_fraction": fraction, "n_seeds": 3, "abs_rel_mean": v.mean(), "abs_rel_std": v.std(ddof=1),
                     "ratio_vs_dko": ratio[0], "ratio_ci_lo": ratio[1], "ratio_ci_hi": ratio[2], "ratio_n_seeds": 3})
    return rows


def _results_tree(root: Path, stability_e2e: dict) -> None:
    results = root / "results" / "default"
    results.mkdir(parents=True)
    rows = (_summary_rows("crop", stability_e2e) + _summary_rows("crop", CASES["above 1, below 2"][0], fraction=0.5)
            + _summary_rows("full_psf_noise", CASES["below 1"][0]))
    pd.DataFrame(rows).to_csv(results / "equal_budget_summary.csv", index=False)
    tta = [{"method": m, "engine": "fast", "eval": "crop", "axis": "flops", "metric": "abs_rel", "target_ratio": 1.25,
            "reference_value": 0.2, "threshold": 0.25, "budget_needed": need, "ci_lo": lo, "ci_hi": hi, "n_seeds": 3,
            "n_reached": 3, "n_resamples": 10, "per_seed": per_seed, "max_fraction": 4.0}
           for m, need, lo, hi, per_seed in (("dko", 1.0, 1.0, 1.0, "1,1,1"), ("e2e_scratch", 4.0, 2.0, 4.0, "2,4,4"))]
    pd.DataFrame(tta).to_csv(results / "time_to_accuracy.csv", index=False)
    costs = [{"method": m, "size": "paper", "seconds_per_iter": s, "peak_mem_mb": mb, "measured": False}
             for m, s, mb in (("dko_stage2", 1.0, 100.0), ("e2e_step", 2.0, 300.0), ("stage1_step", 1.0, 50.0))]
    pd.DataFrame(costs).to_csv(root / "results" / "costs.csv", index=False)


def _verdicts(markdown: str) -> dict:
    """``{claim: verdict cell}`` of the claims table."""
    rows = [line.strip("|").split(" | ") for line in markdown.splitlines() if line.startswith("| ")]
    return {r[0].strip(): r[-1].strip() for r in rows[1:]}


def test_claims_table_from_a_hand_made_results_tree(tmp_path):
    # crop at 1x: per-seed ratios 2.5-3.0 (above 2); full PSF + noise: 0.5-0.7 (below 1); stability: E2E's
    # spread across seeds is that of 0.50, 0.70, 0.90 (std 0.2) over DKO's 0.20, 0.25, 0.30 (std 0.05), 4x with
    # the F(2, 2) interval 4 / sqrt(39) = 0.64 to 4 sqrt(39) = 25: not significant
    _results_tree(tmp_path, CASES["above 2"][0])
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    e2e_s, stage2_s, stage1_s = (2.0 * paper["e2e"]["steps"], 1.0 * paper["dko"]["steps"],
                                 1.0 * paper["stage1"]["steps"])
    without, with_stage1 = e2e_s / stage2_s, e2e_s / (stage1_s + stage2_s)  # 200 and 1.98 with 50,000 / 500 / 50,000
    text = claims_table("default", tmp_path)
    assert text.startswith("## Results at a glance") and "**reproduced in direction, smaller** when" in text
    got = _verdicts(text)
    assert got["Accuracy at equal budget"] == "**reproduced** (against the claimed 2x)"
    assert got["Accuracy at equal budget, read as a camera would"] == "**reversed** (against the claimed 2x)"
    assert got["Faster training (time to accuracy)"] == "**reproduced** (direction only)"
    assert got["Computation, stage 2 alone (electronic network trained anyway)"].startswith(
        "**reproduced**" if without >= 100 else "**reproduced in direction, smaller**")
    assert got["Computation, stage 1 charged to DKO"].startswith(
        "**reproduced**" if with_stage1 >= 100 else "**reproduced in direction, smaller**")
    assert got["Memory"] == "**reproduced in direction, smaller** (against the claimed 100x)"  # 3x
    assert got["Stability"] == "**not reproduced** (direction only)"
    assert "E2E from scratch's AbsRel is 2.80x DKO's (95 % CI 2.50-3.00, 3 seeds) at 1x C_ref" in text
    assert "DKO significantly better at 0.5x, 1x; interval reaching 2x at 1x" in text
    assert "E2E's over DKO's 4.00x (95 % CI 2.00-4.00, paired over 3 seeds)" in text
    assert f"95 % CI {4 / math.sqrt(39):.2f}-{4 * math.sqrt(39):.2f}, F distribution" in text
    assert f"costs {with_stage1:.3g}x DKO's stage 1 + stage 2" in text
    # E2E 0.2, 1.2, 2.2 (std 1): a spread 20x DKO's, the interval 20 / sqrt(39) = 3.2 to 125 lies above 1
    steady = tmp_path / "steady"
    _results_tree(steady, {3: 0.2, 7: 1.2, 11: 2.2})
    spread = pd.read_csv(steady / "results" / "default" / "equal_budget_summary.csv")
    crop1 = spread[(spread["eval"] == "crop") & (spread["budget_fraction"] == 1.0)].set_index("method")["abs_rel_std"]
    lo = crop1["e2e_scratch"] / crop1["dko"] / math.sqrt(39)
    assert lo > 1
    assert _verdicts(claims_table("default", steady))["Stability"] == "**reproduced** (direction only)"


def test_missing_tables_name_the_file_and_the_command(tmp_path):
    text = claims_table("default", tmp_path)
    got = _verdicts(text)
    assert set(got.values()) == {NOT_MEASURED}
    assert ("not measured: `results/default/equal_budget_summary.csv` is missing; `snakemake --cores 4 "
            "results/default/equal_budget_summary.csv` makes it") in text
    assert "`results/default/time_to_accuracy.csv` is missing" in text and "`results/costs.csv` is missing" in text
    assert "--config profile=smoke" in claims_table("smoke", tmp_path)


def test_splice_claims_replaces_only_between_its_markers():
    text = f"intro\n{CLAIMS_START}\nold\n{CLAIMS_END}\n<!-- results:start -->\nkept\n<!-- results:end -->\n"
    out = splice_claims(text, "new table")
    assert out == f"intro\n{CLAIMS_START}\nnew table\n{CLAIMS_END}\n<!-- results:start -->\nkept\n<!-- results:end -->\n"
    with pytest.raises(ValueError, match="claims:start"):
        splice_claims("no markers", "x")


def test_render_script_splices_both_sections(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("render_readme", ROOT / "scripts" / "render_readme_results.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    readme = tmp_path / "README.md"
    readme.write_text(f"# t\n{CLAIMS_START}\n{CLAIMS_END}\nmiddle\n<!-- results:start -->\n<!-- results:end -->\n")
    monkeypatch.setattr(mod, "claims_table", lambda profile: "CLAIMS")
    monkeypatch.setattr(mod, "render", lambda profile: "RESULTS")
    assert mod.main(["--out", str(tmp_path / "out.md"), "--readme", str(readme)]) == 0
    assert readme.read_text() == (f"# t\n{CLAIMS_START}\nCLAIMS\n{CLAIMS_END}\nmiddle\n<!-- results:start -->\nRESULTS\n"
                                  "<!-- results:end -->\n")
    assert (tmp_path / "out.md").read_text() == "CLAIMS\nRESULTS"


# ----------------------------------------------------------------------------- the committed README
def _equal_budget_table(readme: str) -> pd.DataFrame:
    """E2E from scratch's rows of the README's equal-budget table (idealised crop evaluation)."""
    section = readme.split("### Equal budget (`equal_budget_summary.csv`, idealised crop evaluation", 1)[1]
    body = section.splitlines()
    first = next(i for i, line in enumerate(body) if line.startswith("| method |"))
    lines = []
    for line in body[first:]:
        if not line.startswith("|"):
            break
        lines.append(line)
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    table = pd.DataFrame(rows, columns=header)
    table = table[table["method"] == "e2e_scratch"]
    for col in ("budget_fraction", "ratio_vs_dko", "ratio_ci_lo", "ratio_ci_hi"):
        table[col] = pd.to_numeric(table[col].replace("n/a", float("nan")))  # n/a: DKO has no point at that budget
    return table


def test_readme_claims_table_is_near_the_top_and_agrees_with_the_equal_budget_table():
    readme = (ROOT / "README.md").read_text()
    lines = readme.splitlines()
    start = lines.index(CLAIMS_START)
    header = next(i for i, line in enumerate(lines) if line.startswith("| claim | the paper says"))
    assert start < header < 60 - 1  # the table starts within the README's first 60 lines
    assert lines.index("## Quick start") < start < lines.index("## The pipeline")
    table = _equal_budget_table(readme)
    assert table["engine"].nunique() == 1
    at_1x = table[table["budget_fraction"] == 1.0].iloc[0]
    row = next(line for line in lines if line.startswith("| Accuracy at equal budget |"))
    ratio, lo, hi = map(float, re.search(r"AbsRel is ([\d.]+)x DKO's \(95 % CI ([\d.]+)-([\d.]+)", row).groups())
    assert (ratio, lo, hi) == pytest.approx((at_1x["ratio_vs_dko"], at_1x["ratio_ci_lo"], at_1x["ratio_ci_hi"]),
                                            abs=0.006)
    by_hand = ("reproduced" if lo > 1 and hi >= 2 else "reproduced in direction, smaller" if lo > 1
               else "reversed" if hi < 1 else "not reproduced")
    assert f"**{by_hand}**" in row
    significant = sorted(table[table["ratio_ci_lo"] > 1]["budget_fraction"])
    listed = re.search(r"DKO significantly better at ([^;]+);", row).group(1)
    assert listed == (", ".join(f"{f:g}x" for f in significant) or "none")


def test_readme_catch_up_sentence_agrees_with_the_equal_budget_table():
    readme = (ROOT / "README.md").read_text()
    table = _equal_budget_table(readme).sort_values("budget_fraction")
    sentence = next(line for line in readme.splitlines() if line.startswith("Where E2E catches up"))
    significant = set(table[table["ratio_ci_lo"] > 1]["budget_fraction"])
    level_from = re.search(r"no longer significantly better from ([\d.]+)x on", sentence)
    if level_from:  # from there on, at every larger budget, the interval reaches 1
        f = float(level_from.group(1))
        assert not {s for s in significant if s >= f}
    else:  # the sentence says DKO is still significantly better at the largest budget
        assert "not within the ladder" in sentence or "still significantly better" in sentence
        assert table["budget_fraction"].max() in significant
    named = {float(x) for x in re.findall(r"from ([\d.]+)x on", sentence)}
    assert not named & significant


def test_a_cost_measured_once_is_not_a_finding_within_its_spread(tmp_path):
    # peak memory 103 MB against 100 MB in one measurement: inside x/1.1-x1.1 of 1, so no difference;
    # read with both bounds at the value (no spread) it would have been graded as the claim's direction
    from dkolib.study.readme_claims import SINGLE_SPREAD, grade

    _results_tree(tmp_path, CASES["above 2"][0])
    costs = tmp_path / "results" / "costs.csv"
    table = pd.read_csv(costs)
    table.loc[table["method"] == "e2e_step", "peak_mem_mb"] = 103.0
    table.to_csv(costs, index=False)
    assert _verdicts(claims_table("default", tmp_path))["Memory"] == "**not reproduced** (against the claimed 100x)"
    assert grade(1.03, 1.03, 1.03, 100.0) == "reproduced in direction, smaller"
    assert grade(1.03, 1.03 / SINGLE_SPREAD, 1.03 * SINGLE_SPREAD, 100.0) == "not reproduced"
