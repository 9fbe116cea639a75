#!/usr/bin/env python
"""The whole sensor: where each design's light lands, and its depth accuracy read from there.

    python scripts/sensor_study.py --profile default --stage1 results/default/stage1/model.pt \
        --design dko=results/default/dko/model.pt dko_finetune_noise=results/default/dko_finetune_noise/model.pt \
                 e2e=results/default/e2e/model.pt [--max-items N] [--out-dir results/default/sensor] \
                 [--finetune dko=results/default/dko_finetune_sensor e2e=results/default/e2e_finetune_sensor]

Writes ``light_budget.csv`` (per metasurface: fractions of its light in the kernel, the render
window, its own read-out region, its neighbours' regions, and beyond the computed window),
``sensor_eval.csv`` (depth metrics in ``full_psf_noise``, ``sensor`` and ``sensor_noise`` on
the same test images, with the electronic network and ideal optics beside them) and
``cost.csv`` (seconds for the PSFs, seconds and peak memory per rendered image), plus the
figures ``sensor_frame`` and ``sensor_light_budget``. With ``--finetune`` the named designs' back
ends are also fine-tuned on noisy whole-sensor images (``<name>_finetune_sensor``). The options
come from the ``sensor`` section of the profile (gap, baffles, images). PSFs are cached under
``cache/sensor/<profile>``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dkolib.config import load_config, parse_overrides  # noqa: E402
from dkolib.io import set_threads  # noqa: E402
from dkolib.study.cli import parse_designs, require_existing, run_cli  # noqa: E402
from dkolib.study.paths import ProfilePaths  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", required=True)
    ap.add_argument("--design", nargs="+", required=True, metavar="NAME=PATH")
    ap.add_argument("--stage1", type=Path, required=True, help="stage-1 checkpoint (back end of DKO folders)")
    ap.add_argument("--out-dir", type=Path, default=None, help="default: results/<profile>/sensor")
    ap.add_argument("--figures", type=Path, default=None, help="default: figures/<profile>")
    ap.add_argument("--max-items", type=int, default=None, help="default: sensor.eval_items of the profile")
    ap.add_argument("--finetune", nargs="*", default=[], metavar="NAME=DIR",
                    help="also fine-tune these designs' back ends on noisy whole-sensor images into DIR "
                         "(design NAME_finetune_sensor; NAME's --design path must be its model.pt)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    args = ap.parse_args(argv)

    cfg = load_config(args.profile, parse_overrides(args.set))
    set_threads(args.threads or cfg.threads)
    designs = parse_designs(args.design, must_exist=True)
    finetune = parse_designs(args.finetune, must_exist=False)
    unknown = sorted(set(finetune) - set(designs))
    if unknown:
        raise SystemExit(f"--finetune names {unknown} are not among the --design names {sorted(designs)}")
    require_existing(("--stage1", args.stage1))
    paths = ProfilePaths(cfg.profile)
    out_dir = args.out_dir or paths.results / "sensor"
    figures = args.figures or paths.figures

    from dkolib.study.sensor_study import run_sensor_study, write_sensor_study

    result = run_sensor_study(cfg, designs, stage1=args.stage1, max_items=args.max_items,
                              progress=not args.no_progress, finetune_dirs=finetune)
    for name in ("light", "eval", "cost"):
        print(result[name].to_string(index=False, max_rows=40))
    write_sensor_study(result, out_dir, figures)
    print(f"wrote {out_dir}/light_budget.csv, sensor_eval.csv, cost.csv and {figures}/sensor_*.png")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
