#!/usr/bin/env python
"""Stage-2 (DKO synthesis) study: initialisation x learning rate, and the fidelity / light trade-off.

    python scripts/synthesis_study.py --profile default --stage1 results/default/stage1/model.pt

Two grids, each run on the *selection* output channels (``--channels``, default 0-1) of the
trained stage-1 conv1 kernels, never on the channels the pipeline's DKO summary reports
alone (it reports all channels; the choice is made on two of them):

* ``init_lr``: every ``--inits`` x ``--lrs`` with the profile's loss and leakage weight;
* ``leakage``: the leakage loss at every ``--leakage-weights`` and the paper's loss, with
  the profile's init and lr: channel kernel error against the light in the crop (Pareto);
* ``steps``: the profile's own setting run on past the caps, through ``--step-milestones``: does a
  longer stage 2 raise the light in the crop or lower the kernel error?
* ``smoothness``: designs with a smoother phase, with the profile's loss, weight and lr: a
  correlated random start (``--corr-cells``), a cell-to-cell smoothness term from the profile's
  start (``--smoothness-weights``) and a coarser phase grid (``--block-cells``). Under the
  staircase cell model white phase sends light to high angles; these ask whether a smoother
  phase keeps the fidelity and raises the light in the crop. ``roughness`` is the final
  design's :func:`dkolib.dko.losses.smoothness_penalty` (1: white phase, 0: uniform).

Stage 2 treats elements independently (summed loss, per-parameter Adam), so a channel's
result does not depend on which other channels are fitted with it. Each run is continued
(resumed from its checkpoint) through ``--milestones`` and writes one row per milestone with
both gain models (per channel: ``corr_ch``/``err_ch``, the paper's; per metasurface:
``corr_elem``/``err_elem``), the light in the crop / loss window / render window, and the
seconds per step. Writes ``results/<profile>/dko/synthesis_study.csv`` and the figure
``figures/<profile>/dko_pareto.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dkolib.study.cli import run_cli  # noqa: E402
from dkolib import plots  # noqa: E402
from dkolib.config import load_config, parse_overrides  # noqa: E402
from dkolib.dko import summarize_fidelity, synthesize  # noqa: E402
from dkolib.dko.losses import smoothness_penalty  # noqa: E402
from dkolib.dko.train import load_depthnet  # noqa: E402
from dkolib.io import write_csv  # noqa: E402
from dkolib.study.paths import ProfilePaths  # noqa: E402


def parse_channels(text: str) -> list[int]:
    """``'0-7'`` -> ``[0, ..., 7]``; ``'1,3,5'`` -> ``[1, 3, 5]``."""
    if "-" in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(c) for c in text.split(",")]


def _numbers(text: str) -> list[float]:
    """``'2,4,8'`` -> ``[2.0, 4.0, 8.0]``; ``''`` -> ``[]`` (skip that part of a grid)."""
    return [float(v) for v in text.split(",") if v.strip()]


def run_one(weight, cfg, dko, milestones, tag: dict, seed: int) -> list[dict]:
    """Synthesise ``weight`` with ``dko`` through ``milestones`` step caps; one row per milestone."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for cap in milestones:
            res = synthesize(weight, cfg.optics, dko, steps=cap, ckpt_path=Path(tmp) / "ckpt.pt", progress=False,
                             generator=torch.Generator().manual_seed(seed), ckpt_every=10**9)
            s = summarize_fidelity(res.fidelity)
            ch = res.fidelity[res.fidelity["level"] == "channel"]
            with torch.no_grad():
                roughness = float(smoothness_penalty(res.array.transmission()).mean())
            rows.append({**tag, "init": dko.init, "lr": dko.lr, "loss": dko.loss,
                         "leakage_weight": dko.leakage_weight, "init_corr_cells": dko.init_corr_cells,
                         "smoothness_weight": dko.smoothness_weight, "phase_block_cells": dko.phase_block_cells,
                         "roughness": roughness, "step_cap": cap, "steps_used": res.steps,
                         "stopped_early": res.stopped_early, "s_per_step": res.seconds / max(res.steps, 1),
                         "corr_ch": s["channel_corr_mean"], "err_ch": s["channel_norm_err_mean"],
                         "corr_elem": s["channel_corr_elem_mean"], "err_elem": s["channel_norm_err_elem_mean"],
                         "corr_elem_min": float(ch["corr_elem"].min()), "err_elem_max": float(ch["norm_err_elem"].max()),
                         "eff_crop": s["eff_crop_mean"], "eff_window": s["eff_window_mean"],
                         "eff_render": s["eff_render_mean"]})
            if res.stopped_early:
                break
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="default")
    ap.add_argument("--stage1", type=Path, required=True, help="stage-1 model.pt")
    ap.add_argument("--channels", default="0-1", help="selection output channels (a-b or a,b,c)")
    ap.add_argument("--inits", default="lens,lens_random,random")
    ap.add_argument("--lrs", default="0.05,0.1,0.2")
    ap.add_argument("--leakage-weights", default="0,0.1,0.3,0.5,1,2,3")
    ap.add_argument("--corr-cells", default="2,4,8", help="correlation lengths (cells) of the smooth random start")
    ap.add_argument("--smoothness-weights", default="0.1,0.3,1", help="smoothness-term weights")
    ap.add_argument("--block-cells", default="2,3", help="coarser phase grids (cells per block side)")
    ap.add_argument("--milestones", default="60,120", help="step caps reported per run")
    ap.add_argument("--step-milestones", default="",
                    help="longer caps for the profile's own setting (grid 'steps'; '' skips it)")
    ap.add_argument("--only-grids", default="",
                    help="rerun these grids only (e.g. 'steps'), keeping the other grids' rows of an existing --out: "
                         "every run is seeded alike and independent of the others, so the file is the one a whole "
                         "run writes")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None, help="default: results/<profile>/dko/synthesis_study.csv")
    ap.add_argument("--figure", type=Path, default=None, help="figure stem (default: figures/<profile>/dko_pareto)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)

    cfg = load_config(args.profile, parse_overrides(args.overrides))
    torch.set_num_threads(args.threads or cfg.threads)
    paths = ProfilePaths(cfg.profile)
    out = args.out or paths.dko / "synthesis_study.csv"
    channels = parse_channels(args.channels)
    weight = load_depthnet(args.stage1, cfg).conv1_weight().detach().clone().float()
    if max(channels) >= weight.shape[0]:
        ap.error(f"--channels {args.channels}: the network has {weight.shape[0]} output channels")
    weight = weight[channels]
    milestones = [int(m) for m in args.milestones.split(",")]
    step_caps = [int(m) for m in _numbers(args.step_milestones)]
    long_caps = sorted(set(step_caps) | set(milestones))
    if step_caps and long_caps[-1] <= max(milestones):
        ap.error(f"--step-milestones {args.step_milestones}: give caps beyond --milestones {args.milestones}")
    # the study runs to its caps: the stopping rule would cut settings short at different steps
    base = dataclasses.replace(cfg.dko, stop_window=0)
    runs = [("init_lr", dataclasses.replace(base, init=i, lr=float(lr)))
            for i in args.inits.split(",") for lr in args.lrs.split(",")]
    runs += [("leakage", dataclasses.replace(base, loss="leakage", leakage_weight=float(w)))
             for w in args.leakage_weights.split(",")]
    runs.append(("leakage", dataclasses.replace(base, loss="paper")))
    runs += [("smoothness", dataclasses.replace(base, init="smooth_random", init_corr_cells=float(c)))
             for c in _numbers(args.corr_cells)]
    runs += [("smoothness", dataclasses.replace(base, smoothness_weight=float(w)))
             for w in _numbers(args.smoothness_weights)]
    runs += [("smoothness", dataclasses.replace(base, phase_block_cells=int(b)))
             for b in _numbers(args.block_cells)]
    if step_caps:
        runs.append(("steps", base))
    rows = []
    only = [g for g in args.only_grids.split(",") if g.strip()]
    if only:
        unknown = sorted(set(only) - {g for g, _ in runs})
        if unknown:
            ap.error(f"--only-grids {args.only_grids}: no runs in grids {unknown} with these arguments")
        if not out.exists():
            ap.error(f"--only-grids keeps the other grids' rows of --out, but {out} does not exist: run every grid")
        kept = pd.read_csv(out)
        kept = kept[~kept["grid"].isin(only)]
        if set(kept["channels"].astype(str)) - {args.channels} or set(kept["step_cap"]) - set(milestones):
            ap.error(f"{out} was written with other channels or step caps than --channels {args.channels} "
                     f"--milestones {args.milestones}: run every grid")
        rows = kept.to_dict("records")
        runs = [(g, d) for g, d in runs if g in only]
    for i, (grid, dko) in enumerate(runs):
        tag = {"grid": grid, "channels": args.channels, "sensor_distance_m": cfg.optics.sensor_distance_m,
               "n_cells": cfg.optics.n_cells}
        print(f"[{i + 1}/{len(runs)}] {grid}: init={dko.init} lr={dko.lr} loss={dko.loss} "
              f"leakage_weight={dko.leakage_weight} corr={dko.init_corr_cells} smooth={dko.smoothness_weight} "
              f"block={dko.phase_block_cells}", flush=True)
        rows += run_one(weight, cfg, dko, long_caps if grid == "steps" else milestones, tag, args.seed)
        write_csv(pd.DataFrame(rows), out)  # partial results survive an interruption
    study = pd.DataFrame(rows)
    fig = plots.plot_fidelity_light_tradeoff(study, chosen_weight=cfg.dko.leakage_weight)
    stem = args.figure or paths.figures / "dko_pareto"
    plots.save_figure(fig, stem)
    print(f"wrote {out} and {stem}.png")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
