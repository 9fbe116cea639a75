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

At a budget: ``--budget-of results/default/dko/model.pt --budget-fraction 4`` trains until
the FLOPs reach 4x those of that model's run (``C_ref``: the main chain's DKO, stage 1 + stage 2),
at a constant learning rate as in the equal-budget study (``--steps-cap`` only caps it);
``--start-from <dir>/ckpt.pt`` continues a shorter budget's run (the checkpoint is copied, the
source left as it is), so a 4x design is the 1x design trained on:

    python scripts/train_e2e.py --profile default --out results/default/e2e_1x \
        --budget-of results/default/dko/model.pt --budget-fraction 1
    python scripts/train_e2e.py --profile default --out results/default/e2e_4x \
        --budget-of results/default/dko/model.pt --budget-fraction 4 --start-from results/default/e2e_1x/ckpt.pt

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


def budget_limits(args) -> tuple[float | None, int | None]:
    """``(max_flops, steps)`` of a budget run (``(None, None)`` without one); copies
    ``--start-from`` into ``--out`` when the run has no checkpoint of its own yet."""
    import shutil

    from dkolib.errors import InputError
    from dkolib.io import load_torch

    if (args.budget_of is None) != (args.budget_fraction is None):
        raise InputError("--budget-of and --budget-fraction go together (C_ref's model and the multiple of it)")
    if args.budget_of is None:
        if args.start_from is not None:
            raise InputError("--start-from continues a budget run: give --budget-of and --budget-fraction too")
        return None, None
    if args.budget_fraction <= 0 or args.steps_cap < 1:
        raise InputError(f"--budget-fraction must be > 0 and --steps-cap >= 1, got {args.budget_fraction}, "
                         f"{args.steps_cap}")
    budget = load_torch(args.budget_of, map_location="cpu").get("budget")
    if not budget or not budget.get("flops"):
        raise InputError(f"{args.budget_of} holds no budget meter with FLOPs: pass a model.pt written by "
                         "scripts/run_dko.py (its meter holds stage 1 + stage 2)")
    if args.start_from is not None:
        if not args.start_from.exists():
            raise InputError(f"--start-from {args.start_from} does not exist: run the shorter budget first")
        if args.out is None:
            raise InputError("--start-from needs --out (the folder the run continues in)")
        args.out.mkdir(parents=True, exist_ok=True)
        if not (args.out / "ckpt.pt").exists():
            shutil.copy2(args.start_from, args.out / "ckpt.pt")
    return float(args.budget_fraction) * float(budget["flops"]), int(args.steps_cap)


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
    ap.add_argument("--budget-of", type=Path, default=None,
                    help="a model.pt whose run's FLOPs are the budget unit C_ref (with --budget-fraction)")
    ap.add_argument("--budget-fraction", type=float, default=None, help="train until FLOPs reach this x C_ref")
    ap.add_argument("--steps-cap", type=int, default=100_000, help="step cap of a budget run (constant lr below it)")
    ap.add_argument("--start-from", type=Path, default=None, help="ckpt.pt of a shorter budget run to continue")
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
    max_flops, steps = budget_limits(args)
    run_e2e(cfg, out, args.cache_dir or paths.data_cache, variant=args.variant, teacher=teacher, engine=args.engine,
            warm_start=warm, max_seconds=args.max_seconds, max_flops=max_flops, steps=steps,
            progress=not args.quiet)
    if TorchrunEnv.from_environ().rank == 0:
        print(f"wrote {out / 'model.pt'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
