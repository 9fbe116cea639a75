"""Point-spread functions of metasurfaces: two angular-spectrum engines and their cost model.

(Checks that a geometry can be sampled live in :mod:`dkolib.optics.sampling`.)

Physical model (shared by both engines)
---------------------------------------
* Metasurface plane: ``N x N`` cells (``N`` odd) at ``cell_pitch_m`` ``p``; cell
  ``n`` sits at ``x_n = (n - (N-1)/2) p``, so the optical axis passes through the
  centre cell. The grid values are treated as *samples* of a field band-limited
  to ``|f| < 1/(2p)`` (the standard discrete angular-spectrum convention, also
  used by D-Flat's ASM, which nearest-neighbour upsamples the cells when asked
  for an output grid finer than the cell pitch or a ``manual_upsample_factor``).
* Incident field: a unit-amplitude spherical wave from an on-axis point source
  at ``source_distance_m`` ``d``: ``exp(i k (sqrt(r^2 + d^2) - d))`` (amplitude
  variation across a mm aperture at 10 m is < 1e-8 and ignored).
* Propagation over ``sensor_distance_m`` ``z`` by the exact angular spectrum
  transfer function ``H(f) = exp(i 2 pi z (sqrt(1/lambda^2 - |f|^2) - 1/lambda))``
  (the constant phase ``exp(i k z)`` is dropped; it does not change intensities;
  evanescent components, ``|f| >= 1/lambda``, are set to 0).
* Window band limit (both engines): a component of spatial frequency ``f_x``
  moves sideways by ``t(f_x) = z lambda f_x / sqrt(1 - lambda^2 |f|^2)`` over
  ``z`` (likewise along y). Only components with ``t <= reach = (D + w) / 2``
  (aperture ``D``, sensor window ``w``) can carry light from the aperture into
  the window. ``H`` is multiplied, per axis, by a raised-cosine taper that is 1
  up to ``t = reach + m`` and falls smoothly to 0 at ``t = reach + 2 m``
  (``m`` = :func:`margin_m`, two Fresnel widths ``2 sqrt(lambda z)``; a smooth
  edge does not ring into the window). The padded grid extent ``L`` is chosen
  (:func:`padded_size`) so that no kept component wraps around the periodic
  grid back into the window, which makes the window samples independent of
  ``L``: the two engines compute the same quantity on different grids
  (details in ``_operators_np``). This is Matsushima & Shimobaba's (2009) idea
  applied to the sensor window instead of the whole output plane; their
  whole-plane hard cut-off ``|f_x|, |f_y| <= 1 / (lambda sqrt((2 z / L)^2 + 1))``
  (:func:`band_limit_cycles_per_m`) is used only by :func:`asm_full_field`.
* Sensor: square pixels of ``pixel_pitch_m`` ``P``. Pixel-centre convention
  (used everywhere in dkolib): the sensor pixel grid has one pixel centred on
  the axis, and a window of ``W`` pixels holds pixels ``j = 0..W-1`` at
  ``x_j = (j - W // 2) P``. For odd ``W`` this is the symmetric window with the
  centre pixel on axis; for even ``W`` (the paper's 14 x 14 loss window) the
  on-axis pixel is index ``W // 2`` (one more pixel on the negative side). This
  keeps every window a sub-window of one pixel grid, so
  ``render.crop_center(psf_14, 7)`` is exactly the on-axis 7 x 7 kernel, and
  index ``W // 2`` is the tap that ``torch.nn.functional.conv2d`` with
  ``padding = W // 2`` places on the output pixel (no half-pixel shift).
* Pixel integration: each pixel is sampled at ``subpixel x subpixel`` points
  (midpoints of its sub-squares, pitch ``q = P / subpixel``); the field there
  is evaluated *exactly* (no interpolation error: the band-limited field is a
  trigonometric sum over the computed spectrum and both engines evaluate that
  sum at the sample points by separable matrix DFTs), and the intensity is
  integrated by the midpoint rule.
* Normalisation (``normalize=True``): ``PSF[pixel] = energy in pixel / energy
  incident on the aperture`` ``= q^2 sum_sub |U|^2 / (N^2 p^2)`` for a
  unit-amplitude incident wave. Summed over the whole sensor plane this is 1
  for a lossless metasurface and ``< 1`` for a lossy one (``|t| < 1``); light
  leaving the window is not in the window's sum. ``normalize=False`` returns
  the pixel energy ``q^2 sum_sub |U|^2`` in units of (incident intensity x m^2).

Engines
-------
* :func:`psf_reference`: the paper's method: the whole padded grid (default
  ``2N``, at least the wrap-safe size) is propagated (FFT, tapered transfer
  function, all frequencies of the grid); the sensor samples are then read from
  that full-grid result by exact Fourier (trigonometric) interpolation.
* :func:`asm_full_field` (not a PSF engine) returns the full output plane at the
  cell pitch, with the whole-plane Matsushima-Shimobaba cut-off instead of the
  window taper (used by the energy-conservation test).
* :func:`psf_fast`: the same physics with the smallest padding that keeps the
  window exact (``L = D + w + 2.5 m``, :func:`padded_size`), only the frequencies
  inside the taper's support, and the sensor-window samples only: ``U = E (S o H) E^T`` with
  precomputed ``E [M, K]`` per wavelength, cost ``O(Np^2 log Np + M K^2)``.
  A Fresnel (paraxial) separable transform was rejected: with the exact
  (hyperbolic) lens phase its error is the spherical-aberration term
  ``k r^4 / (8 z^3)``, about 5 rad at the paper's 1.28 mm aperture radius.

Performance notes (both engines; results are unchanged by them)
-------------------------------------------------------------
* The operators (incident wave ``inc``, kept frequencies, ``H``, ``E``, ``E^T``)
  are cached on the device per (geometry, wavelength, window samples, dtype,
  device) in a bounded LRU (:func:`clear_operator_cache` frees it); building them
  cost more than the PSF itself (a float64 ``exp`` over ``N^2`` cells and casts).
* The transform runs in the dtype of ``transmission``: complex64 input gives a
  float32 FFT and matmuls, whose error (< 1e-6 relative at 1025 cells) is far
  below the engines' 1e-3 padding/band-limit differences; complex128 input
  (e.g. gradcheck) stays in float64.
* The zero padding is done by the FFT itself (``fft2(..., s=(Np, Np))``), on a
  2-3-5-smooth ``Np``. The band-limited spectrum is taken from the padded FFT;
  a separable matrix DFT ``S_K = F_K U F_K^T`` (cost ``2 K N^2``) was measured
  4x (257 cells, ``K`` = 249) to 30x (1025 cells, ``K`` = ``Np``: at 1025 cells every
  frequency of the 2.5 um grid can reach the window) slower than the FFT on CPU.
* On CPU, elements are transformed in micro-batches whose padded spectrum stays
  under 16 MiB: bigger temporaries are fresh ``mmap`` allocations whose page
  faults cost more than the FFT. Elements are taken as views
  (``transmission.unbind(0)``), so the backward pass gathers gradients with one
  ``stack`` instead of scattering each chunk into a full-size zero tensor; the
  backward of ``E S E^T`` is two matmuls and of the FFT one inverse FFT, so
  forward + backward costs about 2-3x the forward.

Both engines are differentiable (complex autograd through FFTs and matmuls),
batched over elements ``E``, and chunk over ``E`` to bound memory (optionally
with activation checkpointing per chunk).
"""

from __future__ import annotations

import collections
import functools
import math
from typing import Any

import numpy as np
import torch
from torch.utils.checkpoint import checkpoint as _checkpoint

ENGINES = ("fast", "reference")


# --------------------------------------------------------------------------- geometry
def cell_coords_m(n_cells: int, cell_pitch_m: float) -> np.ndarray:
    """Cell-centre coordinates ``[N]`` (metres, float64), axis on the centre cell."""
    return (np.arange(n_cells, dtype=np.float64) - (n_cells - 1) / 2.0) * cell_pitch_m


def pixel_centres_m(window_px: int, pixel_pitch_m: float) -> np.ndarray:
    """Pixel-centre coordinates ``[W]`` (metres): ``(j - W // 2) * P`` (see module docstring)."""
    return (np.arange(window_px, dtype=np.float64) - (window_px // 2)) * pixel_pitch_m


def sample_coords_m(window_px: int, pixel_pitch_m: float, subpixel: int) -> np.ndarray:
    """Sub-pixel sample coordinates ``[W * subpixel]`` (metres), pixel-major order.

    Pixel ``j`` is sampled at the midpoints of its ``subpixel`` sub-intervals:
    ``x_j + ((s + 1/2) / subpixel - 1/2) P`` for ``s = 0..subpixel-1``.
    """
    centres = pixel_centres_m(window_px, pixel_pitch_m)
    offs = ((np.arange(subpixel) + 0.5) / subpixel - 0.5) * pixel_pitch_m
    return (centres[:, None] + offs[None, :]).reshape(-1)


def incident_phase_rad(n_cells: int, cell_pitch_m: float, source_distance_m: float,
                       wavelength_m: float) -> np.ndarray:
    """Phase ``[N, N]`` (rad, float64) of the spherical wave from the on-axis point source."""
    x = cell_coords_m(n_cells, cell_pitch_m)
    r2 = x[:, None] ** 2 + x[None, :] ** 2
    d = float(source_distance_m)
    # sqrt(r^2+d^2) - d written stably
    return (2 * np.pi / wavelength_m) * (r2 / (np.sqrt(r2 + d * d) + d))


def band_limit_cycles_per_m(wavelength_m: float, distance_m: float, padded_extent_m: float) -> float:
    """Matsushima-Shimobaba band limit ``1 / (lambda sqrt((2 z / L)^2 + 1))`` (cycles/m)."""
    return 1.0 / (wavelength_m * math.sqrt((2.0 * distance_m / padded_extent_m) ** 2 + 1.0))


def _good_fft_size(n: int) -> int:
    """Smallest integer >= n whose prime factors are 2, 3, 5 (fast FFT sizes)."""
    m = max(int(n), 1)
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def _window_extent_m(window_px: int, pixel_pitch_m: float) -> float:
    # farthest sample from the axis on either side, doubled
    return 2.0 * (window_px // 2 + 0.5) * pixel_pitch_m


def _reach_m(n_cells: int, optics_cfg, window_px: int) -> float:
    """Largest lateral travel that can carry light from the aperture into the window: (D + w) / 2."""
    return 0.5 * ((n_cells - 1) * optics_cfg.cell_pitch_m + _window_extent_m(window_px, optics_cfg.pixel_pitch_m))


def _travel_for_freq_m(f: np.ndarray, f_total2: np.ndarray, wavelength_m: float, distance_m: float) -> np.ndarray:
    """Lateral travel ``z lambda f / sqrt(1 - lambda^2 |f|^2)`` of a plane-wave component (metres)."""
    c = np.sqrt(np.clip(1.0 - wavelength_m ** 2 * f_total2, 1e-12, None))
    return distance_m * wavelength_m * np.abs(f) / c


def _freq_for_travel(t_m: float, wavelength_m: float, distance_m: float) -> float:
    """Inverse of the 1-D travel: spatial frequency (cycles/m) whose ray moves ``t_m`` over ``distance_m``."""
    return t_m / (wavelength_m * math.hypot(distance_m, t_m))


def margin_m(optics_cfg, wavelength_m: float) -> float:
    """Guard band (metres) around the rays that matter: 2 Fresnel widths ``2 sqrt(lambda z)``."""
    return 2.0 * math.sqrt(wavelength_m * optics_cfg.sensor_distance_m)


def spread_m(optics_cfg, wavelength_m: float) -> float:
    """Lateral travel of the steepest component a cell-pitch grid can carry (diagonal Nyquist)."""
    s = wavelength_m / (2 * optics_cfg.cell_pitch_m)
    return optics_cfg.sensor_distance_m * s / math.sqrt(max(1.0 - 2 * s * s, 1e-12))


def padded_size(n_cells: int, optics_cfg, window_px: int, engine: str, wavelength_m: float,
                pad_factor: float = 2.0, margin_cells: int | None = None) -> int:
    """FFT grid size (cells per side) an engine uses for one wavelength.

    With ``reach = (D + w) / 2`` (aperture + window) and ``m`` the guard band
    (:func:`margin_m`, or ``margin_cells`` cells), the window band limit keeps
    components travelling up to ``reach + m`` and tapers them to 0 by
    ``t_cut = reach + 2 m``; a grid of extent ``L >= reach + t_cut + m/2`` cannot
    wrap any kept component back into the window.

    * ``reference``: ``L = max(pad_factor * N p, 2 reach + 2.5 m)`` (the paper's 2N grid);
    * ``fast``: ``L = 2 reach + 2.5 m`` (the smallest wrap-safe grid).
    Rounded up to a 2-3-5-smooth size.
    """
    p = optics_cfg.cell_pitch_m
    m = margin_m(optics_cfg, wavelength_m) if margin_cells is None else int(margin_cells) * p
    reach = _reach_m(n_cells, optics_cfg, window_px)
    wrap_safe = 2 * reach + 2.5 * m  # reach + t_cut + m/2 (see _operators_np)
    if engine == "reference":
        L = max(pad_factor * n_cells * p, wrap_safe)
    elif engine == "fast":
        L = wrap_safe
    else:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    return _good_fft_size(max(int(math.ceil(L / p)), n_cells))


# --------------------------------------------------------------------------- operators
@functools.lru_cache(maxsize=2)
def _operators_np(n_cells: int, n_pad: int, cell_pitch_m: float, sensor_distance_m: float,
                  source_distance_m: float, wavelength_m: float, coords_key: tuple, reach_m: float,
                  guard_m: float, crop_band: bool):
    """Incident phase, kept frequency indices, transfer function and window DFT matrix (numpy).

    Window band limit (Matsushima & Shimobaba's 2009 idea, applied to the sensor
    window instead of the whole output plane): a plane-wave component of spatial
    frequency ``f`` moves laterally ``t(f) = z lambda f / sqrt(1 - lambda^2 |f|^2)``
    over ``z``; only components with ``t <= reach = (D + w)/2`` can carry light
    from the aperture into the window. Components with ``t <= reach + guard``
    are kept (``T = 1``); a raised-cosine taper (smooth, so its edge does not
    ring into the window) takes them to 0 at ``t_cut = reach + 2 guard``. The
    result in the window is then independent of the padded size ``L`` as long
    as ``L >= reach + t_cut`` (no kept component wraps back into the window):
    both engines compute the same quantity, on different grids.
    """
    p = cell_pitch_m
    coords = np.asarray(coords_key, dtype=np.float64)
    f = np.fft.fftfreq(n_pad, d=p)  # cycles/m, FFT order
    L = n_pad * p
    t_keep = reach_m + guard_m
    t_cut = reach_m + 2.0 * guard_m
    if L < reach_m + t_cut:
        raise ValueError(f"padded grid of {n_pad} cells ({L * 1e3:.3f} mm) is too small for the window band "
                         f"limit (needs {(reach_m + t_cut) * 1e3:.3f} mm); increase the padding")
    if crop_band:
        f_cut = _freq_for_travel(t_cut, wavelength_m, sensor_distance_m)
        idx = np.nonzero(np.abs(f) <= f_cut)[0]
    else:
        idx = np.arange(n_pad)
    fk = f[idx]
    f2 = fk[None, :] ** 2 + fk[:, None] ** 2
    arg = 1.0 / wavelength_m ** 2 - f2
    prop = arg > 0
    kz = np.sqrt(np.where(prop, arg, 0.0))
    # 2 pi z (kz - 1/lambda), written stably: -|f|^2 / (kz + 1/lambda)
    phase = 2 * np.pi * sensor_distance_m * (-f2 / (kz + 1.0 / wavelength_m))
    taper = np.ones_like(f2)
    for fa in (fk[None, :], fk[:, None]):
        t = _travel_for_freq_m(fa, f2, wavelength_m, sensor_distance_m)
        u = np.clip((t - t_keep) / (t_cut - t_keep), 0.0, 1.0)
        taper = taper * 0.5 * (1.0 + np.cos(np.pi * u))
    H = np.where(prop, taper * np.exp(1j * phase), 0.0)
    # field at x: (1/Np) sum_k S_k exp(i 2 pi f_k (x + c p)), c = (N-1)/2 (cell 0 sits at index 0)
    c = (n_cells - 1) / 2.0
    E = np.exp(1j * 2 * np.pi * (coords[:, None] + c * p) * fk[None, :]) / n_pad
    inc = incident_phase_rad(n_cells, p, source_distance_m, wavelength_m)
    return inc, idx, H, E


# Device-side operator cache. Building the operators costs more than a PSF (a float64
# ``exp`` over the N x N incident wave, complex128 -> complex64 casts of H and E, host ->
# device copies), so they are built once per (geometry, wavelength, window samples, dtype,
# device) and reused, as in training where the same few wavelengths recur. Bounded LRU:
# at most _OPS_CACHE_SIZE entries and _OPS_CACHE_BYTES of tensors.
_OPS_CACHE: collections.OrderedDict[tuple, tuple] = collections.OrderedDict()
_OPS_CACHE_SIZE = 16
_OPS_CACHE_BYTES = 512 * 2 ** 20


def _ops_nbytes(ops) -> int:
    return sum(x.numel() * x.element_size() for x in ops if x is not None)


def clear_operator_cache() -> None:
    """Drop the cached propagation operators (e.g. to free device memory)."""
    _OPS_CACHE.clear()
    _operators_np.cache_clear()


def _operators(n_cells, n_pad, optics_cfg, wavelength_m, coords, crop_band, cdtype, device, window_px,
               guard_m):
    """Cached device tensors ``(inc [N, N], idx [K] or None, H [K, K], E [M, K], E^T [K, M])``."""
    args = (int(n_cells), int(n_pad), float(optics_cfg.cell_pitch_m), float(optics_cfg.sensor_distance_m),
            float(optics_cfg.source_distance_m), float(wavelength_m), tuple(np.round(coords, 15).tolist()),
            float(_reach_m(n_cells, optics_cfg, window_px)), float(guard_m), bool(crop_band))
    key = args + (cdtype, torch.device(device))
    hit = _OPS_CACHE.get(key)
    if hit is not None:
        _OPS_CACHE.move_to_end(key)
        return hit
    inc, idx, H, E = _operators_np(*args)
    # plain (non-inference) tensors, so a cache filled under inference_mode can be saved for backward later
    with torch.inference_mode(False), torch.no_grad():
        inc_t = torch.from_numpy(np.exp(1j * inc)).to(device=device, dtype=cdtype)
        idx_t = None if len(idx) == n_pad else torch.from_numpy(idx).to(device)
        H_t = torch.from_numpy(H).to(device=device, dtype=cdtype)
        E_t = torch.from_numpy(E).to(device=device, dtype=cdtype)
        ops = (inc_t, idx_t, H_t, E_t, E_t.transpose(0, 1).contiguous())
    _OPS_CACHE[key] = ops
    while len(_OPS_CACHE) > 1 and (len(_OPS_CACHE) > _OPS_CACHE_SIZE
                                   or sum(_ops_nbytes(v) for v in _OPS_CACHE.values()) > _OPS_CACHE_BYTES):
        _OPS_CACHE.popitem(last=False)
    return ops


# On CPU, tensors above glibc's largest heap-reuse size (32 MiB) are fresh mmaps whose page
# faults cost more than the FFT itself; elements are therefore transformed in micro-batches
# whose padded spectra stay below this budget (results per element are unchanged).
_CPU_BATCH_BYTES = 16 * 2 ** 20


def _micro_batch(n_pad: int, cdtype: torch.dtype, device: torch.device) -> int | None:
    if torch.device(device).type != "cpu":
        return None
    item = torch.empty((), dtype=cdtype).element_size()
    return max(1, _CPU_BATCH_BYTES // (n_pad * n_pad * item))


def _window_intensity(t: torch.Tensor, inc, idx, H, E, ET, n_pad: int) -> torch.Tensor:
    """``|U|^2`` at the window samples ``[e, M, M]`` for transmissions ``t [e, N, N]``.

    ``U = E (H o S) E^T`` with ``S`` the 2-D DFT of the zero-padded field ``t o inc`` on
    the kept frequencies ``idx`` (all when ``None``).
    """
    S = torch.fft.fft2(t * inc, s=(n_pad, n_pad))  # zero-pads at the end (cell 0 at index 0)
    if idx is not None:
        S = S.index_select(-2, idx).index_select(-1, idx)
    S = S.mul_(H)  # in place: mul's backward needs only H
    U = torch.matmul(torch.matmul(E, S), ET)
    return U.real ** 2 + U.imag ** 2


def _elements_intensity(inc, idx, H, E, ET, n_pad: int, micro: int | None, *elements: torch.Tensor) -> torch.Tensor:
    """:func:`_window_intensity` of the ``[N, N]`` views ``elements``, ``micro`` at a time -> ``[e, M, M]``."""
    step = len(elements) if micro is None else micro
    outs = []
    for g in range(0, len(elements), step):
        grp = elements[g:g + step]
        t = grp[0].unsqueeze(0) if len(grp) == 1 else torch.stack(grp)
        outs.append(_window_intensity(t, inc, idx, H, E, ET, n_pad))
    return outs[0] if len(outs) == 1 else torch.cat(outs, 0)


def _validate(transmission: torch.Tensor, wavelengths_m, optics_cfg, window_px: int):
    if not torch.is_tensor(transmission) or transmission.dim() != 3 or transmission.shape[-1] != transmission.shape[-2]:
        shape = tuple(transmission.shape) if torch.is_tensor(transmission) else type(transmission)
        raise ValueError(f"transmission must be a tensor [E, N, N], got {shape}")
    n = transmission.shape[-1]
    if n % 2 != 1:
        raise ValueError(f"transmission grid must be odd (N={n}) so the optical axis falls on a cell")
    if not transmission.is_complex():
        raise ValueError("transmission must be complex (amplitude * exp(i phase)); got a real tensor")
    wl = torch.as_tensor(wavelengths_m, dtype=torch.float64).reshape(-1).cpu()
    if wl.numel() == 1 and transmission.shape[0] != 1:
        wl = wl.expand(transmission.shape[0])
    if wl.numel() != transmission.shape[0]:
        raise ValueError(f"wavelengths_m has {wl.numel()} entries, transmission has E={transmission.shape[0]} elements")
    if not torch.all((wl > 1e-8) & (wl < 1e-4)):
        raise ValueError(f"wavelengths_m must be in metres (got {wl.min().item():.3g} .. {wl.max().item():.3g})")
    if int(window_px) < 1:
        raise ValueError(f"window_px must be >= 1, got {window_px}")
    return wl.numpy()


def _engine(transmission, wavelengths_m, optics_cfg, window_px, *, engine, subpixel, normalize,
            chunk_size, pad_factor, margin_cells, checkpoint):
    wl = _validate(transmission, wavelengths_m, optics_cfg, window_px)
    window_px = int(window_px)
    sub = int(optics_cfg.subpixel if subpixel is None else subpixel)
    if sub < 1:
        raise ValueError(f"subpixel must be >= 1, got {sub}")
    E_n, n = transmission.shape[0], transmission.shape[-1]
    cdtype = transmission.dtype
    device = transmission.device
    coords = sample_coords_m(window_px, optics_cfg.pixel_pitch_m, sub)
    q = optics_cfg.pixel_pitch_m / sub
    scale = q * q / (n * n * optics_cfg.cell_pitch_m ** 2) if normalize else q * q
    if checkpoint is None:
        checkpoint = torch.is_grad_enabled() and transmission.requires_grad and E_n > chunk_size
    # per-element views: their backward is a single stack (slicing or index_select per chunk
    # would each scatter into a full-size zero gradient)
    views = transmission.unbind(0)
    slots: list[torch.Tensor | None] = [None] * E_n
    for lam in np.unique(wl):
        sel = np.nonzero(wl == lam)[0]
        n_pad = padded_size(n, optics_cfg, window_px, engine, float(lam), pad_factor, margin_cells)
        check_padding(n, optics_cfg, window_px, float(lam), n_pad)
        guard = margin_m(optics_cfg, float(lam)) if margin_cells is None else margin_cells * optics_cfg.cell_pitch_m
        ops = _operators(n, n_pad, optics_cfg, float(lam), coords, engine == "fast", cdtype, device,
                         window_px, guard)
        micro = _micro_batch(n_pad, cdtype, device)
        for start in range(0, len(sel), chunk_size):
            part = sel[start:start + chunk_size]
            elems = [views[i] for i in part]
            if checkpoint:
                inten = _checkpoint(_elements_intensity, *ops, n_pad, micro, *elems, use_reentrant=False)
            else:
                inten = _elements_intensity(*ops, n_pad, micro, *elems)
            for i, x in zip(part, inten.unbind(0)):
                slots[i] = x
    inten = torch.stack(slots)
    pix = inten.reshape(E_n, window_px, sub, window_px, sub).sum(dim=(2, 4))
    return pix * scale


def psf_reference(transmission: torch.Tensor, wavelengths_m, optics_cfg, window_px: int, *,
                  subpixel: int | None = None, normalize: bool = True, pad_factor: float = 2.0,
                  chunk_size: int = 2, checkpoint: bool | None = None) -> torch.Tensor:
    """Reference PSFs: full padded-grid band-limited ASM + exact Fourier interpolation.

    Args:
        transmission: complex ``[E, N, N]`` metasurface transmission (N odd).
        wavelengths_m: ``[E]`` (or scalar) wavelength of each element, metres.
        optics_cfg: :class:`dkolib.config.OpticsConfig` (pitches, distances, subpixel).
        window_px: side ``W`` of the on-axis sensor window (pixels).
        subpixel: samples per pixel per axis (default ``optics_cfg.subpixel``).
        normalize: PSF = pixel energy / aperture energy (else pixel energy, see module doc).
        pad_factor: FFT grid = ``pad_factor * N`` cells per side (at least ``N + window + margin``).
        chunk_size: elements per FFT batch (memory ~ ``chunk_size * 3 * (pad N)^2 * 8`` bytes).
        checkpoint: recompute chunks in backward (default: when needed for memory).
    Returns:
        real ``[E, W, W]`` (dtype of ``transmission.real``), differentiable.
    """
    return _engine(transmission, wavelengths_m, optics_cfg, window_px, engine="reference", subpixel=subpixel,
                   normalize=normalize, chunk_size=chunk_size, pad_factor=pad_factor, margin_cells=None,
                   checkpoint=checkpoint)


def psf_fast(transmission: torch.Tensor, wavelengths_m, optics_cfg, window_px: int, *,
             subpixel: int | None = None, normalize: bool = True, margin_cells: int | None = None,
             chunk_size: int = 8, checkpoint: bool | None = None) -> torch.Tensor:
    """Fast PSFs: minimal padding, band-limited frequencies only, window samples only.

    Same arguments and result as :func:`psf_reference` (``margin_cells``: padding
    guard band in cells, default :func:`margin_m`).
    """
    return _engine(transmission, wavelengths_m, optics_cfg, window_px, engine="fast", subpixel=subpixel,
                   normalize=normalize, chunk_size=chunk_size, pad_factor=1.0, margin_cells=margin_cells,
                   checkpoint=checkpoint)


def asm_full_field(field: torch.Tensor, wavelength_m: float, optics_cfg, pad_factor: float = 2.0,
                   band_limit: bool = True) -> torch.Tensor:
    """Propagate a field ``[E, N, N]`` (already including the incident wave) by ``sensor_distance_m``.

    Returns the complex field on the whole padded grid ``[E, Np, Np]`` at the cell
    pitch (field placed centred; no normalisation: the discrete transform is
    unitary, so ``sum |out|^2 == sum |in|^2`` when nothing is band-limited away).
    """
    n = field.shape[-1]
    n_pad = _good_fft_size(int(math.ceil(pad_factor * n)))
    lo = (n_pad - n) // 2
    u = torch.nn.functional.pad(field, (lo, n_pad - n - lo, lo, n_pad - n - lo))
    p = optics_cfg.cell_pitch_m
    f = np.fft.fftfreq(n_pad, d=p)
    fx2 = f[None, :] ** 2 + f[:, None] ** 2
    arg = 1.0 / wavelength_m ** 2 - fx2
    prop = arg > 0
    kz = np.sqrt(np.where(prop, arg, 0.0))
    H = np.exp(1j * 2 * np.pi * optics_cfg.sensor_distance_m * (-fx2 / (kz + 1.0 / wavelength_m)))
    mask = prop
    if band_limit:
        flim = band_limit_cycles_per_m(wavelength_m, optics_cfg.sensor_distance_m, n_pad * p)
        mask = mask & (np.abs(f)[None, :] <= flim) & (np.abs(f)[:, None] <= flim)
    H = torch.from_numpy(np.where(mask, H, 0.0)).to(field.dtype).to(field.device)
    return torch.fft.ifft2(torch.fft.fft2(u) * H)


# --------------------------------------------------------------------------- dispatcher
def psf(source, wavelengths_m=None, optics_cfg=None, window_px: int | None = None, engine: str = "fast",
        **kwargs: Any) -> torch.Tensor:
    """PSFs ``[E, W, W]`` of a :class:`~dkolib.optics.metasurface.MetasurfaceArray` or a transmission tensor.

    ``source``: a module with ``transmission()`` (and ``wavelengths_m``, ``optics_cfg``
    used as defaults) or a complex tensor ``[E, N, N]``. ``engine``: ``'fast'`` or
    ``'reference'``. Extra keyword arguments go to the engine.
    """
    if hasattr(source, "transmission") and callable(source.transmission):
        if wavelengths_m is None:
            wavelengths_m = source.wavelengths_m
        if optics_cfg is None:
            optics_cfg = getattr(source, "optics_cfg", None)
        transmission = source.transmission()
    else:
        transmission = source
    if wavelengths_m is None or optics_cfg is None or window_px is None:
        raise ValueError("psf() needs wavelengths_m, optics_cfg and window_px (or a MetasurfaceArray that has them)")
    if engine == "fast":
        return psf_fast(transmission, wavelengths_m, optics_cfg, window_px, **kwargs)
    if engine == "reference":
        return psf_reference(transmission, wavelengths_m, optics_cfg, window_px, **kwargs)
    raise ValueError(f"engine must be one of {ENGINES}, got {engine!r} (set optics.engine)")


# --------------------------------------------------------------------------- sampling checks
def check_padding(n_cells: int, optics_cfg, window_px: int, wavelength_m: float, n_pad: int) -> None:
    """Raise ValueError if a grid of ``n_pad`` cells would wrap light into the sensor window."""
    p = optics_cfg.cell_pitch_m
    L = n_pad * p
    need = (n_cells - 1) * p + _window_extent_m(window_px, optics_cfg.pixel_pitch_m)
    if L < need:
        raise ValueError(
            f"padded grid {n_pad} cells ({L * 1e3:.3f} mm) is smaller than aperture + sensor window "
            f"({need * 1e3:.3f} mm): light would wrap into the window; use a larger pad_factor/margin")


__all__ = [
    "ENGINES", "asm_full_field", "band_limit_cycles_per_m", "cell_coords_m", "check_padding",
    "clear_operator_cache",
    "margin_m", "spread_m", "incident_phase_rad",
    "padded_size", "pixel_centres_m", "psf", "psf_fast",
    "psf_reference", "sample_coords_m",
]

# the analytic cost model lives in its own module; re-exported here, where it was first defined
from .psf_cost import count_psf_flops, psf_backward_recomputes, psf_flop_terms  # noqa: E402,F401

__all__ += ["count_psf_flops", "psf_backward_recomputes", "psf_flop_terms"]
