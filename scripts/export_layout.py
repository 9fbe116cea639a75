#!/usr/bin/env python
"""Export a designed metasurface array as a GDSII mask layout (``dkolib.fab.layout``).

    python scripts/export_layout.py --profile smoke --design results/smoke/dko \
        --out-gds results/smoke/layout/dko.gds --out-radii results/smoke/layout/dko_radii.csv \
        --out-summary results/smoke/layout/dko_summary.csv [--elements 0 1 2] [--quantum-m 1e-9] \
        [--tolerance-m 1e-9] [--gap-m 0] [--stage1 results/smoke/stage1/model.pt]

``--design`` is a DKO output folder (its ``array.pt`` is read; with ``--stage1`` it is loaded
through ``dkolib.dko.evaluation.load_design`` like the evaluation does), an ``array.pt``
(``synthesis.save_array``) or a hybrid ``model.pt`` (E2E, fine-tuned DKO). The design's geometry
must be the ``--profile``'s (``n_cells``, ``cell_pitch_m``, ``unit_cell_m``).

Writes (each atomically, so an interrupted export never replaces a complete file):

* ``--out-gds``: layers, units, pillar lattice and placement as in ``dkolib/fab/layout.py``;
* ``--out-radii``: one row per simulation cell (``element, o, i, sign, cell_row, cell_col,
  radius_m, radius_drawn_m``);
* ``--out-summary``: rows ``export/measured`` (counts, bytes, seconds of this export),
  ``export/model`` (the cost model's prediction of the same file, a check) and ``paper/model``
  (the paper geometry, config/paper.yaml: every metasurface, one reference per cell, every
  radius quantum of the library; seconds extrapolated from this export's time per reference).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dkolib.config import load_config
from dkolib.depth.network import conv1_channels
from dkolib.dko.evaluation import load_design
from dkolib.dko.synthesis import load_array, make_atom
from dkolib.errors import InputError
from dkolib.fab.layout import (
    count_references,
    estimate_layout_cost,
    export_array_layout,
    pillar_lattice,
    quantize_radii,
)
from dkolib.io import load_torch, write_csv
from dkolib.study.cli import run_cli

GEOMETRY = ("n_cells", "cell_pitch_m", "unit_cell_m")


def _check_geometry(stored, optics_cfg, path: Path) -> None:
    stored = dataclasses.asdict(stored) if dataclasses.is_dataclass(stored) else dict(stored or {})
    for key in GEOMETRY:
        if key in stored and not np.isclose(float(stored[key]), float(getattr(optics_cfg, key)), rtol=1e-9):
            raise InputError(f"{path} was designed with optics.{key} = {stored[key]}, but the profile has "
                             f"{getattr(optics_cfg, key)}: pass the --profile the design was made with")


def load_design_array(path: Path, cfg, stage1: Path | None = None):
    """The ``MetasurfaceArray`` of a DKO folder, an ``array.pt`` or a hybrid ``model.pt``."""
    if path.is_dir() and stage1 is None:
        path = path / "array.pt"
    if path.is_dir():
        array = load_design(path, stage1=stage1).first_layer.array
    else:
        payload = load_torch(path)
        if isinstance(payload, dict) and "kind" in payload:
            first = getattr(load_design(path), "first_layer", None)
            array = getattr(first, "array", None)
            if array is None:
                raise InputError(f"{path} is an electronic network ({payload['kind']!r}): it has no metasurfaces")
        elif isinstance(payload, dict) and "state_dict" in payload and "n_out" in payload:
            _check_geometry(payload.get("optics"), cfg.optics, path)
            array = load_array(path, cfg.optics)
        else:
            raise InputError(f"{path} is neither an array.pt (synthesis.save_array) nor a model.pt checkpoint")
    _check_geometry(array.optics_cfg, cfg.optics, path)
    return array


def paper_estimate(quantum_m: float, tolerance_m: float, seconds_per_reference: float) -> dict:
    """Cost model at the paper's geometry: all metasurfaces, no merging, every library radius quantum."""
    paper = load_config("paper")
    optics = paper.optics
    atom = make_atom(optics)
    if not hasattr(atom, "r_min_m"):
        raise InputError("the paper profile uses ideal phase atoms: no pillar radii to estimate")
    quanta = np.arange(round(atom.r_min_m / quantum_m), round(atom.r_max_m / quantum_m) + 1)
    n_ms = conv1_channels(paper.model) * len(optics.wavelengths_m) * 2
    est = estimate_layout_cost(optics.n_cells, optics.cell_pitch_m, optics.unit_cell_m, n_ms, quanta * quantum_m,
                               quantum_m=quantum_m, tolerance_m=tolerance_m,
                               seconds_per_reference=seconds_per_reference)
    return {**est, "n_cells": optics.n_cells, "cell_pitch_m": optics.cell_pitch_m, "unit_cell_m": optics.unit_cell_m}


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", required=True)
    ap.add_argument("--design", required=True, type=Path, help="DKO folder, array.pt or hybrid model.pt")
    ap.add_argument("--stage1", type=Path, default=None, help="stage-1 model.pt, to load a DKO folder via load_design")
    ap.add_argument("--out-gds", required=True, type=Path)
    ap.add_argument("--out-radii", required=True, type=Path)
    ap.add_argument("--out-summary", required=True, type=Path)
    ap.add_argument("--elements", type=int, nargs="+", default=None, help="element indices (default: all)")
    ap.add_argument("--quantum-m", type=float, default=1e-9, help="radius quantum (m)")
    ap.add_argument("--tolerance-m", type=float, default=1e-9, help="circle polygon tolerance (m)")
    ap.add_argument("--gap-m", type=float, default=0.0, help="gap between apertures in the top-cell grid (m)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    cfg = load_config(args.profile)
    array = load_design_array(args.design, cfg, args.stage1)
    summary, table = export_array_layout(array, args.out_gds, elements=args.elements, quantum_m=args.quantum_m,
                                         tolerance_m=args.tolerance_m, gap_m=args.gap_m,
                                         progress=not args.no_progress)
    write_csv(table, args.out_radii)

    optics = array.optics_cfg
    lattice = pillar_lattice(optics.n_cells, optics.cell_pitch_m, optics.unit_cell_m)
    radii = table["radius_m"].to_numpy()
    drawn = quantize_radii(radii.reshape(-1, optics.n_cells, optics.n_cells), args.quantum_m)
    model = estimate_layout_cost(optics.n_cells, optics.cell_pitch_m, optics.unit_cell_m,
                                 summary["n_metasurfaces"], radii,
                                 n_references=count_references(drawn, lattice), quantum_m=args.quantum_m,
                                 tolerance_m=args.tolerance_m)
    per_ref = summary["seconds"] / max(summary["n_references"], 1)
    common = {k: summary[k] for k in ("quantum_m", "tolerance_m", "unit_m", "precision_m", "pillar_layer",
                                      "aperture_layer", "datatype")}
    geometry = {k: summary[k] for k in ("n_cells", "cell_pitch_m", "unit_cell_m")}
    frame = pd.DataFrame([{"kind": "export", "basis": "measured", **summary},
                          {"kind": "export", "basis": "model", **model, **geometry, **common},
                          {"kind": "paper", "basis": "model", **paper_estimate(args.quantum_m, args.tolerance_m,
                                                                                per_ref), **common}])
    frame["n_cols"] = frame["n_cols"].astype("Int64")
    frame.insert(2, "profile", args.profile)
    frame.insert(3, "design", str(args.design))
    write_csv(frame, args.out_summary)
    shown = frame.map(lambda v: f"{v:.6g}" if isinstance(v, float) else v)
    print(shown.T.to_string(header=False))
    return frame


if __name__ == "__main__":
    sys.exit(run_cli(main))
