#!/usr/bin/env python
"""Evaluate designs idealised (crop kernel) and physically (full PSF, full PSF + noise, whole sensor).

    python scripts/evaluate_designs.py --profile default \
        --design electronic=results/default/stage1/model.pt \
                 dko=results/default/dko/model.pt \
                 dko_finetune=results/default/dko_finetune/model.pt \
                 e2e=results/default/e2e/model.pt \
        [--stage1 results/default/stage1/model.pt] [--out results/default/physical_eval.csv] \
        [--evals crop full_psf full_psf_noise sensor sensor_noise] [--seed 0] [--split test] [--max-items N] \
        [--ideal-optics results/default/stage1/model.pt]

Each design is ``name=path`` where ``path`` is a ``train.save_model`` checkpoint
(``kind='electronic'`` or any ``'hybrid*'`` kind) or a DKO output folder with
``array.pt`` + ``gain.pt`` (then ``--stage1`` supplies the back end). Missing
paths are an error (``--skip-missing`` skips them instead).

Every design is evaluated in each requested mode with the same data and the
same noise seed; an electronic design has no optics, so it is evaluated once
and its row repeated for every mode (identical numbers). The gain of a design
is used unchanged in every mode. Writes CSV columns
``design, eval, abs_rel, sq_rel, rmse, rmse_log, a1, a2, a3``.

``--ideal-optics`` adds the row ``ideal_optics``: that electronic network read through
optics that deliver its exact kernels with all the light in the kernel window, under
the same sensor noise (the bound noise sets at the profile's photon level).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dkolib.study.cli import parse_designs, require_existing, run_cli  # noqa: E402
from dkolib.config import load_config, parse_overrides  # noqa: E402
from dkolib.dko.evaluation import EVAL_MODES  # noqa: E402
from dkolib.dko.sensor_eval import SENSOR_MODES  # noqa: E402
from dkolib.io import set_threads, write_csv  # noqa: E402
from dkolib.study.paths import ProfilePaths  # noqa: E402
from dkolib.study.pipeline import evaluate_designs  # noqa: E402


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", required=True)
    ap.add_argument("--design", nargs="+", required=True, metavar="NAME=PATH")
    ap.add_argument("--stage1", type=Path, default=None, help="stage-1 checkpoint for DKO array folders")
    ap.add_argument("--out", type=Path, default=None, help="default: results/<profile>/physical_eval.csv")
    ap.add_argument("--evals", nargs="+", default=list(EVAL_MODES), choices=EVAL_MODES + SENSOR_MODES,
                    help="modes (default: the three single-window ones); 'sensor' / 'sensor_noise' read "
                         "every optical design from the whole sensor (PSFs cached under cache/sensor/<profile>)")
    ap.add_argument("--seed", type=int, default=0, help="sensor-noise seed")
    ap.add_argument("--split", default="test")
    ap.add_argument("--max-items", type=int, default=None)
    ap.add_argument("--engine", choices=("fast", "reference"), default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cache-dir", type=Path, default=None, help="default: cache/data/<profile>")
    ap.add_argument("--skip-missing", action="store_true")
    ap.add_argument("--ideal-optics", type=Path, default=None, metavar="STAGE1",
                    help="also evaluate this electronic checkpoint through ideal optics (design 'ideal_optics')")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    args = ap.parse_args(argv)

    cfg = load_config(args.profile, parse_overrides(args.set))
    set_threads(args.threads or cfg.threads)
    paths = ProfilePaths(cfg.profile)
    out = args.out or paths.results / "physical_eval.csv"
    designs = {}
    for name, path in parse_designs(args.design, must_exist=False).items():
        if not path.exists():
            if args.skip_missing:
                print(f"skipping {name}: {path} does not exist")
                continue
            raise SystemExit(f"design {name}: {path} does not exist")
        designs[name] = path
    require_existing(("--ideal-optics", args.ideal_optics))
    if not designs:
        raise SystemExit("no design was evaluated")
    result = evaluate_designs(cfg, designs, split=args.split, seed=args.seed, evals=args.evals,
                              engine=args.engine, max_items=args.max_items, stage1=args.stage1,
                              cache_dir=args.cache_dir, ideal_optics=args.ideal_optics, progress=True)
    print(result.to_string(index=False))
    write_csv(result, out)
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    sys.exit(run_cli(main))
