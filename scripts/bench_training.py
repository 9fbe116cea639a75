#!/usr/bin/env python
"""Throughput of stage-1 (electronic) training steps: images/s, seconds/step, peak memory.

    python scripts/bench_training.py --profile default --steps 5
    python scripts/bench_training.py --profile smoke --profile default --threads 2

Times ``--steps`` AdamW steps (after one untimed warm-up step) of the profile's
DepthNet on random images of the profile's size and batch (``stage1.batch_size``)
with the depth loss, and writes/updates one row per profile of
``results/benchmarks/training_throughput.csv`` (columns: profile, images_per_s,
seconds_per_step, peak_mem_mb, cpu_seconds_per_step (process CPU time, all threads), threads, batch_size, height, width, width_factor,
steps_timed). Peak memory is the process's peak resident set size (MB). The
numbers are machine- and load-specific: on a shared CPU they are indicative.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dkolib.study.cli import run_cli  # noqa: E402
from dkolib.config import load_config, parse_overrides  # noqa: E402
from dkolib.io import seed_everything, set_threads, write_csv  # noqa: E402
from dkolib.depth.network import DepthNet  # noqa: E402
from dkolib.study.paths import ProfilePaths  # noqa: E402
from dkolib.depth.losses import make_depth_loss  # noqa: E402

COLUMNS = ["profile", "images_per_s", "seconds_per_step", "peak_mem_mb", "cpu_seconds_per_step", "threads", "batch_size", "height",
           "width", "width_factor", "steps_timed"]


def bench(cfg, steps: int, threads: int) -> dict:
    set_threads(threads)
    seed_everything(cfg.seed)
    model = DepthNet(cfg.model, kernel_size=cfg.optics.kernel_size).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.stage1.lr, weight_decay=cfg.stage1.weight_decay)
    loss_fn = make_depth_loss(cfg.data.min_depth_m, cfg.data.max_depth_m)
    b, h, w = cfg.stage1.batch_size, cfg.data.height, cfg.data.width
    batch = {"rgb": torch.rand(b, 3, h, w), "depth_m": 2.0 + 60.0 * torch.rand(b, 1, h, w)}

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model, batch).backward()
        opt.step()

    step()  # warm-up (allocations, kernel selection)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    dt = (time.perf_counter() - t0) / steps
    cpu = (time.process_time() - c0) / steps
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
    return {"profile": cfg.profile, "images_per_s": b / dt, "seconds_per_step": dt, "peak_mem_mb": peak_mb,
            "cpu_seconds_per_step": cpu, "threads": threads, "batch_size": b, "height": h, "width": w,
            "width_factor": cfg.model.width_factor, "steps_timed": steps}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", action="append", default=None, help="profile(s) to measure (default: default)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per profile")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: the profile's)")
    ap.add_argument("--out", type=Path, default=ProfilePaths("default").benchmarks / "training_throughput.csv")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    if args.steps < 1:
        ap.error("--steps must be >= 1")
    rows = []
    for profile in args.profile or ["default"]:
        cfg = load_config(profile, parse_overrides(args.overrides))
        row = bench(cfg, args.steps, args.threads or cfg.threads)
        print(f"{profile}: {row['seconds_per_step']:.3f} s/step, {row['images_per_s']:.1f} images/s, "
              f"peak {row['peak_mem_mb']:.0f} MB ({row['threads']} threads, batch {row['batch_size']}, "
              f"{row['height']}x{row['width']})")
        rows.append(row)
    new = pd.DataFrame(rows, columns=COLUMNS)
    if args.out.exists():
        old = pd.read_csv(args.out)
        new = pd.concat([old[~old["profile"].isin(new["profile"])], new], ignore_index=True)
    new = new[[c for c in COLUMNS if c in new] + [c for c in new if c not in COLUMNS]]
    write_csv(new, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
