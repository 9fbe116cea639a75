"""Per-job and per-rule time of a Snakemake run, from its benchmark TSVs and run record."""

import json
import os
import re
from pathlib import Path

import pandas as pd
import pytest

from dkolib.errors import DataError
from dkolib.io import write_csv
from dkolib.study import dagtiming
from dkolib.study.paths import ProfilePaths
from dkolib.study.readme_results import dag_section

ROOT = Path(__file__).resolve().parent.parent
HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
T0 = 1_800_000_000.0  # the run's start (Unix seconds); it ends at T0 + 160


def _bench(folder: Path, name: str, s, rss, cpu, ended_at: float) -> None:
    """A benchmark TSV as Snakemake writes it, last modified ``ended_at``."""
    path = folder / name
    path.write_text(HEADER + f"{s}\t0:00:00\t{rss}\t900.00\t{rss}\t{rss}\t0.01\t0.02\t97.50\t{cpu}\n")
    os.utime(path, (ended_at, ended_at))


@pytest.fixture
def run_folder(tmp_path):
    folder = tmp_path / "benchmarks"
    folder.mkdir()
    _bench(folder, "notebook.01_optics.tsv", "10.0000", "300.00", "9.50", T0 + 10)
    _bench(folder, "data.tsv", "60.0000", "1200.50", "58.00", T0 + 61)
    _bench(folder, "eb_method.e2e_scratch_fast_0.tsv", "90.0000", "NA", "NA", T0 + 100)  # not sampled
    _bench(folder, "eb_method.dko_fast_0.tsv", "150.0000", "800.00", "149.00", T0 + 160)
    _bench(folder, "stage1.tsv", "434.0000", "2000.00", "430.00", T0 - 3600)  # an earlier run's job
    dagtiming.record_run(folder, "start", now=T0)
    dagtiming.record_run(folder, "success", now=T0 + 160)
    return folder


def test_jobs_of_the_recorded_run(run_folder):
    jobs = dagtiming.read_benchmarks(run_folder)
    assert list(jobs.columns) == list(dagtiming.COLUMNS)
    assert list(jobs["rule"]) == ["notebook", "data", "eb_method", "eb_method"]  # in the order they ended
    assert "stage1" not in set(jobs["rule"])  # up to date in this run: its TSV predates the start
    row = jobs.set_index("wildcards").loc["dko_fast_0"]
    assert row["rule"] == "eb_method" and row["job_s"] == 150 and row["cpu_s"] == 149
    assert row["max_rss_mb"] == 800 and row["end_s"] == 160 and row["start_s"] == 10
    assert jobs.set_index("rule").loc["data", "start_s"] == 1  # ended at 61 after 60 s
    assert jobs.set_index("rule").loc["data", "wildcards"] == ""


def test_per_rule_sums_and_total(run_folder):
    jobs, summary = dagtiming.dag_timing(run_folder)
    assert list(summary["rule"]) == ["eb_method", "data", "notebook", "TOTAL"]  # by summed job time
    s = summary.set_index("rule")
    eb = s.loc["eb_method"]
    assert eb["n_jobs"] == 2 and eb["job_s_sum"] == 150 + 90 and eb["job_s_max"] == 150
    assert eb["cpu_s_sum"] == 149 and eb["max_rss_mb"] == 800  # the unsampled job's NA is left out
    assert s.loc["notebook", "job_s_sum"] == 10 and s.loc["notebook", "cpu_s_sum"] == 9.5
    total = s.loc["TOTAL"]
    assert total["n_jobs"] == 4 and total["job_s_sum"] == 10 + 60 + 90 + 150 and total["job_s_max"] == 150
    assert total["cpu_s_sum"] == pytest.approx(9.5 + 58 + 149) and total["max_rss_mb"] == 1200.5
    assert total["wall_s"] == 160
    assert s.drop(index="TOTAL")["wall_s"].isna().all()


def test_run_record(tmp_path):
    rec = dagtiming.record_run(tmp_path, "start", now=T0)
    assert rec["status"] == "running" and rec["start_utc"] == "2027-01-15T08:00:00+00:00"
    with pytest.raises(DataError, match="did not finish successfully"):
        dagtiming.read_run(tmp_path)
    dagtiming.record_run(tmp_path, "error", now=T0 + 5)
    with pytest.raises(DataError, match="'error'"):
        dagtiming.read_run(tmp_path)
    dagtiming.record_run(tmp_path, "start", now=T0 + 10)  # the failed run goes on: a second segment
    dagtiming.record_run(tmp_path, "success", now=T0 + 70)
    rec = json.loads((tmp_path / dagtiming.RUN_RECORD).read_text())
    assert rec["start"] == T0 and rec["end"] == T0 + 70 and rec["status"] == "success"
    assert rec["wall_s"] == 5 + 60 and len(rec["segments"]) == 2
    dagtiming.record_run(tmp_path, "start", now=T0 + 100)  # after a finished run: a new record
    dagtiming.record_run(tmp_path, "success", now=T0 + 130)
    rec = json.loads((tmp_path / dagtiming.RUN_RECORD).read_text())
    assert rec["start"] == T0 + 100 and rec["wall_s"] == 30 and len(rec["segments"]) == 1
    with pytest.raises(ValueError, match="event"):
        dagtiming.record_run(tmp_path, "finished")


def test_killed_run_resumed_counts_its_segments(tmp_path):
    """A run killed (no end written) and started again: wall = first start to last write + the second segment."""
    results = tmp_path / "results"
    folder = results / "benchmarks"
    folder.mkdir(parents=True)
    dagtiming.record_run(folder, "start", now=T0)
    _bench(folder, "data.tsv", "60.0000", "1.00", "50.00", T0 + 60)
    ckpt = results / "equal_budget" / "e2e.work" / "ckpt.pt"  # the killed job's last checkpoint
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"x")
    os.utime(ckpt, (T0 + 400, T0 + 400))
    stale = results / "old.csv"  # written long before this run: not its activity
    stale.write_text("x")
    os.utime(stale, (T0 - 5000, T0 - 5000))
    merged = results / "dko" / "summary.csv"  # a committed file a checkout rewrote the next morning
    merged.parent.mkdir()
    merged.write_text("x")
    os.utime(merged, (T0 + 80_000, T0 + 80_000))
    dagtiming.record_run(folder, "start", now=T0 + 90_000)  # the next day
    _bench(folder, "eb_method.e2e_scratch_fast_0.tsv", "300.0000", "1.00", "290.00", T0 + 90_300)
    dagtiming.record_run(folder, "success", now=T0 + 90_320)
    jobs, summary = dagtiming.dag_timing(folder)
    total = summary.set_index("rule").loc["TOTAL"]
    assert total["wall_s"] == 400 + 320 and total["segments"] == 2
    assert list(jobs["rule"]) == ["data", "eb_method"]
    paths = ProfilePaths("default", tmp_path / "p")
    write_csv(summary, paths.results / "dag_timing.csv")
    assert "12 min wall clock in 2 starts" in dag_section(paths)


def test_missing_record_or_jobs_is_an_error(tmp_path):
    with pytest.raises(DataError, match="run.json is missing"):
        dagtiming.dag_timing(tmp_path)
    _bench(tmp_path, "data.tsv", "60.0000", "1.00", "1.00", T0 - 100)
    dagtiming.record_run(tmp_path, "start", now=T0)
    dagtiming.record_run(tmp_path, "success", now=T0 + 1)
    with pytest.raises(DataError, match="no benchmark file"):
        dagtiming.dag_timing(tmp_path)


def test_script_writes_both_tables(run_folder, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("dag_timing", ROOT / "scripts" / "dag_timing.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--benchmarks", str(run_folder), "--out-dir", str(tmp_path / "out")]) == 0
    timing = pd.read_csv(tmp_path / "out" / "dag_timing.csv")
    assert timing.set_index("rule").loc["TOTAL", "job_s_sum"] == 310
    assert len(pd.read_csv(tmp_path / "out" / "dag_jobs.csv")) == 4


def test_readme_section_reads_the_total(run_folder, tmp_path):
    paths = ProfilePaths("default", tmp_path)
    assert dag_section(paths) == ""
    write_csv(dagtiming.dag_timing(run_folder)[1], paths.results / "dag_timing.csv")
    text = dag_section(paths)
    assert "2.67 min wall clock for 4 jobs" in text and "| eb_method | 2 | 240 | 150 |" in text


def test_every_working_rule_has_a_benchmark_named_after_it():
    """``<rule>[.<wildcards>].tsv`` under BENCH, so that :func:`dagtiming.parse_name` gets the rule back."""
    text = (ROOT / "Snakefile").read_text() + "\n" + (ROOT / "workflow" / "equal_budget.smk").read_text()
    assert 'BENCH = f"{R}/benchmarks"' in text
    rules = re.findall(r"^rule (\w+):\n(.*?)(?=^\S|\Z)", text, flags=re.S | re.M)
    working = [(name, body) for name, body in rules if "\n    shell:" in body or "\n    run:" in body]
    assert len(working) >= 15
    for name, body in working:
        m = re.search(r'\n    benchmark:\n        f"\{BENCH\}/([^"]+)"', body)
        assert m, f"rule {name} has no benchmark under BENCH"
        assert dagtiming.parse_name(m.group(1).replace("{{", "{").replace("}}", "}"))[0] == name


def test_e2e_ladder_sentence_from_a_hand_table():
    from dkolib.study.readme_results import e2e_ladder_text

    rows = []
    for seed, spent in ((0, 3000.0), (1, 3600.0), (2, 3300.0)):
        for frac, share in ((1.0, 0.25), (4.0, 1.0)):
            for ev in ("crop", "full_psf"):
                rows.append({"method": "e2e_scratch", "engine": "fast", "eval": ev, "budget_axis": "flops",
                             "seed": seed, "budget_fraction": frac, "spent_s": spent * share})
    rows.append({"method": "dko", "engine": "fast", "eval": "crop", "budget_axis": "flops", "seed": 0,
                 "budget_fraction": 4.0, "spent_s": 99999.0})
    text = e2e_ladder_text(pd.DataFrame(rows), run_wall_s=7200.0, cores=2)
    # per seed 50, 60, 55 min at 4x: median 55 min, 9900 s = 2.75 h, 4950 s = 82.5 min on 2 cores
    assert "to 4x C_ref" in text and "55 min per seed" in text and "2.75 h for 3 seeds" in text
    assert "82.5 min of the run's 120 min on 2 cores (69 %)" in text and text.startswith("Most of that is E2E")
    assert e2e_ladder_text(pd.DataFrame(rows), run_wall_s=72000.0, cores=2).startswith("E2E's share")
    # on 4 cores the same 9900 s are 41.2 min of the run: 34 %
    assert "41.2 min of the run's 120 min on 4 cores (34 %)" in e2e_ladder_text(pd.DataFrame(rows), 7200.0, cores=4)
    assert e2e_ladder_text(pd.DataFrame(rows[-1:]), 7200.0, 2) == "" and e2e_ladder_text(None, 1.0, 2) == ""


def test_readme_section_reads_the_cpu_slots_of_the_workflow_profile(run_folder, tmp_path):
    from dkolib.study.readme_results import workflow_cpu_slots

    paths = ProfilePaths("default", tmp_path)
    assert workflow_cpu_slots(tmp_path) is None
    write_csv(dagtiming.dag_timing(run_folder)[1], paths.results / "dag_timing.csv")
    assert "CPU slots" not in dag_section(paths)
    profile = tmp_path / "profiles" / "default" / "config.yaml"
    profile.parent.mkdir(parents=True)
    profile.write_text("resources:\n  cpu_slots: 3\nprintshellcmds: true\n")
    assert workflow_cpu_slots(tmp_path) == 3
    assert "job time, 3 CPU slots of `profiles/default/config.yaml`)" in dag_section(paths)
    assert workflow_cpu_slots(ROOT) == 2  # the repository's own profile: two single-threaded jobs
