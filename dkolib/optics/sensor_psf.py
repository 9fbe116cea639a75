"""A metasurface's PSF over all of the sensor it can reach: the halo and the light its neighbours read.

The engines of :mod:`dkolib.optics.propagation` evaluate the field exactly at the sub-pixel
samples of a small window (the 7 x 7 kernel, the 31 x 31 render window), at a cost that grows
with the window's samples times the square of the kept frequencies. Over a window several
apertures wide that is hours per array, so this module trades the exact sample evaluation
for one inverse FFT on a fine output grid:

1. the cells' field ``t o inc`` is transformed once on a wrap-safe cell grid (as the fast
   engine: ``L >= reach + t_cut``, per axis);
2. every frequency ``k / L`` that can reach the window is read from FFT bin ``k mod Np``
   (for the staircase, the replicas beyond the grid's Nyquist frequency too, times the
   cell's ``sinc(p f)`` per axis), times the transfer function and the engines' window taper
   (the same ``reach``, guard and raised cosine, so the two agree on the frequencies they
   keep);
3. an inverse FFT of length ``Nf >= K`` puts the field on a grid of pitch ``q = L / Nf``
   (about half the period of the highest kept frequency: the field is sampled at its
   Nyquist rate);
4. each pixel's energy is the integral of ``|U|^2`` over the pixel with ``|U|^2`` held
   constant over each sample's ``q x q`` square (a midpoint rule on the fine grid, applied
   by cumulative sums along each axis).

Step 4 is the approximation: its error against the exact engines on their windows is
measured in ``tests/test_sensor.py`` and by ``scripts/sensor_study.py``.

Memory: up to ``_CACHED_TRANSFER_ELEMENTS`` kept frequencies (every window of the default
profile) steps 2-4 run in one piece; beyond (the paper's size, about 19,000 x 29,000 frequencies
at 400 nm) the transfer function and the field are built a block of columns, then of rows, at a
time, the same sums to single-precision rounding in a few GB instead of more than 24.

Baffles (``baffle_sin``): opaque walls between apertures are modelled as an angular
cut-off, every plane-wave component with ``lambda |f_axis| > baffle_sin`` on either axis
removed (a wall along each grid axis stops rays steeper than its angle along that axis),
the ray picture of a tube of height ``h`` over an aperture of width ``D``:
``baffle_sin = sin(atan(D / h))`` (:func:`baffle_sin_for_wall`).

Window: pixel ``(j0, j1)`` of a ``(2 R_0 + 1) x (2 R_1 + 1)`` window is centred at
``((j0 - R_0) P, (j1 - R_1) P)`` from the optical axis (the engines' convention for odd
windows: pixel ``W // 2`` on the axis). Values are fractions of the energy incident on
the aperture per pixel, as the engines' ``normalize=True``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from .grids import (_freq_for_travel, _good_fft_size, _travel_for_freq_m, cell_model_of, incident_phase_rad,
                    margin_m)


def baffle_sin_for_wall(aperture_m: float, wall_height_m: float) -> float:
    """``sin(atan(D / h))``: the steepest ray that crosses an aperture of width ``D`` inside walls ``h`` high."""
    if not aperture_m > 0 or not wall_height_m > 0:
        raise ValueError(f"aperture and wall height must be > 0, got {aperture_m} and {wall_height_m}")
    return float(aperture_m / math.hypot(aperture_m, wall_height_m))


def _axis_plan(n_cells: int, optics_cfg, half_px: int, wavelength_m: float):
    """Reach, kept frequency indices and FFT sizes along one axis of a ``2 half_px + 1`` pixel window."""
    p, P, z = optics_cfg.cell_pitch_m, optics_cfg.pixel_pitch_m, optics_cfg.sensor_distance_m
    guard = margin_m(optics_cfg, wavelength_m)
    reach = 0.5 * ((n_cells - 1) * p + (2 * half_px + 1) * P)
    t_cut = reach + 2.0 * guard
    n_pad = _good_fft_size(max(int(math.ceil((2 * reach + 2.5 * guard) / p)), n_cells))
    L = n_pad * p
    f_cut = min(_freq_for_travel(t_cut, wavelength_m, z), (1.0 - 1e-9) / wavelength_m)
    k_max = int(math.floor(f_cut * L))
    if cell_model_of(optics_cfg) != "staircase":
        k_max = min(k_max, (n_pad - 1) // 2)  # band-limited: one period of the cell grid
    return reach, guard, n_pad, k_max


def _pixel_integrals(intensity: torch.Tensor, x0_m: float, q_m: float, edges_m: np.ndarray, dim: int):
    """Integral of ``intensity`` between consecutive ``edges_m`` along ``dim`` (0 or 1 of a 2-D tensor).

    Sample ``n`` is ``intensity`` at ``x0 + n q``. Two second-order rules, each exact for
    its own interpolant, are combined as Simpson's rule combines them, ``(2 M + T) / 3``:
    ``M`` holds each sample constant over ``[x_n - q/2, x_n + q/2)``, ``T`` draws straight
    lines between samples. Returns the ``len(edges) - 1`` integrals (intensity x metres).
    """
    I = intensity if dim == 0 else intensity.transpose(0, 1)
    n = I.shape[0]
    edges = np.asarray(edges_m, dtype=np.float64)
    zero = torch.zeros((1,) + I.shape[1:], dtype=I.dtype, device=I.device)

    def gather(t, idx):
        return t.index_select(0, torch.as_tensor(idx, device=t.device))

    def column(v):
        return torch.as_tensor(v, dtype=I.dtype, device=I.device)[:, None]

    # M: cumulative integral at the sample boundaries b_m = x0 + (m - 1/2) q
    pos = (edges - x0_m) / q_m + 0.5
    if pos.min() < 1 or pos.max() > n - 1:
        raise ValueError("the pixel window reaches beyond the propagated grid")
    m = np.floor(pos).astype(np.int64)
    cum = torch.cat([zero, torch.cumsum(I, 0)], 0)
    at = (2.0 * q_m / 3.0) * (gather(cum, m) + column(pos - m) * gather(I, m))
    del cum
    # T: cumulative integral at the samples, straight lines in between
    pos = (edges - x0_m) / q_m
    m = np.floor(pos).astype(np.int64)
    s = column(pos - m)
    cum = torch.cat([zero, torch.cumsum(0.5 * (I[1:] + I[:-1]), 0)], 0)
    lo, hi = gather(I, m), gather(I, m + 1)
    at += (q_m / 3.0) * (gather(cum, m) + lo * s + 0.5 * (hi - lo) * s * s)
    out = at[1:] - at[:-1]
    return out if dim == 0 else out.transpose(0, 1)


_BLOCK_ELEMENTS = 1 << 25
"""Complex samples per working block (256 MB in single precision): the spectrum, the transfer
function and the field are processed a block of columns or rows at a time, so memory stays a few
GB at the paper's size (where the kept band alone is about 19,000 x 28,000 samples)."""
_CACHED_TRANSFER_ELEMENTS = 1 << 27
"""Up to this many kept frequencies (1 GB of ``H``; every window of the default profile) the transfer
function is kept between calls and steps 2-4 run in one piece; above it ``H`` is rebuilt a block at a
time and so is the field."""


class _Transfer:
    """``H`` (complex64) on the kept bins: ``whole`` (kept, up to ``_CACHED_TRANSFER_ELEMENTS``;
    else None) or one block of columns at a time (:meth:`columns`).

    Every element is computed by the same numpy expression whatever the block, so a block is
    bit for bit the same columns of the whole array.
    """

    def __init__(self, fs, tapers, ramps, lam: float, z: float):
        self.f0, self.f1 = fs
        self.tapers, self.ramps, self.lam, self.z = tapers, ramps, lam, z
        self.shape = (self.f0.size, self.f1.size)
        self.whole = None
        if self.shape[0] * self.shape[1] <= _CACHED_TRANSFER_ELEMENTS:
            self.whole = self.columns(0, self.shape[1])

    def columns(self, c0: int, c1: int) -> torch.Tensor:
        lam, z = self.lam, self.z
        f0, f1 = self.f0[:, None], self.f1[None, c0:c1]
        f2 = f0 ** 2 + f1 ** 2
        arg = 1.0 / lam ** 2 - f2
        prop = arg > 0
        kz = np.sqrt(np.where(prop, arg, 0.0))
        H = np.where(prop, np.exp(1j * 2 * np.pi * z * (-f2 / (kz + 1.0 / lam))), 0.0)
        for axis, (a, t_keep, t_cut) in enumerate(self.tapers):
            fa = f0 if axis == 0 else f1
            u = np.clip((_travel_for_freq_m(fa, f2, lam, z) - t_keep) / (t_cut - t_keep), 0.0, 1.0)
            H = H * (0.5 * (1.0 + np.cos(np.pi * u)) * (a[:, None] if axis == 0 else a[None, c0:c1]))
        H = H * self.ramps[0][:, None] * self.ramps[1][None, c0:c1]
        return torch.from_numpy(H).to(torch.complex64)


@functools.lru_cache(maxsize=3)
def _operators(n_cells: int, cell_pitch_m: float, pixel_pitch_m: float, sensor_distance_m: float,
               source_distance_m: float, cell_model: str, wavelength_m: float, half_px: tuple[int, int],
               baffle_sin: float | None, oversample: float):
    """Per wavelength: incident wave, kept bins, ``H`` (a :class:`_Transfer`) and output-grid geometry."""
    from types import SimpleNamespace

    cfg = SimpleNamespace(cell_pitch_m=cell_pitch_m, pixel_pitch_m=pixel_pitch_m, cell_model=cell_model,
                          sensor_distance_m=sensor_distance_m)
    p, z, lam = cell_pitch_m, sensor_distance_m, wavelength_m
    plans = [_axis_plan(n_cells, cfg, int(r), lam) for r in half_px]
    fs, idxs, tapers, grids, ramps = [], [], [], [], []
    c = (n_cells - 1) / 2.0
    for (reach, guard, n_pad, k_max), r in zip(plans, half_px):
        k = np.arange(-k_max, k_max + 1)
        f = k / (n_pad * p)
        fs.append(f)
        idxs.append(torch.as_tensor(np.mod(k, n_pad)))
        a = np.sinc(p * f) if cell_model == "staircase" else np.ones_like(f)
        if baffle_sin is not None:
            a = a * (lam * np.abs(f) <= baffle_sin)
        tapers.append((a, reach + guard, reach + 2.0 * guard))
        n_f = _good_fft_size(int(math.ceil(oversample * k.size)))
        L = n_pad * p
        q = L / n_f
        # the spectrum is multiplied by exp(i 2 pi f (x_s + c p)) below, so that output sample m
        # of the inverse FFT is the field at x_s + m q (cell 0 sits at FFT index 0, i.e. at -c p):
        # the window's samples are then the first `length` ones, in order
        x_s = -(int(r) + 0.5) * pixel_pitch_m - 2.0 * q
        length = int(math.ceil(((2 * int(r) + 1) * pixel_pitch_m + 4.0 * q) / q)) + 1
        if length > n_f:
            raise ValueError("the pixel window is wider than the propagated grid")
        ramps.append(np.exp(1j * 2 * np.pi * f * (x_s + c * p)) * (n_f / n_pad))
        grids.append((n_pad, n_f, torch.as_tensor(np.mod(k, n_f)), length, x_s, q))
    H = _Transfer(fs, tapers, ramps, lam, z)
    inc = torch.from_numpy(np.exp(1j * incident_phase_rad(n_cells, p, source_distance_m, lam))).to(torch.complex64)
    return inc, idxs, H, grids


def _operators_for(optics_cfg, n_cells: int, wavelength_m: float, half_px, baffle_sin, oversample):
    return _operators(int(n_cells), float(optics_cfg.cell_pitch_m), float(optics_cfg.pixel_pitch_m),
                      float(optics_cfg.sensor_distance_m), float(optics_cfg.source_distance_m),
                      cell_model_of(optics_cfg), float(wavelength_m), tuple(int(r) for r in half_px),
                      None if baffle_sin is None else float(baffle_sin), float(oversample))


@torch.no_grad()
def sensor_psf_one(transmission: torch.Tensor, wavelength_m: float, optics_cfg, half_px: tuple[int, int],
                   baffle_sin: float | None = None, oversample: float = 1.0) -> torch.Tensor:
    """Pixel PSF ``[2 R_0 + 1, 2 R_1 + 1]`` (float32) of one metasurface ``transmission [N, N]`` (complex).

    ``half_px``: ``(R_0, R_1)`` pixels on each side of the axis. ``oversample``: output
    grid samples per sample of the kept band (1: ``Nf = K``, the field's Nyquist rate).
    Computed in single precision. See the module docstring.
    """
    t = torch.as_tensor(transmission)
    if t.dim() != 2 or t.shape[0] != t.shape[1] or not t.is_complex():
        raise ValueError(f"transmission must be a complex [N, N] tensor, got {tuple(t.shape)} {t.dtype}")
    if baffle_sin is not None and not 0 < baffle_sin <= 1:
        raise ValueError(f"baffle_sin must be in (0, 1], got {baffle_sin}")
    if len(half_px) != 2 or min(half_px) < 0:
        raise ValueError(f"half_px must be two window half-widths >= 0 (pixels), got {half_px}")
    n = t.shape[-1]
    inc, idxs, H, grids = _operators_for(optics_cfg, n, wavelength_m, half_px, baffle_sin, oversample)
    S = torch.fft.fft2(t.to(torch.complex64) * inc, s=(grids[0][0], grids[1][0]))
    P = optics_cfg.pixel_pitch_m
    edges = [(np.arange(2 * int(r) + 2) - int(r) - 0.5) * P for r in half_px]
    if H.whole is not None:
        intensity = _propagate_whole(S, idxs, H.whole, grids, edges)
    else:
        intensity = _propagate_blocked(S, idxs, H, grids, edges)
    return intensity / (n * optics_cfg.cell_pitch_m) ** 2


def _propagate_whole(S, idxs, H, grids, edges):
    """Steps 2-4 in one piece (the kept band fits in memory): ``[2 R0 + 1, 2 R1 + 1]`` pixel integrals."""
    # bins k mod Np for k = -k_max..k_max are a cyclic run: tile the spectrum and slice it
    reps, starts = [], []
    for axis, idx in enumerate(idxs):
        n_pad, K = S.shape[axis], idx.numel()
        start = int(idx[0])
        reps.append(-(-(start + K) // n_pad))
        starts.append(start)
    out = S.repeat(reps[0], reps[1])[starts[0]:starts[0] + idxs[0].numel(),
                                     starts[1]:starts[1] + idxs[1].numel()].mul(H)
    for axis, (n_pad, n_f, bins, length, _, _) in enumerate(grids):
        shape = list(out.shape)
        shape[axis] = n_f
        placed = torch.zeros(shape, dtype=out.dtype).index_copy_(axis, bins, out)
        out = torch.fft.ifft(placed, dim=axis).narrow(axis, 0, length)
    intensity = out.real ** 2 + out.imag ** 2
    del out
    for axis in range(2):
        intensity = _pixel_integrals(intensity, grids[axis][4], grids[axis][5], edges[axis], axis)
    return intensity


def _propagate_blocked(S, idxs, H, grids, edges):
    """Steps 2-4 a block of columns, then of rows, at a time (the paper's size): the same sums as
    :func:`_propagate_whole` to single-precision rounding (``tests/test_sensor.py``), in a few GB."""
    (_, nf0, bins0, len0, _, _), (_, nf1, bins1, len1, _, _) = grids
    K0, K1 = H.shape
    # the kept spectrum times H, inverse-transformed along axis 0 (columns are independent)
    S0 = S.index_select(0, idxs[0])
    field = torch.empty((len0, K1), dtype=torch.complex64)
    step = max(1, _BLOCK_ELEMENTS // max(nf0, 1))
    for c0 in range(0, K1, step):
        c1 = min(K1, c0 + step)
        block = S0.index_select(1, idxs[1][c0:c1]).mul(H.columns(c0, c1))
        placed = torch.zeros((nf0, c1 - c0), dtype=block.dtype).index_copy_(0, bins0, block)
        field[:, c0:c1] = torch.fft.ifft(placed, dim=0).narrow(0, 0, len0)
        del block, placed
    del S0
    # then along axis 1 (rows are independent)
    intensity = torch.empty((len0, len1), dtype=torch.float32)
    step = max(1, _BLOCK_ELEMENTS // max(nf1, 1))
    for r0 in range(0, len0, step):
        r1 = min(len0, r0 + step)
        placed = torch.zeros((r1 - r0, nf1), dtype=field.dtype).index_copy_(1, bins1, field[r0:r1])
        out = torch.fft.ifft(placed, dim=1).narrow(1, 0, len1)
        intensity[r0:r1] = out.real ** 2 + out.imag ** 2
        del placed, out
    del field
    # pixel integrals along axis 0 (columns are independent), then along axis 1
    rows = torch.empty((edges[0].size - 1, len1), dtype=torch.float32)
    step = max(1, _BLOCK_ELEMENTS // max(len0, 1))
    for c0 in range(0, len1, step):
        c1 = min(len1, c0 + step)
        rows[:, c0:c1] = _pixel_integrals(intensity[:, c0:c1], grids[0][4], grids[0][5], edges[0], 0)
    del intensity
    return _pixel_integrals(rows, grids[1][4], grids[1][5], edges[1], 1)


def sensor_psf(transmission: torch.Tensor, wavelengths_m, optics_cfg, half_px: tuple[int, int],
               baffle_sin: float | None = None, oversample: float = 1.0, progress: bool = False) -> torch.Tensor:
    """Pixel PSFs ``[E, 2 R_0 + 1, 2 R_1 + 1]`` (float32) of ``transmission [E, N, N]`` at ``wavelengths_m [E]``.

    Not differentiable (evaluation only). Elements are taken wavelength by wavelength so
    that each wavelength's operators are built once. See :func:`sensor_psf_one`.
    """
    t = transmission.detach()
    wl = [float(w) for w in torch.as_tensor(wavelengths_m).reshape(-1).tolist()]
    if t.dim() != 3 or len(wl) != t.shape[0]:
        raise ValueError(f"transmission must be [E, N, N] with one wavelength per element, got "
                         f"{tuple(t.shape)} and {len(wl)} wavelengths")
    from tqdm.auto import tqdm

    out = torch.empty((t.shape[0], 2 * int(half_px[0]) + 1, 2 * int(half_px[1]) + 1))
    order = sorted(range(len(wl)), key=lambda e: wl[e])
    for e in tqdm(order, desc="sensor PSFs", disable=not progress):
        out[e] = sensor_psf_one(t[e], wl[e], optics_cfg, half_px, baffle_sin, oversample)
    _operators.cache_clear()
    return out


__all__ = ["baffle_sin_for_wall", "sensor_psf", "sensor_psf_one"]
