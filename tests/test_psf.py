"""Physics of the PSF engines: diffraction zeros, energy, engine agreement, D-Flat, gradients, sampling."""

import math
import warnings

import numpy as np
import pytest
import torch

from dkolib.config import load_config
from dkolib.optics.metasurface import lens_phase_rad
from dkolib.optics.sampling import SamplingWarning, check_sampling
from dkolib.optics.propagation import (
    asm_full_field,
    check_padding,
    count_psf_flops,
    incident_phase_rad,
    pixel_centres_m,
    psf,
    psf_fast,
    psf_reference,
    sample_coords_m,
)

torch.set_num_threads(1)


def _optics(**over):
    """The default profile's optics at the paper's sensor distance (1 cm) unless overridden."""
    over = {"sensor_distance_m": 1e-2, **over}
    return load_config("default", {f"optics.{k}": v for k, v in over.items()}).optics


def _lens(n, cfg, lam, dtype=torch.complex128):
    ph = torch.from_numpy(lens_phase_rad(n, cfg.cell_pitch_m, lam, cfg.sensor_distance_m, cfg.source_distance_m))
    return torch.polar(torch.ones_like(ph), ph).to(dtype)[None]


def _random(n, seed, dtype=torch.complex64):
    g = torch.Generator().manual_seed(seed)
    ph = 2 * math.pi * torch.rand(1, n, n, generator=g, dtype=torch.float64)
    return torch.polar(torch.ones_like(ph), ph).to(dtype)


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_window_pixel_convention():
    # odd window: symmetric, centre pixel on axis; even window: pixel W//2 on axis
    assert pixel_centres_m(7, 1.0)[3] == 0.0 and pixel_centres_m(7, 1.0)[0] == -3.0
    assert pixel_centres_m(14, 1.0)[7] == 0.0 and pixel_centres_m(14, 1.0)[0] == -7.0
    s = sample_coords_m(3, 3.0, 3)
    np.testing.assert_allclose(s, [-4, -3, -2, -1, 0, 1, 2, 3, 4])


@pytest.mark.parametrize("engine", ["fast", "reference"])
@pytest.mark.parametrize("lam", [400e-9, 700e-9])
def test_lens_square_aperture_first_zero(engine, lam):
    """An N-cell square lens focuses to sinc^2(x D / (lambda z)): first zero at lambda z / D on the axes.

    D = N * cell_pitch (the sampled aperture's DTFT has its zeros at k / (N p)). The
    zero is located by the minimum of the central row sampled at 0.25 um.
    """
    n = 129
    cfg = _optics(pixel_pitch_m=0.25e-6, subpixel=1)
    W = 2 * int(1.6 * lam * cfg.sensor_distance_m / (n * cfg.cell_pitch_m) / cfg.pixel_pitch_m) + 1
    out = psf(_lens(n, cfg, lam), [lam], cfg, W, engine=engine)[0]
    row = out[W // 2].numpy()
    x = pixel_centres_m(W, cfg.pixel_pitch_m)
    expected = lam * cfg.sensor_distance_m / (n * cfg.cell_pitch_m)
    right = row[W // 2:]
    i = int(np.argmax(np.diff(right) > 0))  # first local minimum after the peak
    x_zero = x[W // 2 + i]
    assert abs(x_zero - expected) <= 0.02 * expected + cfg.pixel_pitch_m, (x_zero, expected)
    assert right[i] < 1e-3 * right[0]  # a true (near-)zero, not a shallow dip
    assert np.argmax(out.numpy()) == (W // 2) * W + W // 2  # focus on axis


def test_full_grid_asm_conserves_energy():
    cfg = _optics()
    n = 129
    for field in (_lens(n, cfg, 550e-9).to(torch.complex128), _random(n, 1, torch.complex128)):
        inc = torch.polar(torch.ones(n, n, dtype=torch.float64),
                          torch.from_numpy(incident_phase_rad(n, cfg.cell_pitch_m, cfg.source_distance_m, 550e-9)))
        u = field * inc
        out = asm_full_field(u, 550e-9, cfg, pad_factor=6.0, band_limit=False)
        e_in, e_out = (u.abs() ** 2).sum().item(), (out.abs() ** 2).sum().item()
        assert abs(e_out / e_in - 1) < 0.01
    # a strong band limit removes light, so the check above is not vacuous
    out_bl = asm_full_field(_random(n, 1, torch.complex128), 550e-9, cfg, pad_factor=1.2, band_limit=True)
    assert (out_bl.abs() ** 2).sum().item() < 0.9 * n * n


def test_psf_normalisation_and_losses():
    cfg = _optics()
    n, lam, W = 129, 550e-9, 61
    t = _lens(n, cfg, lam).to(torch.complex64)
    p = psf_fast(t, [lam], cfg, W)
    # most of a lossless lens's light lands in +-30 pixels; never more than the incident energy
    assert 0.9 < p.sum().item() <= 1.0 + 1e-4
    # a lossy atom (|t| = 0.5) transmits a quarter of the energy
    p_lossy = psf_fast(0.5 * t, [lam], cfg, W)
    torch.testing.assert_close(p_lossy, 0.25 * p, rtol=1e-4, atol=1e-9)
    # unnormalised = pixel energy = normalised * aperture energy (N^2 p^2 for unit incident intensity)
    p_raw = psf_fast(t, [lam], cfg, W, normalize=False)
    torch.testing.assert_close(p_raw, p * n * n * cfg.cell_pitch_m ** 2, rtol=1e-4, atol=0.0)


@pytest.mark.parametrize("profile_distance", [False, True])
def test_fast_matches_reference_default_geometry(profile_distance):
    """Lenses agree to 0.2 %; white-noise phase fields (light at every angle the cell grid carries,
    the worst case) to 1 % at 1 cm and 2 % at the profile's 2.5 mm (measured 1.6 %)."""
    cfg = load_config("default").optics if profile_distance else _optics()  # 257 cells, 2.74 um px
    n = cfg.n_cells
    lams = list(cfg.wavelengths_m)
    t = torch.cat([_lens(n, cfg, lam).to(torch.complex64) for lam in lams] + [_random(n, s) for s in range(3)])
    wls = lams + lams
    W = cfg.loss_window_px
    f, r = psf_fast(t, wls, cfg, W), psf_reference(t, wls, cfg, W)
    for e in range(len(wls)):
        tol = 0.002 if e < len(lams) else (0.02 if profile_distance else 0.01)
        assert _rel(f[e], r[e]) < tol, (e, _rel(f[e], r[e]))


def test_fast_matches_reference_render_window_small_grid():
    cfg = _optics()
    n, W = 129, cfg.render_window_px
    g = torch.Generator().manual_seed(3)
    ph = torch.from_numpy(lens_phase_rad(n, cfg.cell_pitch_m, 400e-9, cfg.sensor_distance_m, cfg.source_distance_m))
    t = torch.polar(0.6 + 0.4 * torch.rand(n, n, generator=g, dtype=torch.float64),
                    ph + torch.randn(n, n, generator=g, dtype=torch.float64))[None].to(torch.complex64)
    assert _rel(psf_fast(t, [400e-9], cfg, W)[0], psf_reference(t, [400e-9], cfg, W)[0]) < 0.01


def test_reference_converged_in_padding():
    cfg = _optics()
    n, lam = 129, 700e-9
    t = _random(n, 5, torch.complex128)
    a = psf_reference(t, [lam], cfg, 14, pad_factor=2.0)
    b = psf_reference(t, [lam], cfg, 14, pad_factor=4.0)
    assert _rel(a, b) < 5e-3  # half the 1% engine tolerance; residual wrap of the tapered band ~1e-3


@pytest.mark.parametrize("kind", ["lens", "perturbed"])
def test_agrees_with_dflat_point_spread_function(kind):
    dflat_prop = pytest.importorskip("dflat.propagation")
    n, lam, W = 129, 550e-9, 31
    cfg = _optics(pixel_pitch_m=2.5e-6, subpixel=1)  # D-Flat's ASM output grid = its input grid
    p, z, d = cfg.cell_pitch_m, cfg.sensor_distance_m, cfg.source_distance_m
    phase = lens_phase_rad(n, p, lam, z, d)
    if kind == "perturbed":
        phase = phase + 0.5 * np.random.default_rng(0).standard_normal(phase.shape)
    module = dflat_prop.PointSpreadFunction(in_size=[n, n], in_dx_m=[p, p], out_distance_m=z, out_size=[W, W],
                                            out_dx_m=[p, p], wavelength_set_m=[lam], diffraction_engine="ASM")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref, _ = module(torch.ones(1, 1, n, n), torch.tensor(phase, dtype=torch.float32)[None, None], [[0.0, 0.0, d]])
    ref = ref[0, 0, 0].double()
    ours = psf_fast(torch.polar(torch.ones(1, n, n, dtype=torch.float64), torch.from_numpy(phase)), [lam], cfg, W)[0]
    # D-Flat: float32, transfer function from the sampled Rayleigh-Sommerfeld kernel, no band limit
    assert _rel(ours, ref) < (0.01 if kind == "lens" else 0.03)


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_gradients_match_finite_differences(engine):
    cfg = _optics(subpixel=2)
    n, W, lam = 7, 3, 550e-9
    g = torch.Generator().manual_seed(0)
    phase = (2 * math.pi * torch.rand(n, n, generator=g, dtype=torch.float64)).requires_grad_(True)
    amp = (0.5 + 0.5 * torch.rand(n, n, generator=g, dtype=torch.float64)).requires_grad_(True)

    def f(ph, a):
        # PSF values of a 7-cell aperture are ~1e-4: rescale to O(1) for gradcheck's tolerances
        return 1e3 * psf(torch.polar(a, ph)[None], [lam], cfg, W, engine=engine)

    assert torch.autograd.gradcheck(f, (phase, amp), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_chunking_and_checkpoint_do_not_change_results_or_grads():
    cfg = _optics()
    n = 33
    ph = (2 * math.pi * torch.rand(6, n, n, generator=torch.Generator().manual_seed(1))).requires_grad_(True)
    wls = [700e-9, 550e-9, 400e-9] * 2
    outs, grads = [], []
    for kw in ({"chunk_size": 8, "checkpoint": False}, {"chunk_size": 1, "checkpoint": True}):
        out = psf_fast(torch.polar(torch.ones_like(ph), ph), wls, cfg, 14, **kw)
        (g,) = torch.autograd.grad((out * torch.arange(14.0)).sum(), ph)
        outs.append(out.detach())
        grads.append(g)
    torch.testing.assert_close(outs[0], outs[1])
    torch.testing.assert_close(grads[0], grads[1])


def test_sampling_check_warns_for_paper_geometry():
    paper = _optics(n_cells=1025)
    with pytest.warns(SamplingWarning, match="400 nm"):
        rep = check_sampling(paper)
    r400 = rep["per_wavelength"][400e-9]["edge_over_nyquist"]
    assert 1.5 < r400 < 1.7  # sin(theta) 0.127 vs lambda/(2p) = 0.08
    assert rep["per_wavelength"][700e-9]["edge_over_nyquist"] < 1.0  # red is alias-free on the axes
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_sampling(_optics())  # 257 cells: fine at every wavelength


def test_sampling_check_raises():
    with pytest.raises(ValueError, match="odd"):
        check_sampling(_optics(), n_cells=256)
    with pytest.raises(ValueError, match="spherical wave aliases"):
        check_sampling(_optics(source_distance_m=1e-3, n_cells=1025))
    with pytest.raises(ValueError, match="wrap"):
        check_padding(257, _optics(), 14, 550e-9, 200)
    with pytest.raises(ValueError, match="complex"):
        psf_fast(torch.ones(1, 9, 9), [550e-9], _optics(), 3)
    with pytest.raises(ValueError, match="metres"):
        psf_fast(torch.ones(1, 9, 9, dtype=torch.complex64), [550.0], _optics(), 3)


def test_flop_counts():
    f_fast = [count_psf_flops(n, 14, 3, "fast") for n in (257, 513, 1025)]
    f_ref = [count_psf_flops(n, 14, 3, "reference") for n in (257, 513, 1025)]
    assert f_fast[0] < f_fast[1] < f_fast[2]
    assert all(a < b for a, b in zip(f_fast, f_ref))


def test_operator_cache_does_not_change_results_and_survives_inference_mode():
    import dkolib.optics.propagation as psf_mod
    cfg = _optics()
    n, W = 33, 7
    ph = 2 * math.pi * torch.rand(2, n, n, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    wls = [550e-9, 400e-9]
    psf_mod.clear_operator_cache()
    with torch.inference_mode():  # the cache is filled here ...
        cold = psf_fast(torch.polar(torch.ones_like(ph), ph), wls, cfg, W)
    assert len(psf_mod._OPS_CACHE) == 2
    ph_g = ph.clone().requires_grad_(True)
    warm = psf_fast(torch.polar(torch.ones_like(ph_g), ph_g), wls, cfg, W)  # ... and used with autograd here
    (g,) = torch.autograd.grad(warm.sum(), ph_g)
    assert torch.isfinite(g).all() and g.abs().max() > 0
    torch.testing.assert_close(warm.detach(), cold, rtol=0, atol=0)
    # bounded: the LRU never exceeds its entry limit
    for k in range(psf_mod._OPS_CACHE_SIZE + 3):
        psf_fast(torch.polar(torch.ones_like(ph[:1]), ph[:1]), [500e-9 + k * 1e-9], cfg, W)
    assert len(psf_mod._OPS_CACHE) <= psf_mod._OPS_CACHE_SIZE


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_micro_batches_and_interleaved_wavelengths_match_single_elements(engine, monkeypatch):
    import dkolib.optics.propagation as psf_mod
    cfg = _optics()
    n, W = 33, 6
    ph = (2 * math.pi * torch.rand(5, n, n, generator=torch.Generator().manual_seed(7),
                                   dtype=torch.float64)).requires_grad_(True)
    amp = 0.5 + 0.5 * torch.rand(5, n, n, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    wls = [700e-9, 400e-9, 700e-9, 550e-9, 400e-9]  # interleaved, as in a MetasurfaceArray
    weight = torch.linspace(0, 1, W * W, dtype=torch.float64).view(W, W)

    def run(**kw):
        out = psf(torch.polar(amp, ph), wls, cfg, W, engine=engine, **kw)
        (g,) = torch.autograd.grad((out * weight).sum(), ph)
        return out.detach(), g

    singles = [psf(torch.polar(amp[i:i + 1], ph[i:i + 1]), [wls[i]], cfg, W, engine=engine).detach()
               for i in range(5)]
    monkeypatch.setattr(psf_mod, "_CPU_BATCH_BYTES", 1)  # one element per FFT
    out_1, g_1 = run(chunk_size=2)
    monkeypatch.setattr(psf_mod, "_CPU_BATCH_BYTES", 2 ** 40)  # whole chunk per FFT
    out_all, g_all = run(chunk_size=8)
    out_ck, g_ck = run(chunk_size=1, checkpoint=True)
    torch.testing.assert_close(out_1, torch.cat(singles))
    for o, g in ((out_all, g_all), (out_ck, g_ck)):
        torch.testing.assert_close(o, out_1)
        torch.testing.assert_close(g, g_1)


def test_float32_transform_accuracy():
    """complex64 input runs the transform in float32: far inside the 1e-3 engine tolerance."""
    cfg = _optics()
    n, lam = cfg.n_cells, 400e-9
    t = _lens(n, cfg, lam) * torch.polar(torch.ones(n, n, dtype=torch.float64),
                                         0.5 * torch.randn(n, n, generator=torch.Generator().manual_seed(2),
                                                           dtype=torch.float64))
    p64 = psf_fast(t, [lam], cfg, 15)
    p32 = psf_fast(t.to(torch.complex64), [lam], cfg, 15)
    assert p32.dtype == torch.float32 and p64.dtype == torch.float64
    assert _rel(p32.double(), p64) < 1e-4
