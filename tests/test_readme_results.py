"""The README's results section is computed from the result tables, by stated rules."""

import pandas as pd
import pytest

from dkolib.study.paths import ProfilePaths
from dkolib.study.readme_results import END, START, render, splice, verdicts


def _summary(ratio, lo, hi, std_dko=0.01, std_e2e=0.05):
    rows = []
    for method, r, std in (("dko", 1.0, std_dko), ("e2e_scratch", ratio, std_e2e)):
        rows.append({"method": method, "engine": "fast", "eval": "crop", "budget_axis": "wall",
                     "budget_fraction": 1.0, "n_seeds": 3, "abs_rel_mean": 0.2 * r, "abs_rel_std": std,
                     "ratio_vs_dko": r, "ratio_ci_lo": lo if method != "dko" else 1.0,
                     "ratio_ci_hi": hi if method != "dko" else 1.0})
    return pd.DataFrame(rows)


def test_splice_replaces_only_between_markers():
    text = f"intro\n{START}\nold numbers\n{END}\noutro\n"
    out = splice(text, "new numbers")
    assert out.startswith("intro\n") and out.endswith("\noutro\n")
    assert "old numbers" not in out and "new numbers" in out


def test_splice_without_markers_is_an_error():
    with pytest.raises(ValueError, match="markers"):
        splice("no markers here", "x")


@pytest.mark.parametrize("ratio,lo,hi,expected", [
    (2.0, 1.5, 2.5, "DKO is more accurate"),
    (0.5, 0.4, 0.7, "E2E is more accurate"),
    (1.1, 0.8, 1.4, "no significant difference"),
])
def test_accuracy_verdict_follows_the_interval(ratio, lo, hi, expected):
    assert expected in verdicts(_summary(ratio, lo, hi), {})


def test_stability_verdict_names_the_smaller_spread():
    assert "DKO is the more stable" in verdicts(_summary(2.0, 1.5, 2.5, std_dko=0.01, std_e2e=0.05), {})
    assert "E2E is the more stable" in verdicts(_summary(2.0, 1.5, 2.5, std_dko=0.09, std_e2e=0.05), {})


def test_render_reads_tables_from_a_results_tree(tmp_path):
    paths = ProfilePaths("default", tmp_path)
    paths.results.mkdir(parents=True)
    pd.DataFrame({"design": ["dko", "dko"], "eval": ["crop", "full_psf"], "abs_rel": [0.123, 0.456]}).to_csv(
        paths.results / "physical_eval.csv", index=False)
    text = render("default", tmp_path)
    assert "0.123" in text and "0.456" in text
    assert "equal_budget_summary" not in text  # absent tables are left out, not invented


def test_whole_run_ratios_by_hand():
    from dkolib.study.readme_results import whole_run_ratios

    costs = pd.DataFrame({"method": ["dko_stage2", "e2e_step", "stage1_step"], "size": ["paper"] * 3,
                          "seconds_per_iter": [2.0, 3.0, 1.0]})
    r = whole_run_ratios(costs, stage1_steps=100, dko_steps=10, e2e_steps=100)
    assert r["without_stage1"] == pytest.approx(300 / 20)
    assert r["with_stage1"] == pytest.approx(300 / 120)


def test_catch_up_sentence_reads_the_catchup_table():
    catchup = pd.DataFrame([
        {"method": "e2e_scratch", "engine": "fast", "eval": "crop", "budget_axis": "flops",
         "first_fraction_mean": float("nan"), "first_fraction_ci": 2.0, "ratio_at_largest": 1.109},
        {"method": "e2e_scratch", "engine": "reference", "eval": "crop", "budget_axis": "flops",
         "first_fraction_mean": 2.0, "first_fraction_ci": 2.0, "ratio_at_largest": 0.894},
        {"method": "e2e_scratch", "engine": "reference", "eval": "full_psf", "budget_axis": "flops",
         "first_fraction_mean": 0.5, "first_fraction_ci": 0.5, "ratio_at_largest": 0.5},
    ])
    text = verdicts(_summary(2.0, 1.5, 2.5), {}, catchup=catchup)
    assert ("fast engine (flops): its mean stays above DKO's, DKO is no longer significantly better from 2x "
            "(ratio 1.11 at the largest budget)") in text
    assert "reference engine (flops): its mean reaches DKO's at 2x" in text
    assert "0.5x" not in text  # the full-PSF row is not part of the idealised comparison
