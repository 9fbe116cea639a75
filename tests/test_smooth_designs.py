"""Designs that keep their light: smoothness term, correlated random start, coarser phase grid,
and the optics-aware stage 1's passband penalty, each against an independent expectation."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from scipy.special import hyp2f1

from dkolib.config import load_config
from dkolib.dko.losses import smoothness_penalty
from dkolib.dko.synthesis import synthesize
from dkolib.optics.metasurface import block_average, smooth_random_phase_rad
from dkolib.optics.realisability import passband_cutoff_cycles_per_m, passband_penalty

torch.set_num_threads(1)


# ------------------------------------------------------------- smoothness term


@pytest.mark.parametrize("step_rad", [0.1, 1.0, 2.5])
def test_smoothness_of_a_phase_ramp_is_sin_squared(step_rad):
    # a ramp along x with phase step d per cell: |e^{id} - 1|^2 = 4 sin^2(d / 2) between x
    # neighbours, 0 between y neighbours -> S = sin^2(d / 2)
    n = 21
    phase = step_rad * torch.arange(n, dtype=torch.float64)[None, None, :].expand(1, n, n)
    s = smoothness_penalty(torch.exp(1j * phase))
    assert s.shape == (1,)
    assert s.item() == pytest.approx(math.sin(step_rad / 2) ** 2, rel=1e-12)


def test_smoothness_ignores_phase_wraps_and_counts_amplitude():
    n = 15
    wrap = 2 * math.pi * torch.arange(n, dtype=torch.float64)[None, None, :].expand(1, n, n)
    assert smoothness_penalty(torch.exp(1j * wrap)).item() == pytest.approx(0.0, abs=1e-20)
    # a penalty on the wrapped phase differences would see this ramp as maximally rough
    wrapped_steps = torch.remainder(wrap + 0.5, 2 * math.pi).diff(dim=-1).abs()
    assert wrapped_steps.max() < 1e-6  # (sanity: no wrap visible either way for an exact 2 pi ramp)
    # amplitude steps count: alternate columns of |t| = 1 and 0.5 -> |dx|^2 = 0.25, S = 0.25 / 4
    amp = torch.ones(1, n, n, dtype=torch.complex128)
    amp[..., 1::2] = 0.5
    assert smoothness_penalty(amp).item() == pytest.approx(0.25 / 4, rel=1e-12)


# ------------------------------------------------------- correlated random start


def _expected_roughness(corr_cells: float) -> float:
    """1 - E cos(phi_a - phi_b) for the phases of a circular complex Gaussian pair with correlation
    rho: E cos = (pi / 4) rho 2F1(1/2, 1/2; 2; rho^2) (the phase-difference distribution of two
    correlated Gaussian fields). A Gaussian filter of standard deviation l cells gives the field a
    Gaussian autocorrelation of standard deviation sqrt(2) l: rho(1 cell) = exp(-1 / (4 l^2))."""
    rho = math.exp(-1.0 / (4.0 * corr_cells ** 2)) if corr_cells > 0 else 0.0
    return 1.0 - math.pi / 4.0 * rho * hyp2f1(0.5, 0.5, 2.0, rho * rho)


@pytest.mark.parametrize("corr_cells", [0.0, 1.0, 2.0, 4.0])
def test_smooth_random_phase_has_the_stated_correlation_length(corr_cells):
    phase = smooth_random_phase_rad(8, 129, corr_cells, torch.Generator().manual_seed(1))
    assert phase.shape == (8, 129, 129) and phase.dtype == torch.float64
    measured = smoothness_penalty(torch.exp(1j * phase)).mean().item()
    expected = _expected_roughness(corr_cells)
    assert measured == pytest.approx(expected, rel=0.03, abs=3e-3)
    # the phase stays uniform at every cell: its mean phasor vanishes (to the sampling error of
    # about 8 N^2 / (4 pi l^2) independent patches)
    assert torch.exp(1j * phase).mean().abs().item() < 0.02 * max(1.0, corr_cells)
    if corr_cells >= 2.0:
        # "correlation length l" read as the *field's* autocorrelation width l (rho = exp(-1 / (2 l^2)))
        rho = math.exp(-1.0 / (2.0 * corr_cells ** 2))
        other = 1.0 - math.pi / 4.0 * rho * hyp2f1(0.5, 0.5, 2.0, rho * rho)
        assert abs(measured - other) > 0.2 * expected


def test_smooth_random_start_is_reproducible_and_validated():
    from dkolib.optics.metaatoms import IdealPhaseAtom
    from dkolib.optics.metasurface import MetasurfaceArray

    cfg = load_config("smoke", {"optics.n_cells": 33})
    make = lambda: MetasurfaceArray(1, 3, cfg.optics, IdealPhaseAtom(), init="smooth_random",  # noqa: E731
                                    generator=torch.Generator().manual_seed(5), init_corr_cells=3.0)
    a, b = make(), make()
    assert torch.equal(a.latent, b.latent)
    assert smoothness_penalty(a.transmission()).mean() < 0.1
    with pytest.raises(ValueError, match="corr_cells"):
        smooth_random_phase_rad(1, 9, -1.0)
    with pytest.raises(Exception, match="init"):
        load_config("smoke", {"dko.init": "smooth"})


# ------------------------------------------------------------ coarser phase grid


def test_block_average_hand_example():
    x = torch.arange(49, dtype=torch.float64).reshape(1, 7, 7)
    y = block_average(x, 3)
    # blocks centred on cell 3: rows/columns {0, 1}, {2, 3, 4}, {5, 6}
    assert y[0, 3, 3].item() == pytest.approx(x[0, 2:5, 2:5].mean().item())
    assert y[0, 0, 0].item() == pytest.approx(x[0, 0:2, 0:2].mean().item())
    assert y[0, 6, 4].item() == pytest.approx(x[0, 5:7, 2:5].mean().item())
    assert torch.allclose(block_average(y, 3), y, rtol=1e-14, atol=0)  # a projection
    assert torch.equal(block_average(x, 1), x)
    assert len(torch.unique(y.round(decimals=9))) == 9
    with pytest.raises(ValueError, match="block_cells"):
        block_average(x, 0)


def _tiny(**dko):
    from dkolib.optics.metaatoms import IdealPhaseAtom
    from dkolib.optics.metasurface import MetasurfaceArray

    cfg = load_config("smoke", {"optics.n_cells": 33, "optics.meta_atom": "ideal", "optics.subpixel": 1,
                                "optics.render_window_px": 15, "optics.sensor_distance_m": 1e-3})
    w = torch.randn(1, 3, 7, 7, generator=torch.Generator().manual_seed(3))
    dko_cfg = dataclasses.replace(cfg.dko, stop_window=0, **dko)

    def make_array():
        return MetasurfaceArray(1, 3, cfg.optics, IdealPhaseAtom(), init="random",
                                generator=torch.Generator().manual_seed(0))

    return cfg, w, dko_cfg, make_array


def test_coarse_phase_grid_stays_on_its_blocks_and_resumes(tmp_path):
    cfg, w, dko_cfg, make_array = _tiny(phase_block_cells=3)
    res = synthesize(w, cfg.optics, dko_cfg, array=make_array(), steps=4, lr=0.1, progress=False,
                     ckpt_path=tmp_path / "a.pt")
    lat = res.array.latent.detach()
    assert torch.allclose(block_average(lat, 3), lat, rtol=1e-6, atol=1e-6)
    # 33 cells in blocks of 3 centred on the axis: 11 x 11 blocks, one latent each
    assert len(torch.unique(lat[0].round(decimals=4))) <= 11 * 11
    part = tmp_path / "b.pt"
    synthesize(w, cfg.optics, dko_cfg, array=make_array(), steps=2, lr=0.1, progress=False, ckpt_path=part)
    resumed = synthesize(w, cfg.optics, dko_cfg, array=make_array(), steps=4, lr=0.1, progress=False,
                         ckpt_path=part)
    assert torch.equal(resumed.array.latent, lat)
    # a checkpoint of the free-cell run is refused by the block run (and vice versa)
    _, _, free_cfg, _ = _tiny()
    with pytest.raises(ValueError, match="different synthesis run"):
        synthesize(w, cfg.optics, free_cfg, array=make_array(), steps=4, lr=0.1, progress=False, ckpt_path=part)


def test_smoothness_term_smooths_the_design():
    cfg, w, plain_cfg, make_array = _tiny()
    _, _, smooth_cfg, _ = _tiny(smoothness_weight=5.0)
    plain = synthesize(w, cfg.optics, plain_cfg, array=make_array(), steps=15, lr=0.1, progress=False)
    smooth = synthesize(w, cfg.optics, smooth_cfg, array=make_array(), steps=15, lr=0.1, progress=False)
    r_plain = smoothness_penalty(plain.array.transmission()).mean().item()
    r_smooth = smoothness_penalty(smooth.array.transmission()).mean().item()
    assert r_plain > 0.8  # white random start, the kernel loss alone keeps it rough
    assert r_smooth < 0.8 * r_plain


# -------------------------------------------------- optics-aware stage 1 penalty


def test_passband_penalty_of_a_delta_is_the_area_outside_the_passband():
    # a delta kernel has a flat spectrum over the sensor's Nyquist square, so its out-of-band
    # fraction is the part of that square outside the passband: 1 - (f_c / f_N)^2 (square) or
    # 1 - pi f_c^2 / (4 f_N^2) (disk), up to the DFT bins the edge crosses
    cfg = load_config("default", {"optics.sensor_distance_m": 1e-2}).optics
    k = torch.zeros(1, 3, 7, 7)
    k[:, :, 3, 3] = 1.0
    f_n = 1.0 / (2.0 * cfg.pixel_pitch_m)
    ratios = [passband_cutoff_cycles_per_m(cfg, lam) / f_n for lam in cfg.wavelengths_m]
    assert max(ratios) < 1.0  # every channel is band-limited at 1 cm
    square = sum(1.0 - r * r for r in ratios) / 3.0
    disk = sum(1.0 - math.pi * r * r / 4.0 for r in ratios) / 3.0
    assert passband_penalty(k, cfg, n_fft=128).item() == pytest.approx(square, abs=0.02)
    assert passband_penalty(k, cfg, passband="disk", n_fft=128).item() == pytest.approx(disk, abs=0.02)
    # at the default profile's D/z the passband covers the Nyquist square: the penalty is exactly 0
    default = load_config("default").optics
    assert passband_penalty(torch.randn(4, 3, 7, 7), default).item() == 0.0


def test_passband_penalty_gradient_lowers_it():
    cfg = load_config("default", {"optics.sensor_distance_m": 1e-2}).optics
    k = torch.randn(4, 3, 7, 7, generator=torch.Generator().manual_seed(0), requires_grad=True)
    before = passband_penalty(k, cfg)
    before.backward()
    with torch.no_grad():
        after = passband_penalty(k - 0.5 * k.grad / k.grad.norm() * k.norm(), cfg)
    assert 0.0 < after.item() < before.item()
