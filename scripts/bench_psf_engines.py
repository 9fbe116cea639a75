"""Benchmark the PSF engines side by side: D-Flat, reference ASM, fast windowed ASM.

Writes ``results/benchmarks/psf_engines.csv`` (one row per engine and grid size) and
``results/benchmarks/psf_paper_array.csv``.

Columns of ``psf_engines.csv``
------------------------------
* ``engine``: ``dflat`` (D-Flat as the paper ran it), ``dflat_equal_accuracy`` (D-Flat
  with the input sampling and FFT padding it needs to agree with our reference to 1 %),
  ``reference``, ``fast`` (forward only), ``reference_fwd_bwd``, ``fast_fwd_bwd``
  (forward + backward).
* ``n_cells``; ``seconds_per_psf`` (median); ``peak_mem_mb``; ``load_1min`` (the machine's
  1-minute load average when the row's timing started; on 2 cores, above ~0.5 the times
  are inflated, see below); ``threads``.
* ``rel_err_vs_reference`` on the grid named in ``error_grid``; ``setup``: how the row's
  engine was configured (for ``dflat_equal_accuracy``: every configuration tried and its error).
* ``speedup_same_grid``: the ``dflat`` row's seconds / this row's, same ``n_cells``. Same
  metasurface grid and sensor window, *not* the same accuracy: D-Flat's default grid gives
  a wrong PSF at 513 and 1025 cells (its ``rel_err_vs_reference``), so this ratio compares
  with a wrong answer there.
* ``speedup_equal_accuracy``: the ``dflat_equal_accuracy`` row's seconds / this row's, where
  both that row and this row agree with the reference to ``EQUAL_ACCURACY_REL_ERR`` (1 %).
  NaN where either does not (or D-Flat is not installed or cannot be made that accurate
  within the memory cap); ``equal_accuracy_note`` then says why.
  The fwd_bwd rows divide D-Flat's forward time by our forward + backward time (D-Flat's
  backward is not timed), as in ``speedup_same_grid``.

Method
------
* One PSF: a focusing lens at 550 nm with 0.5 rad of seeded phase noise, ``n_cells`` of
  2.5 um, source at 10 m, sensor at 1 cm for every size (the paper's distance: the default
  profile's sensor distance is scaled for 257 cells, so it is overridden here), 2.74 um
  pixels, 15 x 15 window (odd, so all engines share the pixel-centre convention), subpixel 3
  for ours. Every engine gets the same field: unit amplitude and this float32 phase; ours
  build the transmission with ``torch.polar`` inside the timed step (D-Flat does the same
  conversion internally), and run in complex64.
* D-Flat: ``dflat.propagation.PointSpreadFunction`` (ASM, float32). What it computes: the
  input grid times the spherical wave from the point source is zero-padded by
  ``FFTPadFactor`` x its size on each side (default 1: a ``3N`` grid), propagated with a
  transfer function taken as the phase of the FFT of the Rayleigh-Sommerfeld kernel sampled
  on that grid (no band limit), and cropped; the output grid of its ASM is always the input
  grid (centred on the axis). With ``out_dx_m`` = 2.74 um (the paper's setup) it then
  area-resamples that field onto a 2.74 um grid (``F.interpolate(mode="area")`` of the
  amplitude and of the phasor, scale 2.5/2.74, so bins of 1-2 cells that do not line up with
  our pixel centres, and amplitude averaging instead of intensity integration) and returns
  ``|amplitude|^2 * out_dx^2 / aperture energy``.

  - ``dflat`` row, time and memory: the paper-like setup (cell-pitch input, default padding,
    ``out_dx_m`` = 2.74 um, 15 x 15 output). Its ``rel_err_vs_reference`` compares like with
    like: the same solver on the same field, asked for its output on its own 2.5 um grid
    (``out_dx_m`` = cell pitch, so no resampling; 17 x 17 samples = 42.5 um, covering the
    41.1 um window), against our reference engine evaluated at exactly those points
    (``pixel_pitch_m`` = 2.5 um, ``subpixel`` = 1: point samples, same normalisation
    ``|U|^2 p^2 / (N^2 p^2)``). Comparing the 2.74 um output with our pixel-integrated PSF
    would mix in the resampling (0.4-1.0 error: the grid mismatch, not accuracy).
  - Why that error grows with the grid: D-Flat's kernel ``exp(i k r) / r`` sampled at pitch
    ``p`` aliases beyond the lateral distance ``z tan(asin(lambda / 2p))`` where its local
    frequency passes Nyquist (1.11 mm at 550 nm, 2.5 um, 1 cm). Its ``3N`` grid reaches
    0.96 mm (257 cells: alias-free), 1.92 mm (513) and 3.84 mm (1025): the phase of its
    transfer function is then wrong, and so is the PSF.
  - ``dflat_equal_accuracy`` row: D-Flat's two knobs that move that limit. (a) Input
    sampling: the same field given at pitch ``p / u`` (``u`` odd, so the grid stays odd and
    centred), as the band-limited (sinc) interpolation of the cell samples, which is the
    field our engines propagate; the alias radius grows to ``z tan(asin(u lambda / 2p))``.
    (b) FFT padding: ``ASMPropagation``'s ``FFTPadFactor`` (``PointSpreadFunction`` does not
    forward it, so it is set on its ``propagator``); a smaller grid keeps the sampled kernel
    inside its alias-free radius. Every pair of ``DFLAT_UPSAMPLE`` x ``DFLAT_FFT_PAD`` is
    tried in the order of its FFT grid size (:func:`dflat_candidates`, cheapest first), once
    each, against the reference at D-Flat's own output points (pitch ``p / u``, ``17 u`` x
    ``17 u`` point samples, 42.5 um); the first within 1 % is timed like every other row, in
    a fresh process. Its error is that of the timed run. The upsampling of the input (done by this script) is not timed,
    which favours D-Flat. Configurations whose grid would need more than ``--dflat-max-gb``
    (at ``DFLAT_BYTES_PER_POINT``, measured peak RSS per FFT-grid point) are not run.
* Time: median of ``--repeats`` runs after one warm-up (the warm-up also fills our
  per-wavelength operator caches, as in training). torch threads = 2 in every measurement.
  On a shared 2-core machine another busy process makes every 2-thread parallel region wait
  for a scheduler slice: the times then carry a floor of ~0.15 s per step that hides the
  engines' cost (see ``load_1min``; compare with 1-thread runs).
* Peak memory: each (engine, n_cells) runs in a fresh subprocess; ``peak_mem_mb`` is that
  process's peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) minus its
  resident size after imports and input construction.
* ``rel_err_vs_reference``: ``||PSF - PSF_ref||_2 / ||PSF_ref||_2`` over the window, with the
  reference engine's PSF at the same ``n_cells`` on the grid named in ``error_grid``.
* Paper array (``psf_paper_array.csv``): 384 elements (64 x 3 x 2) of 1025 x 1025 cells,
  wavelengths 700/550/400 nm, 14 x 14 window, fast engine, processed 16 elements at a time
  (gradients accumulated), forward (no grad) and forward + backward timed once each (after
  a one-element warm-up per wavelength that fills the operator cache).

Usage: ``python scripts/bench_psf_engines.py [--sizes 257 513 1025] [--repeats 3]
[--dflat-max-gb 8] [--skip-paper-array]``
"""

from __future__ import annotations

import argparse
import importlib.util
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

from dkolib.errors import InputError
from dkolib.io import load_torch, save_torch
from dkolib.root import project_root
from dkolib.study.cli import run_cli

THREADS = 2
LAM = 550e-9
SENSOR_DISTANCE_M = 1e-2
WINDOW = 15
DFLAT_GRID_PX = 17  # D-Flat's native 2.5 um grid over the 15 x 2.74 um window
EQUAL_ACCURACY_REL_ERR = 0.01
DFLAT_UPSAMPLE = (1, 3, 5)
DFLAT_FFT_PAD = (0.25, 0.5, 1.0)  # 1.0: D-Flat's default
DFLAT_BYTES_PER_POINT = 110.0
"""Peak RSS of a D-Flat ASM PSF per point of its FFT grid, measured at 1539-9225 points per side."""
ENGINES = ["dflat", "reference", "fast", "reference_fwd_bwd", "fast_fwd_bwd"]


def dflat_grid_side(n_cells: int, upsample: int, fft_pad: float) -> int:
    """Points per side of D-Flat's ASM FFT grid: ``M + 2 int(fft_pad M)`` with ``M = n_cells upsample``."""
    m = n_cells * upsample
    return m + 2 * int(m * fft_pad)


def dflat_candidates(n_cells: int) -> list[tuple[int, float]]:
    """``(upsample, fft_pad)`` pairs, cheapest (smallest FFT grid) first."""
    pairs = [(u, f) for u in DFLAT_UPSAMPLE for f in DFLAT_FFT_PAD]
    return sorted(pairs, key=lambda c: (dflat_grid_side(n_cells, *c), c))


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _optics(n: int, **overrides):
    from dkolib.config import load_config
    keys = {"optics.n_cells": n, "optics.sensor_distance_m": SENSOR_DISTANCE_M}
    keys.update({f"optics.{k}": v for k, v in overrides.items()})
    return load_config("default", keys).optics


def _phase(n: int):
    """The benchmark's optics config and lens-plus-noise phase ``[N, N]`` (rad, float64)."""
    import numpy as np

    from dkolib.optics.metasurface import lens_phase_rad
    cfg = _optics(n)
    ph = lens_phase_rad(n, cfg.cell_pitch_m, LAM, cfg.sensor_distance_m, cfg.source_distance_m)
    return cfg, ph + 0.5 * np.random.default_rng(0).standard_normal(ph.shape)


def upsample_field(phase_rad, upsample: int):
    """Band-limited (sinc) interpolation of the unit-amplitude field ``exp(i phase)`` ``[N, N]``
    onto the ``[N u, N u]`` grid of pitch ``p / u`` covering the same cells (``u`` odd, so the
    axis stays on the centre sample). Returns float32 tensors ``(amplitude, phase)``."""
    import numpy as np
    import torch

    if upsample < 1 or upsample % 2 == 0:
        raise ValueError(f"upsample must be an odd integer >= 1, got {upsample}")
    t = np.exp(1j * phase_rad)
    n = t.shape[-1]
    if upsample > 1:
        fine_cells = (np.arange(n * upsample) - (n * upsample - 1) / 2) / upsample
        interp = np.sinc(fine_cells[:, None] - (np.arange(n) - (n - 1) / 2)[None, :])
        t = interp @ t @ interp.T
    return (torch.tensor(np.abs(t), dtype=torch.float32), torch.tensor(np.angle(t), dtype=torch.float32))


def dflat_psf_fn(cfg, amplitude, phase, upsample: int, fft_pad: float, out_dx_m: float, out_px: int):
    """A function running D-Flat's ASM PSF of the field ``amplitude, phase`` ``[M, M]``
    (pitch ``cell_pitch / upsample``) on ``out_px`` x ``out_px`` samples at ``out_dx_m``."""
    import torch
    from dflat.propagation import PointSpreadFunction

    m = amplitude.shape[-1]
    dx = cfg.cell_pitch_m / upsample
    module = PointSpreadFunction(in_size=[m, m], in_dx_m=[dx, dx], out_distance_m=cfg.sensor_distance_m,
                                 out_size=[out_px, out_px], out_dx_m=[out_dx_m] * 2, wavelength_set_m=[LAM],
                                 diffraction_engine="ASM")
    module.propagator.FFTPadFactor = fft_pad  # ASMPropagation's own argument, not forwarded by PointSpreadFunction

    def run():
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out, _ = module(amplitude[None, None], phase[None, None], [[0.0, 0.0, cfg.source_distance_m]])
        return out[0, 0, 0]
    return run


def reference_points(cfg, phase_rad, pitch_m: float, n_px: int):
    """Our reference engine's PSF point-sampled at ``n_px`` x ``n_px`` points of pitch ``pitch_m``."""
    import torch

    from dkolib.optics.propagation import psf_reference
    cfg_m = _optics(cfg.n_cells, pixel_pitch_m=pitch_m, subpixel=1)
    ph = torch.tensor(phase_rad, dtype=torch.float32)
    return psf_reference(torch.polar(torch.ones_like(ph), ph)[None], [LAM], cfg_m, n_px)[0].double()


def rel_err(psf, ref) -> float:
    return float((psf - ref).norm() / ref.norm())


def _timed(step, repeats: int) -> dict:
    base_rss = _rss_mb()
    load = os.getloadavg()[0]
    out = step()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = step()
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"psf": out.double(), "seconds": statistics.median(times), "peak_mem_mb": peak - base_rss,
            "load_1min": load}


def run_one(engine: str, n: int, repeats: int, out_path: str, upsample: int = 1, fft_pad: float = 1.0) -> None:
    """Time one (engine, n_cells) in this process and save ``{psf, seconds, peak_mem_mb, ...}``."""
    import torch
    torch.set_num_threads(THREADS)
    cfg, ph = _phase(n)
    phase = torch.tensor(ph, dtype=torch.float32)
    bwd = engine.endswith("_fwd_bwd")
    base = engine.replace("_fwd_bwd", "")
    if base == "dflat":  # the paper's setup
        step = dflat_psf_fn(cfg, torch.ones_like(phase), phase, 1, 1.0, cfg.pixel_pitch_m, WINDOW)
    elif base == "dflat_equal_accuracy":
        amp, pha = upsample_field(ph, upsample)
        step = dflat_psf_fn(cfg, amp, pha, upsample, fft_pad, cfg.cell_pitch_m / upsample, DFLAT_GRID_PX * upsample)
    else:
        from dkolib.optics.propagation import psf

        def step():
            ph_ = phase.clone().requires_grad_(bwd)
            with torch.set_grad_enabled(bwd):
                out = psf(torch.polar(torch.ones_like(ph_), ph_)[None], [LAM], cfg, WINDOW, engine=base)[0]
                if bwd:
                    (out * torch.linspace(0, 1, out.numel()).view_as(out)).sum().backward()
            return out.detach()

    res = _timed(step, repeats)
    if base == "dflat":
        # like-with-like accuracy: D-Flat on its native grid vs our reference at the same points
        native = dflat_psf_fn(cfg, torch.ones_like(phase), phase, 1, 1.0, cfg.cell_pitch_m, DFLAT_GRID_PX)
        res["psf_matched"] = native().double()
        res["ref_matched"] = reference_points(cfg, ph, cfg.cell_pitch_m, DFLAT_GRID_PX)
    save_torch(res, out_path)


def search_dflat(n: int, max_gb: float, out_path: str) -> None:
    """Try :func:`dflat_candidates` cheapest first; save the first within the tolerance.

    Saves ``{"chosen": [upsample, fft_pad] or None, "tried": [[u, pad, grid, err, note]], "ref": reference
    PSF at the chosen configuration's points (or None)}``.
    """
    import torch
    torch.set_num_threads(THREADS)
    cfg, ph = _phase(n)
    tried, chosen, refs = [], None, {}
    for u, pad in dflat_candidates(n):
        grid = dflat_grid_side(n, u, pad)
        need_gb = DFLAT_BYTES_PER_POINT * grid ** 2 / 2 ** 30
        if need_gb > max_gb:
            tried.append([u, pad, grid, float("nan"), f"not run: needs ~{need_gb:.0f} GB > --dflat-max-gb {max_gb:g}"])
            continue
        if u not in refs:
            refs[u] = reference_points(cfg, ph, cfg.cell_pitch_m / u, DFLAT_GRID_PX * u)
        amp, pha = upsample_field(ph, u)
        err = rel_err(dflat_psf_fn(cfg, amp, pha, u, pad, cfg.cell_pitch_m / u, DFLAT_GRID_PX * u)().double(), refs[u])
        tried.append([u, pad, grid, err, ""])
        print(f"n={n} dflat input x{u}, FFT pad {pad:g} (grid {grid}^2): rel. error {err:.3g}", flush=True)
        if err <= EQUAL_ACCURACY_REL_ERR:
            chosen = [u, pad]
            break
    save_torch({"chosen": chosen, "tried": tried, "ref": refs[chosen[0]] if chosen else None}, out_path)


def _subprocess(args: list[str]) -> None:
    subprocess.run([sys.executable, __file__, *args], check=True)


def _tried_text(tried) -> str:
    return "; ".join(f"x{u}/pad {pad:g}: {err:.3g}" if not note else f"x{u}/pad {pad:g}: {note}"
                     for u, pad, _, err, note in tried)


def measure_size(n: int, repeats: int, have_dflat: bool, max_gb: float, tmp: str) -> list[dict]:
    """All rows of one grid size (each engine timed in a fresh subprocess)."""
    results, rows = {}, []
    for eng in [e for e in ENGINES if have_dflat or e != "dflat"]:
        out = os.path.join(tmp, f"{eng}_{n}.pt")
        reps = max(1, repeats if n < 1025 or eng.startswith("fast") else 2)
        _subprocess(["--repeats", str(reps), "--one", eng, str(n), out])
        results[eng] = load_torch(out)
        print(f"n={n} {eng}: {results[eng]['seconds']:.4f} s, {results[eng]['peak_mem_mb']:.0f} MB", flush=True)
    ref = results["reference"]["psf"]
    grid_ours = f"2.74um pixels subpixel 3 {WINDOW}x{WINDOW}"
    setups = {"reference": "2N grid, all frequencies", "fast": "minimal grid, window band only"}
    for eng in [e for e in ENGINES if e != "dflat" and e in results]:
        r = results[eng]
        rows.append({"engine": eng, "seconds_per_psf": r["seconds"], "peak_mem_mb": r["peak_mem_mb"],
                     "load_1min": r["load_1min"], "rel_err_vs_reference": rel_err(r["psf"], ref),
                     "error_grid": grid_ours, "setup": setups[eng.replace("_fwd_bwd", "")]})
    if not have_dflat:
        rows.insert(0, {"engine": "dflat", "seconds_per_psf": math.nan, "rel_err_vs_reference": math.nan,
                        "setup": "D-Flat (dflat-opt) is not installed"})
        return _speedups(rows, n, "D-Flat (dflat-opt) is not installed")
    d = results["dflat"]
    rows.insert(0, {"engine": "dflat", "seconds_per_psf": d["seconds"], "peak_mem_mb": d["peak_mem_mb"],
                    "load_1min": d["load_1min"], "rel_err_vs_reference": rel_err(d["psf_matched"], d["ref_matched"]),
                    "error_grid": f"2.5um point samples {DFLAT_GRID_PX}x{DFLAT_GRID_PX} (D-Flat native grid)",
                    "setup": "paper-like: cell-pitch input, FFT pad 1 (3N grid), 2.74um output 15x15"})
    search_out = os.path.join(tmp, f"search_{n}.pt")
    _subprocess(["--search-dflat", str(n), search_out, "--dflat-max-gb", str(max_gb)])
    search = load_torch(search_out)
    tried = _tried_text(search["tried"])
    if search["chosen"] is None:
        rows.insert(1, {"engine": "dflat_equal_accuracy", "seconds_per_psf": math.nan,
                        "rel_err_vs_reference": math.nan, "setup": f"none within 1 %: {tried}"})
        return _speedups(rows, n, f"no D-Flat configuration tried reached {EQUAL_ACCURACY_REL_ERR:.0%}")
    u, pad = search["chosen"]
    out = os.path.join(tmp, f"dflat_equal_accuracy_{n}.pt")
    reps = max(1, repeats if n < 1025 else 2)
    _subprocess(["--repeats", str(reps), "--one", "dflat_equal_accuracy", str(n), out,
                 "--dflat-setup", str(u), str(pad)])
    e = load_torch(out)
    print(f"n={n} dflat_equal_accuracy: {e['seconds']:.4f} s, {e['peak_mem_mb']:.0f} MB", flush=True)
    pitch_um = 2.5 / u
    rows.insert(1, {"engine": "dflat_equal_accuracy", "seconds_per_psf": e["seconds"], "peak_mem_mb": e["peak_mem_mb"],
                    "load_1min": e["load_1min"], "rel_err_vs_reference": rel_err(e["psf"], search["ref"]),
                    "error_grid": f"{pitch_um:.3g}um point samples {DFLAT_GRID_PX * u}x{DFLAT_GRID_PX * u} "
                                  "(D-Flat native grid)",
                    "setup": f"input x{u} band-limited, FFT pad {pad:g} (grid {dflat_grid_side(n, u, pad)}^2); "
                             f"tried (input/pad: error): {tried}"})
    return _speedups(rows, n, None)


def _speedups(rows: list[dict], n: int, missing: str | None) -> list[dict]:
    """Fill ``speedup_same_grid``, ``speedup_equal_accuracy`` and ``equal_accuracy_note`` (see module doc)."""
    t_same = rows[0]["seconds_per_psf"]
    eq = next((r for r in rows if r["engine"] == "dflat_equal_accuracy"), None)
    for r in rows:
        r["n_cells"] = n
        r["threads"] = THREADS
        r["speedup_same_grid"] = t_same / r["seconds_per_psf"]
        if missing is not None:
            r["speedup_equal_accuracy"], r["equal_accuracy_note"] = math.nan, missing
        elif not r["rel_err_vs_reference"] <= EQUAL_ACCURACY_REL_ERR:
            r["speedup_equal_accuracy"] = math.nan
            r["equal_accuracy_note"] = (f"this row's error {r['rel_err_vs_reference']:.3g} exceeds "
                                        f"{EQUAL_ACCURACY_REL_ERR:.0%}")
        else:
            r["speedup_equal_accuracy"] = eq["seconds_per_psf"] / r["seconds_per_psf"]
            r["equal_accuracy_note"] = ""
    return rows


COLUMNS = ["engine", "n_cells", "seconds_per_psf", "peak_mem_mb", "rel_err_vs_reference", "error_grid",
           "speedup_same_grid", "speedup_equal_accuracy", "equal_accuracy_note", "setup", "threads", "load_1min"]


def paper_array(chunk: int = 16) -> dict:
    import torch

    from dkolib.config import load_config
    from dkolib.optics.metasurface import lens_phase_rad
    from dkolib.optics.propagation import psf_fast
    torch.set_num_threads(THREADS)
    cfg = load_config("paper").optics if (project_root() / "config" / "paper.yaml").exists() else None
    cfg = _optics(1025) if cfg is None or cfg.n_cells != 1025 else cfg
    n, W = 1025, cfg.loss_window_px
    wls = [cfg.wavelengths_m[i] for o in range(64) for i in range(3) for s in range(2)]
    lens = {lam: torch.tensor(lens_phase_rad(n, cfg.cell_pitch_m, lam, cfg.sensor_distance_m,
                                             cfg.source_distance_m), dtype=torch.float32)
            for lam in cfg.wavelengths_m}
    res = {}
    base_rss = _rss_mb()
    for lam in cfg.wavelengths_m:  # warm-up: fills the per-wavelength operator cache, as in training
        with torch.no_grad():
            psf_fast(torch.polar(torch.ones_like(lens[lam]), lens[lam])[None], [lam], cfg, W)
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
    ap.add_argument("--dflat-max-gb", type=float, default=8.0,
                    help="largest estimated memory of a D-Flat configuration tried for equal accuracy")
    ap.add_argument("--skip-paper-array", action="store_true")
    ap.add_argument("--one", nargs=3, metavar=("ENGINE", "N", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--dflat-setup", nargs=2, type=float, metavar=("UPSAMPLE", "FFT_PAD"), help=argparse.SUPPRESS)
    ap.add_argument("--search-dflat", nargs=2, metavar=("N", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.repeats < 1 or args.dflat_max_gb <= 0 or any(n < 9 or n % 2 == 0 for n in args.sizes):
        raise InputError("--repeats must be >= 1, --dflat-max-gb > 0 and every --sizes value an odd number "
                         f"of cells >= 9 (got repeats {args.repeats}, max GB {args.dflat_max_gb}, sizes {args.sizes})")
    if args.one:
        u, pad = args.dflat_setup or (1, 1.0)
        run_one(args.one[0], int(args.one[1]), args.repeats, args.one[2], int(u), float(pad))
        return
    if args.search_dflat:
        search_dflat(int(args.search_dflat[0]), args.dflat_max_gb, args.search_dflat[1])
        return
    import pandas as pd

    from dkolib.io import write_csv
    have_dflat = importlib.util.find_spec("dflat") is not None
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            rows += measure_size(n, args.repeats, have_dflat, args.dflat_max_gb, tmp)
    frame = pd.DataFrame(rows).reindex(columns=COLUMNS)
    write_csv(frame, project_root() / "results" / "benchmarks" / "psf_engines.csv")
    print(frame.drop(columns=["setup"]).to_string(index=False))
    if not args.skip_paper_array:
        res = paper_array()
        arr = pd.DataFrame([{"engine": "fast", "n_elements": 384, "n_cells": 1025, "window_px": 14,
                             "chunk": 16, "threads": THREADS, "forward_s": res["forward"],
                             "forward_backward_s": res["forward_backward"], "peak_mem_mb": res["peak_mem_mb"]}])
        write_csv(arr, project_root() / "results" / "benchmarks" / "psf_paper_array.csv")
        print(arr.to_string(index=False))


if __name__ == "__main__":
    sys.exit(run_cli(main))
