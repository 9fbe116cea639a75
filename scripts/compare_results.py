#!/usr/bin/env python
"""Check whether a fresh run of the pipeline reproduces the committed result tables.

    python scripts/compare_results.py --expected results/default --actual /tmp/run/results/default \
        [--extra ../costs.csv ../benchmarks ../metaatoms] [--out report.csv] [--rtol 1e-5] [--atol 1e-8]
    python scripts/compare_results.py --expected-git HEAD --profile default [--actual results/default]

Compares every CSV of the expected results/<profile> tree (notebooks/ and *.work/ skipped) with
the actual one. ``--expected-git REF`` reads the expected tables from git (``git show
REF:results/<profile>/...``, plus results/costs.csv, results/benchmarks and results/metaatoms),
so a run in this checkout can be checked against a commit without a second checkout; --actual
then defaults to results/<profile>.

Deterministic values fail beyond |actual - expected| > atol + rtol * |expected| (NaN equals NaN);
timing columns (wall_s, seconds_*, peak memory, benchmarks/, dag_timing.csv) and wall-axis equal-budget rows
(where a run stops depends on machine speed) are reported only. Wall-axis E2E/DKO ratios outside
the expected bootstrap CI are listed as inconsistent (a failure with --strict-wall). The rules are
in dkolib/study/reproduce.py.

Exit status: 0 reproduced; 1 a deterministic value out of tolerance, or a file, row or column
missing; 2 the trees cannot be read (the message says why).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dkolib.study.cli import run_cli  # noqa: E402
from dkolib.root import project_root  # noqa: E402

from dkolib.study import reproduce as rp  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--expected", type=Path, help="results/<profile> folder holding the expected tables")
    src.add_argument("--expected-git", metavar="REF", help="read the expected tables from this git ref")
    ap.add_argument("--profile", default="default", help="profile whose tables --expected-git reads")
    ap.add_argument("--actual", type=Path, default=None,
                    help="results/<profile> folder of the fresh run (default with --expected-git: "
                         "results/<profile> of this checkout)")
    ap.add_argument("--extra", nargs="*", default=None, metavar="PATH",
                    help="more CSV files or folders, relative to the profile folders (default: none with "
                         f"--expected; {' '.join(rp.GIT_SHARED_RESULTS)} with --expected-git)")
    ap.add_argument("--repo", type=Path, default=None, help="git repository for --expected-git (default: the project root)")
    ap.add_argument("--out", type=Path, default=None, help="write the per-column report CSV here")
    ap.add_argument("--rtol", type=float, default=rp.DEFAULT_RTOL)
    ap.add_argument("--atol", type=float, default=rp.DEFAULT_ATOL)
    ap.add_argument("--strict-wall", action="store_true",
                    help="also fail when a wall-axis ratio lies outside the expected bootstrap CI")
    args = ap.parse_args(argv)

    try:
        if args.expected_git is not None:
            extras = rp.GIT_SHARED_RESULTS if args.extra is None else tuple(args.extra)
            expected = rp.read_git_tables(args.expected_git, args.profile, extras, repo=args.repo or project_root())
            actual_dir = args.actual or (args.repo or project_root()) / "results" / args.profile
        else:
            if args.actual is None:
                ap.error("--actual DIR is required with --expected DIR")
            extras = tuple(args.extra or ())
            expected = rp.read_tables(rp.list_csvs(args.expected, extras))
            actual_dir = args.actual
        if not Path(actual_dir).is_dir():
            raise rp.ResultsTreeError(f"actual results folder {actual_dir} does not exist: run the pipeline "
                                      f"first, or pass the folder of the fresh run with --actual")
        actual = rp.read_tables(rp.list_csvs(actual_dir, extras, required=False))
    except rp.ResultsTreeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    comparison = rp.compare_tables(expected, actual, rp.Tolerance(args.rtol, args.atol))
    print(rp.summary_text(comparison, args.strict_wall))
    if args.out is not None:
        rp.write_report(comparison, args.out)
        print(f"wrote {args.out}")
    return 1 if comparison.failures(args.strict_wall) else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
