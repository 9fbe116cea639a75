"""The equal-budget study's FLOP axis, checked against operation counts measured independently.

Independent counts used here:

* matmuls: ``torch.utils.flop_counter.FlopCounterMode`` (2 FLOPs per multiply-add, whatever
  the dtype; a *complex* multiply-add is 4 real multiplies + 4 real adds = 8 real FLOPs, so
  the engines' complex matmuls cost 4x what the counter reports);
* FFTs: :class:`FFTCounter`, a dispatch mode that records every ATen FFT call (forward and
  backward passes alike) with its input shape; each transform of ``P`` points is charged
  ``5 P log2 P`` (the usual convention for a complex FFT);
* convolutions: sizes worked out by hand from the layer shapes.

Units: real floating-point operations (FLOPs); seconds for the wall-clock budget.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

import dkolib.dko.budget as budget_mod
from dkolib.config import load_config
from dkolib.depth.losses import make_depth_loss
from dkolib.depth.network import DepthNet
from dkolib.dko.budget import BACKWARD_FACTOR, BudgetMeter, psf_simulation_flops
from dkolib.dko.synthesis import synthesize
from dkolib.dko.train import psf_step_flops, train_loop
from dkolib.optics import propagation as prop
from dkolib.optics.metaatoms import IdealPhaseAtom
from dkolib.optics.metasurface import MetasurfaceArray

torch.set_num_threads(1)

COMPLEX_MM = 4.0
"""Real FLOPs of a complex multiply-add (8) over FlopCounterMode's 2 per multiply-add."""


class FFTCounter(TorchDispatchMode):
    """Records ``(op name, input shape, transformed dims)`` of every ATen FFT that runs inside."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[str, tuple, tuple]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name.startswith("_fft_"):
            self.calls.append((name, tuple(args[0].shape), tuple(int(d) for d in args[1])))
        return func(*args, **(kwargs or {}))

    def flops(self) -> float:
        """``5 P log2 P`` per complex transform of ``P`` points (batch dimensions multiply)."""
        total = 0.0
        for name, shape, dims in self.calls:
            assert name == "_fft_c2c", f"unexpected real FFT {name}: the engines transform complex fields"
            points = math.prod(shape[d] for d in dims)
            total += (math.prod(shape) // points) * 5.0 * points * math.log2(points)
        return total


def _smoke_optics():
    return load_config("smoke").optics


def _cropping_optics():
    """33 cells focused 5 mm away: the fast engine keeps only part of the grid's frequencies."""
    return dataclasses.replace(_smoke_optics(), n_cells=33, sensor_distance_m=5e-3)


def _transmission(n_el: int, n_cells: int, requires_grad: bool = False, seed: int = 0):
    phase = (2 * math.pi * torch.rand(n_el, n_cells, n_cells, generator=torch.Generator().manual_seed(seed)))
    phase.requires_grad_(requires_grad)
    return phase, torch.polar(torch.ones_like(phase), phase)


def _measure(fn):
    """Run ``fn()`` under both counters; returns (real matmul FLOPs, FFT FLOPs, fft calls, op counts)."""
    fc, ffts = FlopCounterMode(display=False), FFTCounter()
    with fc, ffts:
        fn()
    ops = {str(op) for per_module in fc.get_flop_counts().values() for op in per_module}
    return COMPLEX_MM * fc.get_total_flops(), ffts.flops(), ffts.calls, ops


# ----------------------------------------------------------------------------- 1. PSF forward
@pytest.mark.parametrize("engine", prop.ENGINES)
@pytest.mark.parametrize("geometry", ["smoke", "cropping"])
def test_psf_flop_terms_match_the_engine_operation_by_operation(engine, geometry):
    cfg = _smoke_optics() if geometry == "smoke" else _cropping_optics()
    W = cfg.loss_window_px
    for lam in cfg.wavelengths_m:
        _, t = _transmission(1, cfg.n_cells)
        mm, fft, calls, ops = _measure(lambda t=t, lam=lam: prop.psf(t, [lam], cfg, W, engine=engine))
        terms = prop.psf_flop_terms(cfg.n_cells, W, cfg.subpixel, engine, optics_cfg=cfg, wavelength_m=lam)
        # one 2-D transform of the padded grid per element
        assert len(calls) == 1 and calls[0][2] == (1, 2) and calls[0][1][1] == calls[0][1][2]
        assert terms["fft"] == pytest.approx(fft, rel=1e-12), (engine, lam, calls)
        assert ops <= {"aten.mm", "aten.bmm"}, ops  # the counter saw the two window matmuls only
        assert terms["matmul"] == pytest.approx(mm, rel=0.02), (engine, lam)
        assert prop.count_psf_flops(cfg.n_cells, W, cfg.subpixel, engine, optics_cfg=cfg, wavelength_m=lam) \
            == pytest.approx(sum(terms.values()))


def test_the_cropping_geometry_really_crops_the_band():
    """Guards the test above: there the fast engine must keep fewer frequencies than the grid has."""
    cfg = _cropping_optics()
    _, t = _transmission(1, cfg.n_cells)
    lam = cfg.wavelengths_m[0]
    mm, _, calls, _ = _measure(lambda: prop.psf(t, [lam], cfg, cfg.loss_window_px, engine="fast"))
    n_pad, M = calls[0][1][-1], cfg.loss_window_px * cfg.subpixel
    full_band = 8.0 * (M * n_pad ** 2 + M * M * n_pad)
    assert mm < 0.5 * full_band


@pytest.mark.parametrize("engine", prop.ENGINES)
def test_an_rgb_array_is_charged_each_element_at_its_own_wavelength(engine):
    """At the smoke geometry the elements' grids (margin) and kept bands (window cut-off) differ with the wavelength."""
    cfg = _smoke_optics()
    W = cfg.loss_window_px
    wls = [cfg.wavelengths_m[(e // 2) % 3] for e in range(6)]  # one output channel, RGB, +/-
    _, t = _transmission(len(wls), cfg.n_cells)
    mm, fft, _, _ = _measure(lambda: prop.psf(t, wls, cfg, W, engine=engine))
    pointwise = sum(prop.psf_flop_terms(cfg.n_cells, W, cfg.subpixel, engine, optics_cfg=cfg,
                                        wavelength_m=lam)["pointwise"] for lam in wls)
    charged = psf_simulation_flops(cfg, wls, W, engine, backward=False)
    assert charged - pointwise == pytest.approx(mm + fft, rel=0.02)
    cfg_one = load_config("smoke")
    assert psf_step_flops(cfg_one, len(wls), W, engine, backward=False) == pytest.approx(charged)
    if engine == "fast":  # grids and bands differ with the wavelength here: one count for all would be off
        shortest = prop.count_psf_flops(cfg.n_cells, W, cfg.subpixel, engine, optics_cfg=cfg)
        assert abs(len(wls) * shortest - charged) > 0.01 * charged


# ----------------------------------------------------------------------------- 2. backward factor
@pytest.mark.parametrize("engine,n_el", [("fast", 8), ("fast", 9), ("reference", 2), ("reference", 3)])
def test_backward_factor_matches_the_measured_forward_backward_ratio(engine, n_el):
    """The operators are constants: backward = input gradients only = 1x forward (matmuls and FFTs
    alike), plus one more forward when the engine checkpoints (more elements than its chunk)."""
    cfg = _smoke_optics()
    W = cfg.loss_window_px
    wls = [cfg.wavelengths_m[(e // 2) % 3] for e in range(n_el)]
    weights = torch.rand(n_el, W, W, generator=torch.Generator().manual_seed(1))

    def forward():
        _, t = _transmission(n_el, cfg.n_cells, requires_grad=True)
        return prop.psf(t, wls, cfg, W, engine=engine)

    mm_f, fft_f, _, _ = _measure(forward)
    mm_fb, fft_fb, _, _ = _measure(lambda: (forward() * weights).sum().backward())
    ratio_mm, ratio_fft = mm_fb / mm_f, fft_fb / fft_f
    checkpointed = n_el > (8 if engine == "fast" else 2)  # psf_fast / psf_reference default chunk_size
    expected = 2.0 + (1.0 if checkpointed else 0.0)  # forward + adjoint (+ recomputed forward)
    assert ratio_mm == pytest.approx(expected, rel=1e-9)
    assert ratio_fft == pytest.approx(expected, rel=1e-9)
    assert 1.0 + BACKWARD_FACTOR + (1.0 if checkpointed else 0.0) == pytest.approx(expected)
    assert prop.psf_backward_recomputes(n_el, engine) == checkpointed
    charged = psf_simulation_flops(cfg, wls, W, engine, backward=True)
    assert charged / psf_simulation_flops(cfg, wls, W, engine, backward=False) == pytest.approx(ratio_mm)


# ----------------------------------------------------------------------------- 3. stage 2
def _tiny_synthesis(c_out: int):
    cfg = load_config("smoke", {"optics.n_cells": 33, "optics.meta_atom": "ideal", "optics.subpixel": 1,
                                "optics.render_window_px": 15, "optics.sensor_distance_m": 1e-3})
    weight = torch.randn(c_out, 3, 7, 7, generator=torch.Generator().manual_seed(3))
    return cfg, weight, MetasurfaceArray(c_out, 3, cfg.optics, IdealPhaseAtom(), init="lens")


@pytest.mark.parametrize("c_out", [1, 2])  # 6 elements (no checkpointing) and 12 (checkpointed)
def test_synthesis_charges_each_step_one_differentiated_psf_simulation(c_out):
    cfg, weight, array = _tiny_synthesis(c_out)
    W, steps, n_el = cfg.optics.loss_window_px, 3, array.n_elements
    # the forward + backward multiple of this very array, measured on its FFTs
    fwd = FFTCounter()
    with fwd:
        prop.psf(array, window_px=W, engine="fast")
    both = FFTCounter()
    with both:
        prop.psf(array, window_px=W, engine="fast").sum().backward()
    array.zero_grad()
    multiple = both.flops() / fwd.flops()
    assert multiple == pytest.approx(1.0 + BACKWARD_FACTOR + (1.0 if n_el > 8 else 0.0))
    per_element = [prop.count_psf_flops(cfg.optics.n_cells, W, cfg.optics.subpixel, "fast",
                                        optics_cfg=cfg.optics, wavelength_m=float(lam))
                   for lam in array.wavelengths_m]
    expected = steps * multiple * sum(per_element)

    meter = BudgetMeter()
    res = synthesize(weight, cfg.optics, cfg.dko, array=array, steps=steps, lr=0.1, progress=False, budget=meter)
    assert res.steps == steps
    assert meter.flops == pytest.approx(expected, rel=1e-12)
    assert meter.flops_by == {"optics": pytest.approx(expected, rel=1e-12)}  # nothing else is charged
    assert meter.wall_s > 0


# ----------------------------------------------------------------------------- 4. network side
def _depthnet_and_batch(batch_size: int = 2, seed: int = 0):
    cfg = load_config("smoke")
    torch.manual_seed(seed)
    net = DepthNet(cfg.model, kernel_size=cfg.optics.kernel_size)
    g = torch.Generator().manual_seed(seed)
    H, W = cfg.data.height, cfg.data.width
    rgb = torch.rand(batch_size, 3, H, W, generator=g)
    batch = {"rgb": rgb, "depth_m": 2.0 + 30.0 * rgb.mean(1, keepdim=True)}
    return cfg, net, batch


def test_network_step_is_forward_plus_weight_and_input_gradients():
    cfg, net, batch = _depthnet_and_batch()
    loss_fn = make_depth_loss(cfg.data.min_depth_m, cfg.data.max_depth_m)
    net.train()
    fc = FlopCounterMode(display=False)
    with fc:
        loss_fn(net, batch)
    forward = float(fc.get_total_flops())
    # the first layer (7x7 stride-2 conv on the image) needs no input gradient
    B, _, H, W = batch["rgb"].shape
    c1, k = net.conv1_channels, cfg.optics.kernel_size
    first = 2.0 * B * c1 * (H // 2) * (W // 2) * 3 * k * k
    meter = BudgetMeter()

    def step():
        net.zero_grad(set_to_none=True)
        loss_fn(net, batch).backward()

    meter.counted(("train", tuple(batch["rgb"].shape)), step)
    total = meter.flops
    assert 2.0 < total / forward <= 3.0
    assert total == pytest.approx(3.0 * forward - first, rel=0.02)
    assert meter.flops_by == {"network": total}


def test_budget_exceeded_is_reached_at_the_limit_either_axis():
    meter = BudgetMeter()
    assert not meter.budget_exceeded()  # no limits
    assert meter.budget_exceeded(max_seconds=0.0) and meter.budget_exceeded(max_flops=0.0)
    meter.add_flops(100.0)
    meter.wall_s = 2.0
    assert not meter.budget_exceeded(max_flops=100.5, max_seconds=2.5)
    assert meter.budget_exceeded(max_flops=100.0)  # reaching the limit counts
    assert meter.budget_exceeded(max_seconds=2.0)
    assert meter.budget_exceeded(max_flops=1e9, max_seconds=1.0)  # either limit stops
    assert meter.budget_exceeded(max_flops=50.0, max_seconds=None)
    with pytest.raises(ValueError):
        meter.add_flops(float("nan"))


def _run(tmp_path, name, **kw):
    cfg, net, batch = _depthnet_and_batch(seed=1)
    data = [{"rgb": batch["rgb"][i], "depth_m": batch["depth_m"][i]} for i in range(2)] * 2
    meter = BudgetMeter()
    hist = train_loop(net, [{"params": list(net.parameters()), "lr": 1e-3}], data, steps=20, batch_size=2, seed=0,
                      log_csv=tmp_path / name / "log.csv", ckpt=tmp_path / name / "ckpt.pt",
                      loss_fn=make_depth_loss(cfg.data.min_depth_m, cfg.data.max_depth_m), budget=meter,
                      lr_decay_at=None, progress=False, **kw)
    return meter, hist


@pytest.mark.parametrize("fraction", [2.0, 2.7])
def test_train_loop_stops_within_one_step_of_a_flop_budget(tmp_path, fraction):
    _, net, batch = _depthnet_and_batch(seed=1)
    fc = FlopCounterMode(display=False)
    with fc:
        make_depth_loss()(net, batch).backward()
    extra = 1234.5  # e.g. a PSF simulation charged analytically
    per_step = float(fc.get_total_flops()) + extra
    meter, hist = _run(tmp_path, f"f{fraction}", max_flops=fraction * per_step, extra_step_flops=extra)
    assert hist.attrs["stop_reason"] == "budget"
    assert list(hist["flops"].diff().dropna()) == pytest.approx([per_step] * (len(hist) - 1))
    assert len(hist) == math.ceil(fraction)
    overshoot = meter.flops - fraction * per_step
    assert 0.0 <= overshoot < per_step


class _FakeClock:
    """``time`` stand-in for the budget module: every reading advances 0.25 s; no CPU time."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 0.25
        return self.now

    @staticmethod
    def process_time() -> float:
        return 0.0


def test_train_loop_stops_within_one_step_of_a_wall_budget(tmp_path, monkeypatch):
    monkeypatch.setattr(budget_mod, "time", _FakeClock())
    meter, hist = _run(tmp_path, "wall", max_seconds=1.2)
    per_step = hist["wall_s"].iloc[0]
    assert per_step > 0 and list(hist["wall_s"].diff().dropna()) == pytest.approx([per_step] * (len(hist) - 1))
    assert hist.attrs["stop_reason"] == "budget" and len(hist) == math.ceil(1.2 / per_step)
    assert 0.0 <= meter.wall_s - 1.2 < per_step
