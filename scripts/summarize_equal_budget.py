#!/usr/bin/env python
"""Merge the equal-budget job CSVs and summarise them over seeds.

    python scripts/summarize_equal_budget.py --inputs results/default/equal_budget/*_*_*.csv \
        --out results/default/equal_budget.csv --summary results/default/equal_budget_summary.csv \
        [--catchup results/default/equal_budget_catchup.csv] [--figures figures/default]

Writes (atomically)

* ``--out``: every row of every job (columns ``dkolib.study.protocol.COLUMNS``);
* ``--summary``: per (method, engine, eval, budget_axis, budget_fraction) the number of seeds,
  mean and std over seeds of each metric, and the AbsRel ratio to DKO with its paired
  bootstrap 95 % CI over seeds (``ratio_vs_dko``, ``ratio_ci_lo``, ``ratio_ci_hi``);
* ``--catchup`` (default: ``<summary stem>_catchup.csv``): where, if ever, each E2E method
  reaches DKO's AbsRel;
* with ``--figures``: ``equal_budget_wall``, ``equal_budget_flops`` and ``equal_budget_crop_vs_full``
  (PNG + PDF).

Inputs that are stage-1 lr-search tables (no ``method`` column) are skipped with a note.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dkolib.study.cli import run_cli  # noqa: E402

import pandas as pd  # noqa: E402

from dkolib.study.figures import plot_accuracy_vs_budget, plot_crop_vs_physical  # noqa: E402
from dkolib.study.protocol import to_frame  # noqa: E402
from dkolib.study.stats import GROUP, catch_up, check_columns, combine, summarize  # noqa: E402
from dkolib.io import write_csv  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", nargs="+", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--summary", type=Path, required=True)
    ap.add_argument("--catchup", type=Path, default=None)
    ap.add_argument("--figures", type=Path, default=None)
    ap.add_argument("--n-boot", type=int, default=2000)
    args = ap.parse_args(argv)

    frames = []
    for p in args.inputs:
        if not p.exists():
            raise FileNotFoundError(f"input {p} does not exist")
        try:
            f = pd.read_csv(p)
        except pd.errors.EmptyDataError:
            f = to_frame([])
        if "method" not in f.columns:
            print(f"skipping {p}: not a method table (stage-1 lr search?)")
            continue
        check_columns(f)
        frames.append(f)
    df = combine(frames)
    summary = summarize(df, n_boot=args.n_boot)
    catch = catch_up(summary) if len(summary) else catch_up(pd.DataFrame(columns=GROUP + ["ratio_vs_dko"]))
    write_csv(df, args.out)
    write_csv(summary, args.summary)
    catch_path = args.catchup or args.summary.with_name(args.summary.stem + "_catchup.csv")
    write_csv(catch, catch_path)
    if args.figures is not None and len(df):
        args.figures.mkdir(parents=True, exist_ok=True)
        import matplotlib.pyplot as plt
        for x, axis in (("budget_s", "wall"), ("budget_flops", "flops")):
            if (df["budget_axis"] == axis).any():
                plt.close(plot_accuracy_vs_budget(df, x=x, path=args.figures / f"equal_budget_{axis}"))
        if {"crop", "full_psf"} <= set(df["eval"]):
            plt.close(plot_crop_vs_physical(df, path=args.figures / "equal_budget_crop_vs_full"))
    print(f"{len(df)} rows -> {args.out}; {len(summary)} summary rows -> {args.summary}; catch-up -> {catch_path}")
    if len(catch):
        print(catch.to_string(index=False))
    return df, summary, catch


if __name__ == "__main__":
    sys.exit(run_cli(main))
