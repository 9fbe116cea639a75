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
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dkolib.budget import BudgetMeter  # noqa: E402
from dkolib.config import load_config, parse_overrides  # noqa: E402
from dkolib.evaluation import hybrid_from_dko  # noqa: E402
from dkolib.io import save_torch, seed_everything, set_threads, write_csv  # noqa: E402
from dkolib.synthesis import save_array, summarize_fidelity, synthesize  # noqa: E402
from dkolib.train import load_depthnet, save_model  # noqa: E402


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
    set_threads(args.threads or cfg.threads)
    engine = args.engine or cfg.optics.engine
    out = args.out
    out.mkdir(parents=True, exist_ok=True)

    stage1 = torch.load(args.stage1, map_location="cpu", weights_only=False)
    model = load_depthnet(args.stage1, cfg)
    weight = model.conv1_weight().detach().clone()
    budget = BudgetMeter()
    if stage1.get("budget"):
        budget.load_state_dict(stage1["budget"])
    before = budget.snapshot()

    gen = seed_everything(cfg.seed)
    res = synthesize(weight, cfg.optics, cfg.dko, engine=engine, generator=gen, progress=not args.no_progress,
                     ckpt_path=out / "ckpt.pt", log_csv=out / "history.csv", budget=budget)
    after = budget.snapshot()

    save_array(res.array, out / "array.pt", cfg.optics, loss=cfg.dko.loss, engine=engine)
    save_torch(res.gain.detach().clone(), out / "gain.pt")
    hybrid = hybrid_from_dko(model, res.array, res.gain, cfg.optics, "crop", engine)
    save_model(hybrid, out / "model.pt", cfg, budget, kind="hybrid_dko",
               extra={"stage2": {"loss": cfg.dko.loss, "lr": cfg.dko.lr, "steps": res.steps}})
    write_csv(res.history, out / "history.csv")
    write_csv(res.fidelity, out / "fidelity.csv")
    hist = res.history
    summary = {
        "profile": cfg.profile, "loss": cfg.dko.loss, "leakage_weight": cfg.dko.leakage_weight,
        "lr": cfg.dko.lr, "init": cfg.dko.init, "engine": engine, "steps": res.steps,
        "n_elements": int(res.array.latent.shape[0]), "n_cells": cfg.optics.n_cells,
        "meta_atom": cfg.optics.meta_atom, "seconds": res.seconds,
        "stage2_wall_s": after["wall_s"] - before["wall_s"], "stage2_flops": after["flops"] - before["flops"],
        "total_wall_s": after["wall_s"], "total_flops": after["flops"],
        "loss_first": float(hist["loss_mean"].iloc[0]) if len(hist) else float("nan"),
        "loss_last": float(hist["loss_mean"].iloc[-1]) if len(hist) else float("nan"),
        **summarize_fidelity(res.fidelity),
    }
    frame = pd.DataFrame([summary])
    write_csv(frame, out / "summary.csv")
    print(frame.T.to_string(header=False))
    return frame


if __name__ == "__main__":
    main()
