#!/usr/bin/env python
"""Does a stage 1 that knows the optics give kernels that survive the optics better?

    python scripts/optics_aware_stage1.py --profile default --stage1 results/default/stage1/model.pt

An aperture of width ``D`` at ``z`` above the sensor renders no kernel energy above
``D / (lambda z)`` (:mod:`dkolib.optics.realisability`). The optics-aware stage 1 adds
``stage1.passband_weight`` x the first layer's out-of-band energy fraction to the depth loss
(:func:`dkolib.optics.realisability.passband_penalty`), so the electronic network learns kernels
that the aperture can render. For each geometry (the profile's own, and every
``--distances-m``, the sensor distance changed and the cells kept) the script reports

* the out-of-band fraction of the profile's (electronic) stage-1 kernels; where it is 0 the
  penalty is identically 0 and an optics-aware stage 1 is the electronic one, bit for bit
  (nothing to train);
* otherwise, for the electronic stage 1 and an optics-aware stage 1 at each ``--weights``:
  the out-of-band fraction of its kernels, the network's own validation AbsRel, and its DKO
  design (the profile's stage 2 on the whole bank): kernel fidelity, light in the crop, and
  validation AbsRel in the ``crop`` and ``full_psf_noise`` modes, beside the constant predictor's
  (``constant_abs_rel``: the training split's median depth everywhere).

Writes ``results/<profile>/dko/optics_aware_stage1.csv``; runs are kept under ``--work`` and
resumed after an interrupt.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dkolib.study.cli import add_validation_study_args, load_validation_study, run_cli  # noqa: E402
from dkolib.depth.data import get_dataset  # noqa: E402
from dkolib.depth.predict import constant_predictor, training_median_depth  # noqa: E402
from dkolib.dko.evaluation import evaluate_design, load_design  # noqa: E402
from dkolib.dko.train import load_depthnet, run_stage1  # noqa: E402
from dkolib.io import write_csv  # noqa: E402
from dkolib.optics.realisability import realisability  # noqa: E402
from dkolib.study.pipeline import run_dko_stage2  # noqa: E402

MODES = ("crop", "full_psf_noise")
STAGE2_KEYS = ("loss", "leakage_weight", "lr", "init")
"""Stage-2 settings a kept run must share with the profile to be reused (its ``summary.csv``)."""


def _out_of_band(stage1_path: Path, cfg) -> float:
    weight = load_depthnet(stage1_path, cfg).conv1_weight().detach()
    summary = realisability(weight, cfg.optics, passband=cfg.stage1.passband, warn=False).summary
    return float(summary["out_of_band_fraction_total"])


def _read_design(stage1_path: Path, run_dir: Path, cfg, dataset, max_items, seed) -> dict:
    """Stage 2 of ``stage1_path`` under ``cfg`` (resumed in ``run_dir``) and its validation AbsRel."""
    summary_csv = run_dir / "summary.csv"
    summary = pd.read_csv(summary_csv) if summary_csv.exists() else None
    if summary is None or any(summary[key].iloc[0] != getattr(cfg.dko, key) for key in STAGE2_KEYS):
        if run_dir.exists():  # made with other stage-2 settings: start over
            shutil.rmtree(run_dir)
        summary = run_dko_stage2(cfg, stage1_path, run_dir, progress=False)
    row = summary.iloc[0]
    out = {"dko_corr_elem": float(row["channel_corr_elem_mean"]), "dko_err_elem": float(row["channel_norm_err_elem_mean"]),
           "dko_light_crop": float(row["eff_crop_mean"])}
    electronic = evaluate_design(load_design(stage1_path, cfg), dataset, cfg, evals=("crop",), seed=seed,
                                 design="electronic", max_items=max_items)
    out["electronic_abs_rel"] = float(electronic["abs_rel"].iloc[0])
    dko = evaluate_design(load_design(run_dir / "model.pt", cfg), dataset, cfg, evals=MODES, seed=seed,
                          design="dko", max_items=max_items)
    for _, r in dko.iterrows():
        out[f"dko_abs_rel_{r['eval']}"] = float(r["abs_rel"])
    return out


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="default")
    ap.add_argument("--stage1", type=Path, required=True, help="the profile's (electronic) stage-1 model.pt")
    ap.add_argument("--distances-m", default="1e-2",
                    help="sensor distances (m) to try besides the profile's (comma-separated; '' for none)")
    ap.add_argument("--weights", default="1", help="comma-separated stage1.passband_weight values to train")
    add_validation_study_args(ap, "optics_aware_stage1")
    args = ap.parse_args(argv)

    cfg, paths = load_validation_study(args)
    weights = [float(w) for w in args.weights.split(",") if w.strip()]
    if any(w <= 0 for w in weights):
        raise SystemExit(f"--weights must be numbers > 0 (0 is the electronic stage 1), got {weights}")
    distances = [cfg.optics.sensor_distance_m] + [float(d) for d in args.distances_m.split(",") if d.strip()]
    work = args.work or paths.dko / "optics_aware_stage1.work"
    out = args.out or paths.dko / "optics_aware_stage1.csv"
    dataset = get_dataset(cfg, args.split, paths.data_cache)
    median_m = training_median_depth(get_dataset(cfg, "train", paths.data_cache), cfg.data.min_depth_m,
                                     cfg.data.max_depth_m)
    constant = evaluate_design(constant_predictor(median_m), dataset, cfg, evals=("crop",), design="constant",
                               max_items=args.max_items)
    constant_abs_rel = float(constant["abs_rel"].iloc[0])

    rows = []
    for z in distances:
        cfg_z = cfg.replace({"optics.sensor_distance_m": z})
        tag = {"sensor_distance_m": z, "n_cells": cfg.optics.n_cells, "passband": cfg.stage1.passband}
        oob = _out_of_band(args.stage1, cfg_z)
        base = {**tag, "stage1": "electronic", "passband_weight": 0.0, "stage1_steps": None,
                "out_of_band_fraction": oob}
        if oob == 0.0:
            print(f"z = {z:g} m: the electronic kernels are in band (penalty 0): an optics-aware stage 1 is the "
                  "electronic one", flush=True)
            rows.append(base)
            continue
        zdir = work / f"z_{z:g}"
        print(f"z = {z:g} m: electronic stage 1, out-of-band fraction {oob:.3f}; its DKO design", flush=True)
        rows.append({**base, **_read_design(args.stage1, zdir / "dko_electronic", cfg_z, dataset, args.max_items,
                                            args.seed)})
        write_csv(pd.DataFrame(rows), out)
        for w in weights:
            cfg_w = cfg_z.replace({"stage1.passband_weight": w})
            s1_dir = zdir / f"stage1_w{w:g}"
            if not (s1_dir / "model.pt").exists():
                print(f"z = {z:g} m: optics-aware stage 1 at passband weight {w:g}", flush=True)
                run_stage1(cfg_w, s1_dir, paths.data_cache, progress=False)
            steps = int(pd.read_csv(s1_dir / "log.csv")["step"].max())
            rows.append({**tag, "stage1": "optics_aware", "passband_weight": w, "stage1_steps": steps,
                         "out_of_band_fraction": _out_of_band(s1_dir / "model.pt", cfg_w),
                         **_read_design(s1_dir / "model.pt", zdir / f"dko_w{w:g}", cfg_w, dataset, args.max_items,
                                        args.seed)})
            write_csv(pd.DataFrame(rows), out)
    table = pd.DataFrame(rows)
    table["constant_abs_rel"] = constant_abs_rel
    table["split"] = args.split
    print(table.to_string(index=False))
    write_csv(table, out)
    print(f"wrote {out}")
    return table


if __name__ == "__main__":
    sys.exit(run_cli(main))
