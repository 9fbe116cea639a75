#!/usr/bin/env python
"""One job of the equal-budget experiment (DKO vs E2E); protocol in ``dkolib/study/protocol.py``.

    # per seed, first (shared by every method of that seed): the budget unit, then stage 1
    python scripts/run_equal_budget.py --profile default --method calibrate --seed 0 \
        --stage1-dir results/default/equal_budget/stage1_0 --out results/default/equal_budget/calibration_0.csv
    python scripts/run_equal_budget.py --profile default --method stage1 --seed 0 \
        --stage1-dir results/default/equal_budget/stage1_0 --out results/default/equal_budget/stage1_0.csv
    # then, independently, per (method, engine, seed):
    python scripts/run_equal_budget.py --profile default --method e2e_scratch --engine fast --seed 0 \
        --stage1-dir results/default/equal_budget/stage1_0 --out results/default/equal_budget/e2e_scratch_fast_0.csv

Methods: ``calibrate`` (per-step costs and the budget ladders; its ``--out`` lists C_ref per
engine), ``stage1`` (stage-1 snapshots at the main chain's rate; its ``--out`` is the
reference stage 1's validation AbsRel), ``electronic``, ``dko``, ``dko_ft``, ``e2e_scratch``,
``e2e_warm`` (their ``--out`` is the per-job results table, columns
``dkolib.study.protocol.COLUMNS``). The budget unit is the main chain's DKO run: with
``budget.stage1_steps``/``budget.dko_steps`` at 0 the jobs read its step counts from
``--main-chain`` (default ``results/<profile>``: ``stage1/log.csv``, ``dko/summary.csv``). Every job runs with ``--threads`` torch threads (default 1),
writes its CSV atomically and resumes from its work folder (``--work``, default
``<out without .csv>.work``) if interrupted. With ``budget.lr_search: first_seed`` the jobs
of the other seeds (and of the reference engine) take ``--lr-from`` the CSV of the job that
selected the learning rate (the fast-engine job of the first seed; stage 1 always trains at the
main chain's rate). ``--set key=value`` applies config overrides
(the same ones must be given to the stage-1 job and to every method job of a seed).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dkolib.study.cli import run_cli  # noqa: E402

import torch  # noqa: E402

from dkolib.study.jobs import JobContext, run_job  # noqa: E402
from dkolib.study.protocol import (JOBS, SEED_JOBS, chosen_lr_mult, lr_source,  # noqa: E402
                                   resolve_reference_run, settings_from_config)
from dkolib.study.snapshots import cleanup_snapshots  # noqa: E402
from dkolib.config import load_config, parse_overrides  # noqa: E402
from dkolib.io import set_threads, write_csv  # noqa: E402
from dkolib.study.paths import ProfilePaths  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", required=True)
    ap.add_argument("--method", required=True, choices=JOBS)
    ap.add_argument("--engine", choices=("fast", "reference"), default=None,
                    help="PSF engine (required for every method except calibrate and stage1)")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True, help="CSV written atomically at the end")
    ap.add_argument("--stage1-dir", type=Path, default=None,
                    help="shared per-seed stage-1 folder (default results/<profile>/equal_budget/stage1_<seed>)")
    ap.add_argument("--work", type=Path, default=None, help="this job's work folder (checkpoints, snapshots)")
    ap.add_argument("--cache-dir", type=Path, default=None, help="dataset cache (default cache/data/<profile>)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eval-items", type=int, default=None,
                    help="evaluate on the first N val/test images (default budget.eval_items, else all)")
    ap.add_argument("--lr-from", type=Path, default=None,
                    help="output CSV of the job whose selected lr multiplier this job reuses "
                         "(budget.lr_search: first_seed; see dkolib.study.protocol.lr_source)")
    ap.add_argument("--main-chain", type=Path, default=None,
                    help="results folder of the main chain whose DKO run is the budget unit when budget.stage1_steps / "
                         "budget.dko_steps are 0 (default results/<profile>)")
    ap.add_argument("--keep-snapshots", action="store_true", help="keep method snapshots after evaluation")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    if args.method not in SEED_JOBS and args.engine is None:
        ap.error(f"--engine is required for --method {args.method}")
    cfg = load_config(args.profile, {**parse_overrides(args.set), "threads": args.threads, "seed": args.seed})
    set_threads(args.threads)
    paths = ProfilePaths(args.profile)
    settings = resolve_reference_run(settings_from_config(cfg), args.main_chain or paths.results)
    if args.eval_items is not None:
        if args.eval_items < 1:
            ap.error("--eval-items must be >= 1")
        settings = dataclasses.replace(settings, eval_items=args.eval_items)
    stage1_dir = args.stage1_dir or paths.equal_budget / f"stage1_{args.seed}"
    work = args.work or args.out.with_suffix(".work")
    if args.method in SEED_JOBS:
        work = stage1_dir
    source = lr_source(settings, args.method, args.engine, args.seed)
    lr_mult = None
    if source is not None:
        m, g, s = source
        if args.lr_from is None:
            ap.error(f"--lr-from is required: with budget.lr_search=first_seed this job reuses the lr multiplier "
                     f"selected by the {m} job{'' if g is None else f' (engine {g})'} of seed {s}; pass its output CSV")
        if not args.lr_from.exists():
            ap.error(f"--lr-from {args.lr_from} does not exist: run the {m} job of seed {s} first")
        lr_mult = chosen_lr_mult(args.lr_from)
    elif args.lr_from is not None:
        ap.error(f"--lr-from given, but this job selects its own learning rate (budget.lr_search="
                 f"{settings.lr_search}, seed {args.seed}, engine {args.engine}): drop --lr-from")
    ctx = JobContext(cfg=cfg, settings=settings, seed=args.seed, cache_dir=args.cache_dir or paths.data_cache,
                        stage1_dir=stage1_dir, work=work, progress=not args.no_progress, lr_mult=lr_mult)
    t0, c0 = time.perf_counter(), time.process_time()
    frame = run_job(args.method, ctx, args.engine)
    write_csv(frame, args.out)
    if args.method not in SEED_JOBS and not args.keep_snapshots:
        cleanup_snapshots(work)
    print(f"{args.method} engine={args.engine} seed={args.seed}: {len(frame)} rows -> {args.out} "
          f"(job wall {time.perf_counter() - t0:.1f} s, cpu {time.process_time() - c0:.1f} s, "
          f"threads {torch.get_num_threads()})")
    return frame


if __name__ == "__main__":
    sys.exit(run_cli(main))
