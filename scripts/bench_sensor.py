#!/usr/bin/env python
"""What the whole sensor costs: one metasurface's whole-sensor PSF and one rendered frame, measured at
the default and the paper's size.

    python scripts/bench_sensor.py [--sizes default paper] [--repeats 2] \
        [--out results/benchmarks/sensor_cost.csv]

For each size (a profile's optics, image size and network width) and each of its wavelengths it
times the whole-sensor PSF of one metasurface (:func:`dkolib.optics.sensor_psf.sensor_psf_one`,
a random phase over the profile's cells, over the window that reaches the neighbours' regions) and
scales it to the whole array (``E / 3`` metasurfaces per wavelength: an estimate from measured
PSFs, each PSF costing the same whatever its phase). It then renders one frame of the whole sensor
(:func:`dkolib.optics.sensor.render_sensor` with shot and read noise) from region spectra built
once, as a design read on the sensor does: the spectra are random here (the render's cost does
not depend on the values), and their size is reported. Each size runs in its own process, so
``peak_rss_mb`` is that size's peak (PSF and render together). Writes one row per size and
wavelength (``part = psf``) and one per size (``part = render``).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dkolib.io import write_csv  # noqa: E402
from dkolib.study.cli import run_cli  # noqa: E402


def _measure(size: str, repeats: int, threads: int) -> list[dict]:
    import torch

    from dkolib.config import load_config
    from dkolib.depth.network import conv1_channels
    from dkolib.optics.render import SensorNoise
    from dkolib.optics.sensor import array_geometry, render_sensor
    from dkolib.optics.sensor_psf import sensor_psf_one

    torch.set_num_threads(threads)
    cfg = load_config(size)
    H, W = int(cfg.data.height), int(cfg.data.width)
    n_in, n_out = 3, conv1_channels(cfg.model)
    E = 2 * n_in * n_out
    geometry = array_geometry(cfg.optics, E, n_in, (H, W), gap_m=cfg.sensor.gap_m)
    half = geometry.halo_half_px()
    gen = torch.Generator().manual_seed(0)
    n = int(cfg.optics.n_cells)
    common = {"size": size, "n_elements": E, "n_cells": n, "image_hw": f"{H}x{W}", "pitch_px": geometry.pitch_px,
              "psf_window_px": f"{2 * half[0] + 1}x{2 * half[1] + 1}", "threads": threads}
    rows = []
    for wl in cfg.optics.wavelengths_m:
        phase = torch.rand(n, n, generator=gen, dtype=torch.float64) * 2 * torch.pi
        t = torch.polar(torch.ones_like(phase), phase).to(torch.complex64)
        sensor_psf_one(t, wl, cfg.optics, half)  # builds (and caches) this wavelength's operators
        t0 = time.perf_counter()
        for _ in range(repeats):
            sensor_psf_one(t, wl, cfg.optics, half)
        seconds = (time.perf_counter() - t0) / repeats
        rows.append({**common, "part": "psf", "wavelength_nm": round(wl * 1e9, 3), "seconds": seconds,
                     "array_seconds_estimate": seconds * E / len(cfg.optics.wavelengths_m)})
    F0, F1 = 2 * H - 1, 2 * W - 1
    spectra = torch.randn(E, n_in, F0, F1 // 2 + 1, dtype=torch.complex64, generator=gen)
    images = torch.rand(1, n_in, H, W, generator=gen)
    placeholder = torch.zeros(E, 1, 1)  # render_sensor checks its shape; the spectra carry the PSFs
    noise = SensorNoise(cfg.optics.photons_per_pixel, cfg.optics.read_noise_e)
    with torch.no_grad():
        render_sensor(images, placeholder, geometry, n_out, n_in, spectra=spectra, noise=noise, generator=gen)
        t0 = time.perf_counter()
        for _ in range(repeats):
            render_sensor(images, placeholder, geometry, n_out, n_in, spectra=spectra, noise=noise, generator=gen)
        seconds = (time.perf_counter() - t0) / repeats
    rows.append({**common, "part": "render", "wavelength_nm": float("nan"), "seconds": seconds,
                 "array_seconds_estimate": float("nan"),
                 "spectra_gb": spectra.numel() * spectra.element_size() / 1e9})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    for r in rows:
        r["peak_rss_mb"] = peak
    return rows


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["default", "paper"])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks" / "sensor_cost.csv")
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.threads < 1:
        raise SystemExit(f"--repeats and --threads must be >= 1, got {args.repeats} and {args.threads}")
    from dkolib.config import PROFILES

    unknown = [s for s in args.sizes if s not in PROFILES]
    if unknown:
        raise SystemExit(f"unknown sizes {unknown}: choose among the profiles {list(PROFILES)}")
    rows = []
    ctx = mp.get_context("spawn")
    for size in args.sizes:
        print(f"{size}: one whole-sensor PSF per wavelength and one frame", flush=True)
        with ctx.Pool(1) as pool:  # its own process: the peak memory is this size's
            rows += pool.apply(_measure, (size, args.repeats, args.threads))
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    write_csv(table, args.out)
    print(f"wrote {args.out}")
    return table


if __name__ == "__main__":
    sys.exit(run_cli(main))
