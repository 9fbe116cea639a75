#!/usr/bin/env python
"""E2E over processes: seconds per step, and the bytes its collectives move, measured.

    python scripts/bench_e2e_scaling.py --profile default --steps 6
    python scripts/bench_e2e_scaling.py --profile default --runs 1x1:replicated 1x2:replicated 2x1:replicated 2x1:data

Each entry of ``--runs`` is ``PROCESSESxTHREADS:MODE`` (``MODE``: ``e2e.network_parallel``,
``replicated`` or ``data``). Every entry trains the profile's E2E baseline (joint, from scratch,
no evaluation before the end) twice under :func:`dkolib.distributed.launch_local` (as ``torchrun
--nproc_per_node N`` would): for ``--warmup`` and for ``--warmup + --steps`` steps. Set-up,
the final evaluation and the checkpoints are the same in both, so the difference of the two
runs is ``--steps`` training steps alone:

* ``seconds_per_step``: rank 0's budget wall clock over the timed steps of the longer run;
  ``speedup``: the ``1x1:replicated`` row's seconds per step over this row's;
* ``payload_bytes_per_step``: bytes of the tensors every process hands to ``all_gather`` and
  ``all_reduce`` per step (counted in the processes), against ``payload_bytes_model``, the
  same from the tensor sizes (:func:`dkolib.distributed.e2e.psf_bytes_per_step` and
  :func:`dkolib.distributed.data_parallel.network_bytes_per_step`);
* ``wire_bytes_per_step``: what the loopback interface carried per timed step of the longer run,
  read on rank 0 at the end of every step (``/proc/net/dev``, all processes together, TCP headers
  and anything else on the machine's loopback included; NaN where it cannot be read), against
  ``wire_bytes_model``: a ring all-gather sends ``W (W - 1)`` blocks and a ring all-reduce
  ``2 (W - 1)`` times its payload, over all processes.

Writes ``--out`` (default ``results/benchmarks/e2e_scaling.csv``). Numbers are machine- and
load-specific: compare rows of one run, not runs on different days.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dkolib.study.cli import run_cli  # noqa: E402
from dkolib.config import load_config, parse_overrides  # noqa: E402
from dkolib.distributed import ShardPlan, launch_local  # noqa: E402
from dkolib.errors import InputError  # noqa: E402
from dkolib.io import write_csv  # noqa: E402

COLUMNS = ["processes", "threads_per_process", "network_parallel", "seconds_per_step", "speedup",
           "payload_bytes_per_step", "payload_bytes_model", "wire_bytes_per_step", "wire_bytes_model",
           "metasurfaces", "cells", "batch_size", "steps_timed", "profile"]


def parse_run(text: str) -> tuple[int, int, str]:
    """``'2x1:data'`` -> ``(2, 1, 'data')``."""
    try:
        shape, mode = text.split(":")
        procs, threads = (int(v) for v in shape.lower().split("x"))
    except ValueError:
        raise InputError(f"--runs entries look like 2x1:data (PROCESSESxTHREADS:MODE), got {text!r}") from None
    if procs < 1 or threads < 1 or mode not in ("replicated", "data"):
        raise InputError(f"--runs {text!r}: need processes >= 1, threads >= 1, mode replicated or data")
    return procs, threads, mode


def loopback_bytes() -> float:
    """Bytes sent over the loopback interface since boot (NaN where /proc/net/dev has none)."""
    try:
        for line in Path("/proc/net/dev").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name.strip() == "lo":
                return float(rest.split()[8])  # transmit bytes
    except OSError:
        pass
    return math.nan


class _CountingCollectives:
    """Counts the bytes of the tensors handed to ``all_gather`` / ``all_reduce`` in this process."""

    def __init__(self):
        import torch.distributed as dist

        self.bytes = 0
        self.dist = dist
        self.inner = {"all_gather": dist.all_gather, "all_reduce": dist.all_reduce}
        dist.all_gather = self._all_gather
        dist.all_reduce = self._all_reduce

    def _all_gather(self, parts, tensor, *args, **kwargs):
        self.bytes += tensor.numel() * tensor.element_size()
        return self.inner["all_gather"](parts, tensor, *args, **kwargs)

    def _all_reduce(self, tensor, *args, **kwargs):
        self.bytes += tensor.numel() * tensor.element_size()
        return self.inner["all_reduce"](tensor, *args, **kwargs)


def _rank(cfg, out: str, cache: str, steps: int, threads: int) -> dict:
    from dkolib.dko.train import run_e2e

    from dkolib.distributed.e2e import OpticsShard

    torch.set_num_threads(threads)
    counter = _CountingCollectives()
    marks: list[float] = []  # loopback bytes at the end of each training step (its last collective)
    inner = OpticsShard.backward

    def backward(self, local, psf_grad):
        inner(self, local, psf_grad)
        marks.append(loopback_bytes())

    OpticsShard.backward = backward
    run_e2e(cfg, Path(out), Path(cache), steps=steps, progress=False)
    res = {"payload_bytes": counter.bytes, "wire_marks": marks}
    if os.environ.get("RANK", "0") == "0":
        log = pd.read_csv(Path(out) / "log.csv")
        res["wall_s"] = log["wall_s"].tolist()
    return res


def _wire_per_step(marks: list[float], warmup: int, steps: int) -> float:
    """Loopback bytes per timed step, between the ends of the last warm-up step and of the last
    step (0 with one process, which sends nothing)."""
    if not marks:
        return 0.0
    return (marks[warmup + steps - 1] - marks[warmup - 1]) / steps


def _launch(cfg, procs: int, threads: int, out: Path, cache: Path, steps: int, timeout_s: float) -> dict:
    outcomes = launch_local(_rank, procs, args=(cfg, str(out), str(cache), steps, threads), timeout_s=timeout_s,
                            env={"OMP_NUM_THREADS": str(threads)})
    failed = [o for o in outcomes if not o.ok]
    if failed:
        detail = "\n".join(f"rank {o.rank}: {o.error}\n{o.traceback or ''}" for o in failed)
        raise RuntimeError(f"the {procs}-process E2E run failed:\n{detail}")
    return outcomes[0].value


def model_bytes(cfg, procs: int, mode: str) -> tuple[int, int]:
    """``(payload per process, wire over all processes)`` per step from the tensor sizes."""
    from dkolib.depth.network import DepthNet
    from dkolib.distributed.data_parallel import network_bytes_per_step
    from dkolib.distributed.e2e import psf_bytes_per_step
    from dkolib.dko.frontend import unit_gain

    net = DepthNet(cfg.model, kernel_size=cfg.optics.kernel_size)
    c_out, window = net.conv1_channels, int(cfg.optics.kernel_size)
    plan = ShardPlan(c_out, 3, procs)
    if procs < 2:
        return 0, 0
    psf = psf_bytes_per_step(plan, window)
    payload, wire = psf["block_bytes"], psf["sent_total"]
    if mode == "data":
        # the trained network: the back end (the first layer is the optics) and the electronic gain
        n_params = sum(p.numel() for p in net.backend_parameters()) + unit_gain(c_out, 3, cfg.optics.gain).numel()
        bn = [m.num_features for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        nb = network_bytes_per_step(n_params, 2 * c_out * 3 * window ** 2, bn, procs)
        payload += nb["payload_bytes"] + 2 * 8  # and the float64 loss weight and loss
        wire += nb["ring_sent_total"] + 2 * 2 * (procs - 1) * 8
    return payload, wire


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="default")
    ap.add_argument("--runs", nargs="+", default=["1x1:replicated", "1x2:replicated", "2x1:replicated", "2x1:data"])
    ap.add_argument("--steps", type=int, default=6, help="timed steps (the difference of the two runs)")
    ap.add_argument("--warmup", type=int, default=2, help="steps of the shorter run (set-up, first steps)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per run before it is stopped")
    ap.add_argument("--cache-dir", type=Path, default=None, help="dataset cache (default: the profile's)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks" / "e2e_scaling.csv")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.warmup < 1:
        raise InputError("need --steps >= 1 and --warmup >= 1")
    runs = [parse_run(r) for r in args.runs]
    from dkolib.depth.data import get_dataset
    from dkolib.study.paths import ProfilePaths

    overrides = {**parse_overrides(args.set), "stage1.eval_every": 10 ** 6, "stage1.checkpoint_every": 10 ** 6}
    base = load_config(args.profile, overrides)
    cache = args.cache_dir or ProfilePaths(base.profile).data_cache
    for split in ("train", "val"):  # made once here, read by every process
        get_dataset(base, split, cache)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_e2e_") as tmp:
        for i, (procs, threads, mode) in enumerate(runs):
            cfg = load_config(args.profile, {**overrides, "e2e.network_parallel": mode, "threads": threads})
            short = _launch(cfg, procs, threads, Path(tmp) / f"{i}_short", cache, args.warmup, args.timeout)
            long = _launch(cfg, procs, threads, Path(tmp) / f"{i}_long", cache, args.warmup + args.steps, args.timeout)
            wall = long["wall_s"]
            payload_model, wire_model = model_bytes(cfg, procs, mode)
            rows.append({"processes": procs, "threads_per_process": threads, "network_parallel": mode,
                         "seconds_per_step": (wall[-1] - wall[args.warmup - 1]) / args.steps,
                         "payload_bytes_per_step": (long["payload_bytes"] - short["payload_bytes"]) / args.steps,
                         "payload_bytes_model": payload_model,
                         "wire_bytes_per_step": _wire_per_step(long["wire_marks"], args.warmup, args.steps),
                         "wire_bytes_model": wire_model, "cells": int(cfg.optics.n_cells), "batch_size": int(cfg.e2e.batch_size),
                         "steps_timed": args.steps, "profile": cfg.profile})
            print(f"{procs} x {threads} {mode}: {rows[-1]['seconds_per_step']:.3f} s/step", flush=True)
    frame = pd.DataFrame(rows)
    from dkolib.depth.network import DepthNet

    frame["metasurfaces"] = 2 * 3 * DepthNet(base.model, kernel_size=base.optics.kernel_size).conv1_channels
    ref = frame[(frame["processes"] == 1) & (frame["threads_per_process"] == 1)]["seconds_per_step"]
    frame["speedup"] = float(ref.iloc[0]) / frame["seconds_per_step"] if len(ref) else math.nan
    frame = frame[COLUMNS]
    write_csv(frame, args.out)
    print(frame.to_string(index=False))
    print(f"wrote {args.out}")
    return frame


if __name__ == "__main__":
    sys.exit(run_cli(main))
