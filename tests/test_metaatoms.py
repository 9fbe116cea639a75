"""Meta-atom library: RCWA physics checks and the differentiable lookup.

RCWA solves here use low Fourier orders (a homogeneous layer is exact at any
order) except one solve at the library's own order; the full build is never
rerun.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dkolib.optics import rcwa
from dkolib.optics.metaatoms import (
    DEFAULT_LIBRARY_PATH,
    IdealPhaseAtom,
    MetaAtomLibrary,
    latent_from_radius,
    radius_from_latent,
)

torch.set_num_threads(1)

DESIGN_WAVELENGTHS_M = (400e-9, 550e-9, 700e-9)
HEIGHT_M = rcwa.DEFAULT_HEIGHT_M
CONVERGENCE_CSV = Path(__file__).resolve().parent.parent / "results" / "metaatoms" / "convergence.csv"


@pytest.fixture(scope="module")
def library() -> MetaAtomLibrary:
    return MetaAtomLibrary.load()


def _phase_diff(a: complex, b: complex) -> float:
    return abs(math.remainder(np.angle(a) - np.angle(b), 2 * math.pi))


# ----------------------------------------------------------- RCWA physics
def test_closed_form_slab_reduces_to_propagation_phase():
    """Index-matched slab: no reflections, t = exp(+i k0 n d) (exp(-i omega t) convention)."""
    n, d, wl = 1.7, 433e-9, 612e-9
    t = rcwa.slab_transmission(n, n, n, d, wl)
    assert abs(t - np.exp(1j * 2 * np.pi / wl * n * d)) < 1e-12


@pytest.mark.parametrize("wavelength_m", DESIGN_WAVELENGTHS_M)
def test_homogeneous_tio2_film_matches_airy(wavelength_m):
    """The cylinder code path with pillar == background (a uniform TiO2 film) is a Fabry-Perot slab."""
    n_film, n_sub = rcwa.n_tio2(wavelength_m), rcwa.n_sio2(wavelength_m)
    t_rcwa = rcwa.pillar_transmission(100e-9, wavelength_m, n_orders=2, n_background=n_film)
    t_airy = rcwa.slab_transmission(n_sub, n_film, 1.0, HEIGHT_M, wavelength_m)
    assert abs(abs(t_rcwa) - abs(t_airy)) < 1e-3
    assert _phase_diff(t_rcwa, t_airy) < 1e-3
    # The check discriminates: the film differs clearly from an empty (air) layer.
    assert abs(t_airy - rcwa.slab_transmission(n_sub, 1.0, 1.0, HEIGHT_M, wavelength_m)) > 1e-2


@pytest.mark.parametrize("wavelength_m", DESIGN_WAVELENGTHS_M)
def test_empty_cell_is_glass_air_interface(wavelength_m):
    """Radius 0 leaves an air layer: only the glass/air interface and the free-space phase."""
    n_sub = rcwa.n_sio2(wavelength_m)
    t_rcwa = rcwa.pillar_transmission(0.0, wavelength_m, n_orders=2)
    t_airy = rcwa.slab_transmission(n_sub, 1.0, 1.0, HEIGHT_M, wavelength_m)
    assert abs(t_rcwa - t_airy) < 1e-3
    fresnel_power = 1 - ((n_sub.real - 1) / (n_sub.real + 1)) ** 2
    assert abs(abs(t_rcwa) ** 2 - fresnel_power) < 1e-3


def test_pillar_power_normalisation_and_energy():
    """|t|^2 is the zeroth-order power; for lossless TiO2 (700 nm) R + T over all orders is 1."""
    wl = 700e-9
    t, energy = rcwa.pillar_transmission(90e-9, wl, n_orders=3, return_energy=True)
    assert abs(energy - 1.0) < 1e-3
    assert abs(t) <= 1.0 + 1e-9
    # Bigger pillar, more optical path: phase delay grows with radius (exp(-i omega t) convention).
    t_small = rcwa.pillar_transmission(40e-9, wl, n_orders=3)
    delay = (np.angle(t) - np.angle(t_small)) % (2 * np.pi)
    assert 0 < delay < np.pi


def test_material_indices_are_cited_tables():
    n_t, n_s = rcwa.n_tio2(550e-9), rcwa.n_sio2(550e-9)
    assert 2.2 < n_t.real < 2.7 and n_t.imag >= 0  # ALD TiO2 in the visible
    assert abs(n_s.real - 1.46) < 0.01  # fused silica, Malitson
    assert rcwa.n_tio2(400e-9).real > rcwa.n_tio2(700e-9).real  # normal dispersion
    with pytest.raises(ValueError, match="metres"):
        rcwa.n_tio2(550.0)


def test_convergence_table_written(library):
    """The build's convergence check: the library's order against a clearly higher one at every wavelength."""
    df = pd.read_csv(CONVERGENCE_CSV)
    assert list(df.columns) == ["wavelength_m", "n_orders", "n_orders_ref", "method", "n_radii", "max_abs_dt",
                                "max_abs_damplitude", "max_abs_dphase_rad", "worst_radius_m"]
    assert (df.n_orders == rcwa.LIBRARY_ORDERS).all() and (df.method == rcwa.LIBRARY_METHOD).all()
    assert (df.n_orders_ref >= 4 * rcwa.LIBRARY_ORDERS / 3).all()
    np.testing.assert_allclose(np.sort(df.wavelength_m), np.sort(library.wavelengths_m), rtol=1e-12)
    assert (df.n_radii >= 3).all()
    assert (df.max_abs_damplitude <= df.max_abs_dt + 1e-12).all()  # ||a| - |b|| <= |a - b|
    points = pd.read_csv(CONVERGENCE_CSV.with_name("convergence_points.csv"))
    at400 = points[np.isclose(points.wavelength_m, 400e-9)]
    assert np.abs(at400.radius_m - 120e-9).min() < 2.1e-9  # the lossy 400 nm resonance is among the checked radii


# ------------------------------------------------------ packaged library
def test_library_energy_sane_and_design_wavelengths(library):
    t = library.transmission
    assert np.all(np.abs(t) <= 1.0 + 1e-6)
    for wl in DESIGN_WAVELENGTHS_M:
        assert wl in set(library.wavelengths_m.tolist())
    assert library.r_min_m >= 30e-9
    assert 300e-9 - 2 * library.r_max_m >= 30e-9  # gap to the neighbour


def test_library_phase_coverage_550(library):
    coverage = library.phase_coverage_rad(550e-9)
    useful = library.phase_coverage_rad(550e-9, min_amplitude=0.5)
    print(f"phase coverage at 550 nm: {coverage:.3f} rad = {coverage / (2 * np.pi):.2f} x 2 pi "
          f"({useful / (2 * np.pi):.2f} x 2 pi with |t| >= 0.5)")
    assert 0 < useful <= coverage <= 2 * np.pi
    assert coverage > np.pi  # at least half the circle, or the library cannot form a lens


def test_library_interpolation_matches_direct_rcwa(library):
    """Between two tabulated radii the spline agrees with a fresh solve to within the Fourier-order error."""
    wl = 700e-9
    k = int(np.searchsorted(library.radii_m, 80e-9))
    r_mid = 0.5 * (library.radii_m[k] + library.radii_m[k + 1])
    t_lib = library.transmission_at(torch.tensor(r_mid, dtype=torch.float64), wl).item()
    t_rcwa = rcwa.pillar_transmission(r_mid, wl, n_orders=rcwa.LIBRARY_ORDERS)
    conv = pd.read_csv(CONVERGENCE_CSV)
    order_error = conv[np.isclose(conv.wavelength_m, wl)].max_abs_dt.max()
    assert abs(t_lib - t_rcwa) < order_error


def test_library_exact_at_tabulated_points(library):
    for wl in DESIGN_WAVELENGTHS_M:
        j = int(np.flatnonzero(library.wavelengths_m == wl)[0])
        t = library.transmission_at(torch.tensor(library.radii_m), wl)
        assert t.dtype == torch.complex64
        np.testing.assert_allclose(t.numpy(), library.transmission[j], atol=1e-5)


def test_library_linear_in_wavelength(library):
    w0, w1 = library.wavelengths_m[3], library.wavelengths_m[4]
    r = torch.linspace(library.r_min_m, library.r_max_m, 17, dtype=torch.float64)
    mid = library.transmission_at(r, 0.5 * (w0 + w1))
    avg = 0.5 * (library.transmission_at(r, float(w0)) + library.transmission_at(r, float(w1)))
    assert torch.allclose(mid, avg, atol=1e-6)


def test_library_broadcast_per_element_wavelength(library):
    gen = torch.Generator().manual_seed(0)
    r = library.r_min_m + (library.r_max_m - library.r_min_m) * torch.rand(3, 4, 5, generator=gen, dtype=torch.float64)
    wls = torch.tensor(DESIGN_WAVELENGTHS_M[::-1], dtype=torch.float64)
    t = library.transmission_at(r, wls)
    assert t.shape == (3, 4, 5)
    for e in range(3):
        assert torch.equal(t[e], library.transmission_at(r[e], float(wls[e])))
    with pytest.raises(ValueError, match="first dim"):
        library.transmission_at(r, wls[:2])


def test_library_rejects_out_of_range(library):
    with pytest.raises(ValueError, match="radius_m outside"):
        library.transmission_at(torch.tensor([library.r_max_m * 1.1]), 550e-9)
    with pytest.raises(ValueError, match="radius_m outside"):
        library.transmission_at(torch.tensor([100.0]), 550e-9)  # nanometres by mistake
    with pytest.raises(ValueError, match="wavelength_m outside"):
        library.transmission_at(torch.tensor([80e-9]), 550.0)


def test_library_gradient_is_c1(library):
    """Autograd derivative equals the finite difference, and is continuous across a knot."""
    wl = 550e-9
    knot = float(library.radii_m[10])
    h = 1e-11  # 0.01 nm, inside one spline interval
    r = torch.tensor([knot - 0.3e-9, knot - 1e-12, knot + 1e-12], dtype=torch.float64, requires_grad=True)
    t = library.transmission_at(r, wl)
    grads = []
    for part in (t.real, t.imag):
        (g,) = torch.autograd.grad(part.sum(), r, retain_graph=True)
        grads.append(g)
    d = torch.complex(grads[0], grads[1])  # dt/dr per element, 1/m
    with torch.no_grad():
        x0 = r[0].item()
        fd = (library.transmission_at(torch.tensor(x0 + h, dtype=torch.float64), wl)
              - library.transmission_at(torch.tensor(x0 - h, dtype=torch.float64), wl)).to(torch.complex128) / (2 * h)
    scale = d.abs().max().item()
    assert scale > 0
    assert abs(d[0].item() - fd.item()) < 1e-2 * scale
    assert abs(d[1].item() - d[2].item()) < 1e-3 * scale


def test_spline_reproduces_cubic_exactly():
    """A synthetic table sampled from a cubic in r is interpolated exactly (not-a-knot spline)."""
    radii = np.linspace(40e-9, 120e-9, 9)
    wls = np.array([500e-9, 600e-9])

    def f(r, wl):
        x = r * 1e9 / 100
        return (0.5 + 0.1 * x - 0.2 * x**2 + 0.05 * x**3) * np.exp(1j * wl * 1e7) + 0.3j * x

    table = np.stack([f(radii, w) for w in wls])
    lib = MetaAtomLibrary(radii_m=radii, wavelengths_m=wls, transmission=table)
    r = np.linspace(40e-9, 120e-9, 31)
    got = lib.transmission_at(torch.from_numpy(r), 600e-9).numpy()
    np.testing.assert_allclose(got, f(r, 600e-9), atol=1e-5)


def test_radius_for_phase_is_best_match(library):
    wl = 550e-9
    phases = torch.linspace(-np.pi, np.pi, 13, dtype=torch.float64).reshape(13, 1)
    radii = library.radius_for_phase(phases, wl)
    assert radii.shape == phases.shape
    assert torch.all((radii >= library.r_min_m) & (radii <= library.r_max_m))
    dense = torch.linspace(library.r_min_m, library.r_max_m, 997, dtype=torch.float64)
    t_dense = library.transmission_at(dense, wl).to(torch.complex128)
    t_best = library.transmission_at(radii.reshape(-1), wl).to(torch.complex128)
    target = torch.exp(1j * phases.reshape(-1))
    err_best = (t_best - target).abs()
    err_dense = (t_dense[None, :] - target[:, None]).abs().min(dim=1).values
    assert torch.all(err_best <= err_dense + 2e-3)  # 2e-3: the 4096-step phase table resolution
    wrapped = library.radius_for_phase(phases + 2 * np.pi, wl)
    assert torch.allclose(wrapped, radii)


def test_latent_round_trip(library):
    z = torch.linspace(-6, 6, 25, dtype=torch.float64, requires_grad=True)
    r = radius_from_latent(z, library)
    assert torch.all((r > library.r_min_m) & (r < library.r_max_m))
    assert torch.allclose(latent_from_radius(r.detach(), library), z.detach(), atol=1e-6)
    r.sum().backward()
    assert torch.all(z.grad > 0)
    edge = latent_from_radius(torch.tensor([library.r_min_m, library.r_max_m], dtype=torch.float64), library)
    assert torch.all(torch.isfinite(edge))


def test_ideal_phase_atom():
    phase = torch.tensor([[0.0, 1.0], [np.pi, -2.5]])
    t = IdealPhaseAtom().transmission_at(phase, 550e-9)
    assert t.dtype == torch.complex64 and t.shape == phase.shape
    assert torch.allclose(t.abs(), torch.ones_like(phase))
    assert torch.allclose(torch.angle(t * torch.exp(-1j * phase)), torch.zeros_like(phase), atol=1e-6)


def test_missing_library_file_says_how_to_build(tmp_path):
    with pytest.raises(FileNotFoundError, match="build_metaatom_library"):
        MetaAtomLibrary.load(tmp_path / "nope.csv")
    assert DEFAULT_LIBRARY_PATH.name == "metaatom_library.csv"


# ------------------------------------------------- fast Hermite-table lookup
def _scipy_spline(library, r_m, wl_m):
    """Independent reference: scipy's not-a-knot spline per tabulated wavelength, linear in wavelength."""
    from scipy.interpolate import CubicSpline

    wls = library.wavelengths_m
    j = min(max(int(np.searchsorted(wls, wl_m, side="right")) - 1, 0), len(wls) - 2)
    w = (wl_m - wls[j]) / (wls[j + 1] - wls[j])
    spl = CubicSpline(library.radii_m * 1e9, library.transmission, axis=1)
    t = spl(np.asarray(r_m) * 1e9)
    return (1 - w) * t[j] + w * t[j + 1]


@pytest.mark.parametrize("chunked", [True, False])
def test_fast_lookup_matches_spline_reference(library, chunked):
    gen = torch.Generator().manual_seed(3)
    wls = torch.tensor([400e-9, 412.3e-9, 550e-9, 699e-9, 700e-9, 437.5e-9, 550e-9, 600e-9], dtype=torch.float64)
    r = library.r_min_m + (library.r_max_m - library.r_min_m) * torch.rand(
        len(wls), 64, 80, generator=gen, dtype=torch.float64)
    r[0, 0, :2] = torch.tensor([library.r_min_m, library.r_max_m], dtype=torch.float64)
    fast = library._lookup(r, wls, chunked=chunked)
    assert fast.dtype == torch.complex64 and fast.shape == r.shape
    ref = library._transmission_reference(r, wls)
    assert (fast - ref).abs().max().item() <= 1e-5
    for e in (1, 3, 6):
        direct = _scipy_spline(library, r[e, :4].numpy(), float(wls[e]))
        np.testing.assert_allclose(fast[e, :4].numpy(), direct, atol=1e-5)
    # float32 radii (the synthesis path): limited by the float32 radius itself
    f32 = library.transmission_at(r.float(), wls)
    assert (f32 - library._transmission_reference(r.float().double(), wls)).abs().max().item() <= 1e-4
    # the public call picks the chunked CPU path for large inputs; both paths agree
    big = library.r_min_m + (library.r_max_m - library.r_min_m) * torch.rand(3, 150, 150, generator=gen)
    w3 = wls[[0, 2, 4]]
    assert torch.allclose(library.transmission_at(big, w3), library._lookup(big, w3, chunked=not chunked), atol=1e-6)


def test_fast_lookup_gradcheck(library):
    """Custom backward (tabulated dt/dr) against finite differences, in double precision."""
    gen = torch.Generator().manual_seed(4)
    wls = torch.tensor([400e-9, 550e-9, 612.5e-9], dtype=torch.float64)
    r = library.r_min_m + (library.r_max_m - library.r_min_m) * (0.02 + 0.96 * torch.rand(
        3, 2, 3, generator=gen, dtype=torch.float64))
    r[1, 0, 0] = float(library.radii_m[7])  # on a knot: C1 there
    for chunked in (True, False):
        x = r.clone().requires_grad_(True)
        assert torch.autograd.gradcheck(
            lambda y: library._lookup(y, wls, torch.float64, chunked=chunked), (x,), eps=1e-13, atol=1e-6, rtol=1e-5)
    # float32 public path: same gradient as the reference spline's autograd
    x = r.float().requires_grad_(True)
    gt = torch.randn(r.shape, generator=gen, dtype=torch.complex64)
    (g_fast,) = torch.autograd.grad(library.transmission_at(x, wls), x, gt)
    xr = r.float().double().requires_grad_(True)
    (g_ref,) = torch.autograd.grad(library._transmission_reference(xr, wls), xr, gt)
    assert g_fast.dtype == torch.float32
    assert torch.allclose(g_fast.double(), g_ref, rtol=1e-4, atol=1e-4 * g_ref.abs().max().item())


def test_fast_lookup_nonuniform_radii_dense_grid():
    """Non-uniform tabulated radii: dense uniform Hermite grid, within 1e-4 of the spline, exact at knots."""
    radii = np.array([35, 37, 42, 50, 51, 60, 75, 90, 100, 118, 130]) * 1e-9
    wls = np.array([450e-9, 650e-9])
    rng = np.random.default_rng(0)
    table = 0.9 * np.exp(1j * (np.outer([1.0, 0.7], radii * 6e7) + 0.2 * rng.standard_normal((2, len(radii)))))
    lib = MetaAtomLibrary(radii_m=radii, wavelengths_m=wls, transmission=table)
    r = torch.linspace(radii[0], radii[-1], 2001, dtype=torch.float64)
    fast = lib.transmission_at(r, 530e-9)
    np.testing.assert_allclose(fast.numpy(), _scipy_spline(lib, r.numpy(), 530e-9), atol=1e-4)
    assert (fast - lib._transmission_reference(r, 530e-9)).abs().max().item() <= 1e-4
    np.testing.assert_allclose(lib.transmission_at(torch.from_numpy(radii), 650e-9).numpy(), table[1], atol=1e-5)


def test_fast_lookup_edge_cases(library):
    # 0-d radius, radii a hair outside the range (clamped like before), NaN rejected, int-typed radius rejected
    t0 = library.transmission_at(torch.tensor(80e-9, dtype=torch.float64), 550e-9)
    assert t0.shape == () and t0.dtype == torch.complex64
    eps = 1e-7 * (library.r_max_m - library.r_min_m)
    edge = torch.tensor([library.r_min_m - eps, library.r_max_m + eps], dtype=torch.float64)
    inside = torch.tensor([library.r_min_m, library.r_max_m], dtype=torch.float64)
    assert torch.allclose(library.transmission_at(edge, 550e-9), library.transmission_at(inside, 550e-9))
    with pytest.raises(ValueError, match="radius_m outside"):
        library.transmission_at(torch.tensor([80e-9, float("nan")]), 550e-9)
    assert library.transmission_at(torch.empty(0, 3), 550e-9).shape == (0, 3)
