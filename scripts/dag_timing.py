#!/usr/bin/env python
"""Wall time of the last Snakemake run, per job and per rule, from its log.

    snakemake --cores 4 && python scripts/dag_timing.py --profile default

Writes ``results/<profile>/dag_jobs.csv`` (one row per job: rule, wildcards, threads,
start_s, end_s, job_s) and ``results/<profile>/dag_timing.csv`` (per rule, and a ``TOTAL``
row whose ``wall_s`` is the run's span). ``--log`` picks a log other than the newest one
that executed jobs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dkolib.dagtiming import latest_log, parse_log, summarize  # noqa: E402
from dkolib.io import write_csv  # noqa: E402
from dkolib.paths import ProfilePaths  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="default")
    ap.add_argument("--log", type=Path, default=None, help="a .snakemake/log/*.snakemake.log (default: newest run)")
    ap.add_argument("--out-dir", type=Path, default=None, help="default: results/<profile>")
    args = ap.parse_args(argv)
    log = args.log or latest_log(ROOT)
    jobs = parse_log(log)
    summary = summarize(jobs)
    out = args.out_dir or ProfilePaths(args.profile).results
    write_csv(jobs, out / "dag_jobs.csv")
    write_csv(summary, out / "dag_timing.csv")
    total = summary[summary["rule"] == "TOTAL"].iloc[0]
    print(summary.to_string(index=False))
    print(f"{log.name}: {int(total['n_jobs'])} jobs, wall {total['wall_s'] / 60:.1f} min, "
          f"summed job time {total['job_s_sum'] / 60:.1f} min -> {out}")
    return summary


if __name__ == "__main__":
    main()
