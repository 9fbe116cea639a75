#!/usr/bin/env python
"""Wall time of the last Snakemake run, per job and per rule, from its benchmark files.

    snakemake --cores 4 && python scripts/dag_timing.py --profile default

Reads ``results/<profile>/benchmarks/*.tsv`` (one per job, written by the rules' ``benchmark:``
directive) and ``run.json`` (the run's start and end, written by the Snakefile's ``onstart`` /
``onsuccess`` handlers); only the benchmark files written during that run count. Writes
``results/<profile>/dag_jobs.csv`` (one row per job: rule, wildcards, job_s, cpu_s, max_rss_mb,
start_s, end_s) and ``results/<profile>/dag_timing.csv`` (per rule: n_jobs, job_s_sum, job_s_max,
cpu_s_sum, max_rss_mb; and a ``TOTAL`` row whose ``wall_s`` is the run's wall time).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dkolib.study.cli import run_cli  # noqa: E402

from dkolib.study.dagtiming import dag_timing  # noqa: E402
from dkolib.io import write_csv  # noqa: E402
from dkolib.study.paths import ProfilePaths  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="default")
    ap.add_argument("--benchmarks", type=Path, default=None,
                    help="folder of the benchmark TSVs and run.json (default: results/<profile>/benchmarks)")
    ap.add_argument("--out-dir", type=Path, default=None, help="default: results/<profile>")
    args = ap.parse_args(argv)
    results = ProfilePaths(args.profile).results
    folder = args.benchmarks or results / "benchmarks"
    jobs, summary = dag_timing(folder)
    out = args.out_dir or results
    write_csv(jobs, out / "dag_jobs.csv")
    write_csv(summary, out / "dag_timing.csv")
    total = summary[summary["rule"] == "TOTAL"].iloc[0]
    print(summary.to_string(index=False))
    print(f"{folder}: {int(total['n_jobs'])} jobs, wall {total['wall_s'] / 60:.1f} min, "
          f"summed job time {total['job_s_sum'] / 60:.1f} min -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
