"""The whole sensor under a metasurface array: every metasurface's light, read where it lands.

The ``full_psf`` modes of :mod:`dkolib.optics.render` read each metasurface's image alone,
through a small window, as if the rest of its light were lost. On the sensor under an
array it is not: it lands on the metasurface's own read-out region as a halo, or on its
neighbours' regions as crosstalk, and its shot noise is read with the signal. This module
renders that sensor.

Geometry (:class:`ArrayGeometry`)
--------------------------------
* The metasurfaces sit on the mask's grid (:mod:`dkolib.fab.layout`): element ``e`` at row
  ``e // n_cols`` and column ``e % n_cols``, its axis at ``(x, y) = (column, -row) a`` in the
  mask's frame. The sensor is laid out in that frame: sensor axis 0 is the mask's ``y``,
  axis 1 its ``x``, so element ``e``'s axis is on sensor pixel ``(-row, column) a_px``.
* The axis-to-axis pitch ``a_px`` is a whole number of sensor pixels, the smallest with
  ``a_px P >= N p + gap_m``: every axis then sits on a pixel centre, as a designer
  aligning the array to the sensor would choose (the export's ``gap_m`` is
  ``a_px P - N p``, :meth:`ArrayGeometry.mask_gap_m`).
* Each metasurface is read on its own region: the ``H x W`` image centred on its axis
  (pixel ``(H // 2, W // 2)`` on the axis), the image the network reads. Regions must
  not overlap (``a_px >= H`` and ``a_px >= W``).

Rendering (:func:`render_sensor`)
--------------------------------
Scene pixel ``q`` through tap ``d`` of element ``e``'s PSF lands at sensor pixel
``axis_e + (q - c) - d`` (``c = (H // 2, W // 2)``): the convention of
:func:`dkolib.optics.render.optical_conv` (its read-out is this with one element and a
PSF no larger than the image), placed at the element's axis. The sensor image is the sum
over all elements; photon and read noise are drawn on that total; each region is then
read at the stride, gained and the +/- regions subtracted and summed over input colours
as today.

PSFs (:func:`array_sensor_psfs`): each element's PSF over the window that reaches its
nearest neighbours' regions (``R = a_px + H - 1`` by ``a_px + W - 1`` pixels each side),
from :func:`dkolib.optics.sensor_psf.sensor_psf` (one FFT on a fine grid), with the
central ``render_window_px`` pixels taken from the exact fast engine, so that the core is
the ``full_psf`` modes' PSF and only the halo carries the fine-grid method's error
(measured in ``tests/test_sensor.py`` and ``scripts/sensor_study.py``). Light beyond the
window (past the nearest neighbours) is not rendered; :func:`light_budget` reports it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError


@dataclass(frozen=True)
class ArrayGeometry:
    """Placement of ``n_elements`` metasurfaces over the sensor (see the module docstring).

    ``pitch_px``: axis-to-axis spacing (pixels); ``image_hw``: each read-out region
    ``(H, W)`` (pixels); ``n_cols``: grid columns; ``aperture_m`` / ``pixel_pitch_m``: ``N p`` and ``P``.
    """

    n_elements: int
    n_cols: int
    pitch_px: int
    image_hw: tuple[int, int]
    aperture_m: float
    pixel_pitch_m: float

    @property
    def n_rows(self) -> int:
        return math.ceil(self.n_elements / self.n_cols)

    def axis_px(self, element: int) -> tuple[int, int]:
        """Sensor pixel ``(axis 0, axis 1)`` of ``element``'s optical axis (element 0 at the origin)."""
        return -(element // self.n_cols) * self.pitch_px, (element % self.n_cols) * self.pitch_px

    def mask_gap_m(self) -> float:
        """The gap between apertures (m) that places the mask's axes on this grid."""
        return self.pitch_px * self.pixel_pitch_m - self.aperture_m

    def halo_half_px(self) -> tuple[int, int]:
        """PSF window half-widths that reach every pixel of the nearest neighbours' regions."""
        H, W = self.image_hw
        return self.pitch_px + H - 1, self.pitch_px + W - 1

    def neighbours(self, element: int) -> list[int]:
        """Elements whose axes are at most one grid step from ``element``'s (itself included)."""
        r, c = divmod(element, self.n_cols)
        out = []
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                rr, cc = r + dr, c + dc
                e = rr * self.n_cols + cc
                if 0 <= rr and 0 <= cc < self.n_cols and e < self.n_elements:
                    out.append(e)
        return out


def array_geometry(optics_cfg, n_elements: int, n_in: int, image_hw: tuple[int, int], gap_m: float = 0.0,
                   n_cols: int | None = None) -> ArrayGeometry:
    """The sensor grid of an array of ``n_elements`` metasurfaces (``n_in`` input colours).

    ``gap_m``: the least gap between neighbouring apertures (m); the pitch is rounded up to
    whole pixels. ``n_cols``: grid columns (default the mask's,
    :func:`dkolib.fab.layout.default_columns`).
    """
    from ..fab.layout import default_columns

    if gap_m < 0:
        raise InputError(f"gap_m must be >= 0 (metres between apertures), got {gap_m}")
    H, W = (int(v) for v in image_hw)
    aperture = optics_cfg.n_cells * optics_cfg.cell_pitch_m
    P = optics_cfg.pixel_pitch_m
    pitch_px = int(math.ceil((aperture + gap_m) / P - 1e-9))
    cols = default_columns(n_elements, n_in) if n_cols is None else int(n_cols)
    if pitch_px < max(H, W):
        need = max(H, W) * P - aperture
        raise InputError(f"read-out regions of {H} x {W} pixels overlap at an array pitch of {pitch_px} pixels "
                         f"({aperture * 1e3:.3f} mm apertures): set a gap of at least {need * 1e6:.1f} um")
    return ArrayGeometry(int(n_elements), cols, pitch_px, (H, W), float(aperture), float(P))


def _paste_core(halo: torch.Tensor, core: torch.Tensor) -> torch.Tensor:
    """``halo [E, 2 R0 + 1, 2 R1 + 1]`` with its central ``w x w`` pixels replaced by ``core [E, w, w]``."""
    R0, R1 = (halo.shape[-2] - 1) // 2, (halo.shape[-1] - 1) // 2
    w = core.shape[-1]
    out = halo.clone()
    out[:, R0 - w // 2:R0 - w // 2 + w, R1 - w // 2:R1 - w // 2 + w] = core.to(out.dtype)
    return out


def array_sensor_psfs(array, optics_cfg, geometry: ArrayGeometry, baffle_sin: float | None = None,
                      oversample: float = 1.0, engine: str = "fast", progress: bool = False) -> torch.Tensor:
    """PSFs ``[E, 2 R0 + 1, 2 R1 + 1]`` of every element over :meth:`ArrayGeometry.halo_half_px`.

    The central ``render_window_px`` pixels are the exact engine's (``engine``); the rest is
    :func:`dkolib.optics.sensor_psf.sensor_psf`. With a baffle the core is the fine-grid
    method's too (the engines have no baffle).
    """
    from .propagation import psf
    from .sensor_psf import sensor_psf

    with torch.no_grad():
        t = array.transmission().detach()
        wl = array.wavelengths_m
        halo = sensor_psf(t, wl, optics_cfg, geometry.halo_half_px(), baffle_sin, oversample, progress)
        if baffle_sin is not None:
            return halo
        core = psf(t, wl, optics_cfg, int(optics_cfg.render_window_px), engine=engine)
    return _paste_core(halo, core)


def light_budget(psfs: torch.Tensor, geometry: ArrayGeometry, kernel_size: int, render_window_px: int,
                 transmitted: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Where each element's light lands, as fractions of the light incident on its aperture.

    ``psfs [E, 2 R0 + 1, 2 R1 + 1]`` from :func:`array_sensor_psfs`; ``transmitted [E]``
    (optional): the fraction the metasurface transmits (``mean |t|^2``). Returns per
    element ``kernel`` (central k x k), ``render_window``, ``own_region`` (the light a
    point at the scene's centre puts in its own ``H x W`` region), ``neighbours`` (in the
    other elements' regions, for the same point), ``window`` (the whole computed window)
    and, given ``transmitted``, ``beyond_window``.
    """
    R0, R1 = (psfs.shape[-2] - 1) // 2, (psfs.shape[-1] - 1) // 2
    H, W = geometry.image_hw

    def box(h0, w0, h, w):
        return psfs[:, h0:h0 + h, w0:w0 + w].sum((-2, -1))

    out = {"kernel": box(R0 - kernel_size // 2, R1 - kernel_size // 2, kernel_size, kernel_size),
           "render_window": box(R0 - render_window_px // 2, R1 - render_window_px // 2,
                                render_window_px, render_window_px),
           "window": psfs.sum((-2, -1))}
    # a point at the scene's centre c through tap d lands at global axis_e - d; pixel p of the
    # region of element n is global axis_n + p - c, so it reads tap d = axis_e - axis_n + c - p
    own = torch.zeros(psfs.shape[0], dtype=psfs.dtype)
    neigh = torch.zeros(psfs.shape[0], dtype=psfs.dtype)
    for e in range(psfs.shape[0]):
        for n in geometry.neighbours(e):
            (y0, x0), (y1, x1) = geometry.axis_px(e), geometry.axis_px(n)
            h0 = R0 + (y0 - y1) + H // 2 - (H - 1)
            w0 = R1 + (x0 - x1) + W // 2 - (W - 1)
            light = psfs[e, h0:h0 + H, w0:w0 + W].sum()
            if n == e:
                own[e] = light
            else:
                neigh[e] += light
    out["own_region"], out["neighbours"] = own, neigh
    if transmitted is not None:
        out["beyond_window"] = transmitted.to(psfs.dtype) - out["window"]
    return out


def _full_correlation_spectra(psfs: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    return torch.fft.rfft2(torch.flip(psfs, (-2, -1)), s=shape)


def _check_inputs(images, psfs, geometry, n_in, E):
    if images.dim() != 4 or images.shape[1] != n_in:
        raise InputError(f"images must be [B, {n_in}, H, W], got {tuple(images.shape)}")
    H, W = images.shape[-2:]
    if (H, W) != tuple(geometry.image_hw):
        raise InputError(f"images are {H} x {W} but the sensor regions are {geometry.image_hw}: build the "
                         "geometry with array_geometry(..., image_hw=(H, W))")
    if psfs.dim() != 3 or psfs.shape[0] != E or geometry.n_elements != E \
            or psfs.shape[-1] % 2 == 0 or psfs.shape[-2] % 2 == 0:
        raise InputError(f"psfs must be [E = {E}, odd, odd] for a geometry of {geometry.n_elements} elements, "
                         f"got {tuple(psfs.shape)}")


def sensor_image(images: torch.Tensor, psfs: torch.Tensor, geometry: ArrayGeometry, n_in: int,
                 psf_spectra: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple[int, int]]:
    """The noiseless sensor image under the whole array: ``([B, S0, S1], origin)``.

    ``images [B, C_in, H, W]``; ``psfs [E, 2 R0 + 1, 2 R1 + 1]`` (element ``e`` images colour
    ``(e // 2) % n_in``). Sensor pixel ``g`` (the module docstring's frame) is canvas index
    ``g - origin``; the canvas holds every pixel that any element's light reaches.
    """
    E = psfs.shape[0]
    _check_inputs(images, psfs, geometry, n_in, E)
    B, _, H, W = images.shape
    k0, k1 = psfs.shape[-2:]
    R0, R1 = (k0 - 1) // 2, (k1 - 1) // 2
    F0, F1 = H + k0 - 1, W + k1 - 1
    spec = psf_spectra if psf_spectra is not None else _full_correlation_spectra(psfs.to(images.dtype), (F0, F1))
    X = torch.fft.rfft2(images, s=(F0, F1))  # [B, C_in, F0, F1 // 2 + 1]
    c0, c1 = H // 2, W // 2
    axes = np.array([geometry.axis_px(e) for e in range(E)])
    # the full correlation's index n lands on sensor pixel axis + n - R - c
    lo0, lo1 = int(axes[:, 0].min()) - R0 - c0, int(axes[:, 1].min()) - R1 - c1
    hi0, hi1 = int(axes[:, 0].max()) - R0 - c0 + F0, int(axes[:, 1].max()) - R1 - c1 + F1
    canvas = images.new_zeros((B, hi0 - lo0, hi1 - lo1))
    for e in range(E):
        Y = torch.fft.irfft2(X[:, (e // 2) % n_in] * spec[e], s=(F0, F1))
        g0, g1 = int(axes[e, 0]) - R0 - c0 - lo0, int(axes[e, 1]) - R1 - c1 - lo1
        canvas[:, g0:g0 + F0, g1:g1 + F1] += Y
    return canvas, (lo0, lo1)


def read_regions(canvas: torch.Tensor, origin: tuple[int, int], geometry: ArrayGeometry,
                 stride: int = 1) -> torch.Tensor:
    """Every element's read-out region of a sensor image ``[B, S0, S1]``: ``[B, E, ceil(H / s), ceil(W / s)]``."""
    H, W = geometry.image_hw
    c0, c1 = H // 2, W // 2
    out = []
    for e in range(geometry.n_elements):
        a0, a1 = geometry.axis_px(e)
        g0, g1 = a0 - c0 - origin[0], a1 - c1 - origin[1]
        out.append(canvas[:, g0:g0 + H:stride, g1:g1 + W:stride])
    return torch.stack(out, 1)


def region_kernels(psfs: torch.Tensor, geometry: ArrayGeometry, n_in: int) -> torch.Tensor:
    """``[E, C_in, 2H - 1, 2W - 1]``: what region ``e`` reads of each colour, offset by offset.

    Region ``e``'s pixel ``p`` receives scene pixel ``p + m`` of colour ``i`` with weight
    ``K[e, i, m]`` (``m`` from ``-(H - 1, W - 1)`` to ``(H - 1, W - 1)``): the sum, over the
    elements ``e'`` of colour ``i``, of ``psf[e'][axis_e' - axis_e + m]`` wherever that tap lies in
    the PSF window (see the module docstring). Built once per design.
    """
    E = psfs.shape[0]
    H, W = geometry.image_hw
    R0, R1 = (psfs.shape[-2] - 1) // 2, (psfs.shape[-1] - 1) // 2
    if R0 < geometry.pitch_px + H - 1 or R1 < geometry.pitch_px + W - 1:
        raise InputError(f"PSF window half-widths {(R0, R1)} do not reach the neighbours' regions; need at least "
                         f"{geometry.halo_half_px()} (ArrayGeometry.halo_half_px)")
    out = psfs.new_zeros((E, n_in, 2 * H - 1, 2 * W - 1))
    k0, k1 = psfs.shape[-2:]
    for e in range(E):
        a0, a1 = geometry.axis_px(e)
        for n in range(E):
            b0, b1 = geometry.axis_px(n)
            # taps t = R + axis_n - axis_e + m of element n's window, m over the kernel, clipped to the window
            t0, t1 = R0 + b0 - a0 - (H - 1), R1 + b1 - a1 - (W - 1)
            lo0, hi0 = max(t0, 0), min(t0 + 2 * H - 1, k0)
            lo1, hi1 = max(t1, 0), min(t1 + 2 * W - 1, k1)
            if lo0 < hi0 and lo1 < hi1:
                out[e, (n // 2) % n_in, lo0 - t0:hi0 - t0, lo1 - t1:hi1 - t1] += psfs[n, lo0:hi0, lo1:hi1]
    return out


def region_spectra(kernels: torch.Tensor) -> torch.Tensor:
    """``rfft2`` of the flipped :func:`region_kernels` at the size :func:`render_sensor` transforms."""
    return torch.fft.rfft2(torch.flip(kernels, (-2, -1)))


def render_sensor(images: torch.Tensor, psfs: torch.Tensor, geometry: ArrayGeometry, n_out: int, n_in: int,
                  stride: int = 2, gain: torch.Tensor | None = None, noise=None,
                  generator: torch.Generator | None = None, spectra: torch.Tensor | None = None,
                  return_regions: bool = False) -> torch.Tensor:
    """The optical first layer read from the whole sensor.

    Each region is the scene correlated with its :func:`region_kernels` (the element's own PSF
    plus its neighbours' light, by colour), which is the region of :func:`sensor_image` cut out
    by :func:`read_regions` (``tests/test_sensor.py`` checks the two against each other).

    Args:
        images: ``[B, C_in, H, W]`` scene intensities (``H x W`` = the geometry's regions).
        psfs: ``[E, 2 R0 + 1, 2 R1 + 1]`` (E = n_out n_in 2, element ``(o, i, s)``), odd sizes,
            the axis at the centre, reaching the neighbours (:meth:`ArrayGeometry.halo_half_px`).
        gain: ``[C_out]`` or ``[C_out, C_in, 2]`` (as :func:`~dkolib.optics.render.optical_conv`).
        noise: :class:`~dkolib.optics.render.SensorNoise` drawn on each read pixel of the summed
            sensor (pixels are independent).
        spectra: optional :func:`region_spectra` of the design (built here when None).
        return_regions: return the read-outs ``[B, E, ceil(H / s), ceil(W / s)]`` (after noise,
            before gain) instead.
    Returns:
        ``[B, C_out, ceil(H / stride), ceil(W / stride)]``.
    """
    E = n_out * n_in * 2
    _check_inputs(images, psfs, geometry, n_in, E)
    B, _, H, W = images.shape
    if spectra is None:
        spectra = region_spectra(region_kernels(psfs.to(images.dtype), geometry, n_in))
    # correlation C[n] = sum_j x[j] K[j - n + (H - 1)]; region pixel p is C[p + H - 1]. Done circularly over
    # 2H - 1 (per axis) it is exact there: of the linear result's 3H - 2 entries, those that wrap
    # (n >= 2H - 1) land on n - (2H - 1) <= H - 2, below the first pixel read
    F0, F1 = 2 * H - 1, 2 * W - 1
    X = torch.fft.rfft2(images, s=(F0, F1))  # [B, C_in, F0, F1 // 2 + 1]
    full = torch.fft.irfft2(torch.einsum("bixy,eixy->bexy", X, spectra), s=(F0, F1))
    s = full[..., H - 1:2 * H - 1:stride, W - 1:2 * W - 1:stride]
    if noise is not None:
        s = noise(s, generator=generator)
    if return_regions:
        return s
    s = s.reshape(B, n_out, n_in, 2, s.shape[-2], s.shape[-1])
    if gain is not None and gain.dim() == 3:
        s = s * gain.to(s.dtype)[None, :, :, :, None, None]
    y = (s[:, :, :, 0] - s[:, :, :, 1]).sum(2)
    if gain is not None and gain.dim() == 1:
        y = y * gain.to(y.dtype).view(1, -1, 1, 1)
    return y


__all__ = ["ArrayGeometry", "array_geometry", "array_sensor_psfs", "light_budget", "read_regions", "region_kernels",
           "region_spectra", "render_sensor", "sensor_image"]
