#!/usr/bin/env python
"""Model the paper's E2E run over 1, 8 and 64 devices from the measured one-device costs.

    python scripts/e2e_scaling_model.py [--costs results/costs.csv] [--size paper]
        [--devices 1 8 64] [--bandwidth-GBps 10] [--latency-us 10]

Reads the ``e2e_step`` and ``stage1_step`` rows of ``--costs`` (``scripts/measure_costs.py``:
seconds of the PSFs and of the network per step, the network's parameters) and writes
``results/benchmarks/e2e_scaling_model.csv`` and ``figures/e2e_scaling_model.png``: per
strategy (``replicated`` and ``data_parallel``: ``e2e.network_parallel`` ``replicated`` or
``data``, the latter with the BatchNorm layers of ``--profile``'s network synchronised) and device count, the step's parts, the bytes each device sends, and the
hours of the paper's 50,000 steps (:mod:`dkolib.distributed.scaling`). The costs are those of
the device that measured them (``costs.csv``'s ``device``, one CPU thread unless a GPU ran it):
the table scales them, it does not predict a GPU's speed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dkolib.study.cli import run_cli  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    import pandas as pd

    from dkolib.distributed.scaling import costs_from_table, plot_scaling, scaling_table
    from dkolib.errors import InputError
    from dkolib.io import write_csv

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--costs", type=Path, default=ROOT / "results" / "costs.csv")
    ap.add_argument("--size", default="paper")
    ap.add_argument("--profile", default="paper", help="whose network's BatchNorm layers to count")
    ap.add_argument("--devices", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--bandwidth-GBps", type=float, default=10.0, help="per-device collective bandwidth (assumed)")
    ap.add_argument("--latency-us", type=float, default=10.0, help="per-hop latency of a collective (assumed)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks" / "e2e_scaling_model.csv")
    ap.add_argument("--figure", type=Path, default=ROOT / "figures" / "e2e_scaling_model.png")
    args = ap.parse_args(argv)
    if not args.costs.exists():
        raise InputError(f"{args.costs} does not exist: run scripts/measure_costs.py first")
    if min(args.devices) < 1 or 1 not in args.devices:
        raise InputError(f"--devices must be >= 1 and include 1 (the measured device), got {args.devices}")
    import torch

    from dkolib.config import load_config
    from dkolib.depth.network import DepthNet

    cfg = load_config(args.profile)
    net = DepthNet(cfg.model, kernel_size=cfg.optics.kernel_size)
    bn = tuple(m.num_features for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    costs = pd.read_csv(args.costs)
    try:
        step = costs_from_table(costs, args.size, bn_channels=bn)
    except KeyError as exc:
        raise InputError(str(exc.args[0])) from None
    device = str(costs.set_index(["method", "size"]).loc[("e2e_step", args.size), "device"])
    table = scaling_table(step, sorted(set(args.devices)), bandwidth_Bps=args.bandwidth_GBps * 1e9,
                          latency_s=args.latency_us * 1e-6, device=device)
    write_csv(table, args.out)
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    plot_scaling(table, args.figure)
    cols = ["strategy", "devices", "psf_s", "net_s", "comm_s", "step_s", "speedup", "run_hours"]
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"wrote {args.out} and {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
