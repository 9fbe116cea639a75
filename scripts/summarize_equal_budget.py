#!/usr/bin/env python
"""Merge the equal-budget job CSVs and summarise them over seeds.

    python scripts/summarize_equal_budget.py --inputs results/default/equal_budget/*_*_*.csv \
        --out results/default/equal_budget.csv --summary results/default/equal_budget_summary.csv \
        [--catchup results/default/equal_budget_catchup.csv] [--time-to-accuracy PATH] \
        [--stage1-metrics results/default/stage1/metrics.csv] [--figures figures/default] \
        [--budgets results/default/equal_budget/stage1_*/budgets.json [--stage2-stops-early]]

With ``--budgets`` (every seed's ``budgets.json``) every row's spend is checked against the
protocol's bounds first (``dkolib.study.protocol.check_study_spend``): a row outside them on the
FLOP axis stops the script before it writes anything; wall-clock rows outside theirs are reported.

Writes (atomically)

* ``--out``: every row of every job (columns ``dkolib.study.protocol.COLUMNS``);
* ``--summary``: per (method, engine, eval, budget_axis, budget_fraction) the number of seeds,
  mean and std over seeds of each metric, and the AbsRel ratio to DKO with its paired
  bootstrap 95 % CI over seeds (``ratio_vs_dko``, ``ratio_ci_lo``, ``ratio_ci_hi``, and
  ``ratio_n_resamples``, the distinct resamples that interval had);
* ``--catchup`` (default: ``<summary stem>_catchup.csv``): where, if ever, each E2E method
  reaches DKO's AbsRel;
* ``--time-to-accuracy`` (default: ``time_to_accuracy.csv`` beside ``--summary``): the budget
  (multiple of C_ref) each method needs to come within 1.5x / 1.25x / 1.1x of the electronic
  network's AbsRel, a1 and RMSE at C_ref (``dkolib.study.stats.time_to_accuracy``); empty when
  the table has no electronic crop rows at fraction 1.0;
* with ``--figures``: ``equal_budget_wall``, ``equal_budget_flops``, ``equal_budget_crop_vs_full``
  and ``time_to_accuracy`` (PNG + PDF). The accuracy figures draw the constant predictor and the
  stage-1 electronic network (``--stage1-metrics``, rows ``split == synthetic_test``; default
  ``stage1/metrics.csv`` beside ``--summary``, skipped when absent) as horizontal lines.

Inputs that are stage-1 lr-search tables (no ``method`` column) are skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dkolib.study.cli import run_cli  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from dkolib.study.figures import plot_accuracy_vs_budget, plot_crop_vs_physical, plot_time_to_accuracy  # noqa: E402
from dkolib.study.protocol import check_study_spend, to_frame, violation_lines  # noqa: E402
from dkolib.study.stats import (GROUP, TTA_COLUMNS, TTA_REFERENCE, catch_up, check_columns, combine,  # noqa: E402
                                summarize, time_to_accuracy)
from dkolib.io import write_csv  # noqa: E402

REFERENCE_LABELS = {"constant": "constant predictor", "electronic": "electronic (stage 1)"}
"""Stage-1 models drawn as horizontal lines, and their legend labels."""


def reference_lines(metrics_csv: Path | None, metric: str, split: str = "synthetic_test") -> dict[str, float] | None:
    """``{label: value of metric}`` for the constant predictor and the stage-1 electronic network,
    read from ``stage1/metrics.csv`` (columns ``model``, ``split`` and the metrics); None if absent."""
    if metrics_csv is None or not metrics_csv.exists():
        return None
    table = pd.read_csv(metrics_csv)
    if not {"model", "split", metric} <= set(table.columns):
        raise ValueError(f"{metrics_csv} needs columns 'model', 'split' and '{metric}'")
    rows = table[table["split"] == split].set_index("model")[metric]
    return {label: float(rows[m]) for m, label in REFERENCE_LABELS.items() if m in rows.index} or None


def _read_inputs(paths) -> list[pd.DataFrame]:
    frames = []
    for p in paths:
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
    return frames


def _tta(df: pd.DataFrame, n_boot: int) -> pd.DataFrame:
    has_ref = len(df) and "budget_fraction" in df and (
        (df["method"] == TTA_REFERENCE) & (df["eval"] == "crop") & np.isclose(df["budget_fraction"], 1.0)).any()
    if not has_ref:
        print(f"no '{TTA_REFERENCE}' crop rows at fraction 1.0: time-to-accuracy table left empty")
        return pd.DataFrame(columns=TTA_COLUMNS)
    return time_to_accuracy(df, n_boot=n_boot)


def _figures(df: pd.DataFrame, tta: pd.DataFrame, folder: Path, stage1_metrics: Path | None) -> None:
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    lines = reference_lines(stage1_metrics, "abs_rel")
    for x, axis in (("budget_s", "wall"), ("budget_flops", "flops")):
        if (df["budget_axis"] == axis).any():
            plt.close(plot_accuracy_vs_budget(df, x=x, path=folder / f"equal_budget_{axis}", reference_lines=lines))
    if {"crop", "full_psf"} <= set(df["eval"]):
        plt.close(plot_crop_vs_physical(df, path=folder / "equal_budget_crop_vs_full", reference_lines=lines))
    if len(tta):
        axis = "flops" if (tta["axis"] == "flops").any() else str(tta["axis"].iloc[0])
        plt.close(plot_time_to_accuracy(tta, metric="abs_rel", axis=axis, path=folder / "time_to_accuracy"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", nargs="+", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--summary", type=Path, required=True)
    ap.add_argument("--catchup", type=Path, default=None)
    ap.add_argument("--time-to-accuracy", type=Path, default=None,
                    help="time-to-accuracy table (default: time_to_accuracy.csv beside --summary)")
    ap.add_argument("--stage1-metrics", type=Path, default=None,
                    help="stage-1 metrics for the reference lines (default: stage1/metrics.csv beside --summary)")
    ap.add_argument("--figures", type=Path, default=None)
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--budgets", nargs="+", type=Path, default=None,
                    help="every seed's equal_budget/stage1_<seed>/budgets.json: check each row's spend first")
    ap.add_argument("--stage2-stops-early", action="store_true",
                    help="stage 2 has a stopping rule (dko.stop_window > 0): DKO may underspend")
    args = ap.parse_args(argv)

    df = combine(_read_inputs(args.inputs))
    if args.budgets and len(df):
        runs = [json.loads(p.read_text()) for p in args.budgets]
        wall = check_study_spend(df, runs, stage2_stops_early=args.stage2_stops_early)
        print(f"spend: every FLOP-budget row inside the protocol's bounds ({len(args.budgets)} seeds)")
        for line in violation_lines(wall):
            print(f"warning: {line.strip()} (wall clock depends on the machine's load)")
    summary = summarize(df, n_boot=args.n_boot)
    catch = catch_up(summary) if len(summary) else catch_up(pd.DataFrame(columns=GROUP + ["ratio_vs_dko"]))
    tta = _tta(df, args.n_boot)
    write_csv(df, args.out)
    write_csv(summary, args.summary)
    catch_path = args.catchup or args.summary.with_name(args.summary.stem + "_catchup.csv")
    write_csv(catch, catch_path)
    tta_path = args.time_to_accuracy or args.summary.with_name("time_to_accuracy.csv")
    write_csv(tta, tta_path)
    if args.figures is not None and len(df):
        _figures(df, tta, args.figures, args.stage1_metrics or args.summary.parent / "stage1" / "metrics.csv")
    print(f"{len(df)} rows -> {args.out}; {len(summary)} summary rows -> {args.summary}; catch-up -> {catch_path}; "
          f"time to accuracy -> {tta_path}")
    if len(catch):
        print(catch.to_string(index=False))
    return df, summary, catch


if __name__ == "__main__":
    sys.exit(run_cli(main))
