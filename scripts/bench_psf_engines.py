"""Benchmark the PSF engines side by side: D-Flat, reference ASM, fast windowed ASM.

Writes ``results/benchmarks/psf_engines.csv`` (engine, n_cells, seconds_per_psf,
peak_mem_mb, rel_err_vs_reference) and ``results/benchmarks/psf_paper_array.csv``.

Method
------
* One PSF: a focusing lens at 550 nm with 0.5 rad of seeded phase noise,
  ``n_cells`` of 2.5 um, sensor 1 cm, 2.74 um pixels, 15 x 15 window (odd, so all
  engines share the pixel-centre convention), subpixel 3 for ours.
* D-Flat: ``dflat.propagation.PointSpreadFunction`` (ASM, float32) configured as in the
  paper: input grid 2.5 um, output grid = pixel pitch (area resampling), no
  subpixel integration; its error includes those modelling differences.
* torch threads = 2 in every measurement. Time: median of ``--repeats`` runs after
  one warm-up (the warm-up also fills our per-wavelength operator caches, as in training).
* Peak memory: each (engine, n_cells) runs in a fresh subprocess; peak_mem_mb is
  that process's peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``)
  minus its resident size after imports and input construction.
* rel_err_vs_reference: ||PSF - PSF_ref||_2 / ||PSF_ref||_2 over the window, with the
  reference engine's PSF at the same n_cells.
* Paper array: 384 elements (64 x 3 x 2) of 1025 x 1025 cells, wavelengths 700/550/400 nm,
  14 x 14 window, fast engine, processed 16 elements at a time (gradients accumulated),
  forward (no grad) and forward + backward timed once each.

Usage: ``python scripts/bench_psf_engines.py [--sizes 257 513 1025] [--repeats 3] [--skip-paper-array]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

THREADS = 2
LAM = 550e-9
WINDOW = 15


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _phase(n: int):
    import numpy as np
    from dkolib.config import load_config
    from dkolib.metasurface import lens_phase_rad
    cfg = load_config("default", {"optics.n_cells": n}).optics
    ph = lens_phase_rad(n, cfg.cell_pitch_m, LAM, cfg.sensor_distance_m, cfg.source_distance_m)
    return cfg, ph + 0.5 * np.random.default_rng(0).standard_normal(ph.shape)


def run_one(engine: str, n: int, repeats: int, out_path: str) -> None:
    import torch
    torch.set_num_threads(THREADS)
    cfg, ph = _phase(n)
    phase = torch.tensor(ph, dtype=torch.float32)
    bwd = engine.endswith("_fwd_bwd")
    base = engine.replace("_fwd_bwd", "")
    if base == "dflat":
        from dflat.propagation import PointSpreadFunction
        p = cfg.cell_pitch_m
        module = PointSpreadFunction(in_size=[n, n], in_dx_m=[p, p], out_distance_m=cfg.sensor_distance_m,
                                     out_size=[WINDOW, WINDOW], out_dx_m=[cfg.pixel_pitch_m] * 2,
                                     wavelength_set_m=[LAM], diffraction_engine="ASM")

        def step():
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out, _ = module(torch.ones(1, 1, n, n), phase[None, None], [[0.0, 0.0, cfg.source_distance_m]])
            return out[0, 0, 0]
    else:
        from dkolib.psf import psf

        def step():
            ph_ = phase.clone().requires_grad_(bwd)
            with torch.set_grad_enabled(bwd):
                out = psf(torch.polar(torch.ones_like(ph_), ph_)[None], [LAM], cfg, WINDOW, engine=base)[0]
                if bwd:
                    (out * torch.linspace(0, 1, out.numel()).view_as(out)).sum().backward()
            return out.detach()

    base_rss = _rss_mb()
    out = step()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = step()
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    torch.save({"psf": out.double(), "seconds": statistics.median(times), "peak_mem_mb": peak - base_rss}, out_path)


def paper_array(chunk: int = 16) -> dict:
    import numpy as np
    import torch
    from dkolib.config import load_config
    from dkolib.metasurface import lens_phase_rad
    from dkolib.psf import psf_fast
    torch.set_num_threads(THREADS)
    cfg = load_config("paper").optics if (ROOT / "config" / "paper.yaml").exists() else None
    cfg = load_config("default", {"optics.n_cells": 1025}).optics if cfg is None or cfg.n_cells != 1025 else cfg
    n, W = 1025, cfg.loss_window_px
    wls = [cfg.wavelengths_m[i] for o in range(64) for i in range(3) for s in range(2)]
    lens = {lam: torch.tensor(lens_phase_rad(n, cfg.cell_pitch_m, lam, cfg.sensor_distance_m,
                                             cfg.source_distance_m), dtype=torch.float32)
            for lam in cfg.wavelengths_m}
    res = {}
    base_rss = _rss_mb()
    for mode in ("forward", "forward_backward"):
        t0 = time.perf_counter()
        total = 0.0
        for start in range(0, len(wls), chunk):
            w = wls[start:start + chunk]
            ph = torch.stack([lens[lam] for lam in w]).requires_grad_(mode != "forward")
            with torch.set_grad_enabled(mode != "forward"):
                out = psf_fast(torch.polar(torch.ones_like(ph), ph), w, cfg, W, chunk_size=chunk)
                if mode != "forward":
                    out[:, W // 2, W // 2].sum().backward()
            total += float(out.detach().sum())
        res[mode] = time.perf_counter() - t0
    res["peak_mem_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0 - base_rss
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[257, 513, 1025])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-paper-array", action="store_true")
    ap.add_argument("--one", nargs=3, metavar=("ENGINE", "N", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        run_one(args.one[0], int(args.one[1]), args.repeats, args.one[2])
        return
    import pandas as pd
    import torch
    from dkolib.io import write_csv
    engines = ["dflat", "reference", "fast", "reference_fwd_bwd", "fast_fwd_bwd"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            results = {}
            for eng in engines:
                out = os.path.join(tmp, f"{eng}_{n}.pt")
                reps = max(1, args.repeats if n < 1025 or eng.startswith("fast") else 2)
                subprocess.run([sys.executable, __file__, "--repeats", str(reps), "--one", eng, str(n), out],
                               check=True)
                results[eng] = torch.load(out)
                print(f"n={n} {eng}: {results[eng]['seconds']:.4f} s, {results[eng]['peak_mem_mb']:.0f} MB",
                      flush=True)
            ref = results["reference"]["psf"]
            for eng in engines:
                r = results[eng]
                err = float((r["psf"] - ref).norm() / ref.norm())
                rows.append({"engine": eng, "n_cells": n, "seconds_per_psf": r["seconds"],
                             "peak_mem_mb": r["peak_mem_mb"], "rel_err_vs_reference": err, "threads": THREADS})
    frame = pd.DataFrame(rows)
    write_csv(frame, ROOT / "results" / "benchmarks" / "psf_engines.csv")
    print(frame.to_string(index=False))
    if not args.skip_paper_array:
        res = paper_array()
        arr = pd.DataFrame([{"engine": "fast", "n_elements": 384, "n_cells": 1025, "window_px": 14,
                             "chunk": 16, "threads": THREADS, "forward_s": res["forward"],
                             "forward_backward_s": res["forward_backward"], "peak_mem_mb": res["peak_mem_mb"]}])
        write_csv(arr, ROOT / "results" / "benchmarks" / "psf_paper_array.csv")
        print(arr.to_string(index=False))


if __name__ == "__main__":
    main()
