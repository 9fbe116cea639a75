#!/usr/bin/env python
"""Stage 1: train the all-electronic depth network of a profile.

    python scripts/train_stage1.py --profile default --out results/default/stage1
    python scripts/train_stage1.py --profile smoke --out /tmp/s1 --set stage1.steps=2 --set seed=1

Writes ``<out>/model.pt`` (state dict, config, budget), ``<out>/log.csv``
(step, wall_s, cpu_s, flops, loss, lr, val_* metrics) and ``<out>/ckpt.pt``;
an interrupted run resumes from ``ckpt.pt`` when started again with the same
settings. Data come from ``--cache`` (default ``cache/data/<profile>``; rendered
there if missing).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dkolib.study.cli import run_cli  # noqa: E402
from dkolib.config import load_config, parse_overrides  # noqa: E402
from dkolib.study.paths import ProfilePaths  # noqa: E402
from dkolib.dko.train import run_stage1  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="default", help="config profile (smoke, default, paper)")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: results/<profile>/stage1)")
    ap.add_argument("--cache", type=Path, default=None, help="data cache (default: cache/data/<profile>)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, repeatable (e.g. --set stage1.steps=100)")
    ap.add_argument("--max-seconds", type=float, default=None, help="stop once this much wall time is spent")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)

    cfg = load_config(args.profile, parse_overrides(args.overrides))
    paths = ProfilePaths(cfg.profile)
    out = args.out if args.out is not None else paths.stage1
    cache = args.cache if args.cache is not None else paths.data_cache
    run_stage1(cfg, out, cache, max_seconds=args.max_seconds, progress=not args.quiet)
    print(f"wrote {out / 'model.pt'} and {out / 'log.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
