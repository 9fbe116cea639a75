#!/usr/bin/env python
"""Render the synthetic train/val/test splits of a profile to ``<out>/{train,val,test}.npz``.

    python scripts/make_dataset.py --profile default --out cache/data/default
    python scripts/make_dataset.py --profile smoke --out /tmp/d data.n_train=8 --force

Existing files that match the configuration are kept (use ``--force`` to
rewrite them); a file made with other settings is an error unless ``--force``.
Writes are atomic. Prints the time per split and the depth range.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dkolib.study.cli import run_cli  # noqa: E402
from dkolib.study.paths import ProfilePaths  # noqa: E402
from dkolib.config import load_config, parse_overrides  # noqa: E402
from dkolib.depth.data import SPLITS, dataset_seed, generate_split, load_split, save_split, split_meta  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="default", help="config profile (smoke, default, paper)")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: cache/data/<profile>)")
    ap.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS)
    ap.add_argument("--force", action="store_true", help="rewrite existing files")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. data.n_train=100")
    args = ap.parse_args(argv)

    cfg = load_config(args.profile, parse_overrides(args.overrides))
    if cfg.data.dataset != "synthetic":
        print(f"data.dataset is {cfg.data.dataset!r}: nothing to render (KITTI is read in place)")
        return 0
    out = args.out if args.out is not None else ProfilePaths(args.profile).data_cache
    seed = dataset_seed(cfg)
    for split in args.splits:
        path = out / f"{split}.npz"
        meta = split_meta(cfg.data, split, seed)
        if path.exists() and not args.force:
            try:
                load_split(path, expected_meta=meta)
            except (ValueError, FileNotFoundError) as err:
                print(f"error: {err}", file=sys.stderr)
                return 1
            print(f"{path}: exists and matches the config, kept (--force rewrites it)")
            continue
        t0 = time.perf_counter()
        arrays = generate_split(cfg.data, split, seed, progress=not args.quiet)
        dt = time.perf_counter() - t0
        save_split(arrays, path)
        d = arrays["depth_m"]
        valid = d < cfg.data.max_depth_m
        print(f"{path}: {d.shape[0]} scenes {d.shape[1]}x{d.shape[2]} in {dt:.1f} s "
              f"({1e3 * dt / d.shape[0]:.1f} ms/scene); depth {d.min():.2f}..{d[valid].max():.2f} m, "
              f"{100 * (1 - valid.mean()):.1f}% sky/beyond {cfg.data.max_depth_m:g} m, "
              f"median {np.median(d[valid]):.2f} m")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
