"""Per-job wall time parsed from a Snakemake log."""

import pytest

from dkolib import dagtiming
from dkolib.readme_results import dag_section
from dkolib.paths import ProfilePaths
from dkolib.io import write_csv

LOG = """Building DAG of jobs...
Provided cores: 4
[Sat Nov 28 03:13:51 2026]
localrule notebook:
    input: notebooks/01_optics.ipynb
    jobid: 1
    wildcards: nb=01_optics
    threads: 2
Select jobs to execute...
[Sat Nov 28 03:14:01 2026]
Finished jobid: 1 (Rule: notebook)
1 of 3 steps (33%) done
[Sat Nov 28 03:14:01 2026]
rule eb_method:
    jobid: 7
    wildcards: method=dko, engine=fast, seed=0
[Sat Nov 28 03:14:02 2026]
rule data:
    jobid: 2
[Sat Nov 28 03:15:02 2026]
Finished jobid: 2 (Rule: data)
[Sat Nov 28 03:16:31 2026]
Finished jobid: 7 (Rule: eb_method)
3 of 3 steps (100%) done
"""


def test_parse_log_times_each_job(tmp_path):
    log = tmp_path / "run.snakemake.log"
    log.write_text(LOG)
    jobs = dagtiming.parse_log(log).set_index("rule")
    assert jobs.loc["notebook", "job_s"] == 10 and jobs.loc["notebook", "threads"] == 2
    assert jobs.loc["eb_method", "wildcards"] == "method=dko, engine=fast, seed=0"
    assert jobs.loc["eb_method", "start_s"] == 10 and jobs.loc["eb_method", "job_s"] == 150
    assert jobs.loc["data", "job_s"] == 60  # interleaved with eb_method
    total = dagtiming.summarize(jobs.reset_index()).set_index("rule").loc["TOTAL"]
    assert total["wall_s"] == 160 and total["job_s_sum"] == 220 and total["n_jobs"] == 3


def test_space_padded_day():
    log_line = "[Sun Nov  1 03:00:00 2026]"
    assert dagtiming._STAMP.match(log_line)
    assert dagtiming._time(dagtiming._STAMP.match(log_line).group(1)).day == 1


def test_dry_run_log_is_rejected_and_skipped(tmp_path):
    folder = tmp_path / ".snakemake" / "log"
    folder.mkdir(parents=True)
    (folder / "2026-11-28T031350.snakemake.log").write_text(LOG)
    (folder / "2026-11-28T050000.snakemake.log").write_text("Building DAG of jobs...\nJob stats:\n")
    with pytest.raises(ValueError, match="no finished job"):
        dagtiming.parse_log(folder / "2026-11-28T050000.snakemake.log")
    assert dagtiming.latest_log(tmp_path).name.startswith("2026-11-28T031350")


def test_readme_section_reads_the_total(tmp_path):
    paths = ProfilePaths("default", tmp_path)
    assert dag_section(paths) == ""
    log = tmp_path / "run.log"
    log.write_text(LOG)
    write_csv(dagtiming.summarize(dagtiming.parse_log(log)), paths.results / "dag_timing.csv")
    text = dag_section(paths)
    assert "2.67 min wall clock for 3 jobs" in text and "| eb_method | 1 | 150 | 150 |" in text
