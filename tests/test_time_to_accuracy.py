"""Time to accuracy: the budget each method needs to come within r x the electronic network.

Hand-built runs tables whose answers are read off by eye (per-seed first ladder points, medians
and bootstrap bounds worked out in the comments), plus contrary tables that must change them.
"""

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from dkolib.study import stats
from dkolib.study.protocol import METRICS

C_FLOPS, C_S = 1e12, 100.0  # what C_ref is on each axis in these tables


def _row(method, seed, fraction, abs_rel=0.3, a1=0.7, rmse=5.0, engine="fast", ev="crop", axis="flops"):
    row = {m: 0.5 for m in METRICS}
    row.update({"method": method, "engine": engine, "seed": seed, "eval": ev, "budget_axis": axis,
                "budget_fraction": fraction, "budget_flops": fraction * C_FLOPS, "budget_s": fraction * C_S,
                "abs_rel": abs_rel, "a1": a1, "rmse": rmse})
    return row


def _electronic(ref=(0.18, 0.20, 0.22), a1=(0.8, 0.8, 0.8), ladder=(0.5, 1.0, 2.0), **kw):
    """Electronic rows: at fraction 1.0 the given per-seed values (AbsRel mean 0.2, a1 mean 0.8);
    elsewhere values far from them, so a reference read at the wrong fraction shows."""
    rows = []
    for seed in range(3):
        for f in ladder:
            at_ref = np.isclose(f, 1.0)
            rows.append(_row("electronic", seed, f, abs_rel=ref[seed] if at_ref else 0.9,
                             a1=a1[seed] if at_ref else 0.1, **kw))
    return rows


def _curves(method, per_seed, ladder=(0.5, 1.0, 2.0), metric="abs_rel", **kw):
    return [_row(method, seed, f, **{metric: v}, **kw) for seed, values in enumerate(per_seed)
            for f, v in zip(ladder, values)]


def _one(tta, method, metric="abs_rel", target=1.5, **where):
    sel = tta[(tta["method"] == method) & (tta["metric"] == metric) & np.isclose(tta["target_ratio"], target)]
    for k, v in where.items():
        sel = sel[sel[k] == v]
    assert len(sel) == 1, sel
    return sel.iloc[0]


# AbsRel reference 0.2 -> threshold 0.3 at 1.5x, 0.22 at 1.1x (values kept clear of the thresholds)
DKO = [(0.29, 0.25, 0.20),   # 1.5x reached at 0.5; 1.1x at 2
       (0.28, 0.21, 0.19),   # 1.5x at 0.5; 1.1x at 1
       (0.40, 0.35, 0.29)]   # 1.5x at 2;   1.1x never


def test_median_over_seeds_of_the_first_ladder_point_reached():
    runs = pd.DataFrame(_electronic() + _curves("dko", DKO))
    tta = stats.time_to_accuracy(runs, targets=(1.5, 1.1), metrics=("abs_rel",), n_boot=500)
    r = _one(tta, "dko", target=1.5)
    assert r["reference_value"] == pytest.approx(0.2) and r["threshold"] == pytest.approx(0.3)
    assert r["per_seed"] == "0.5,0.5,2"
    assert r["budget_needed"] == 0.5 and r["n_reached"] == 3 and r["n_seeds"] == 3
    # resampled medians are 0.5 unless two or three draws are the '2' seed: P = 7/27 > 2.5 %
    assert (r["ci_lo"], r["ci_hi"]) == (0.5, 2.0)
    assert r["budget_needed_flops"] == pytest.approx(0.5 * C_FLOPS)
    assert r["budget_needed_s"] == pytest.approx(0.5 * C_S)
    assert r["max_fraction"] == 2.0 and r["n_resamples"] == 10
    # 1.1x: per seed 2, 1, never -> median 2; two or more 'never' draws (P = 7/27) -> open upper bound
    r = _one(tta, "dko", target=1.1)
    assert r["per_seed"] == "2,1,inf" and r["budget_needed"] == 2.0 and r["n_reached"] == 2
    assert r["ci_lo"] == 1.0 and math.isnan(r["ci_hi"])


def test_never_within_the_ladder_is_nan_with_no_seed_reaching():
    runs = pd.DataFrame(_electronic() + _curves("e2e_scratch", [(0.5, 0.45, 0.4)] * 3))
    r = _one(stats.time_to_accuracy(runs, metrics=("abs_rel",), n_boot=200), "e2e_scratch")
    assert math.isnan(r["budget_needed"]) and r["n_reached"] == 0
    assert math.isnan(r["ci_lo"]) and math.isnan(r["ci_hi"]) and math.isnan(r["budget_needed_flops"])
    assert r["per_seed"] == "inf,inf,inf"


def test_a1_is_higher_is_better():
    # reference a1 0.8 -> 1.25x target is a1 >= 0.64; the curve rises 0.5 -> 0.65 -> 0.9
    runs = pd.DataFrame(_electronic() + _curves("dko", [(0.5, 0.65, 0.9)] * 3, metric="a1"))
    r = _one(stats.time_to_accuracy(runs, targets=(1.25,), metrics=("a1",), n_boot=200), "dko", "a1", 1.25)
    assert r["threshold"] == pytest.approx(0.8 / 1.25)
    assert r["budget_needed"] == 1.0  # read as "lower is better" it would be 0.5
    falling = pd.DataFrame(_electronic() + _curves("dko", [(0.9, 0.6, 0.5)] * 3, metric="a1"))
    r = _one(stats.time_to_accuracy(falling, targets=(1.25,), metrics=("a1",), n_boot=200), "dko", "a1", 1.25)
    assert r["budget_needed"] == 0.5


def test_reference_is_electronic_at_one_c_ref_same_engine_axis_and_eval():
    rows = _electronic() + _curves("dko", DKO)
    rows += [dict(r, eval="full_psf", abs_rel=5.0) for r in _electronic()]  # must not enter the crop reference
    rows += _electronic(ref=(0.1, 0.1, 0.1), engine="reference") + _curves("dko", DKO, engine="reference")
    tta = stats.time_to_accuracy(pd.DataFrame(rows), targets=(1.5,), metrics=("abs_rel",), n_boot=200)
    fast = _one(tta, "dko", engine="fast", eval="crop")
    ref = _one(tta, "dko", engine="reference", eval="crop")
    assert fast["reference_value"] == pytest.approx(0.2) and ref["reference_value"] == pytest.approx(0.1)
    # reference engine's target 0.15: DKO's seeds never get there
    assert fast["budget_needed"] == 0.5 and math.isnan(ref["budget_needed"])
    # each eval mode is measured against the electronic rows of that mode
    assert _one(tta, "electronic", engine="fast", eval="full_psf")["reference_value"] == pytest.approx(5.0)


def test_noisy_targets_are_ideal_optics_under_the_same_noise():
    """Under noise the reference is the electronic rows of ``full_psf_noise`` (ideal optics with that
    noise, 0.3 here): DKO's noisy curves (0.44, 0.40, 0.35) come within 1.5x of it (0.45) at 0.5x,
    where against the noiseless 0.2 (target 0.3) they would never arrive."""
    noisy_dko = [(0.44, 0.40, 0.35)] * 3
    rows = _electronic() + _curves("dko", DKO)
    rows += _electronic(ref=(0.3, 0.3, 0.3), ev="full_psf_noise") + _curves("dko", noisy_dko, ev="full_psf_noise")
    tta = stats.time_to_accuracy(pd.DataFrame(rows), targets=(1.5,), metrics=("abs_rel",), n_boot=200)
    r = _one(tta, "dko", eval="full_psf_noise")
    assert r["reference_value"] == pytest.approx(0.3) and r["threshold"] == pytest.approx(0.45)
    assert r["budget_needed"] == 0.5 and r["n_reached"] == 3
    # the old rule (noiseless crop reference) on the same curves: never within the ladder
    old = pd.DataFrame(_electronic() + _curves("dko", noisy_dko, ev="full_psf_noise"))
    r_old = _one(stats.time_to_accuracy(old, targets=(1.5,), metrics=("abs_rel",), n_boot=200), "dko",
                 eval="full_psf_noise")
    assert r_old["reference_value"] == pytest.approx(0.2) and math.isnan(r_old["budget_needed"])


def test_contrary_numbers_change_the_answer():
    base = pd.DataFrame(_electronic() + _curves("dko", DKO))
    better_reference = pd.DataFrame(_electronic(ref=(0.15, 0.15, 0.15)) + _curves("dko", DKO))  # target 0.225
    slower = pd.DataFrame(_electronic() + _curves("dko", [(0.4, 0.29, 0.2)] * 3))
    need = [_one(stats.time_to_accuracy(t, metrics=("abs_rel",), n_boot=200), "dko")["budget_needed"]
            for t in (base, better_reference, slower)]
    assert need[0] == 0.5
    assert need[1] == 2.0  # per seed 2, 1, never -> 2
    assert need[2] == 1.0


def test_missing_reference_is_a_clear_error():
    runs = pd.DataFrame(_curves("dko", DKO))
    with pytest.raises(ValueError, match="electronic"):
        stats.time_to_accuracy(runs)
    with pytest.raises(ValueError, match="target ratio"):
        stats.threshold_for(0.2, 0.5, "abs_rel")


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_distinct_resamples_counted_by_enumeration(n):
    multisets = set(itertools.combinations_with_replacement(range(n), n))
    assert stats.n_distinct_resamples(n) == len(multisets)


def test_summary_reports_the_resamples_of_its_interval():
    rows = []
    for seed in range(3):
        for method, v in (("dko", 0.2), ("e2e_scratch", 0.4)):
            rows.append(_row(method, seed, 1.0, abs_rel=v + 0.01 * seed))
    rows.append(_row("e2e_warm", 0, 1.0))  # one seed: one resample
    summ = stats.summarize(pd.DataFrame(rows), n_boot=100).set_index("method")
    assert summ.loc["e2e_scratch", "ratio_n_resamples"] == 10
    assert summ.loc["e2e_warm", "ratio_n_resamples"] == 1


def test_bootstrap_median_keeps_never_as_inf():
    med, lo, hi = stats.bootstrap_median([1.0, math.inf, math.inf], n_boot=300)
    assert med == math.inf and hi == math.inf and lo == 1.0  # three draws of 1.0: P = 1/27 > 2.5 %
