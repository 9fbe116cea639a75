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

from dkolib import rcwa
from dkolib.metaatoms import (
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


def test_convergence_table_written():
    df = pd.read_csv(CONVERGENCE_CSV)
    assert list(df.columns) == ["n_orders", "wavelength_m", "radius_m", "amplitude", "phase_rad", "delta_vs_highest"]
    top = df.n_orders.max()
    assert (df[df.n_orders == top].delta_vs_highest == 0).all()
    assert rcwa.LIBRARY_ORDERS in set(df.n_orders)


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
    order_error = conv[conv.n_orders == rcwa.LIBRARY_ORDERS].delta_vs_highest.max()
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
