#!/usr/bin/env python
"""How fine must the simulation grid be for a design's PSF to be the fabricated one?

    python scripts/cell_pitch_study.py --profile default \\
        --stage1 results/default/stage1/model.pt --dko results/default/dko [--out results/default/cell_pitch.csv]

A DKO design's cells (radii read by the profile's library) are simulated on finer grids
over the same aperture (``dkolib.fab.as_fabricated``): each cell repeated ``s x s`` times
(``--factors``, odd so the axis stays on a cell) under both cell models, and the mask's own
pillar lattice (``optics.unit_cell_m``, every site the transmission of the cell its centre
falls in, as the GDSII export draws it) under the staircase model, which is the reference:
it is the device the mask builds, up to the local periodic approximation of the meta-atoms.

One row per (cell model, grid): ``design`` (``--label``), ``pitch_m``, ``n_cells``, ``light_crop`` (mean fraction of a
lit metasurface's aperture energy in the ``k x k`` crop), ``rel_psf_err`` (``||P - P_ref|| /
||P_ref||`` over all loss-window PSFs), ``corr`` and ``kernel_err`` (against the electronic
kernels, per-metasurface gains refitted in closed form) and ``seconds`` (PSF time).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dkolib.study.cli import require_existing, run_cli  # noqa: E402
from dkolib.config import load_config, parse_overrides  # noqa: E402
from dkolib.dko.evaluation import load_design  # noqa: E402
from dkolib.dko.fidelity import fidelity_table, summarize_fidelity  # noqa: E402
from dkolib.dko.train import load_depthnet  # noqa: E402
from dkolib.fab.as_fabricated import lattice_transmission, subdivided  # noqa: E402
from dkolib.io import set_threads, write_csv  # noqa: E402
from dkolib.optics import psf  # noqa: E402
from dkolib.study.paths import ProfilePaths  # noqa: E402


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", required=True)
    ap.add_argument("--stage1", type=Path, required=True, help="stage-1 checkpoint (the target kernels)")
    ap.add_argument("--dko", type=Path, required=True, help="DKO output folder (array.pt + gain.pt)")
    ap.add_argument("--label", default="dko", help="what the design is, written to the CSV's design column")
    ap.add_argument("--factors", type=int, nargs="+", default=[1, 3, 5], help="odd sub-cells per cell and axis")
    ap.add_argument("--out", type=Path, default=None, help="default: results/<profile>/cell_pitch.csv")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    args = ap.parse_args(argv)

    cfg = load_config(args.profile, parse_overrides(args.set))
    set_threads(args.threads or cfg.threads)
    require_existing(("--stage1", args.stage1), ("--dko", args.dko))
    bad = [f for f in args.factors if f < 1 or f % 2 != 1]
    if bad:
        raise SystemExit(f"--factors must be positive odd integers (the axis stays on a cell), got {bad}")
    out = args.out or ProfilePaths(cfg.profile).results / "cell_pitch.csv"
    model = load_design(args.dko, cfg, stage1=args.stage1)
    target = load_depthnet(args.stage1, cfg).conv1_weight().detach()
    array = model.first_layer.array
    wavelengths = array.wavelengths_m
    window = cfg.optics.loss_window_px
    with torch.no_grad():
        t = array.transmission().detach()
    grids = [("staircase", "lattice", *lattice_transmission(t, cfg.optics))]
    for model_name in ("staircase", "bandlimited"):
        for f in args.factors:
            grids.append((model_name, f"cells/{f}", *subdivided(t, dataclasses.replace(cfg.optics, cell_model=model_name), f)))
    rows, reference = [], None
    for cell_model, grid, field, optics in grids:
        optics = dataclasses.replace(optics, cell_model=cell_model)
        start = time.perf_counter()
        with torch.no_grad():
            psfs = psf(field, wavelengths, optics, window).to(torch.float64)
        seconds = time.perf_counter() - start
        reference = psfs if reference is None else reference
        s = summarize_fidelity(fidelity_table(psfs, target))
        rows.append({"design": args.label, "cell_model": cell_model, "grid": grid, "pitch_m": optics.cell_pitch_m, "n_cells": optics.n_cells,
                     "light_crop": s["eff_crop_mean"], "rel_psf_err": float((psfs - reference).norm() / reference.norm()),
                     "corr": s["channel_corr_elem_mean"], "kernel_err": s["channel_norm_err_elem_mean"],
                     "seconds": seconds})
        print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    write_csv(frame, out)
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return frame


if __name__ == "__main__":
    run_cli(main)
