#!/usr/bin/env python
"""Choose stage 2's leakage weight by what the camera delivers: depth accuracy under sensor noise.

    python scripts/operating_point.py --profile default --stage1 results/default/stage1/model.pt

The leakage loss trades kernel fidelity against the light kept in the kernel window
(``results/<profile>/dko/synthesis_study.csv``): more light outside the window means larger
electronic gains, which amplify the sensor noise of each read-out. For every weight in
``--weights`` (default ``dko.operating_weights``) the whole stage-1 kernel bank is synthesised
as the pipeline's DKO stage does (same init, lr, stopping rule), the design is read on the
validation split in the three evaluation modes, and the network read through ideal optics
(:func:`dkolib.dko.evaluation.ideal_optics_model`) is added as the bound. The weight with the
lowest validation AbsRel under noise (``full_psf_noise``) is flagged ``lowest_noisy_abs_rel`` and
the profile's own weight ``profile_weight``; each weight's noisy AbsRel minus the profile weight's,
paired image by image, comes with a bootstrap 95 % interval (``diff_ci_lo/hi``): only a weight whose
interval lies below 0 (``significantly_better``) is a reason to change the profile, and the README
says whether one is.

Writes ``results/<profile>/dko/operating_point.csv`` (one row per weight and mode, with the
kernel fidelity and light of that weight's design) and ``figures/<profile>/dko_operating_point.png``.
Each weight's run is kept under ``--work`` and resumed after an interrupt.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dkolib.study.cli import add_validation_study_args, load_validation_study, run_cli  # noqa: E402
from dkolib import plots  # noqa: E402
from dkolib.depth.data import get_dataset  # noqa: E402
from dkolib.dko.evaluation import EVAL_MODES, evaluate_design, ideal_optics_model, load_design  # noqa: E402
from dkolib.io import write_csv  # noqa: E402
from dkolib.study.stats import paired_difference_ci  # noqa: E402
from dkolib.study.pipeline import run_dko_stage2  # noqa: E402

FIDELITY = {"corr_elem": "channel_corr_elem_mean", "err_elem": "channel_norm_err_elem_mean",
            "corr_ch": "channel_corr_mean", "err_ch": "channel_norm_err_mean", "light_crop": "eff_crop_mean"}


def _fidelity(summary: pd.DataFrame) -> dict:
    """Kernel fidelity (both gain models) and light in the crop from a stage-2 summary row."""
    row = summary.iloc[0]
    return {k: float(row[v]) for k, v in FIDELITY.items()}


def noisy_differences(noisy_images: dict, profile_weight: float, n_boot: int = 2000) -> pd.DataFrame:
    """Per weight: its noisy AbsRel minus the profile weight's, image by image (same images, same noise
    seed), with a paired bootstrap 95 % interval; ``significantly_better`` when the interval lies below 0.
    Without the profile's weight among them the columns are NaN."""
    base = noisy_images.get(profile_weight)
    rows = []
    for w, values in noisy_images.items():
        mean, lo, hi = (paired_difference_ci(values, base, n_boot) if base is not None
                        else (float("nan"),) * 3)
        rows.append({"leakage_weight": w, "noisy_abs_rel_minus_profile": mean, "diff_ci_lo": lo, "diff_ci_hi": hi,
                     "significantly_better": bool(hi < 0), "n_images": len(values)})
    return pd.DataFrame(rows)


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="default")
    ap.add_argument("--stage1", type=Path, required=True, help="stage-1 model.pt")
    ap.add_argument("--weights", default=None, help="comma-separated leakage weights (default: dko.operating_weights)")
    add_validation_study_args(ap, "operating_point")
    ap.add_argument("--figure", type=Path, default=None, help="figure stem (default: figures/<profile>/dko_operating_point)")
    args = ap.parse_args(argv)

    cfg, paths = load_validation_study(args)
    weights = ([float(w) for w in args.weights.split(",")] if args.weights else list(cfg.dko.operating_weights))
    if not weights or any(w < 0 for w in weights):
        raise SystemExit(f"leakage weights must be a non-empty list of numbers >= 0, got {weights}")
    if cfg.dko.loss != "leakage":
        raise SystemExit(f"the operating point is a leakage weight, but dko.loss is {cfg.dko.loss!r}")
    work = args.work or paths.dko / "operating_point.work"
    out = args.out or paths.dko / "operating_point.csv"
    fig = args.figure or paths.figures / "dko_operating_point"
    dataset = get_dataset(cfg, args.split, paths.data_cache)

    rows, noisy_images = [], {}
    for w in weights:
        cfg_w = cfg.replace({"dko.leakage_weight": w})
        run_dir = work / f"w_{w:g}"
        summary_csv = run_dir / "summary.csv"
        summary = pd.read_csv(summary_csv) if summary_csv.exists() else None
        if summary is None or float(summary["leakage_weight"].iloc[0]) != w:
            print(f"stage 2 at leakage weight {w:g}", flush=True)
            summary = run_dko_stage2(cfg_w, args.stage1, run_dir, progress=False)
        model = load_design(run_dir / "model.pt", cfg_w)
        images = {}
        frame = evaluate_design(model, dataset, cfg_w, evals=EVAL_MODES, seed=args.seed, design="dko",
                                max_items=args.max_items, per_image=images)
        noisy_images[w] = [m["abs_rel"] for m in images["full_psf_noise"]]
        frame.insert(1, "leakage_weight", w)
        for k, v in _fidelity(summary).items():
            frame[k] = v
        rows.append(frame)
    base = load_design(args.stage1, cfg)
    ideal = evaluate_design(lambda mode: ideal_optics_model(base, cfg.optics, mode), dataset, cfg,
                            evals=EVAL_MODES, seed=args.seed, design="ideal_optics", max_items=args.max_items)
    ideal.insert(1, "leakage_weight", float("nan"))
    table = pd.concat(rows + [ideal], ignore_index=True)
    noisy = table[(table.design == "dko") & (table["eval"] == "full_psf_noise")]
    best = float(noisy.loc[noisy.abs_rel.idxmin(), "leakage_weight"])
    table["lowest_noisy_abs_rel"] = (table.design == "dko") & (table.leakage_weight == best)
    table["profile_weight"] = (table.design == "dko") & (table.leakage_weight == cfg.dko.leakage_weight)
    diffs = noisy_differences(noisy_images, cfg.dko.leakage_weight)
    table = table.merge(diffs, on="leakage_weight", how="left")
    table["split"] = args.split
    print(table.to_string(index=False))
    write_csv(table, out)
    plots.save_figure(plots.plot_operating_point(table), fig)
    print(f"lowest {args.split} AbsRel under sensor noise at leakage weight {best:g}")
    better = sorted(diffs.loc[diffs["significantly_better"], "leakage_weight"])
    if best != cfg.dko.leakage_weight:
        print(f"note: the profile's dko.leakage_weight is {cfg.dko.leakage_weight:g}; weights significantly "
              f"better under noise (paired 95 % interval below 0): {better or 'none'}")
    print(f"wrote {out}")
    return table


if __name__ == "__main__":
    sys.exit(run_cli(main))
