"""The README's results section is computed from the result tables, by stated rules."""

from pathlib import Path

import pandas as pd
import pytest

from dkolib.study.paths import ProfilePaths
from dkolib.study import readme_results as rr
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
    assert "DKO has the smaller spread" in verdicts(_summary(2.0, 1.5, 2.5, std_dko=0.01, std_e2e=0.05), {})
    assert "E2E has the smaller spread" in verdicts(_summary(2.0, 1.5, 2.5, std_dko=0.09, std_e2e=0.05), {})


def test_render_reads_tables_from_a_results_tree(tmp_path):
    paths = ProfilePaths("default", tmp_path)
    paths.results.mkdir(parents=True)
    pd.DataFrame({"design": ["dko", "dko"], "eval": ["crop", "full_psf"], "abs_rel": [0.123, 0.456]}).to_csv(
        paths.results / "physical_eval.csv", index=False)
    text = render("default", tmp_path)
    assert "0.123" in text and "0.456" in text
    assert "equal_budget_summary" not in text  # absent tables are left out, not invented


def test_whole_run_ratios_by_hand():
    from dkolib.study.readme_claims import whole_run_ratios

    costs = pd.DataFrame({"method": ["dko_stage2", "e2e_step", "stage1_step"], "size": ["paper"] * 3,
                          "seconds_per_iter": [2.0, 3.0, 1.0]})
    r = whole_run_ratios(costs, stage1_steps=100, dko_steps=10, e2e_steps=100)
    assert r["without_stage1"] == pytest.approx(300 / 20)
    assert r["with_stage1"] == pytest.approx(300 / 120)


def test_catch_up_sentence_reads_the_catchup_table():
    # fractions as stats.catch_up defines them: from there on, at every larger budget of the ladder
    catchup = pd.DataFrame([
        {"method": "e2e_scratch", "engine": "fast", "eval": "crop", "budget_axis": "flops",
         "first_fraction_mean": float("nan"), "first_fraction_ci": 2.0, "ratio_at_largest": 1.109},
        {"method": "e2e_scratch", "engine": "reference", "eval": "crop", "budget_axis": "flops",
         "first_fraction_mean": 2.0, "first_fraction_ci": 2.0, "ratio_at_largest": 0.894},
        {"method": "e2e_scratch", "engine": "reference", "eval": "full_psf", "budget_axis": "flops",
         "first_fraction_mean": 0.5, "first_fraction_ci": 0.5, "ratio_at_largest": 0.5},
        {"method": "e2e_scratch", "engine": "slow", "eval": "crop", "budget_axis": "flops",
         "first_fraction_mean": float("nan"), "first_fraction_ci": float("nan"), "ratio_at_largest": 1.2},
    ])
    text = verdicts(_summary(2.0, 1.5, 2.5), {}, catchup=catchup)
    assert ("fast engine (flops): its mean is still above DKO's at the largest budget, DKO is no longer "
            "significantly better from 2x on (ratio 1.11 at the largest budget)") in text
    assert "reference engine (flops): its mean is at or below DKO's from 2x on" in text
    assert ("slow engine (flops): not within the ladder: at its largest budget E2E's AbsRel is still 1.20x DKO's, "
            "DKO significantly better") in text
    assert "0.5x" not in text  # the full-PSF row is not part of the idealised comparison


def test_physical_sentence_names_the_best_dko_design_and_the_ideal_optics_bound():
    rows = []
    table = {"electronic": (0.2, 0.2, 0.2), "dko": (0.21, 0.25, 0.5), "dko_finetune_psf": (0.3, 0.22, 0.4),
             "e2e": (0.4, 0.45, 0.6), "ideal_optics": (0.2, 0.2, 0.3)}
    for design, values in table.items():
        for mode, v in zip(("crop", "full_psf", "full_psf_noise"), values):
            rows.append({"design": design, "eval": mode, "abs_rel": v})
    text = rr.physical_sentence(pd.DataFrame(rows))
    assert "`crop`: best DKO design `dko` at 0.21 (1.05x the electronic network; E2E 0.4)" in text
    assert "`full_psf`: best DKO design `dko_finetune_psf` at 0.22 (1.1x" in text
    assert "`full_psf_noise`: best DKO design `dko_finetune_psf` at 0.4 (2x" in text
    assert "ideal optics 0.3, 1.5x" in text


def test_physical_sentence_reads_the_whole_sensor_against_the_bound_there():
    """Hand table with the whole-sensor modes: the sensor-tuned design wins there, and its ratio to the
    ideal-optics bound is taken in the same mode; a design without sensor rows is skipped there."""
    rows = []
    table = {"electronic": (0.2, 0.2, 0.2, 0.2), "dko": (0.21, 0.5, 1.5, 1.8),
             "dko_finetune_sensor": (0.3, 0.4, 0.28, 0.33), "e2e_4x": (0.3, 0.35, 0.5, 0.8),
             "e2e_4x_finetune_sensor": (0.5, 0.45, 0.4, 0.44), "ideal_optics": (0.2, 0.25, 0.2, 0.275)}
    for design, values in table.items():
        for mode, v in zip(("crop", "full_psf_noise", "sensor", "sensor_noise"), values):
            rows.append({"design": design, "eval": mode, "abs_rel": v})
    text = rr.physical_sentence(pd.DataFrame(rows))
    assert "`sensor_noise`: best DKO design `dko_finetune_sensor` at 0.33 (1.65x the electronic network" in text
    assert "`e2e_4x` 0.8, `e2e_4x_finetune_sensor` 0.44" in text
    assert "ideal optics 0.275, 1.38x; the best DKO design is 1.2x that bound" in text
    assert "`full_psf_noise`: best DKO design `dko_finetune_sensor` at 0.4 (2x" in text


def test_tolerance_section_names_the_design_that_degrades_least(tmp_path):
    rows = [{"design": "electronic", "perturbation": "none", "level": 0.0, "unit": "", "draw": 0, "abs_rel": 0.2}]
    for design, base, rise in (("dko", 0.25, 0.01), ("e2e", 0.3, 0.1)):
        rows.append({"design": design, "perturbation": "none", "level": 0.0, "unit": "", "draw": 0, "abs_rel": base})
        for draw, jitter in enumerate((-0.002, 0.0, 0.002)):
            rows.append({"design": design, "perturbation": "radius_random", "level": 5.0, "unit": "nm",
                         "draw": draw, "abs_rel": base + rise + jitter})
    (tmp_path / "config").mkdir()
    results = tmp_path / "results" / "default"
    results.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(results / "tolerances.csv", index=False)
    text = rr.tolerance_section(ProfilePaths("default", tmp_path))
    assert "| radius_random 5 nm | 0.26 (+0.010 [+0.005, +0.015]) | 0.4 (+0.100 [+0.095, +0.105]) |" in text
    assert "`dko` degrades least" in text and "References: electronic 0.2" in text
    assert "Lowest AbsRel under an error: `dko` in 1 of 1" in text


def test_as_fabricated_section_reads_the_light_ratio_per_design(tmp_path):
    rows = [{"design": d, "reading": r, "light_crop": light, "corr": 0.9, "kernel_err": 0.1, "abs_rel_crop": 0.2,
             "abs_rel_full_psf_noise": 0.3, "designed_cell_model": "bandlimited", "designed_library": "old.csv"}
            for d, r, light in (("dko", "as_designed", 0.25), ("dko", "staircase", 0.2), ("dko", "as_fabricated", 0.15),
                                ("e2e", "as_designed", 0.1), ("e2e", "as_fabricated", 0.08))]
    (tmp_path / "config").mkdir()
    results = tmp_path / "results" / "default"
    results.mkdir(parents=True)
    assert rr.as_fabricated_section(ProfilePaths("default", tmp_path)) == ""  # no table, no section
    pd.DataFrame(rows).to_csv(results / "as_fabricated.csv", index=False)
    (results / "stage1").mkdir()
    pd.DataFrame([{"model": "electronic", "split": "synthetic_test", "abs_rel": 0.18},
                  {"model": "constant", "split": "synthetic_test", "abs_rel": 0.52},
                  {"model": "constant", "split": "motorcycle", "abs_rel": 0.19}]).to_csv(
        results / "stage1" / "metrics.csv", index=False)
    text = rr.as_fabricated_section(ProfilePaths("default", tmp_path))
    assert "dko's light in the crop is 0.60x its designed; e2e's light in the crop is 0.80x its designed." in text
    assert "References (AbsRel, test split): electronic 0.18, constant predictor 0.52." in text
    assert "worse than the constant predictor" not in text  # 0.3 < 0.52
    frame = pd.DataFrame(rows)
    frame.loc[(frame["design"] == "e2e") & (frame["reading"] == "as_fabricated"), "abs_rel_full_psf_noise"] = 0.6
    frame.to_csv(results / "as_fabricated.csv", index=False)
    text = rr.as_fabricated_section(ProfilePaths("default", tmp_path))
    assert "Under sensor noise, as fabricated, e2e read worse than the constant predictor." in text
    assert "| dko | staircase | 0.2 | 0.9 | 0.1 | 0.2 | 0.3 |" in text and "cells `bandlimited`" in text


def test_cell_pitch_section_reads_the_models_distance_from_the_lattice(tmp_path):
    (tmp_path / "config").mkdir()
    results = tmp_path / "results" / "default"
    results.mkdir(parents=True)
    assert rr.cell_pitch_section(ProfilePaths("default", tmp_path)) == ""
    pd.DataFrame([{"cell_model": m, "grid": g, "pitch_m": p, "n_cells": n, "light_crop": 0.2, "rel_psf_err": e,
                   "corr": 0.99, "kernel_err": 0.1, "seconds": 1.0}
                  for m, g, p, n, e in (("staircase", "lattice", 3e-7, 2141, 0.0), ("staircase", "cells/1", 2.5e-6, 257, 0.005),
                                        ("bandlimited", "cells/1", 2.5e-6, 257, 0.58))]).to_csv(results / "cell_pitch.csv",
                                                                                                  index=False)
    text = rr.cell_pitch_section(ProfilePaths("default", tmp_path))
    assert "the staircase model is 0.5 % from the lattice, the band-limited one 58 %." in text
    assert "| bandlimited | cells/1 | 2.50e-06 | 0.2 | 0.58 | 0.99 | 0.1 |" in text


def test_operating_point_sentence_reports_spread_and_disagreeing_metrics():
    rows = []
    for w, abs_rel, a1, rmse in ((0.25, 0.30, 0.5, 10.0), (0.5, 0.33, 0.6, 9.0), (2.0, 0.36, 0.7, 8.0)):
        rows.append({"design": "dko", "leakage_weight": w, "eval": "full_psf_noise", "abs_rel": abs_rel,
                     "a1": a1, "rmse": rmse, "profile_weight": w == 0.5})
    text = rr.operating_point_sentence(pd.DataFrame(rows), pd.Series({"full_psf_noise": 0.25}))
    assert "spans 0.3-0.36 across the weights (20 % of the best): lowest at weight 0.25" in text
    assert "delta < 1.25 is highest at weight 2 and RMSE lowest at weight 2" in text
    assert "The profile uses weight 0.5." in text and "ideal optics reads 0.25" in text


def test_operating_point_keeps_the_profile_weight_unless_an_interval_says_otherwise():
    def table(ci_hi_025):
        rows = []
        for w, abs_rel, diff, lo, hi in ((0.25, 0.30, -0.03, -0.06, ci_hi_025), (0.5, 0.33, 0.0, 0.0, 0.0),
                                          (2.0, 0.36, 0.03, 0.01, 0.05)):
            rows.append({"design": "dko", "leakage_weight": w, "eval": "full_psf_noise", "abs_rel": abs_rel,
                         "a1": 0.5, "rmse": 9.0, "profile_weight": w == 0.5, "noisy_abs_rel_minus_profile": diff,
                         "diff_ci_lo": lo, "diff_ci_hi": hi, "n_images": 100})
        return pd.DataFrame(rows)

    tie = rr.operating_point_sentence(table(0.01))  # 0.25 is lower, but its interval reaches above 0
    assert "no weight reads significantly better than the profile's (closest: weight 0.25" in tie
    assert "keeps its weight" in tie and "100 images" in tie
    better = rr.operating_point_sentence(table(-0.005))
    assert "weight 0.25 reads significantly better than the profile's" in better and "keeps" not in better


def test_paired_difference_interval_by_hand():
    from dkolib.study.stats import paired_difference_ci

    mean, lo, hi = paired_difference_ci([1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0], n_boot=4000)
    assert mean == pytest.approx(1.5)  # (0 + 1 + 2 + 3) / 4
    assert 0.0 <= lo < 1.5 < hi <= 3.0
    same = paired_difference_ci([0.3, 0.5, 0.7], [0.3, 0.5, 0.7])
    assert same == (0.0, 0.0, 0.0)  # identical reads: no difference, no spread
    with pytest.raises(ValueError, match="same non-zero length"):
        paired_difference_ci([1.0, 2.0], [1.0])


def test_operating_point_differences_are_paired_against_the_profile_weight():
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "scripts" / "operating_point.py"
    spec = importlib.util.spec_from_file_location("operating_point", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    base = [0.30, 0.40, 0.50, 0.35]
    images = {0.5: base, 0.25: [v - 0.05 for v in base], 2.0: [0.31, 0.38, 0.52, 0.36]}
    d = mod.noisy_differences(images, 0.5, n_boot=500).set_index("leakage_weight")
    assert d.loc[0.5, "noisy_abs_rel_minus_profile"] == 0.0 and not d.loc[0.5, "significantly_better"]
    # every image 0.05 better: the interval collapses onto -0.05, below 0
    assert d.loc[0.25, "noisy_abs_rel_minus_profile"] == pytest.approx(-0.05)
    assert d.loc[0.25, "diff_ci_hi"] == pytest.approx(-0.05) and d.loc[0.25, "significantly_better"]
    # mixed: +0.01, -0.02, +0.02, +0.01 -> mean +0.005, interval straddles 0
    assert d.loc[2.0, "noisy_abs_rel_minus_profile"] == pytest.approx(0.005)
    assert d.loc[2.0, "diff_ci_lo"] < 0 < d.loc[2.0, "diff_ci_hi"] and not d.loc[2.0, "significantly_better"]
    assert (d["n_images"] == 4).all()


def test_optics_aware_section_compares_the_stage1s_at_each_distance(tmp_path):
    (tmp_path / "config").mkdir()
    dko = tmp_path / "results" / "default" / "dko"
    dko.mkdir(parents=True)
    assert rr.optics_aware_section(ProfilePaths("default", tmp_path)) == ""
    base = {"n_cells": 257, "passband": "square", "split": "val", "constant_abs_rel": 0.5}
    rows = [{**base, "sensor_distance_m": 0.0025, "stage1": "electronic", "passband_weight": 0.0,
             "out_of_band_fraction": 0.0},
            {**base, "sensor_distance_m": 0.01, "stage1": "electronic", "passband_weight": 0.0,
             "out_of_band_fraction": 0.34, "electronic_abs_rel": 0.18, "dko_corr_elem": 0.78, "dko_err_elem": 0.62,
             "dko_light_crop": 0.18, "dko_abs_rel_crop": 0.2, "dko_abs_rel_full_psf_noise": 1.3},
            {**base, "sensor_distance_m": 0.01, "stage1": "optics_aware", "passband_weight": 1.0,
             "out_of_band_fraction": 0.002, "electronic_abs_rel": 0.24, "dko_corr_elem": 0.98, "dko_err_elem": 0.21,
             "dko_light_crop": 0.2, "dko_abs_rel_crop": 0.25, "dko_abs_rel_full_psf_noise": 0.74}]
    pd.DataFrame(rows).to_csv(dko / "optics_aware_stage1.csv", index=False)
    text = rr.optics_aware_section(ProfilePaths("default", tmp_path))
    assert "At 2.5 mm (the profile's geometry) every electronic kernel is inside the passband" in text
    assert ("At 10 mm the optics-aware stage 1 (weight 1) moves the kernels' out-of-band energy from 0.34 to "
            "0.002, DKO's kernel error from 0.62 to 0.21 and its AbsRel under noise from 1.3 to 0.74, while the "
            "electronic network itself goes from 0.18 to 0.24 (constant predictor 0.5: under noise the design is "
            "still worse than it).") in text
    assert "| 10 | optics_aware, weight 1 | 0.002 | 0.24 | 0.98 | 0.21 | 0.2 | 0.25 | 0.74 | 0.5 |" in text


def test_smoothness_rows_are_tabled_beside_the_profiles_setting():
    cols = {"corr_elem": "correlation", "err_elem": "kernel error", "eff_crop": "light in crop"}
    common = {"loss": "leakage", "leakage_weight": 0.5, "step_cap": 120, "corr_elem": 0.99, "roughness": 0.7}
    rows = [{**common, "grid": "leakage", "init": "random", "init_corr_cells": 4.0, "smoothness_weight": 0.0,
             "phase_block_cells": 1, "err_elem": 0.07, "eff_crop": 0.16},
            {**common, "grid": "leakage", "init": "random", "init_corr_cells": 4.0, "smoothness_weight": 0.0,
             "phase_block_cells": 1, "leakage_weight": 1.0, "err_elem": 0.09, "eff_crop": 0.19},
            {**common, "grid": "smoothness", "init": "smooth_random", "init_corr_cells": 2.0, "smoothness_weight": 0.0,
             "phase_block_cells": 1, "err_elem": 0.066, "eff_crop": 0.14},
            {**common, "grid": "smoothness", "init": "random", "init_corr_cells": 4.0, "smoothness_weight": 0.3,
             "phase_block_cells": 1, "err_elem": 0.08, "eff_crop": 0.15},
            {**common, "grid": "smoothness", "init": "random", "init_corr_cells": 4.0, "smoothness_weight": 0.0,
             "phase_block_cells": 2, "err_elem": 0.3, "eff_crop": 0.05}]
    text = rr.smoothness_text(pd.DataFrame(rows), cols)
    assert "| profile (white random start) | 0.7 | 0.99 | 0.07 | 0.16 |" in text  # the weight-0.5 row only
    assert "0.19" not in text
    assert "| start corr. 2 cells | 0.7 | 0.99 | 0.066 | 0.14 |" in text
    assert "| smoothness 0.3 | 0.7 | 0.99 | 0.08 | 0.15 |" in text and "| blocks 2x2 | 0.7 | 0.99 | 0.3 | 0.05 |" in text
    assert rr.smoothness_text(pd.DataFrame(rows[:2]), cols) == ""
    assert "None keeps more than the white start (0.16; the best of them, smoothness 0.3, 0.15)" in text
    # the phase tilt that brings the aperture's rim onto the axis, D / (2 lambda z) x pitch, by hand:
    # 257 x 2.5 um / (2 x 700 nm x 2.5073 mm) x 2.5 um = 0.458 and, at 400 nm, 0.801 cycles per cell
    from dkolib.config import load_config

    with_optics = rr.smoothness_text(pd.DataFrame(rows), cols, load_config("default").optics)
    assert "D / (2 lambda z) = 0.46-0.8 cycles per cell (at 700-400 nm)" in with_optics
    brighter = pd.DataFrame(rows)
    brighter.loc[2, "eff_crop"] = 0.2
    assert "The most light: start corr. 2 cells, 0.2 against the white start's 0.16." in rr.smoothness_text(brighter, cols)


def test_scaling_section_reports_time_per_step_against_one_process(tmp_path):
    from dkolib.study.readme_bench import scaling_section

    assert scaling_section(tmp_path) == ""
    bench = tmp_path / "results" / "benchmarks"
    bench.mkdir(parents=True)
    pd.DataFrame([{"processes": p, "threads_per_process": 1, "seconds_per_step": s, "speedup": 3.0 / s,
                   "metasurfaces": 96, "metasurfaces_max_per_process": 96 // p, "cells": 257, "steps_timed": 10,
                   "collective_bytes_per_step_total": 1536 * p if p > 1 else 0, "profile": "default"}
                  for p, s in ((1, 3.0), (2, 1.5))]).to_csv(bench / "scaling.csv", index=False)
    text = scaling_section(tmp_path)
    assert "96 metasurfaces of 257 x 257 cells (`default` profile), 10 timed steps per row" in text
    assert "2 processes take 0.5x one process's time per step." in text
    assert "| 2 | 1 | 1.5 | 2 | 48 | 3072 |" in text


def test_longer_stage2_rows_are_tabled_apart_from_the_settings_at_their_cap(tmp_path):
    common = {"loss": "leakage", "leakage_weight": 2.0, "init": "random", "lr": 0.2, "err_ch": 0.5,
              "s_per_step": 0.4, "corr_elem": 0.99, "channels": "0-1"}
    rows = [{**common, "grid": "init_lr", "step_cap": 120, "err_elem": 0.11, "eff_crop": 0.2},
            {**common, "grid": "leakage", "step_cap": 120, "err_elem": 0.11, "eff_crop": 0.2},
            {**common, "grid": "steps", "step_cap": 600, "err_elem": 0.111, "eff_crop": 0.207},
            {**common, "grid": "steps", "step_cap": 120, "err_elem": 0.109, "eff_crop": 0.199}]
    text = rr.steps_text(pd.DataFrame(rows))
    assert ("from 120 to 600 steps the light in the crop goes from 0.199 to 0.207 and the kernel error from "
            "0.109 to 0.111") in text
    assert text.index("| 120 |") < text.index("| 600 |")  # ordered by steps
    assert rr.steps_text(pd.DataFrame(rows[:2])) == ""
    # the settings' tables stay at their own cap (120), not at the steps grid's 600
    paths = ProfilePaths("default", tmp_path)
    paths.dko.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(paths.dko / "synthesis_study.csv", index=False)
    section = rr.synthesis_section(paths)
    assert "120 steps, gains per metasurface" in section and "| random | 0.2 | 0.99 | 0.11 |" in section
