"""The README's equal-budget verdicts are computed: contrary tables flip every sentence."""

import pandas as pd
import pytest

from dkolib.study import equal_budget_text as ebt
from dkolib.study import stats
from dkolib.study.paths import ProfilePaths
from dkolib.study.protocol import METRICS
from dkolib.study.readme_results import render, verdicts

LADDER = (0.5, 1.0, 2.0)


def _row(method, seed, f, abs_rel, a1, rmse, ev="crop"):
    row = {m: 0.5 for m in METRICS}
    row.update({"method": method, "engine": "fast", "seed": seed, "eval": ev, "budget_axis": "flops",
                "budget_fraction": f, "budget_flops": f * 1e12, "budget_s": f * 50.0,
                "abs_rel": abs_rel, "a1": a1, "rmse": rmse})
    return row


def _runs(e2e_factor, noise_rows=False):
    """DKO's errors fall with budget (AbsRel 0.4, 0.3, 0.25 at 0.5x, 1x, 2x); E2E's errors are
    ``e2e_factor(fraction, metric)`` times DKO's, seed by seed (so every interval is the exact ratio).
    The electronic network's AbsRel at 1x is 0.21: DKO gets within 1.25x (0.2625) at 2x."""
    rows = []
    for seed in range(3):
        j = 1 + 0.01 * seed
        for f in LADDER:
            err = {"abs_rel": 0.2 * (1 + 0.5 / f) * j, "a1": 0.1 * j, "rmse": 4.0 * (1 + 0.5 / f) * j}
            rows.append(_row("dko", seed, f, err["abs_rel"], 1 - err["a1"], err["rmse"]))
            e2e = {m: e * e2e_factor(f, m) for m, e in err.items()}
            rows.append(_row("e2e_scratch", seed, f, e2e["abs_rel"], 1 - e2e["a1"], e2e["rmse"]))
            rows.append(_row("electronic", seed, f, 0.21 if f == 1.0 else 0.5, 0.9, 4.0))
            if noise_rows and f == LADDER[-1]:
                rows.append(_row("dko", seed, f, err["abs_rel"], 1 - err["a1"], err["rmse"], ev="full_psf_noise"))
                rows.append(_row("e2e_scratch", seed, f, e2e["abs_rel"], 1 - e2e["a1"], e2e["rmse"],
                                 ev="full_psf_noise"))
    return pd.DataFrame(rows)


def _claim(runs, ev="crop"):
    return ebt.claim_sentence(stats.error_ratios(runs, n_boot=200), ev)


def test_claim_holds_when_dko_is_3x_better_everywhere():
    text = _claim(_runs(lambda f, m: 3.0))
    assert "the claim holds at every compared budget on every metric" in text
    assert "The metrics agree at every budget point." in text
    assert "not reached" not in text and "only" not in text


def test_claim_fails_when_e2e_is_better():
    text = _claim(_runs(lambda f, m: 0.5))
    assert "the claimed size is not reached" in text and "E2E more accurate at 9 of 9 metric-budget pairs" in text
    text = _claim(_runs(lambda f, m: 1.5))  # DKO better, but by 1.5x: still not the claim
    assert "the claimed size is not reached" in text and "DKO better by less than 2x at 9 of 9" in text


def test_claim_holds_only_in_a_named_regime():
    text = _claim(_runs(lambda f, m: 3.0 if f == 1.0 else 1.5))
    assert "the claim holds only at some budgets: AbsRel at fast engine, FLOP budget at 1x;" in text
    assert "RMSE at fast engine, FLOP budget at 1x" in text


def test_disagreeing_metrics_are_named():
    text = _claim(_runs(lambda f, m: 0.5 if m == "rmse" else 3.0))
    assert "AbsRel at fast engine, FLOP budget at 0.5x, 1x, 2x" in text and "RMSE at no budget" in text
    assert "The metrics disagree at 3 of 3 budget points" in text
    assert "RMSE E2E more accurate (0.50, 0.50-0.50)" in text


def test_time_to_accuracy_sentence_names_who_gets_there_first():
    dko_first = ebt.tta_sentence(stats.time_to_accuracy(_runs(lambda f, m: 3.0), n_boot=200))
    assert "DKO needs 2x C_ref (95 % CI 2x-2x, 3 seeds)" in dko_first
    assert "E2E from scratch never within 2x (0 of 3 seeds reach it)" in dko_first
    assert "DKO gets there first in 1 of 1 settings, E2E from scratch in 0" in dko_first
    e2e_first = ebt.tta_sentence(stats.time_to_accuracy(_runs(lambda f, m: 0.5), n_boot=200))
    assert "E2E from scratch 0.5x C_ref" in e2e_first
    assert "DKO gets there first in 0 of 1 settings, E2E from scratch in 1" in e2e_first


def test_verdicts_flip_with_the_tables_and_cover_the_noisy_evaluation():
    def paragraph(factor):
        runs = _runs(factor, noise_rows=True)
        return verdicts(stats.summarize(runs, n_boot=200), {}, tta=stats.time_to_accuracy(runs, n_boot=200),
                        ratios=stats.error_ratios(runs, n_boot=200))

    good, bad = paragraph(lambda f, m: 3.0), paragraph(lambda f, m: 0.5)
    assert "Idealised crop evaluation, checked on AbsRel, delta < 1.25, RMSE" in good
    assert "Full-PSF evaluation with sensor noise, checked on" in good
    assert good.count("the claim holds at every compared budget") == 2
    assert bad.count("the claimed size is not reached") == 2 and "holds at every" not in bad


def test_claim_from_the_summary_alone_uses_absrel():
    rows = []
    for method, r, lo, hi in (("dko", 1.0, 1.0, 1.0), ("e2e_scratch", 3.0, 2.5, 3.5)):
        rows.append({"method": method, "engine": "fast", "eval": "crop", "budget_axis": "wall",
                     "budget_fraction": 1.0, "n_seeds": 3, "abs_rel_mean": 0.2 * r, "abs_rel_std": 0.01,
                     "ratio_vs_dko": r, "ratio_ci_lo": lo, "ratio_ci_hi": hi})
    text = verdicts(pd.DataFrame(rows), {})
    assert "checked on AbsRel (1 budget point): the claim holds at every compared budget" in text
    rows[1].update(ratio_vs_dko=1.2, ratio_ci_lo=1.1, ratio_ci_hi=1.3)
    assert "the claimed size is not reached" in verdicts(pd.DataFrame(rows), {})


@pytest.mark.parametrize("ratios,expected", [
    ({"without_stage1": 300.0, "with_stage1": 150.0}, "holds even when stage 1 is charged"),
    ({"without_stage1": 111.0, "with_stage1": 3.2}, "holds only when the electronic network is trained anyway"),
    ({"without_stage1": 40.0, "with_stage1": 3.2}, "fails even when stage 1 is not charged"),
])
def test_cost_sentence_follows_the_ratios(ratios, expected):
    assert expected in ebt.cost_sentence(ratios)
    assert expected in verdicts(None, {"paper": 1.1}, ratios)


def test_render_shows_references_and_time_to_accuracy(tmp_path):
    paths = ProfilePaths("default", tmp_path)
    (paths.results / "stage1").mkdir(parents=True)
    runs = _runs(lambda f, m: 3.0)
    runs.to_csv(paths.results / "equal_budget.csv", index=False)
    stats.summarize(runs, n_boot=200).to_csv(paths.results / "equal_budget_summary.csv", index=False)
    pd.DataFrame({"model": ["electronic", "constant"], "split": ["synthetic_test"] * 2, "abs_rel": [0.163, 0.525],
                  "a1": [0.852, 0.243], "rmse": [6.0, 14.6]}).to_csv(paths.stage1 / "metrics.csv", index=False)
    text = render("default", tmp_path)
    assert "| constant predictor (`stage1/metrics.csv`, synthetic_test) | 0.525 | 0.243 | 14.6 |" in text
    assert "| electronic network at 1x C_ref (fast engine, FLOP budget) | 0.21 | 0.9 | 4 |" in text
    assert "| fast | flops | dko | 1x [1x, 1x] | 2x [2x, 2x] | never <= 2x (0/3) |" in text
    assert "**Time to accuracy**" in text and "the claim holds at every compared budget" in text


def test_stability_compares_only_budgets_both_methods_have():
    from dkolib.study.equal_budget_text import stability_sentence

    def row(method, frac, std, n=3):
        return {"method": method, "engine": "fast", "eval": "crop", "budget_axis": "flops",
                "budget_fraction": frac, "n_seeds": n, "abs_rel_std": std}

    # E2E has a huge spread at 0.25x, where DKO has no point: it must not count
    summary = pd.DataFrame([row("e2e_scratch", 0.25, 0.9), row("e2e_scratch", 1.0, 0.01), row("dko", 1.0, 0.05),
                            row("e2e_scratch", 2.0, 0.03), row("dko", 2.0, 0.07)])
    text = stability_sentence(summary)
    assert "E2E has the smaller spread" in text and "2 budget points" in text and "0.25x" not in text
    flipped = summary.assign(abs_rel_std=[0.9, 0.2, 0.05, 0.2, 0.07])
    assert "DKO has the smaller spread" in stability_sentence(flipped)
    assert stability_sentence(summary[summary["method"] == "dko"]) == ""
    # significance by hand: with 3 seeds each the F(2, 2) 97.5 % quantile is 39, so a ratio of standard
    # deviations r is significant only when r / sqrt(39) > 1, i.e. r > 6.24: 0.2 / 0.05 = 4 is not, 0.2 / 0.02 = 10 is
    assert "significant at 0 of 2 budget points" in stability_sentence(flipped)
    steep = summary.assign(abs_rel_std=[0.9, 0.2, 0.02, 0.2, 0.07])
    assert "significant at 1 of 2 budget points" in stability_sentence(steep)
