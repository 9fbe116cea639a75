#!/usr/bin/env python
"""End-to-end (E2E) baseline: metasurfaces and network trained jointly.

    python scripts/train_e2e.py --profile default --variant joint --out results/default/e2e
    python scripts/train_e2e.py --profile default --variant optics_only \
        --teacher results/default/stage1/model.pt --out results/default/e2e_optics_only

``joint``: the paper's setting, metasurface radii and the whole network from
scratch (``--warm-start`` copies a stage-1 network instead), with the optical
front end simulated by ``--engine`` in every step. ``optics_only``: the
stage-1 network is frozen and only the optics learns, to match its
disparities. Writes ``<out>/model.pt``, ``<out>/log.csv``, ``<out>/ckpt.pt``
(resumable).

Under ``torchrun --nproc_per_node N`` the metasurfaces are sharded over the processes
(:mod:`dkolib.distributed.e2e`): each process checkpoints to ``<out>/ckpt_rank{r}of{N}.pt``
and rank 0 writes the log and the model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dkolib.study.cli import run_cli  # noqa: E402
from dkolib.config import load_config, parse_overrides  # noqa: E402
from dkolib.study.paths import ProfilePaths  # noqa: E402
from dkolib.dko.train import load_depthnet, run_e2e  # noqa: E402
from dkolib.distributed import TorchrunEnv  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="default")
    ap.add_argument("--variant", choices=("joint", "optics_only"), default="joint")
    ap.add_argument("--engine", choices=("fast", "reference"), default=None, help="default: optics.engine")
    ap.add_argument("--teacher", type=Path, default=None, help="stage-1 checkpoint (optics_only)")
    ap.add_argument("--warm-start", type=Path, default=None, help="stage-1 checkpoint to start the network from")
    ap.add_argument("--out", type=Path, default=None, help="default: results/<profile>/e2e[_optics_only]")
    ap.add_argument("--max-seconds", type=float, default=None)
    ap.add_argument("--cache-dir", type=Path, default=None, help="dataset cache (default: the profile's)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    cfg = load_config(args.profile, parse_overrides(args.overrides))
    paths = ProfilePaths(cfg.profile)
    out = args.out or (paths.e2e if args.variant == "joint" else paths.results / "e2e_optics_only")
    teacher = load_depthnet(args.teacher, cfg) if args.teacher else None
    if args.variant == "optics_only" and teacher is None:
        raise SystemExit("--variant optics_only needs --teacher results/<profile>/stage1/model.pt")
    warm = load_depthnet(args.warm_start, cfg) if args.warm_start else None
    run_e2e(cfg, out, args.cache_dir or paths.data_cache, variant=args.variant, teacher=teacher, engine=args.engine,
            warm_start=warm, max_seconds=args.max_seconds, progress=not args.quiet)
    if TorchrunEnv.from_environ().rank == 0:
        print(f"wrote {out / 'model.pt'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
