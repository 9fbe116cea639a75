#!/usr/bin/env python
"""Fine-tune the electronic back end of the DKO hybrid with the optics frozen.

    python scripts/finetune_dko.py --profile default --dko results/default/dko/model.pt \
        --out results/default/dko_finetune

Loads the DKO hybrid written by ``scripts/run_dko.py`` (its budget meter holds
stage 1 + stage 2), fine-tunes for ``dko.finetune_steps`` steps at
``dko.finetune_lr`` and writes ``<out>/model.pt`` (budget: stage 1 + stage 2 +
fine-tune), ``<out>/log.csv`` and ``<out>/ckpt.pt`` (resumable).

``--mode full_psf`` fine-tunes on the sensor images the camera actually delivers (the
whole PSF window rendered, not the k x k kernel crop the paper fine-tunes on); its
default output folder is ``results/<profile>/dko_finetune_psf``; ``--mode full_psf_noise`` adds the
sensor's shot and read noise to every training image (``results/<profile>/dko_finetune_noise``), so the
back end learns to read the noisy read-outs it will get.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dkolib.study.cli import run_cli  # noqa: E402
from dkolib.config import load_config, parse_overrides  # noqa: E402
from dkolib.study.paths import ProfilePaths  # noqa: E402
from dkolib.study.pipeline import finetune_dko  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="default")
    ap.add_argument("--dko", type=Path, default=None, help="DKO hybrid checkpoint (default: results/<profile>/dko/model.pt)")
    ap.add_argument("--out", type=Path, default=None,
                    help="default: results/<profile>/dko_finetune (crop), dko_finetune_psf (full_psf) or "
                         "dko_finetune_noise (full_psf_noise)")
    ap.add_argument("--mode", choices=("crop", "full_psf", "full_psf_noise"), default="crop",
                    help="front end seen while fine-tuning (default: crop, as in the paper)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    cfg = load_config(args.profile, parse_overrides(args.overrides))
    paths = ProfilePaths(cfg.profile)
    dko_path = args.dko or paths.dko / "model.pt"
    if not dko_path.exists():
        raise SystemExit(f"{dko_path} is missing: run scripts/run_dko.py (or `snakemake dko`) first")
    default_out = {"crop": paths.dko_finetune, "full_psf": paths.dko_finetune_psf,
                   "full_psf_noise": paths.dko_finetune_noise}
    out = args.out or default_out[args.mode]
    finetune_dko(cfg, dko_path, out, progress=not args.quiet, mode=args.mode)
    print(f"wrote {out / 'model.pt'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
