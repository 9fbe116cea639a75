"""The PSF of the device the mask builds, checked at the profiles' aperture against a direct sum.

The mask (:mod:`dkolib.fab.layout`) gives every pillar of a simulation cell that cell's radius,
so the transmitted field is a staircase: uniform over each ``p x p`` cell. The reference below
integrates the first-kind Rayleigh-Sommerfeld kernel

    h(r) = z / (2 pi) * exp(i k r) / r^2 * (1 / r - i k),    r = |(X, Y, z) - (x', y', 0)|,

over that staircase directly, sharing nothing with ``dkolib.optics.propagation`` but the
documented conventions (cell centres ``(n - (N-1)/2) p``, pixel centres ``(j - W//2) P``,
PSF = energy / aperture energy ``N^2 p^2``). Each cell is cut into ``s x s`` sub-squares; over a
sub-square the kernel's phase is taken linear in the source point (its quadratic term is below
``k q^2 / (4 z)``, 3e-3 rad for ``q = p``, ``z = 2.5 mm``, 400 nm), so the integral over it is the
value at its centre times ``q^2 sinc(q a_x / lambda) sinc(q a_y / lambda)``, ``a`` the direction
cosines towards the sensor point. The tests show that ``s = 1, 2, 3`` agree (the sum has
converged), and that the sum discriminates: the band-limited convention (the cells as samples of
a field band-limited to the grid's Nyquist frequency) and a paraxial (Fresnel) kernel both miss
it by far more than the 1 % the engines are held to.

Geometries: the ``default`` profile (257 cells, D / z = 0.256) and the paper's (1025 cells,
1 cm, the same D / z). Fields: a focusing lens, a smooth random phase (correlated over 4 cells)
and a white random phase (independent per cell, what trained designs look like at the cell scale).
"""

import dataclasses
import math

import numpy as np
import pytest
import torch

from dkolib.config import load_config
from dkolib.optics import psf

torch.set_num_threads(1)

WINDOW = 7  # pixels per side, sampled at the pixel centres (subpixel = 1)


def _direct_rs(t: np.ndarray, lam: float, cfg, window_px: int, sub: int = 1, paraxial: bool = False,
               point_sources: bool = False) -> np.ndarray:
    """Intensity ``[W, W]`` (aperture-energy units per m^2 x pixel area) of the staircase field ``t [N, N]``.

    ``sub``: sub-squares per cell and axis; ``paraxial``: the Fresnel kernel
    ``exp(i k (z + rho^2 / (2 z))) / (i lambda z)`` instead of RS-I; ``point_sources``: one point
    per sub-square with no aperture factor (the sampled-field picture).
    """
    n, p, z, d = t.shape[0], cfg.cell_pitch_m, cfg.sensor_distance_m, cfg.source_distance_m
    k = 2 * math.pi / lam
    q = p / sub
    xc = (np.arange(n) - (n - 1) / 2) * p
    offs = ((np.arange(sub) + 0.5) / sub - 0.5) * p
    xs = (xc[:, None] + offs[None, :]).reshape(-1)                       # sub-square centres [N s]
    t_sub = np.repeat(np.repeat(t, sub, axis=0), sub, axis=1)            # staircase: cell value everywhere in it
    X, Y = np.meshgrid(xs, xs, indexing="ij")
    inc = np.exp(1j * k * (np.sqrt(X ** 2 + Y ** 2 + d ** 2) - d))      # incident spherical wave
    src = torch.from_numpy((t_sub * inc).reshape(-1) * q * q)
    sx = torch.from_numpy(X.reshape(-1))
    sy = torch.from_numpy(Y.reshape(-1))
    P = cfg.pixel_pitch_m
    pix = (np.arange(window_px) - window_px // 2) * P
    out = np.zeros((window_px, window_px), dtype=np.complex128)
    chunk = 1 << 20
    for i, px in enumerate(pix):
        for j, py in enumerate(pix):
            acc = torch.zeros((), dtype=torch.complex128)
            for a in range(0, sx.numel(), chunk):
                dx = px - sx[a:a + chunk]
                dy = py - sy[a:a + chunk]
                rho2 = dx * dx + dy * dy
                if paraxial:
                    h = torch.polar(torch.full_like(rho2, 1.0 / (lam * z)), k * rho2 / (2 * z) - math.pi / 2)
                else:
                    r = torch.sqrt(rho2 + z * z)
                    h = torch.polar(z / (2 * math.pi) / r ** 2, k * r) * torch.complex(1.0 / r, -k * torch.ones_like(r))
                    if not point_sources:
                        h = h * torch.sinc(q * dx / (lam * r)) * torch.sinc(q * dy / (lam * r))
                acc = acc + torch.sum(h * src[a:a + chunk])
            out[i, j] = acc.item()
    return np.abs(out) ** 2 / (n * n * p * p) * P * P


def _fields(n: int, lam: float, cfg) -> dict[str, np.ndarray]:
    """Transmissions ``[N, N]`` held constant over each cell: lens, smooth and white random phase."""
    p, z, d = cfg.cell_pitch_m, cfg.sensor_distance_m, cfg.source_distance_m
    k = 2 * math.pi / lam
    xc = (np.arange(n) - (n - 1) / 2) * p
    r2 = xc[:, None] ** 2 + xc[None, :] ** 2
    lens = -k * (np.sqrt(r2 + z * z) - z) - k * (np.sqrt(r2 + d * d) - d)
    rng = np.random.default_rng(7)
    white = rng.uniform(0, 2 * math.pi, (n, n))
    # smooth: white noise low-passed by a Gaussian of 4-cell correlation length, 3 rad rms
    g = np.exp(-0.5 * (np.fft.fftfreq(n) * n / (n / (2 * math.pi * 4))) ** 2)
    smooth = np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal((n, n))) * g[:, None] * g[None, :]))
    smooth *= 3.0 / smooth.std()
    return {name: np.exp(1j * ph) for name, ph in (("lens", lens), ("smooth", smooth), ("white", white))}


def _engine(t: np.ndarray, lam: float, cfg, engine: str) -> np.ndarray:
    return psf(torch.from_numpy(t)[None].to(torch.complex128), [lam], cfg, WINDOW, engine=engine,
               subpixel=1)[0].numpy()


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _geometry(name: str):
    cfg = load_config(name).optics
    return dataclasses.replace(cfg, cell_model="staircase")


def test_profiles_share_the_papers_aperture():
    default, paper = _geometry("default"), _geometry("paper")
    na = [c.n_cells * c.cell_pitch_m / c.sensor_distance_m for c in (default, paper)]
    assert na[0] == pytest.approx(0.256, abs=2e-3) and na[1] == pytest.approx(na[0], rel=2e-3)


@pytest.mark.slow
@pytest.mark.parametrize("lam", [550e-9, 400e-9])
def test_engines_match_the_staircase_at_the_default_aperture(lam):
    cfg = _geometry("default")
    fields = _fields(cfg.n_cells, lam, cfg)
    for name, t in fields.items():
        direct = [_direct_rs(t, lam, cfg, WINDOW, sub=s) for s in (1, 2, 3)]
        # the sub-square sum has converged: 1, 2 and 3 sub-squares per cell agree far below 1 %
        assert _rel(direct[0], direct[2]) < 2e-3 and _rel(direct[1], direct[2]) < 1e-3, name
        ref = direct[2]
        for engine in ("fast", "reference"):
            got = _engine(t, lam, cfg, engine)
            assert _rel(got, ref) < 1e-2, (name, engine, _rel(got, ref))
            assert got.sum() == pytest.approx(ref.sum(), rel=1e-2)
        # the check can fail: the band-limited convention misses the fabricated field at this aperture by
        # more than 3x the tolerance (measured 0.15 / 0.08 / 0.45 at 550 nm, 0.39 / 0.05 / 0.60 at 400 nm
        # for lens / smooth / white), and so do a paraxial (Fresnel) kernel (0.05-0.50) and one point
        # source per cell (0.07-2.9: the grid's grating replicas, unweighted by the cell's aperture)
        bandlimited = _engine(t, lam, dataclasses.replace(cfg, cell_model="bandlimited"), "fast")
        assert _rel(bandlimited, ref) > 3e-2, (name, _rel(bandlimited, ref))
        assert _rel(_direct_rs(t, lam, cfg, WINDOW, sub=3, paraxial=True), ref) > 3e-2, name
        assert _rel(_direct_rs(t, lam, cfg, WINDOW, sub=1, point_sources=True), ref) > 3e-2, name


@pytest.mark.slow
def test_engines_match_the_staircase_at_the_papers_geometry():
    cfg = _geometry("paper")
    lam = 550e-9
    for name, t in _fields(cfg.n_cells, lam, cfg).items():
        direct = [_direct_rs(t, lam, cfg, WINDOW, sub=s) for s in (1, 2)]
        assert _rel(direct[0], direct[1]) < 2e-3, name
        ref = direct[1]
        for engine in ("fast", "reference"):
            assert _rel(_engine(t, lam, cfg, engine), ref) < 1e-2, (name, engine)
        bandlimited = _engine(t, lam, dataclasses.replace(cfg, cell_model="bandlimited"), "fast")
        assert _rel(bandlimited, ref) > 3e-2, name  # measured 0.16 / 0.06 / 0.63


@pytest.mark.parametrize("lam,pitch_m", [(400e-9, 5e-6), (550e-9, 2.5e-6)])
def test_white_phase_loses_the_cells_aperture_factor(lam, pitch_m):
    """White phase: staircase over band-limited light near the axis = the mean of sinc^2 over the aperture's band.

    With independent phases every cell radiates incoherently on average, the band-limited cell
    with a flat spectrum over ``|f| < 1 / (2p)``, the staircase cell with ``sinc^2(p f_x) sinc^2(p f_y)``.
    A sensor point on the axis sees cell ``x_n`` along direction ``f = x_n / (lambda r)``; with the
    aperture spanning ``|p f| <= a`` the expected ratio is ``(int_{-a}^{a} sinc^2(u) du / (2a))^2``.
    At ``a = 1/2`` (the whole band) that is 0.599, the white-phase loss in the crop; there the
    band-limited spectrum's own edge (blurred by Fresnel diffraction) lies at the aperture's edge
    and the measured ratio is 0.625, so the check is made at ``a = 0.4``, inside the band.
    """
    from scipy.integrate import quad

    a, n, reps = 0.4, 65, 256
    sin_edge = a * lam / pitch_m
    half = n * pitch_m / 2
    base = load_config("smoke").optics
    cfg = dataclasses.replace(base, n_cells=n, cell_pitch_m=pitch_m, pixel_pitch_m=1e-6,
                              sensor_distance_m=half * math.sqrt(1 / sin_edge ** 2 - 1))
    phase = 2 * math.pi * torch.rand(reps, n, n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.polar(torch.ones_like(phase), phase)
    light = {m: psf(t, [lam] * reps, dataclasses.replace(cfg, cell_model=m), 3, subpixel=1).sum((1, 2))
             for m in ("staircase", "bandlimited")}
    ratio = float(light["staircase"].mean() / light["bandlimited"].mean())
    closed = (quad(lambda u: np.sinc(u) ** 2, -a, a)[0] / (2 * a)) ** 2  # 0.714
    sem = float((light["staircase"] / light["bandlimited"]).std()) / math.sqrt(reps)  # about 0.01
    assert ratio == pytest.approx(closed, abs=max(3 * sem, 0.02))
    # a wrong aperture factor fails: none (1), or sinc instead of sinc^2 (0.85)
    sinc_only = (quad(lambda u: np.sinc(u), -a, a)[0] / (2 * a)) ** 2
    assert abs(ratio - 1.0) > 0.2 and abs(ratio - sinc_only) > 0.1
    whole_band = quad(lambda u: np.sinc(u) ** 2, -0.5, 0.5)[0] ** 2
    assert whole_band == pytest.approx(0.599, abs=1e-3)
