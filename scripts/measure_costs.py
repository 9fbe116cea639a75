#!/usr/bin/env python
"""Measure the per-iteration cost of DKO stage 2 and of one E2E step.

    python scripts/measure_costs.py [--out results/costs.csv] [--sizes default paper] [--threads 1]

Methods (one row per method x size in ``results/costs.csv``):

* ``dko_stage2``: one DKO iteration = PSF forward + backward of all ``E`` elements on
  the loss window, the leakage loss, one Adam step. ``n_params`` = latents ``E N^2``.
* ``e2e_step``: one E2E step = PSF forward + backward of all elements on the kernel
  window (crop mode) + network forward + backward on a batch (``e2e.batch_size`` images
  of ``data.height x data.width``) + Adam. ``n_params`` = latents + network + gain.
* ``stage1_step``: one step of the electronic network alone (the cost of DKO's stage 1
  per step), so that full-run ratios can include stage 1.

Sizes: ``default`` and ``paper`` are the profiles' geometry (``paper``: 384 elements of
1025 x 1025 cells, 192 x 640 images, width 1.0, batch 12). Each measurement runs in a
fresh subprocess so that its peak resident memory (``ru_maxrss`` minus the process's
resident size before building anything) is its own. Where a full measurement is too slow
for this script's ~5-minute limit (paper size on a CPU), a chunk of elements / a smaller
batch is timed and the total extrapolated linearly (``measured = False``): time and memory
scale with the element count (PSF chunks are independent) and with the batch size; the
extrapolated memory adds the per-element latent/gradient/Adam state of the elements
that were not built. Columns: ``method, size, n_params, seconds_per_iter, peak_mem_mb,
measured, n_elements, seconds_psf, seconds_net, n_cells, batch, timed_elements, timed_batch,
device, threads``.

The script also prints the E2E / DKO ratio per iteration and per full run in the
paper's setting (E2E 50,000 steps vs DKO 500 stage-2 steps; and with DKO's stage 1,
``stage1.steps`` network steps, included).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dkolib.study.cli import run_cli  # noqa: E402
from dkolib.root import project_root  # noqa: E402

PAPER_E2E_STEPS = 50_000
PAPER_DKO_STEPS = 500


def _rss_peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _rss_now_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        import os

        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return _rss_peak_mb()


def worker(spec: dict) -> dict:
    """Run one measurement (in its own process); returns timings and memory."""
    import torch

    torch.set_num_threads(int(spec["threads"]))
    from dkolib.config import load_config
    from dkolib.optics.metaatoms import IdealPhaseAtom, load_atom
    from dkolib.optics.metasurface import MetasurfaceArray
    from dkolib.depth.network import DepthNet
    from dkolib.optics.propagation import psf
    from dkolib.dko.losses import leakage_loss

    device = torch.device(spec["device"])
    cfg = load_config(spec["size"], {"device": "cpu"} if spec["device"] == "cpu" else {})
    rss0 = _rss_now_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    try:
        atom = load_atom(cfg.optics.meta_atom)
    except FileNotFoundError:
        atom = IdealPhaseAtom()  # library not built yet: same cost model (a lookup per cell)
    array = None
    params = []
    if spec["method"] in ("dko_stage2", "e2e_step"):
        n_out = max(1, spec["timed_elements"] // 6)
        array = MetasurfaceArray(n_out, 3, cfg.optics, atom, init="lens").to(device)
        params.append(array.latent)
    net = None
    if spec["method"] in ("e2e_step", "stage1_step"):
        net = DepthNet(cfg.model, kernel_size=cfg.optics.kernel_size).to(device)
        params += list(net.parameters())
    opt = torch.optim.Adam(params, lr=1e-4)
    window = cfg.optics.loss_window_px if spec["method"] == "dko_stage2" else cfg.optics.kernel_size
    k = cfg.optics.kernel_size
    target = torch.rand(array.latent.shape[0], k, k, device=device) if array is not None else None
    b, h, w = spec["timed_batch"], cfg.data.height, cfg.data.width
    rgb = torch.rand(b, 3, h, w, device=device)
    gt = 1.0 + 50 * torch.rand(b, 1, h, w, device=device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step() -> tuple[float, float, float]:
        """One iteration; returns (seconds of the PSF part, seconds of the network part, peak after PSF)."""
        opt.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        if array is not None:
            # PSF forward + backward. In E2E the crop kernels feed the network; the cost splits
            # exactly into this part and the network part (train.py splits the graph the same way).
            p = psf(array, array.wavelengths_m, cfg.optics, window, engine=cfg.optics.engine)
            loss = leakage_loss(p, target, reduction="sum") if spec["method"] == "dko_stage2" else (p * target).sum()
            loss.backward()
        sync()
        t1 = time.perf_counter()
        peak_psf = _rss_peak_mb()
        if net is not None:
            disp = net(rgb)[("disp", 0)]
            (disp - 1.0 / gt).abs().mean().backward()
        opt.step()
        sync()
        return t1 - t0, time.perf_counter() - t1, peak_psf

    step()  # warm-up (operator caches, allocator)
    parts = []
    t_end = time.perf_counter() + spec["max_seconds"]
    for _ in range(spec["repeats"]):
        parts.append(step())
        if time.perf_counter() > t_end:
            break
    parts.sort(key=lambda x: x[0] + x[1])
    t_psf, t_net, peak_psf = parts[len(parts) // 2]
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
        peak_psf_mb = peak
    else:
        peak = _rss_peak_mb() - rss0
        peak_psf_mb = peak_psf - rss0
    n_lat = array.latent.numel() if array is not None else 0
    n_net = sum(p.numel() for p in net.parameters()) if net is not None else 0
    return {"t_psf": t_psf, "t_net": t_net, "peak_mb": peak, "peak_psf_mb": peak_psf_mb, "n_latent": n_lat,
            "n_net": n_net, "timed_elements": int(array.latent.shape[0]) if array is not None else 0,
            "repeats_done": len(parts)}


def _run_worker(spec: dict) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=project_root())
    if proc.returncode != 0:
        raise RuntimeError(f"measurement {spec} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _plan(size: str, device: str) -> list[dict]:
    from dkolib.config import load_config
    from dkolib.depth.network import conv1_channels

    cfg = load_config(size)
    c1 = conv1_channels(cfg.model)
    e_full = 2 * 3 * c1
    big = size == "paper" and device == "cpu"
    e_timed = 6 if big else e_full
    b_full = cfg.e2e.batch_size
    b_timed = 1 if big else b_full
    plans = []
    for method in ("dko_stage2", "e2e_step", "stage1_step"):
        plans.append({"method": method, "size": size, "device": device, "n_elements": e_full,
                      "timed_elements": 0 if method == "stage1_step" else e_timed,
                      "batch": b_full if method != "dko_stage2" else 0,
                      "timed_batch": (b_timed if method != "dko_stage2" else 1),
                      "n_cells": cfg.optics.n_cells, "repeats": 3 if not big else 1,
                      "max_seconds": 20.0})
    return plans


def measure(sizes, device: str, threads: int):
    import pandas as pd

    rows = []
    for size in sizes:
        for spec in _plan(size, device):
            spec["threads"] = threads
            t0 = time.perf_counter()
            r = _run_worker(spec)
            el_scale = spec["n_elements"] / r["timed_elements"] if r["timed_elements"] else 1.0
            b_scale = spec["batch"] / spec["timed_batch"] if spec["method"] != "dko_stage2" else 1.0
            measured = el_scale == 1.0 and b_scale == 1.0
            n_latent_full = r["n_latent"] * el_scale
            # time: the PSF part scales with the element count, the network part with the batch
            secs = r["t_psf"] * el_scale + r["t_net"] * b_scale
            # memory: PSFs are chunked, so one chunk's activations stay; latent + grad + 2 Adam
            # moments (4 x 4 bytes per cell) scale with the elements; the network's share of the
            # peak (peak minus the peak after the PSF part) scales with the batch
            net_share = max(0.0, r["peak_mb"] - r["peak_psf_mb"])
            mem = (r["peak_psf_mb"] + (n_latent_full - r["n_latent"]) * 16 / 2**20 + net_share * b_scale)
            if measured:
                mem = r["peak_mb"]
            n_params = int(n_latent_full + r["n_net"])
            rows.append({"method": spec["method"], "size": size, "n_params": n_params,
                         "seconds_per_iter": secs, "peak_mem_mb": mem, "measured": measured,
                         "n_elements": spec["n_elements"] if spec["method"] != "stage1_step" else 0,
                         "seconds_psf": r["t_psf"] * el_scale, "seconds_net": r["t_net"] * b_scale,
                         "n_cells": spec["n_cells"], "batch": spec["batch"],
                         "timed_elements": r["timed_elements"],
                         "timed_batch": spec["timed_batch"] if spec["method"] != "dko_stage2" else 0,
                         "device": device, "threads": threads})
            print(f"{spec['method']:12s} {size:8s} {secs:10.3f} s/iter  {mem:9.1f} MB  measured={measured} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return pd.DataFrame(rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None, help="default: results/costs.csv under the project root")
    ap.add_argument("--sizes", nargs="+", default=["default", "paper"], choices=["smoke", "default", "paper"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(json.loads(args.worker))))
        return None
    from dkolib.config import load_config
    from dkolib.io import write_csv

    costs = measure(args.sizes, args.device, args.threads)
    write_csv(costs, args.out if args.out is not None else project_root() / "results" / "costs.csv")
    print(costs.to_string(index=False))
    for size in args.sizes:
        c = costs[costs["size"] == size].set_index("method")["seconds_per_iter"]
        s1_steps = load_config(size).stage1.steps
        per_iter = c["e2e_step"] / c["dko_stage2"]
        run_dko = PAPER_DKO_STEPS * c["dko_stage2"]
        run_e2e = PAPER_E2E_STEPS * c["e2e_step"]
        run_dko_total = run_dko + s1_steps * c["stage1_step"]
        print(f"[{size}] e2e/dko per iteration: {per_iter:.2f}x; per full run (E2E {PAPER_E2E_STEPS} steps vs "
              f"DKO {PAPER_DKO_STEPS} stage-2 steps): {run_e2e / run_dko:.0f}x; including DKO's stage 1 "
              f"({s1_steps} network steps): {run_e2e / run_dko_total:.1f}x "
              f"(E2E {run_e2e / 3600:.1f} h, DKO stage 2 {run_dko / 3600:.2f} h, stage 1 "
              f"{s1_steps * c['stage1_step'] / 3600:.1f} h)")
    return costs


if __name__ == "__main__":
    sys.exit(run_cli(main))
