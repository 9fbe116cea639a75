"""compare_results / dkolib.study.reproduce: which differences fail a reproduction, on small synthetic trees."""

import importlib.util
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dkolib.study import reproduce as rp

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "compare_results.py"
EXTRAS = ["../costs.csv", "../benchmarks"]


def _cli():
    spec = importlib.util.spec_from_file_location("compare_results", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


compare_main = _cli()


def _write(path: Path, frame: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)


def make_results(base: Path) -> Path:
    """A miniature ``results/`` tree; returns its ``results/default`` folder."""
    profile = base / "results" / "default"
    _write(profile / "dko" / "summary.csv", pd.DataFrame(
        {"profile": ["default"], "steps": [300], "loss_last": [1.055], "total_flops": [1.8e13],
         "seconds": [185.2], "stage2_wall_s": [185.1], "dark_eff_crop_mean": [np.nan]}))
    _write(profile / "stage1" / "log.csv", pd.DataFrame(
        {"step": [1, 2, 3], "wall_s": [0.5, 1.0, 1.5], "cpu_s": [0.4, 0.9, 1.3],
         "flops": [7.2e9, 1.44e10, 2.16e10], "loss": [1.06, 0.93, 0.88]}))
    rows = []
    for method in ("dko", "e2e_scratch"):
        for seed in (0, 1):
            for axis in ("flops", "wall"):
                abs_rel = 0.40 + 0.1 * seed + 0.2 * (method != "dko")
                rows.append({"method": method, "engine": "fast", "seed": seed, "eval": "crop", "budget_axis": axis,
                             "budget_fraction": 0.5, "lr_mult": 1.0, "abs_rel": abs_rel, "budget_s": 30.5,
                             "spent_s": 34.2, "steps": 36})
    _write(profile / "equal_budget.csv", pd.DataFrame(rows))
    _write(profile / "equal_budget" / "stage1_0" / "lr_1" / "log.csv", pd.DataFrame(
        {"step": [1, 2, 3, 4], "wall_s": [0.2, 0.4, 0.6, 0.8], "flops": [1.0, 2.0, 3.0, 4.0],
         "loss": [1.0, 0.9, 0.8, 0.7]}))
    summary = []
    for axis in ("flops", "wall"):
        for method, ratio, lo, hi in (("dko", 1.0, 1.0, 1.0), ("e2e_scratch", 1.4, 1.2, 1.6)):
            summary.append({"method": method, "engine": "fast", "eval": "crop", "budget_axis": axis,
                            "budget_fraction": 0.5, "n_seeds": 2, "abs_rel_mean": 0.45 * ratio,
                            "ratio_vs_dko": ratio, "ratio_ci_lo": lo, "ratio_ci_hi": hi, "ratio_n_seeds": 2})
    _write(profile / "equal_budget_summary.csv", pd.DataFrame(summary))
    _write(profile / "notebooks" / "scratch.csv", pd.DataFrame({"x": [1.0]}))
    (profile / "readme_results.md").write_text("generated text\n")
    _write(base / "results" / "costs.csv", pd.DataFrame(
        {"method": ["dko_stage2"], "size": ["default"], "n_params": [6340704], "seconds_per_iter": [0.73],
         "peak_mem_mb": [573.9], "measured": [True], "threads": [1]}))
    _write(base / "results" / "benchmarks" / "psf_engines.csv", pd.DataFrame(
        {"engine": ["dflat", "fast"], "n_cells": [257, 257], "seconds_per_psf": [0.088, 0.0008],
         "rel_err_vs_reference": [1.4e-3, 2e-4]}))
    return profile


@pytest.fixture
def trees(tmp_path):
    expected = make_results(tmp_path / "expected")
    actual = make_results(tmp_path / "actual")
    return expected, actual


def _edit(path: Path, fn) -> None:
    frame = pd.read_csv(path)
    frame = fn(frame)
    frame.to_csv(path, index=False)


def _compare(expected: Path, actual: Path, extras=EXTRAS, **tol) -> rp.Comparison:
    exp = rp.read_tables(rp.list_csvs(expected, extras))
    act = rp.read_tables(rp.list_csvs(actual, extras, required=False))
    return rp.compare_tables(exp, act, rp.Tolerance(**tol))


def _run(expected, actual, *more):
    out = actual.parent / "report.csv"
    code = compare_main(["--expected", str(expected), "--actual", str(actual), "--extra", *EXTRAS,
                         "--out", str(out), *more])
    return code, pd.read_csv(out)


def test_identical_trees_reproduce(trees, capsys):
    code, report = _run(*trees)
    assert code == 0
    assert list(report.columns) == rp.REPORT_COLUMNS
    assert not (report["status"] == "FAIL").any()
    files = set(report["file"])
    assert {"dko/summary.csv", "equal_budget.csv", "../costs.csv", "../benchmarks/psf_engines.csv"} <= files
    assert not any("notebooks" in f for f in files)  # notebooks and non-CSV are skipped
    det = report[report["kind"] == "deterministic"]
    assert {"loss_last", "total_flops", "abs_rel", "loss"} <= set(det["column"])
    assert (det["max_abs_diff"] == 0).all()
    assert "REPRODUCED" in capsys.readouterr().out


def test_deterministic_metric_beyond_rtol_fails_and_is_named(trees):
    expected, actual = trees
    _edit(actual / "dko" / "summary.csv", lambda f: f.assign(loss_last=f["loss_last"] * (1 + 1e-3)))
    code, report = _run(expected, actual, "--rtol", "1e-5")
    assert code == 1
    bad = report[report["status"] == "FAIL"]
    assert list(zip(bad["file"], bad["column"])) == [("dko/summary.csv", "loss_last")]
    assert bad["max_rel_diff"].iloc[0] == pytest.approx(1e-3, rel=1e-6)
    # the same change within a looser rtol passes
    assert compare_main(["--expected", str(expected), "--actual", str(actual), "--extra", *EXTRAS,
                         "--rtol", "1e-2"]) == 0


def test_timing_columns_and_benchmarks_are_report_only(trees):
    expected, actual = trees
    _edit(actual / "stage1" / "log.csv", lambda f: f.assign(wall_s=f["wall_s"] * 3, cpu_s=f["cpu_s"] * 2))
    _edit(actual / ".." / "costs.csv", lambda f: f.assign(seconds_per_iter=9.9, peak_mem_mb=1e4, threads=4))
    _edit(actual / ".." / "benchmarks" / "psf_engines.csv", lambda f: f.assign(rel_err_vs_reference=0.5))
    code, report = _run(expected, actual)
    assert code == 0
    timing = report[report["kind"] == "timing"].set_index(["file", "column"])
    for key in (("stage1/log.csv", "wall_s"), ("../costs.csv", "seconds_per_iter"), ("../costs.csv", "threads"),
                ("../benchmarks/psf_engines.csv", "rel_err_vs_reference")):
        assert timing.loc[key, "status"] == "report" and timing.loc[key, "max_rel_diff"] > 0


def test_wall_axis_row_moves_are_reported_not_failed(trees):
    expected, actual = trees

    def move_wall(f):
        wall = f["budget_axis"] == "wall"
        f.loc[wall, "abs_rel"] *= 1.2
        f.loc[wall, "steps"] = 41
        return f

    _edit(actual / "equal_budget.csv", move_wall)
    code, report = _run(expected, actual)
    assert code == 0
    rows = report[(report["file"] == "equal_budget.csv") & (report["column"] == "abs_rel")].set_index("kind")
    assert rows.loc["load-dependent", "status"] == "report"
    assert rows.loc["load-dependent", "max_rel_diff"] == pytest.approx(0.2)
    assert rows.loc["deterministic", "status"] == "ok" and rows.loc["deterministic", "max_abs_diff"] == 0
    # the same move on a flops-axis row is a failure
    _edit(actual / "equal_budget.csv", lambda f: f.assign(abs_rel=f["abs_rel"] * 1.2))
    assert compare_main(["--expected", str(expected), "--actual", str(actual), "--extra", *EXTRAS]) == 1


def test_missing_file_fails(trees):
    expected, actual = trees
    (actual / "dko" / "summary.csv").unlink()
    code, report = _run(expected, actual)
    assert code == 1
    bad = report[report["status"] == "FAIL"]
    assert list(zip(bad["file"], bad["kind"])) == [("dko/summary.csv", "missing-file")]


def test_missing_row_fails_and_names_its_key(trees):
    expected, actual = trees
    _edit(actual / "equal_budget.csv",
          lambda f: f[~((f["method"] == "e2e_scratch") & (f["seed"] == 1) & (f["budget_axis"] == "flops"))])
    code, report = _run(expected, actual)
    assert code == 1
    bad = report[report["status"] == "FAIL"]
    assert list(bad["kind"]) == ["missing-row"] and bad["n"].iloc[0] == 1
    assert "method=e2e_scratch" in bad["detail"].iloc[0] and "seed=1" in bad["detail"].iloc[0]


def test_rows_that_depend_on_the_wall_clock_may_be_missing(trees):
    expected, actual = trees
    _edit(actual / "equal_budget.csv", lambda f: f[~((f["budget_axis"] == "wall") & (f["seed"] == 1))])
    _edit(actual / "equal_budget" / "stage1_0" / "lr_1" / "log.csv", lambda f: f.iloc[:3])  # stopped earlier
    comparison = _compare(expected, actual)
    assert comparison.failures() == []
    missing = [r for r in comparison.rows if r.kind == "missing-row"]
    assert {(r.file, r.n, r.status) for r in missing} == {("equal_budget.csv", 2, "report"),
                                                          ("equal_budget/stage1_0/lr_1/log.csv", 1, "report")}
    # but a training log outside equal_budget/ must keep its length
    _edit(actual / "stage1" / "log.csv", lambda f: f.iloc[:2])
    assert [r.file for r in _compare(expected, actual).failures()] == ["stage1/log.csv"]


def test_wall_ratio_outside_expected_ci_is_inconsistent(trees, capsys):
    expected, actual = trees

    def shift(f, ratio):
        sel = (f["budget_axis"] == "wall") & (f["method"] == "e2e_scratch")
        f.loc[sel, "ratio_vs_dko"] = ratio
        return f

    path = actual / "equal_budget_summary.csv"
    _edit(path, lambda f: shift(f, 1.55))  # moved, but inside the expected [1.2, 1.6]
    code, report = _run(expected, actual)
    ratios = report[report["kind"] == "wall-ratio"]
    assert code == 0 and len(ratios) == 2 and (ratios["status"] == "consistent").all()

    _edit(path, lambda f: shift(f, 1.9))
    code, report = _run(expected, actual)
    assert code == 0  # reported, not failed
    bad = report[report["status"] == "inconsistent"]
    assert len(bad) == 1 and "method=e2e_scratch" in bad["column"].iloc[0]
    assert "1 inconsistent" in capsys.readouterr().out
    code, _ = _run(expected, actual, "--strict-wall")
    assert code == 1


def test_nan_equals_nan_and_repeated_keys_match_in_order(tmp_path):
    exp = pd.DataFrame({"name": ["a", "a", "b"], "x": [1.0, np.nan, 3.0]})
    same = rp.compare_tables({"t.csv": exp}, {"t.csv": exp.copy()})
    assert same.failures() == [] and same.matched_rows["t.csv"] == 3
    swapped = exp.iloc[[1, 0, 2]].reset_index(drop=True)  # the two 'a' rows change order
    assert [r.column for r in rp.compare_tables({"t.csv": exp}, {"t.csv": swapped}).failures()] == ["x"]


def test_unreadable_trees_are_clear_errors(tmp_path, capsys):
    assert compare_main(["--expected", str(tmp_path / "nope"), "--actual", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "results/<profile>" in err
    (tmp_path / "empty" / "notebooks").mkdir(parents=True)
    (tmp_path / "empty" / "notebooks" / "a.csv").write_text("x\n1\n")
    assert compare_main(["--expected", str(tmp_path / "empty"), "--actual", str(tmp_path)]) == 2
    assert "no CSV files" in capsys.readouterr().err


def test_expected_tables_from_git(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    repo = tmp_path / "repo"
    make_results(repo)

    def git(*args):
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)

    git("init", "-q")
    git("add", "results")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "results")
    tables = rp.read_git_tables("HEAD", "default", repo=repo)
    assert {"dko/summary.csv", "../costs.csv", "../benchmarks/psf_engines.csv"} <= set(tables)
    assert not any("notebooks" in label for label in tables)
    args = ["--expected-git", "HEAD", "--profile", "default", "--repo", str(repo)]
    assert compare_main(args) == 0  # the working tree equals the commit
    _edit(repo / "results" / "default" / "stage1" / "log.csv", lambda f: f.assign(loss=f["loss"] + 0.01))
    assert compare_main(args) == 1
    assert compare_main(args[:2] + ["--profile", "paper", "--repo", str(repo)]) == 2  # nothing committed there


def test_tolerance_is_numpy_isclose():
    """Pass/fail is ``np.isclose(actual, expected, rtol, atol, equal_nan=True)``, relative to the expected value."""
    tol = rp.Tolerance(rtol=1e-3, atol=1e-6)
    expected = np.array([1.0, 1.0, 0.0, 0.0, np.nan, np.nan, np.inf, np.inf, 1000.0])
    actual = np.array([1.0009, 1.0011, 9e-7, 2e-6, np.nan, 1.0, np.inf, 1e300, 1001.0])
    assert tol.close(actual, expected).tolist() == [True, False, True, False, True, False, True, False, True]
    assert (tol.close(actual, expected) == np.isclose(actual, expected, rtol=1e-3, atol=1e-6, equal_nan=True)).all()
    exp = pd.DataFrame({"name": ["a", "b", "c"], "x": expected[[0, 1, 4]]})
    act = pd.DataFrame({"name": ["a", "b", "c"], "x": actual[[0, 1, 4]]})
    rows = {r.column: r for r in rp.compare_tables({"t.csv": exp}, {"t.csv": act}, tol).rows}
    assert rows["x"].status == "FAIL" and rows["x"].detail == "1 of 3 values out of tolerance"
    assert rows["x"].max_rel_diff == pytest.approx(1.1e-3)  # the report's numbers are unchanged
    text = pd.Series(["u", "v"])
    assert tol.close(text, pd.Series(["u", "V"])).tolist() == [True, False]  # non-numeric: equal text


def test_wall_ratio_within_tolerance_of_the_ci_end_is_consistent(trees):
    expected, actual = trees

    def shift(f):
        sel = (f["budget_axis"] == "wall") & (f["method"] == "e2e_scratch")
        f.loc[sel, "ratio_vs_dko"] = 1.6 * (1 + 5e-6)  # past the expected hi = 1.6 by less than rtol
        return f

    _edit(actual / "equal_budget_summary.csv", shift)
    comparison = _compare(expected, actual, rtol=1e-5)
    assert [r.status for r in comparison.rows if r.kind == "wall-ratio"] == ["consistent"] * 2
    comparison = _compare(expected, actual, rtol=1e-6)
    assert "inconsistent" in [r.status for r in comparison.rows if r.kind == "wall-ratio"]


def test_pipeline_timing_tables_are_report_only(trees):
    """dag_timing.csv / dag_jobs.csv time one run: other jobs, counts and times are reported, not failed."""
    expected, actual = trees
    _write(expected / "dag_timing.csv", pd.DataFrame(
        {"rule": ["eb_method", "all", "TOTAL"], "n_jobs": [24, 1, 42], "job_s_sum": [2730.0, 0.0, 4588.0],
         "job_s_max": [249.0, 0.0, 434.0], "wall_s": [np.nan, np.nan, 2397.0]}))
    _write(actual / "dag_timing.csv", pd.DataFrame(
        {"rule": ["eb_method", "TOTAL"], "n_jobs": [24, 41], "job_s_sum": [2801.0, 4690.0],
         "job_s_max": [260.0, 450.0], "cpu_s_sum": [2790.0, 4500.0], "wall_s": [np.nan, 2410.0]}))
    comparison = _compare(expected, actual)
    assert comparison.failures() == []
    dag = [r for r in comparison.rows if r.file == "dag_timing.csv"]
    assert {r.status for r in dag} == {"report"} and any(r.kind == "missing-row" for r in dag)


def test_where_a_time_came_from_and_measured_memory_never_fail_a_reproduction():
    """The sensor study's cost table: a rerun with a warm cache says 'cache' where the first run said
    'computed', and its render time and peak memory move; none of that identifies or fails a row,
    while the PSF window (a deterministic key) still must match."""
    exp = pd.DataFrame({"design": ["dko", "e2e"], "psf_window_px": ["597x853"] * 2, "psf_s": [247.0, 242.0],
                        "psf_source": ["computed", "computed"], "render_s_per_image": [0.08, 0.07],
                        "peak_rss_mb": [4313.0, 8589.0]})
    warm = exp.assign(psf_source=["cache", "cache"], render_s_per_image=[0.05, 0.09], peak_rss_mb=[9000.0, 9100.0])
    report = rp.compare_tables({"sensor/cost.csv": exp}, {"sensor/cost.csv": warm})
    assert report.failures() == [] and report.matched_rows["sensor/cost.csv"] == 2
    assert "psf_source" not in rp.key_columns(exp, warm)
    moved = warm.assign(psf_window_px=["597x853", "599x853"])
    assert rp.compare_tables({"sensor/cost.csv": exp}, {"sensor/cost.csv": moved}).failures() != []
