#!/usr/bin/env python
"""Stage 2 against crosstalk: fidelity and where the light lands at each leakage weight.

    python scripts/crosstalk_study.py --profile default --stage1 results/default/stage1/model.pt \
        [--weights 0.5,1,2,4] [--work results/default/dko/operating_point.work] \
        [--out results/default/dko/crosstalk.csv] [--figure figures/default/dko_crosstalk]

For every leakage weight (default ``dko.operating_weights``) the whole stage-1 kernel bank is
synthesised as the pipeline's DKO stage does (the runs of ``scripts/operating_point.py``, shared
with it and resumed; the profile's own weight is the pipeline's DKO design), each design is placed
on the whole sensor at the profile's gap and walls, and its light budget (kernel, own region,
neighbours' regions) is written beside its kernel error and correlation
(:mod:`dkolib.study.crosstalk`). Whole-sensor PSFs take minutes per design and are cached under
``cache/sensor/<profile>``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dkolib.config import load_config, parse_overrides  # noqa: E402
from dkolib.io import set_threads, write_csv  # noqa: E402
from dkolib.study.cli import require_existing, run_cli  # noqa: E402
from dkolib.study.paths import ProfilePaths  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="default")
    ap.add_argument("--stage1", type=Path, required=True, help="stage-1 model.pt")
    ap.add_argument("--weights", default=None, help="comma-separated leakage weights (default: dko.operating_weights)")
    ap.add_argument("--work", type=Path, default=None, help="default: results/<profile>/dko/operating_point.work")
    ap.add_argument("--out", type=Path, default=None, help="default: results/<profile>/dko/crosstalk.csv")
    ap.add_argument("--figure", type=Path, default=None, help="figure stem (default: figures/<profile>/dko_crosstalk)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    args = ap.parse_args(argv)

    cfg = load_config(args.profile, parse_overrides(args.set))
    set_threads(args.threads or cfg.threads)
    require_existing(("--stage1", args.stage1))
    if cfg.dko.loss != "leakage":
        raise SystemExit(f"the study varies the leakage weight, but dko.loss is {cfg.dko.loss!r}")
    weights = [float(w) for w in args.weights.split(",")] if args.weights else None
    paths = ProfilePaths(cfg.profile)
    out = args.out or paths.dko / "crosstalk.csv"
    fig = args.figure or paths.figures / "dko_crosstalk"

    from dkolib import plots
    from dkolib.study.crosstalk import crosstalk_sentence, run_crosstalk_study

    table = run_crosstalk_study(cfg, args.stage1, weights, work=args.work, progress=not args.quiet)
    print(table.to_string(index=False))
    write_csv(table, out)
    plots.save_figure(plots.plot_crosstalk(table, cfg.dko.leakage_weight), fig)
    print(crosstalk_sentence(table))
    print(f"wrote {out} and {fig}.png")
    return table


if __name__ == "__main__":
    sys.exit(run_cli(main))
