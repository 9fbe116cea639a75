#!/usr/bin/env python
"""Designs as designed and as fabricated: the same radii read by the model they were made with and by the device's.

    python scripts/as_fabricated.py --profile default \\
        --stage1 results/default/stage1/model.pt --dko results/default/dko --e2e results/default/e2e/model.pt \\
        --designed-cell-model bandlimited --designed-library old_library.csv \\
        [--out results/default/as_fabricated.csv] [--split test] [--max-items N] [--seed 0]

Each design is read three ways (``dkolib.fab.as_fabricated``), with the electronic gains
refitted in closed form for each, as a built camera would be calibrated:

* ``as_designed``: the optical model the design was made with (``--designed-cell-model``,
  ``--designed-library``);
* ``staircase``: the same library, the cells as the uniform squares the mask builds;
* ``as_fabricated``: the staircase and the profile's library (``optics.meta_atom``).

DKO's kernels are compared with the electronic network's (what stage 2 fitted); E2E's with
its own as-designed kernels. Writes one row per (design, reading): ``light_crop``,
``light_render``, ``corr``, ``kernel_err``, ``abs_rel_<eval>``, ``rmse_<eval>``, ``a1_<eval>``,
and where the designs came from (``designed_cell_model``, ``designed_library``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dkolib.study.cli import require_existing, run_cli  # noqa: E402
from dkolib.config import load_config, parse_overrides  # noqa: E402
from dkolib.depth.data import get_dataset  # noqa: E402
from dkolib.dko.evaluation import load_design  # noqa: E402
from dkolib.dko.train import load_depthnet  # noqa: E402
from dkolib.fab.as_fabricated import designed_kernels, read_designs  # noqa: E402
from dkolib.io import set_threads, write_csv  # noqa: E402
from dkolib.optics.grids import CELL_MODELS  # noqa: E402
from dkolib.optics.metaatoms import load_atom  # noqa: E402
from dkolib.study.paths import ProfilePaths  # noqa: E402


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", required=True)
    ap.add_argument("--stage1", type=Path, required=True, help="stage-1 checkpoint (DKO's back end and targets)")
    ap.add_argument("--dko", type=Path, default=None, help="DKO output folder (array.pt + gain.pt)")
    ap.add_argument("--e2e", type=Path, default=None, help="E2E checkpoint (model.pt)")
    ap.add_argument("--designed-cell-model", choices=CELL_MODELS, required=True)
    ap.add_argument("--designed-library", default=None,
                    help="meta-atom model the designs were made with (default: the profile's optics.meta_atom)")
    ap.add_argument("--out", type=Path, default=None, help="default: results/<profile>/as_fabricated.csv")
    ap.add_argument("--split", default="test")
    ap.add_argument("--max-items", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0, help="sensor-noise seed")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    args = ap.parse_args(argv)

    cfg = load_config(args.profile, parse_overrides(args.set))
    set_threads(args.threads or cfg.threads)
    paths = ProfilePaths(cfg.profile)
    out = args.out or paths.results / "as_fabricated.csv"
    require_existing(("--stage1", args.stage1), ("--dko", args.dko), ("--e2e", args.e2e))
    if args.dko is None and args.e2e is None:
        raise SystemExit("nothing to read: pass --dko and/or --e2e")
    designed_lib = args.designed_library or cfg.optics.meta_atom
    designed_optics = dataclasses.replace(cfg.optics, cell_model=args.designed_cell_model, meta_atom=designed_lib)
    staircase = dataclasses.replace(designed_optics, cell_model="staircase")
    fabricated = dataclasses.replace(cfg.optics, cell_model="staircase")
    designed_atom, fabricated_atom = load_atom(designed_lib), load_atom(cfg.optics.meta_atom)
    readings = {"as_designed": (designed_optics, designed_atom), "staircase": (staircase, designed_atom),
                "as_fabricated": (fabricated, fabricated_atom)}
    designed_cfg = dataclasses.replace(cfg, optics=designed_optics)
    designs = {}
    if args.dko is not None:
        model = load_design(args.dko, designed_cfg, stage1=args.stage1)
        designs["dko"] = (model, load_depthnet(args.stage1, designed_cfg).conv1_weight().detach())
    if args.e2e is not None:
        model = load_design(args.e2e, designed_cfg)
        designs["e2e"] = (model, designed_kernels(model))
    dataset = get_dataset(cfg, args.split, paths.data_cache)
    frame = read_designs(designs, readings, cfg, dataset, seed=args.seed, max_items=args.max_items)
    frame["designed_cell_model"] = args.designed_cell_model
    frame["designed_library"] = str(designed_lib)
    write_csv(frame, out)
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return frame


if __name__ == "__main__":
    run_cli(main)
