#!/usr/bin/env python
"""DKO stage 2: synthesise the metasurface array for a trained stage-1 network.

    python scripts/run_dko.py --profile default \
        --stage1 results/default/stage1/model.pt --out results/default/dko [--loss paper|leakage] \
        [--lr 0.05] [--steps 500] [--threads 1] [--set dko.leakage_weight=0.5 ...]

Writes into ``--out`` (all atomically):

* ``array.pt``   the optimised ``MetasurfaceArray`` (``synthesis.save_array``);
* ``gain.pt``    closed-form per-channel gain ``[C1]`` (``synthesis.fit_gain``);
* ``model.pt``   the hybrid network (stage-1 back end + frozen optics + gain),
  ``train.save_model`` format, ``kind='hybrid_dko'``; its budget meter holds
  stage 1 + stage 2;
* ``history.csv`` per-step loss / correlation / efficiency / seconds;
* ``fidelity.csv`` per-element and per-channel fidelity (``synthesis.fidelity_table``);
* ``summary.csv`` one row: loss, lr, steps, seconds, FLOPs, mean fidelity;
* ``ckpt.pt``    resumable checkpoint (a rerun resumes and gives the same result).

On several processes (the output channels shared out over them; Gloo on CPU, NCCL with
``--set device=cuda``, one GPU per process), rank 0 writing the files above and every rank
its resumable ``ckpt_rank{r}of{N}.pt``:

    torchrun --nproc_per_node 2 scripts/run_dko.py --profile default \
        --stage1 results/default/stage1/model.pt --out results/default/dko
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dkolib.study.cli import run_cli  # noqa: E402
from dkolib.config import load_config, parse_overrides  # noqa: E402
from dkolib.study.pipeline import run_dko_stage2  # noqa: E402


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", required=True)
    ap.add_argument("--stage1", required=True, type=Path, help="stage-1 model.pt (train.save_model)")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--loss", choices=("paper", "leakage"), default=None, help="default: dko.loss")
    ap.add_argument("--lr", type=float, default=None, help="default: dko.lr")
    ap.add_argument("--steps", type=int, default=None, help="default: dko.steps")
    ap.add_argument("--engine", choices=("fast", "reference"), default=None, help="default: optics.engine")
    ap.add_argument("--threads", type=int, default=None, help="default: the profile's threads")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    overrides = parse_overrides(args.set)
    if args.loss:
        overrides["dko.loss"] = args.loss
    if args.lr is not None:
        overrides["dko.lr"] = args.lr
    if args.steps is not None:
        overrides["dko.steps"] = args.steps
    cfg = load_config(args.profile, overrides)
    if args.threads:
        cfg = cfg.replace({"threads": args.threads})
    frame = run_dko_stage2(cfg, args.stage1, args.out, engine=args.engine, progress=not args.no_progress)
    if not frame.empty:  # under torchrun only rank 0 returns the summary
        print(frame.T.to_string(header=False))
    return frame

if __name__ == "__main__":
    sys.exit(run_cli(main))
