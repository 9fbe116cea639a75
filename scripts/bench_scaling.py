#!/usr/bin/env python
"""Strong scaling of DKO stage 2 over processes: seconds per step with 1, 2, ... processes.

    python scripts/bench_scaling.py --profile default --steps 10
    python scripts/bench_scaling.py --profile default --stage1 results/default/stage1/model.pt \
        --processes 1 2 4 --threads-per-process 1

Fits the array of a ``[C_out, 3, k, k]`` kernel bank -- the first layer of ``--stage1``, or
random kernels of the profile's stage-1 width (16 output channels for ``default``) -- for
``--warmup`` untimed plus ``--steps`` timed stage-2 steps (no stopping rule, no checkpoints),
once per entry of ``--processes``. One process runs :func:`dkolib.dko.synthesis.synthesize`
(what ``scripts/run_dko.py`` runs without torchrun); ``N > 1`` processes run
:func:`dkolib.distributed.synthesize_sharded` (Gloo on CPU, NCCL with ``--set device=cuda``),
launched here as ``torchrun --nproc_per_node N`` would (:func:`dkolib.distributed.launch_local`).
Each process gets ``--threads-per-process`` intra-op threads: compare rows at equal threads per
process (strong scaling over processes), and keep ``processes x threads`` within the cores.

Writes ``--out`` (default ``results/benchmarks/scaling.csv``), one row per process count:
``processes``, ``threads_per_process``, ``seconds_per_step`` (rank 0's wall seconds per timed
step, the collectives and the wait for the slowest shard included), ``speedup`` (one process's
seconds per step over this row's; NaN without a 1-process row), ``efficiency`` (speedup /
processes), ``metasurfaces`` (E = 2 C_out C_in), ``metasurfaces_max_per_process`` (the largest
shard), ``cells`` (N, per side), ``steps_timed``, ``collective_bytes_per_step_per_process`` and
``collective_bytes_per_step_total`` (what each step's all-gather of the per-metasurface statistics
sends, from the tensor sizes: :func:`dkolib.distributed.comm.stage2_bytes_per_step`),
``final_gather_bytes`` (the latents sent to rank 0 once at the end), ``engine``, ``device``,
``profile``, ``kernels``. The numbers are machine- and load-specific.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dkolib.study.cli import run_cli  # noqa: E402
from dkolib.config import load_config, parse_overrides  # noqa: E402
from dkolib.distributed import ShardPlan, launch_local  # noqa: E402
from dkolib.distributed.comm import final_gather_bytes, stage2_bytes_per_step  # noqa: E402
from dkolib.errors import InputError  # noqa: E402
from dkolib.io import set_threads, write_csv  # noqa: E402

COLUMNS = ["processes", "threads_per_process", "seconds_per_step", "speedup", "efficiency", "metasurfaces",
           "metasurfaces_max_per_process", "cells", "steps_timed", "collective_bytes_per_step_per_process",
           "collective_bytes_per_step_total", "final_gather_bytes", "engine", "device", "profile", "kernels"]


def kernel_bank(cfg, stage1: Path | None) -> tuple[torch.Tensor, str]:
    """``([C_out, 3, k, k] kernels, description)``: the first layer of ``stage1``, or random
    normal kernels (seed ``cfg.seed``) as wide as the profile's stage-1 network's."""
    from dkolib.depth.network import DepthNet
    from dkolib.dko.train import load_depthnet

    if stage1 is not None:
        return load_depthnet(stage1, cfg).conv1_weight().detach().clone(), str(stage1)
    c_out = DepthNet(cfg.model, kernel_size=cfg.optics.kernel_size).conv1_channels
    k = int(cfg.optics.kernel_size)
    gen = torch.Generator().manual_seed(int(cfg.seed))
    return 0.1 * torch.randn(c_out, 3, k, k, generator=gen), f"random [{c_out}, 3, {k}, {k}]"


def _bench_rank(cfg, weight: torch.Tensor, total_steps: int, threads: int, engine: str) -> list[float] | None:
    """One process of a run (launched by :func:`launch_local`): the cumulative wall seconds after
    each step (rank 0; None elsewhere)."""
    from dkolib.distributed import synthesize_launched
    from dkolib.dko.train import resolve_device

    set_threads(threads)
    gen = torch.Generator().manual_seed(int(cfg.seed))
    res = synthesize_launched(weight, cfg.optics, cfg.dko, resolve_device(cfg), engine=engine, generator=gen,
                              progress=False, steps=total_steps, stop_window=0)
    return None if res is None else res.history["seconds"].tolist()


def bench(cfg, weight: torch.Tensor, processes: int, steps: int, warmup: int, threads: int, engine: str,
          timeout_s: float) -> float:
    """Seconds per timed step of a run on ``processes`` processes (rank 0's wall clock)."""
    outcomes = launch_local(_bench_rank, processes, args=(cfg, weight, warmup + steps, threads, engine),
                            timeout_s=timeout_s, env={"OMP_NUM_THREADS": str(threads)})
    failed = [o for o in outcomes if not o.ok]
    if failed:
        detail = "\n".join(f"rank {o.rank}: {o.error}\n{o.traceback or ''}" for o in failed)
        raise RuntimeError(f"the {processes}-process run failed:\n{detail}")
    seconds = outcomes[0].value
    before = seconds[warmup - 1] if warmup > 0 else 0.0
    return (seconds[-1] - before) / steps


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="default")
    ap.add_argument("--stage1", type=Path, default=None, help="stage-1 model.pt (default: random kernels)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per run")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first (operator caches, allocations)")
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--threads-per-process", type=int, default=1)
    ap.add_argument("--engine", choices=("fast", "reference"), default=None, help="default: optics.engine")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per run before it is stopped")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks" / "scaling.csv")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.threads_per_process < 1 or min(args.processes) < 1:
        raise InputError("need --steps >= 1, --warmup >= 0, --threads-per-process >= 1 and --processes >= 1")
    n_cpu = os.cpu_count() or 1
    if max(args.processes) * args.threads_per_process > n_cpu:
        print(f"warning: {max(args.processes)} processes x {args.threads_per_process} threads exceed the "
              f"{n_cpu} cores: the largest runs will be oversubscribed", file=sys.stderr)

    cfg = load_config(args.profile, parse_overrides(args.set))
    engine = args.engine or cfg.optics.engine
    weight, source = kernel_bank(cfg, args.stage1)
    c_out, c_in = int(weight.shape[0]), int(weight.shape[1])
    rows = []
    for n in sorted(set(args.processes)):
        plan = ShardPlan(c_out, c_in, n)
        sent = stage2_bytes_per_step(plan)
        sec = bench(cfg, weight, n, args.steps, args.warmup, args.threads_per_process, engine, args.timeout)
        rows.append({"processes": n, "threads_per_process": args.threads_per_process, "seconds_per_step": sec,
                     "metasurfaces": 2 * c_out * c_in, "metasurfaces_max_per_process": plan.max_elements,
                     "cells": int(cfg.optics.n_cells), "steps_timed": args.steps,
                     "collective_bytes_per_step_per_process": sent["sent_per_rank"],
                     "collective_bytes_per_step_total": sent["sent_total"],
                     "final_gather_bytes": final_gather_bytes(plan, cfg.optics.n_cells), "engine": engine,
                     "device": cfg.device, "profile": cfg.profile, "kernels": source})
        print(f"{n} process(es): {sec:.3f} s/step", flush=True)
    frame = pd.DataFrame(rows)
    base = frame.loc[frame["processes"] == 1, "seconds_per_step"]
    t1 = float(base.iloc[0]) if len(base) else math.nan
    frame["speedup"] = t1 / frame["seconds_per_step"]
    frame["efficiency"] = frame["speedup"] / frame["processes"]
    frame = frame[COLUMNS]
    write_csv(frame, args.out)
    print(frame.to_string(index=False))
    print(f"wrote {args.out}")
    return frame


if __name__ == "__main__":
    sys.exit(run_cli(main))
