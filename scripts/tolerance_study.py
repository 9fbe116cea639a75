#!/usr/bin/env python
"""Tolerance of built designs to fabrication, assembly and sensor errors.

    python scripts/tolerance_study.py --profile default \
        --design dko=results/default/dko/model.pt \
                 dko_finetune=results/default/dko_finetune/model.pt \
                 e2e=results/default/e2e/model.pt \
        --stage1 results/default/stage1/model.pt \
        --out results/default/tolerances.csv [--figure figures/default/tolerances.png]

Every design is perturbed (radius errors per simulation cell and a radius bias,
sensor-distance errors, photon level, read noise, illumination bandwidth; the
levels, draws and number of test images are the profile's ``tolerances``
section) and evaluated with the full PSF and sensor noise, with the same images
and noise seed throughout. The electronic network (``--stage1``) and the
constant-depth predictor are evaluated once as reference rows. Writes CSV
columns ``design, perturbation, level, unit, draw, abs_rel, sq_rel, rmse,
rmse_log, a1, a2, a3, clamped_fraction, eval_items, seconds`` (atomically) and,
with ``--figure``, AbsRel against level per perturbation (PNG and PDF).
See :mod:`dkolib.fab.tolerances`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dkolib.config import load_config, parse_overrides
from dkolib.io import set_threads, write_csv
from dkolib.fab.tolerances import REFERENCES
from dkolib.study.cli import parse_designs, run_cli
from dkolib.study.paths import ProfilePaths


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", required=True)
    ap.add_argument("--design", nargs="+", required=True, metavar="NAME=PATH")
    ap.add_argument("--stage1", type=Path, required=True, help="stage-1 checkpoint (reference, DKO back end)")
    ap.add_argument("--out", type=Path, default=None, help="default: results/<profile>/tolerances.csv")
    ap.add_argument("--figure", type=Path, default=None, help="PNG path (a PDF is written beside it)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cache-dir", type=Path, default=None, help="default: cache/data/<profile>")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    args = ap.parse_args(argv)

    cfg = load_config(args.profile, parse_overrides(args.set))
    set_threads(args.threads or cfg.threads)
    paths = ProfilePaths(cfg.profile)
    designs = parse_designs(args.design, reserved=REFERENCES)
    if not args.stage1.exists():
        raise FileNotFoundError(f"--stage1 {args.stage1} does not exist")
    from dkolib.fab.tolerances import study_from_files

    table = study_from_files(cfg, designs, args.stage1, args.cache_dir or paths.data_cache, split=args.split,
                             progress=not args.quiet)
    out = write_csv(table, args.out or paths.results / "tolerances.csv")
    print(f"wrote {out} ({len(table)} rows, {table['seconds'].sum():.0f} s of evaluation)")
    if args.figure is not None:
        from dkolib.fab.plots import plot_tolerances
        from dkolib.fab.tolerances import nominal_levels
        from dkolib.plots import save_figure

        save_figure(plot_tolerances(table, nominal_levels(cfg)), args.figure.with_suffix(""))
        print(f"wrote {args.figure.with_suffix('.png')} and .pdf")
    return table


if __name__ == "__main__":
    sys.exit(run_cli(main))
