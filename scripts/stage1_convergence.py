#!/usr/bin/env python
"""Is the electronic reference a ceiling? The stage-1 network trained under other schedules.

    python scripts/stage1_convergence.py --profile default \\
        --schedules constant:4000 decay0.75:4000 decay0.75:8000 decay0.75:16000

Trains the profile's stage-1 network from scratch (same seed, data and batch) under each schedule,
without the main chain's plateau stop (:mod:`dkolib.study.stage1_convergence`), chooses the schedule
with the lowest validation AbsRel (the main chain's own stage 1 included) and reports every
schedule's test AbsRel beside the main chain's, and builds the profile's DKO design (stage 2) on the
chosen network, evaluated on the test split as the physical evaluation does (``--no-dko`` skips it).
Writes ``results/<profile>/stage1/convergence.csv``
and the validation curves ``figures/<profile>/stage1_convergence.png``;
each schedule's run is kept under ``--work`` (``log.csv`` and a resumable ``ckpt.pt``) and resumed
after an interrupt.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dkolib.config import load_config, parse_overrides  # noqa: E402
from dkolib.dko.train import load_depthnet, run_stage1  # noqa: E402
from dkolib.errors import InputError  # noqa: E402
from dkolib.io import write_csv  # noqa: E402
from dkolib.study.cli import require_existing, run_cli  # noqa: E402
from dkolib.study.paths import ProfilePaths  # noqa: E402
from dkolib.study.pipeline import evaluate_designs, run_dko_stage2  # noqa: E402
from dkolib.study.reports import stage1_metrics  # noqa: E402
from dkolib.study.stage1_convergence import (  # noqa: E402
    DKO_MODES, Schedule, chosen_row, convergence_table, parse_schedule, plot_convergence, schedule_row,
    with_dko_design)


def _test_metrics(metrics: pd.DataFrame) -> dict:
    row = metrics[(metrics["model"] == "electronic") & (metrics["split"] == "synthetic_test")]
    if len(row) != 1:
        raise InputError("the stage-1 metrics hold no electronic / synthetic_test row: rerun notebook 02 "
                         "(it writes stage1/metrics.csv)")
    return row.iloc[0].to_dict()


def _with_dko(table: pd.DataFrame, run_dir: Path, cfg, paths: ProfilePaths) -> pd.DataFrame:
    """The profile's stage 2 on the chosen schedule's network (resumed in ``run_dir/dko``), its budget in
    units of the main chain's DKO run and its test AbsRel, evaluated as the physical evaluation does."""
    require_existing(("main chain DKO summary", paths.dko / "summary.csv"),
                     hint=": run the main chain's DKO first (snakemake ... results/<profile>/dko/model.pt)")
    dko_dir = run_dir / "dko"
    if not (dko_dir / "summary.csv").exists():
        print(f"DKO stage 2 on {run_dir.name}", flush=True)
        run_dko_stage2(cfg, run_dir / "model.pt", dko_dir, progress=False)
    summary = pd.read_csv(dko_dir / "summary.csv").iloc[0]
    c_ref = float(pd.read_csv(paths.dko / "summary.csv")["total_flops"].iloc[0])
    rows = evaluate_designs(cfg, {"dko": dko_dir / "model.pt"}, split="test", seed=0, evals=DKO_MODES)
    return with_dko_design(table, c_ref, float(summary["total_flops"]), dict(zip(rows["eval"], rows["abs_rel"])))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="default")
    ap.add_argument("--schedules", nargs="+",
                    default=["constant:4000", "decay0.75:4000", "decay0.75:8000", "decay0.75:16000"],
                    help="constant:STEPS or decayF:STEPS (rate x 0.1 from F x STEPS on)")
    ap.add_argument("--stage1", type=Path, default=None, help="the main chain's stage-1 folder (log.csv, "
                    "metrics.csv; default results/<profile>/stage1)")
    ap.add_argument("--work", type=Path, default=None, help="runs (default results/<profile>/stage1/convergence)")
    ap.add_argument("--out", type=Path, default=None, help="default results/<profile>/stage1/convergence.csv")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--no-dko", action="store_true",
                    help="skip the DKO design on the chosen schedule (stage 2 + test evaluation)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)

    schedules = [parse_schedule(s) for s in args.schedules]
    cfg = load_config(args.profile, parse_overrides(args.overrides))
    paths = ProfilePaths(cfg.profile)
    stage1 = args.stage1 or paths.stage1
    require_existing(("--stage1", stage1 / "log.csv"), ("--stage1", stage1 / "metrics.csv"),
                     hint=": run the main chain's stage 1 and notebook 02 first")
    work = args.work or stage1 / "convergence"
    out = args.out or stage1 / "convergence.csv"

    main_log, main_test = pd.read_csv(stage1 / "log.csv"), _test_metrics(pd.read_csv(stage1 / "metrics.csv"))
    main_row = schedule_row(Schedule("main chain (constant, plateau stop)", int(main_log["step"].iloc[-1]), None),
                            main_log, main_test)
    rows, logs, run_dirs = [], {main_row["schedule"]: main_log}, {}
    for sched in schedules:
        run_dir = run_dirs[sched.name] = work / sched.name.replace(":", "_")
        cfg_s = cfg.replace({"stage1.steps": sched.steps, "stage1.plateau_patience": 0})
        if not (run_dir / "model.pt").exists():
            print(f"stage 1, schedule {sched.name}", flush=True)
            run_stage1(cfg_s, run_dir, paths.data_cache, progress=not args.quiet, lr_decay_at=sched.lr_decay_at,
                       lr_decay_factor=sched.lr_decay_factor)
        model = load_depthnet(run_dir / "model.pt", cfg_s)
        logs[sched.name] = pd.read_csv(run_dir / "log.csv")
        rows.append(schedule_row(sched, logs[sched.name],
                                 _test_metrics(stage1_metrics(model, cfg_s, paths.data_cache))))
    table = convergence_table(main_row, rows)
    chosen = chosen_row(table)
    if chosen["schedule"] != main_row["schedule"] and not args.no_dko:
        table = _with_dko(table, run_dirs[chosen["schedule"]], cfg, paths)
    print(table.to_string(index=False))
    write_csv(table, out)
    plot_convergence(logs, table, path=paths.figures / "stage1_convergence")
    print(f"wrote {out} and {paths.figures / 'stage1_convergence'}.png")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
