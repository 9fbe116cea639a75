#!/usr/bin/env python
"""The paper's sizes on one device: PSFs per second, DKO stage-2 and E2E steps, peak memory.

    python scripts/gpu_check.py --profile paper --device cuda          # scripts/gpu_check.sh
    python scripts/gpu_check.py --profile paper --device cpu --metasurfaces 2 \
        --set optics.n_cells=33 data.height=32 data.width=64 e2e.batch_size=1 model.width_factor=0.125

``results/costs.csv`` holds the paper-size costs per step that ``scripts/measure_costs.py``
extrapolates from CPU chunks; this script measures them on the device, in one process and
under ``--time-limit-s`` (default 270 s, so that ``timeout 290`` never cuts a run short).
``K = --metasurfaces`` (default: the whole array, ``E = 2 x 3 x conv1 channels``, 384 for
``paper``) metasurfaces are simulated at the profile's cells, wavelengths (the front end's
order, :func:`dkolib.dko.budget.element_wavelengths_m`) and engine ``fast``; each measurement
runs ``--warmup`` untimed steps (operator caches, allocator) then ``--steps`` timed ones and
stops early, keeping the steps done, once the time limit has passed. Rows
(``measurement``):

* ``psf_forward``, ``psf_forward_backward``: the PSFs of the K metasurfaces on the stage-2
  loss window (``optics.loss_window_px``), from their latents (meta-atom lookup included),
  without and with the gradient of their sum back to the latents.
* ``dko_stage2_step``: one step of :func:`dkolib.dko.synthesis.synthesize` (PSF forward +
  backward, loss, Adam) on random kernels, the K metasurfaces being ``K / 2`` (+, -) pairs.
* ``e2e_step``: one joint E2E step as :func:`dkolib.dko.train.run_e2e` trains it (the hybrid
  network with its optical front end in crop mode, the depth loss, AdamW over latents,
  network and gain) at ``e2e.batch_size`` images of ``data.height x data.width``, the PSFs
  split out of the network's graph as ``train_loop`` does. With ``K < E`` the network still
  runs at full size but only K metasurfaces (an array of their own) are simulated and updated
  in the step; the front end's other PSFs stay fixed (``note`` says so).

Columns: ``measurement, device, device_name, profile, engine, n_cells, window_px,
batch_size, height, width, metasurfaces_timed (K), metasurfaces_total (E), warmup_steps,
steps_timed, seconds_per_step`` (mean over the timed steps; CUDA is synchronised before every
clock read), ``seconds_optics_per_step`` (the part of the step that grows with K: in the E2E
step the PSFs forward + backward and the AdamW update of their latents; the whole step in the
other rows), ``psfs_per_second`` (K / ``seconds_per_step``), ``peak_memory_mb``
(``memory_kind``: ``cuda_max_allocated``, reset before each measurement, or on a CPU
``process_peak_rss``, the process's peak so far, earlier rows and set-up included),
``scaled_to_all_seconds_per_step`` (the step with all E metasurfaces, by ``scaling_rule``: the
optics part linear in K), ``scaling_rule``, ``note``, ``threads``, ``torch_version``. Once run
on a GPU, these rows replace the extrapolated ``paper`` rows of ``results/costs.csv``. The CSV
(``--out``, default ``results/benchmarks/gpu_check.csv``) is rewritten atomically after every
row, so that a run stopped from outside keeps what it measured; a run that measures nothing
leaves it as it was.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import platform
import resource
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dkolib.cpupaths import pin_cpu_code_paths  # noqa: E402

if __name__ == "__main__":
    pin_cpu_code_paths()  # before torch loads (dkolib/cpupaths.py): the pipeline's CPU code paths

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from dkolib.config import load_config, parse_overrides  # noqa: E402
from dkolib.depth.losses import make_depth_loss  # noqa: E402
from dkolib.depth.network import DepthNet, conv1_channels  # noqa: E402
from dkolib.dko.budget import BudgetMeter, element_wavelengths_m  # noqa: E402
from dkolib.dko.frontend import make_hybrid, unit_gain  # noqa: E402
from dkolib.dko.synthesis import initial_array, make_atom, synthesize  # noqa: E402
from dkolib.errors import InputError  # noqa: E402
from dkolib.io import seed_everything, set_threads, write_csv  # noqa: E402
from dkolib.optics.metasurface import MetasurfaceArray  # noqa: E402
from dkolib.optics.propagation import psf  # noqa: E402
from dkolib.study.cli import run_cli  # noqa: E402

ENGINE = "fast"
LINEAR_RULE = "seconds_per_step x metasurfaces_total / metasurfaces_timed"
E2E_RULE = "seconds_per_step + seconds_optics_per_step x (metasurfaces_total / metasurfaces_timed - 1)"
COLUMNS = ["measurement", "device", "device_name", "profile", "engine", "n_cells", "window_px", "batch_size",
           "height", "width", "metasurfaces_timed", "metasurfaces_total", "warmup_steps", "steps_timed",
           "seconds_per_step", "seconds_optics_per_step", "psfs_per_second", "peak_memory_mb", "memory_kind",
           "scaled_to_all_seconds_per_step", "scaling_rule", "note", "threads", "torch_version"]


class _TimeUp(Exception):
    """The time limit passed after a timed step: the measurement keeps the steps it has."""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepClock(BudgetMeter):
    """A :class:`BudgetMeter` whose ``timing`` blocks (one per step) are clocked one by one,
    CUDA synchronised at both ends, so that :func:`synthesize` can be timed through its
    ``budget`` argument like the loops here. It starts a measurement (device memory peak
    reset) and reads the peak after every step. After a timed step (past ``warmup``) it
    raises :class:`_TimeUp` once ``deadline`` (``time.perf_counter``) has passed."""

    def __init__(self, device: torch.device, warmup: int, deadline: float) -> None:
        super().__init__()
        self.device, self.warmup, self.deadline = device, warmup, deadline
        self.seconds: list[float] = []
        self.peak: tuple[float, str] = (float("nan"), "")
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)

    @contextmanager
    def timing(self):
        _sync(self.device)
        t0 = time.perf_counter()
        yield self
        _sync(self.device)
        self.seconds.append(time.perf_counter() - t0)
        self.peak = _peak_memory_mb(self.device)
        if len(self.seconds) > self.warmup and time.perf_counter() > self.deadline:
            raise _TimeUp

    def timed(self) -> list[float]:
        return self.seconds[self.warmup:]


def _peak_memory_mb(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "process_peak_rss"  # Linux: KiB


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as fh:
            return next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _repeat(clock: StepClock, step, n_steps: int) -> None:
    """Run ``step`` ``n_steps`` times, each in a ``clock.timing()`` block, until the time is up."""
    try:
        for _ in range(n_steps):
            with clock.timing():
                step()
    except _TimeUp:
        pass


def _psf_step(cfg, array: MetasurfaceArray, window: int, grad: bool) -> None:
    """The PSFs of ``array``'s metasurfaces; with ``grad``, their sum's gradient back to the latents."""
    with torch.set_grad_enabled(grad):
        out = psf(array, array.wavelengths_m, cfg.optics, window, engine=ENGINE)
    if grad:
        array.latent.grad = None
        out.sum().backward()


def psf_rows(cfg, array: MetasurfaceArray, clock_for, n_steps: int) -> list[dict]:
    """``psf_forward`` and ``psf_forward_backward`` of ``array``'s metasurfaces."""
    window = int(cfg.optics.loss_window_px)
    rows = []
    for name, grad in (("psf_forward", False), ("psf_forward_backward", True)):
        clock = clock_for()
        _repeat(clock, functools.partial(_psf_step, cfg, array, window, grad), n_steps)
        rows.append({"measurement": name, "window_px": window, "clock": clock})
    return rows


def stage2_row(cfg, array: MetasurfaceArray, clock_for, n_steps: int) -> dict:
    """``dko_stage2_step``: :func:`synthesize` on ``array`` (its ``K / 2`` pairs) and random kernels."""
    k = int(cfg.optics.kernel_size)
    gen = torch.Generator().manual_seed(int(cfg.seed))
    weight = 0.1 * torch.randn(1, array.n_in, k, k, generator=gen)
    clock = clock_for()
    try:
        synthesize(weight, cfg.optics, cfg.dko, engine=ENGINE, array=array, progress=False, budget=clock,
                   steps=n_steps, stop_window=0)
    except _TimeUp:
        pass
    return {"measurement": "dko_stage2_step", "window_px": int(cfg.optics.loss_window_px), "clock": clock}


def pairs_array(cfg, k: int, init: str, device: torch.device) -> MetasurfaceArray:
    """K metasurfaces as the K / 2 (+, -) pairs of one output channel, at the wavelengths of the
    front end's first K elements, started as stage 2 starts (:func:`initial_array`) from ``init``."""
    dko_cfg = dataclasses.replace(cfg.dko, init=init)
    return initial_array(1, k // 2, cfg.optics, dko_cfg, generator=torch.Generator().manual_seed(cfg.seed),
                         wavelengths_m=element_wavelengths_m(cfg.optics, k)[::2]).to(device)


def e2e_row(cfg, k: int, device: torch.device, clock_for, n_steps: int) -> dict:
    """``e2e_step``: one joint E2E step of the hybrid network with ``k`` metasurfaces simulated.

    The step is :func:`dkolib.dko.train.train_loop`'s: the PSFs, split out of the network's graph
    as a leaf, the depth loss backward, the PSF backward, AdamW. Its optics part (the PSFs forward
    + backward and the AdamW update of their latents, all per metasurface) is clocked on its own.
    With ``k`` below the array's ``E``, those ``k`` are a :func:`pairs_array` of their own and the
    front end's other ``E - k`` PSFs stay fixed (computed once, their latents frozen).
    """
    gen = seed_everything(cfg.seed)
    base = DepthNet(cfg.model, kernel_size=cfg.optics.kernel_size)
    array = MetasurfaceArray(base.conv1_channels, 3, cfg.optics, make_atom(cfg.optics), init=cfg.e2e.init,
                             generator=gen)
    model = make_hybrid(base, array, cfg.optics, mode="crop", engine=ENGINE, trainable_gain=True,
                        gain=unit_gain(base.conv1_channels, 3, cfg.optics.gain), cache_psf=False).to(device)
    fe = model.first_layer
    n_el = array.n_elements
    live, fixed, note = array, None, ""
    if k < n_el:
        live = pairs_array(cfg, k, cfg.e2e.init, device)
        fe.freeze_optics()
        with torch.no_grad():
            fixed = fe.compute_psf()[k:]
        note = (f"network at full size; {k} of {n_el} metasurfaces simulated and updated in the step, the other "
                "PSFs fixed (their latents' gradients and AdamW moments are not in peak_memory_mb)")
    opt_optics = torch.optim.AdamW([live.latent], lr=cfg.e2e.lr_optics, weight_decay=0.0)
    opt_net = torch.optim.AdamW(model.backend_parameters() + [fe.gain], lr=cfg.e2e.lr_net,
                                weight_decay=cfg.stage1.weight_decay)
    loss_fn = make_depth_loss(cfg.data.min_depth_m, cfg.data.max_depth_m)
    b, h, w = cfg.e2e.batch_size, cfg.data.height, cfg.data.width
    batch = {"rgb": torch.rand(b, 3, h, w, device=device),
             "depth_m": 2.0 + 60.0 * torch.rand(b, 1, h, w, device=device)}
    model.train()
    optics_seconds = []

    def step():
        opt_optics.zero_grad(set_to_none=True)
        opt_net.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        p = psf(live, live.wavelengths_m, cfg.optics, fe.window_px, engine=ENGINE)
        leaf = (p if fixed is None else torch.cat([p, fixed])).detach().requires_grad_(True)
        _sync(device)
        t1 = time.perf_counter()
        with fe.injected_psf(leaf):
            loss_fn(model, batch).backward()
        _sync(device)
        t2 = time.perf_counter()
        p.backward(leaf.grad[:k])
        opt_optics.step()
        _sync(device)
        optics_seconds.append(t1 - t0 + time.perf_counter() - t2)
        opt_net.step()

    clock = clock_for()
    _repeat(clock, step, n_steps)
    return {"measurement": "e2e_step", "window_px": fe.window_px, "batch_size": b, "height": h, "width": w,
            "clock": clock, "optics_seconds": optics_seconds[clock.warmup:], "note": note}


def measure(name: str, cfg, k: int, device: torch.device, clock_for, n_steps: int) -> list[dict]:
    """The raw rows of one item of the plan: ``psf`` (two rows), ``dko_stage2_step`` or ``e2e_step``."""
    if name == "e2e_step":
        return [e2e_row(cfg, k, device, clock_for, n_steps)]
    array = pairs_array(cfg, k, cfg.dko.init, device)
    return psf_rows(cfg, array, clock_for, n_steps) if name == "psf" else [stage2_row(cfg, array, clock_for, n_steps)]


def finish_row(row: dict, base: dict) -> dict | None:
    """The CSV row of a measurement (None when no timed step finished)."""
    clock = row.pop("clock")
    timed = clock.timed()
    if not timed:
        return None
    optics_seconds = row.pop("optics_seconds", None)
    out = {**base, "batch_size": 0, "height": 0, "width": 0, "note": "", **row}
    k, e = out["metasurfaces_timed"], out["metasurfaces_total"]
    sec = sum(timed) / len(timed)
    optics_sec = sec if optics_seconds is None else sum(optics_seconds) / len(optics_seconds)
    out.update(steps_timed=len(timed), seconds_per_step=sec, seconds_optics_per_step=optics_sec,
               psfs_per_second=k / sec, peak_memory_mb=clock.peak[0], memory_kind=clock.peak[1])
    if optics_seconds is None:
        out.update(scaled_to_all_seconds_per_step=sec * e / k, scaling_rule=LINEAR_RULE)
    else:
        out.update(scaled_to_all_seconds_per_step=sec + optics_sec * (e / k - 1), scaling_rule=E2E_RULE)
    return out


def _parse(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="paper")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--metasurfaces", type=int, default=None, help="K, even (default: the whole array)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per measurement")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first (operator caches, allocator)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the profile's)")
    ap.add_argument("--time-limit-s", type=float, default=270.0,
                    help="stop measuring after this many seconds, keeping the rows done")
    ap.add_argument("--set", dest="overrides", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                    help="config overrides, e.g. optics.n_cells=33")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks" / "gpu_check.csv")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.time_limit_s <= 0:
        raise InputError(f"need --steps >= 1, --warmup >= 0 and --time-limit-s > 0 (got {args.steps}, "
                         f"{args.warmup}, {args.time_limit_s})")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda, but torch sees no CUDA GPU: on a machine without one pass --device cpu "
                         "with reduced sizes (e.g. --metasurfaces 2 --set optics.n_cells=33 data.height=32 "
                         "data.width=64 e2e.batch_size=1)")
    return args


def main(argv=None) -> int:
    args = _parse(argv)
    start = time.perf_counter()
    cfg = load_config(args.profile, {**parse_overrides(args.overrides), "device": args.device})
    device = torch.device(args.device)
    n_total = 2 * 3 * conv1_channels(cfg.model)
    k = n_total if args.metasurfaces is None else args.metasurfaces
    if not 2 <= k <= n_total or k % 2:
        raise InputError(f"--metasurfaces must be even (each kernel is a +/- pair) and between 2 and the array's "
                         f"{n_total}, got {k}")
    threads = args.threads or cfg.threads
    set_threads(threads)
    base = {"device": device.type, "device_name": _device_name(device), "profile": cfg.profile, "engine": ENGINE,
            "n_cells": cfg.optics.n_cells, "metasurfaces_timed": k, "metasurfaces_total": n_total,
            "warmup_steps": args.warmup, "threads": threads, "torch_version": torch.__version__}
    deadline = start + args.time_limit_s
    n_steps = args.warmup + args.steps

    clock_for = functools.partial(StepClock, device, args.warmup, deadline)  # one per measurement

    def record(raw: dict) -> None:
        row = finish_row(raw, base)
        if row is None:
            print(f"{raw['measurement']}: no timed step within --time-limit-s {args.time_limit_s:g}", flush=True)
            return
        rows.append(row)
        write_csv(pd.DataFrame(rows).reindex(columns=COLUMNS), args.out)
        print(f"{row['measurement']:22s} {row['seconds_per_step']:9.4f} s/step  {row['psfs_per_second']:10.1f} PSF/s"
              f"  peak {row['peak_memory_mb']:9.1f} MB  all {n_total}: {row['scaled_to_all_seconds_per_step']:.3f} "
              f"s/step  ({time.perf_counter() - start:.0f} s)", flush=True)

    rows: list[dict] = []
    for name in ("psf", "dko_stage2_step", "e2e_step"):
        if time.perf_counter() > deadline:
            print(f"{name}: skipped, --time-limit-s {args.time_limit_s:g} reached", flush=True)
            continue
        try:
            raws = measure(name, cfg, k, device, clock_for, n_steps)
        except torch.cuda.OutOfMemoryError as exc:
            print(f"{name}: out of device memory at {k} metasurfaces ({exc}); rerun with a smaller --metasurfaces",
                  flush=True)
            continue
        for raw in raws:
            record(raw)
    if not rows:
        print(f"nothing measured: {args.out} left as it was", file=sys.stderr)
        return 1
    print(pd.DataFrame(rows)[["measurement", "seconds_per_step", "psfs_per_second", "peak_memory_mb",
                              "scaled_to_all_seconds_per_step"]].to_string(index=False))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
