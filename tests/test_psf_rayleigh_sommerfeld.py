"""Independent check of the band-limited cell model: both engines against point sources at low aperture.

(The default cell model, the staircase the mask builds, is checked at the profiles' aperture by
``tests/test_psf_fabricated.py``.) With ``optics.cell_model: bandlimited`` the cells are samples
of a field band-limited to the grid's Nyquist frequency, which one point source per cell
reproduces wherever the grid's replicas miss the window.

The direct sum below shares nothing with ``dkolib.optics.propagation`` but the documented conventions
(cell centres ``(n - (N-1)/2) p``, pixel centres ``(j - W//2) P``, ``subpixel x subpixel``
midpoint samples per pixel, PSF = pixel energy / aperture energy ``N^2 p^2``): each cell
is a point source of strength ``t_n p^2`` radiating with the exact first-kind
Rayleigh-Sommerfeld kernel

    h(r) = z / (2 pi) * exp(i k r) / r^2 * (1 / r - i k),    r = |(x, y, z) - (x_n, y_n, 0)|,

illuminated by the spherical wave of an on-axis point at ``source_distance_m``. This agrees
with the band-limited angular-spectrum model as long as the grating replicas of the cell
grid (at ``sin theta = lambda / p`` off the main lobe) miss the window, which holds for a
low-NA lens focused on the window (checked below).
"""

import math

import numpy as np
import pytest
import torch

from dkolib.config import load_config
from dkolib.optics import psf

torch.set_num_threads(1)


def _rs_psf(t: np.ndarray, lam: float, cfg, window_px: int, subpixel: int) -> np.ndarray:
    """Direct RS-I PSF ``[W, W]`` of transmission ``t [N, N]`` in aperture-energy units."""
    n, p, z, d = t.shape[0], cfg.cell_pitch_m, cfg.sensor_distance_m, cfg.source_distance_m
    k = 2 * math.pi / lam
    xc = (np.arange(n) - (n - 1) / 2) * p
    X, Y = np.meshgrid(xc, xc, indexing="ij")
    r_src = np.sqrt(X ** 2 + Y ** 2 + d ** 2)
    u0 = (t * np.exp(1j * k * (r_src - d))).reshape(-1) * p * p          # point-source strengths
    P = cfg.pixel_pitch_m
    xs = ((np.arange(window_px) - window_px // 2)[:, None] * P
          + ((np.arange(subpixel) + 0.5) / subpixel - 0.5)[None, :] * P).reshape(-1)
    SX, SY = np.meshgrid(xs, xs, indexing="ij")
    dx = SX.reshape(-1, 1) - X.reshape(1, -1)
    dy = SY.reshape(-1, 1) - Y.reshape(1, -1)
    r = np.sqrt(dx ** 2 + dy ** 2 + z ** 2)
    h = z / (2 * math.pi) * np.exp(1j * k * r) / r ** 2 * (1.0 / r - 1j * k)
    inten = np.abs(h @ u0) ** 2
    q = P / subpixel
    pix = inten.reshape(window_px, subpixel, window_px, subpixel).sum(axis=(1, 3)) * q * q
    return pix / (n * n * p * p)


@pytest.mark.parametrize("engine", ["fast", "reference"])
@pytest.mark.parametrize("n_cells,lam,defocus", [(21, 550e-9, 0.0), (31, 400e-9, 0.0), (31, 700e-9, 0.35)])
def test_psf_matches_direct_rayleigh_sommerfeld(engine, n_cells, lam, defocus):
    cfg = load_config("smoke", {"optics.n_cells": n_cells, "optics.sensor_distance_m": 1e-3,
                                "optics.subpixel": 3, "optics.cell_model": "bandlimited"}).optics
    window, sub = 9, 3
    p, z = cfg.cell_pitch_m, cfg.sensor_distance_m
    # the first grating replica of the cell grid focuses further off axis than window + aperture
    assert z * (lam / p) > window * cfg.pixel_pitch_m + n_cells * p
    k = 2 * math.pi / lam
    xc = (np.arange(n_cells) - (n_cells - 1) / 2) * p
    r2 = xc[:, None] ** 2 + xc[None, :] ** 2
    f = z * (1 + defocus)  # defocus > 0: a blurred spot that spreads over several pixels
    phase = -k * (np.sqrt(r2 + f * f) - f) - k * (np.sqrt(r2 + cfg.source_distance_m ** 2) - cfg.source_distance_m)
    amp = 0.6 + 0.4 * np.cos(xc[:, None] / (n_cells * p) * 3.0) * np.ones((1, n_cells))  # lossy, non-uniform
    t = amp * np.exp(1j * phase)
    direct = _rs_psf(t, lam, cfg, window, sub)
    got = psf(torch.from_numpy(t)[None].to(torch.complex128), [lam], cfg, window, engine=engine,
              subpixel=sub)[0].numpy()
    assert got.shape == (window, window)
    peak = np.unravel_index(np.argmax(direct), direct.shape)
    assert peak == (window // 2, window // 2)
    # absolute level (aperture-energy normalisation) at the peak, and the whole window. Measured:
    # 1e-3 (21 cells, 550 nm), 5e-3 (31 cells, 400 nm: the nearest grating replica of the point
    # sum, 160 um off axis, leaks into the window; the band-limited ASM has no replica), 3e-4.
    assert got[peak] == pytest.approx(direct[peak], rel=1e-2)
    assert np.linalg.norm(got - direct) / np.linalg.norm(direct) < 1e-2
    # the window holds a sizeable fraction of the light, so the absolute check is meaningful
    assert direct.sum() > 0.05
