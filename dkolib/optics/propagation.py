"""Point-spread functions of metasurfaces: two angular-spectrum engines and their cost model.

(Checks that a geometry can be sampled live in :mod:`dkolib.optics.sampling`.)

Physical model (shared by both engines)
---------------------------------------
* Metasurface plane: ``N x N`` cells (``N`` odd) at ``cell_pitch_m`` ``p``; cell
  ``n`` sits at ``x_n = (n - (N-1)/2) p``, so the optical axis passes through the
  centre cell. What field the cells make is ``optics_cfg.cell_model``:

  - ``staircase`` (the default, and every profile's): each cell is a uniform
    ``p x p`` square of its transmission, as the mask builds it
    (:mod:`dkolib.fab.layout` gives every pillar in a cell the cell's radius). The
    spectrum is the cells' discrete-time Fourier transform (periodic in ``1/p``)
    times ``p^2 sinc(p f_x) sinc(p f_y)``, at every frequency the window band limit
    lets reach the window, beyond the grid's Nyquist frequency ``1/(2p)`` too: at
    the profiles' D/z of 0.256 the window receives frequencies up to 1.2-2.4 x
    Nyquist. The incident wave is taken constant over a cell at its centre value
    (its phase changes by ``k x p / d`` < 1e-3 rad across a cell for ``d`` >= 1 m).
  - ``bandlimited``: the grid values are *samples* of a field band-limited to
    ``|f| < 1/(2p)`` (the standard discrete angular-spectrum convention, the
    paper's, also used by D-Flat's ASM, which nearest-neighbour upsamples the
    cells when asked for an output grid finer than the cell pitch or a
    ``manual_upsample_factor``). Its interpolating kernel is a sinc that reaches
    the whole grid, so its window values also move slightly with the padding.

  The two agree for a phase that is smooth over many cells; where the phase
  changes by a large fraction of 2 pi from cell to cell (trained designs are
  white at the cell scale) the staircase sends the light of ``1 - mean(sinc^2)``
  over the band (0.40) to angles outside the band-limited picture, and a focusing
  lens at the profiles' aperture differs by 15-40 % in PSF. The staircase model
  is checked against a direct Rayleigh-Sommerfeld integral over the cells in
  ``tests/test_psf_fabricated.py``.
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
  is evaluated *exactly* (no interpolation error: the propagated field is a
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
  that full-grid result by exact Fourier (trigonometric) interpolation. For the
  staircase, each cell is first repeated ``u x u`` times
  (:func:`subcells_per_cell`: the smallest ``u`` whose sub-cell Nyquist frequency
  passes the window cut-off) and the spectrum multiplied by the sub-cell's
  ``sinc(p f / u)``: the same staircase, computed on another grid than the fast
  engine's replicas.
* :func:`asm_full_field` (not a PSF engine) returns the full output plane at the
  cell pitch, with the whole-plane Matsushima-Shimobaba cut-off instead of the
  window taper (used by the energy-conservation test).
* :func:`psf_fast`: the same physics with the smallest padding that keeps the
  window exact (``L = D + w + 2.5 m``, :func:`padded_size`), only the frequencies
  inside the taper's support, and the sensor-window samples only: ``U = E (S o H) E^T`` with
  precomputed ``E [M, K]`` per wavelength, cost ``O(Np^2 log Np + M K^2)``. For the
  staircase the ``K`` frequencies ``k / L``, ``|k / L| <= f_cut``, may pass the grid's
  Nyquist frequency: bin ``k mod Np`` of the FFT is read for each (the replicas),
  times the cell's ``sinc(p f)`` per axis, so ``K`` (and the matmul cost) grows with
  the cut-off instead of stopping at ``Np``.
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

from .grids import (  # noqa: F401  (re-exported: the grids were first defined here)
    CELL_MODELS, ENGINES, _freq_for_travel, _good_fft_size, _reach_m, _travel_for_freq_m,
    band_limit_cycles_per_m, cell_coords_m, cell_model_of, check_padding, incident_phase_rad, margin_m,
    padded_size, pixel_centres_m, sample_coords_m, spread_m, subcells_per_cell, window_cutoff_cycles_per_m,
)
# --------------------------------------------------------------------------- operators
@functools.lru_cache(maxsize=2)
def _operators_np(n_cells: int, n_pad: int, cell_pitch_m: float, sensor_distance_m: float,
                  source_distance_m: float, wavelength_m: float, coords_key: tuple, reach_m: float,
                  guard_m: float, crop_band: bool, cell_model: str = "bandlimited", subcells: int = 1):
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
    L = n_pad * p
    t_keep = reach_m + guard_m
    t_cut = reach_m + 2.0 * guard_m
    if L < reach_m + t_cut:
        raise ValueError(f"padded grid of {n_pad} cells ({L * 1e3:.3f} mm) is too small for the window band "
                         f"limit (needs {(reach_m + t_cut) * 1e3:.3f} mm); increase the padding")
    f_cut = _freq_for_travel(t_cut, wavelength_m, sensor_distance_m)
    # sub-cells per cell of the transformed grid: the reference engine's staircase only
    sub = int(subcells) if (cell_model == "staircase" and not crop_band) else 1
    aperture = None  # per-axis spectrum of one cell's (or sub-cell's) square, p sinc(p f) / p
    if cell_model == "staircase" and crop_band:
        # every frequency the window can receive, beyond the grid's Nyquist frequency too: the
        # cells' DTFT is periodic in 1/p, so frequency k / L reads FFT bin k mod n_pad (replicas)
        k_max = int(math.floor(f_cut * L))
        kk = np.arange(-k_max, k_max + 1)
        fk = kk / L
        idx = np.mod(kk, n_pad)
        aperture = np.sinc(p * fk)
    else:
        # bandlimited: one period of the grid; staircase reference: the grid of `subcells` x
        # `subcells` sub-cells per cell, fine enough that its Nyquist frequency passes f_cut
        f = np.fft.fftfreq(n_pad * sub, d=p / sub)  # cycles/m, FFT order
        idx = np.nonzero(np.abs(f) <= f_cut)[0] if crop_band else np.arange(n_pad * sub)
        fk = f[idx]
        if cell_model == "staircase":
            aperture = np.sinc(p / sub * fk)
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
    if aperture is not None:
        taper = taper * aperture[None, :] * aperture[:, None]
    H = np.where(prop, taper * np.exp(1j * phase), 0.0)
    # field at x: (1/Np) sum_k S_k exp(i 2 pi f_k (x + c q)), c = (N sub - 1)/2 with sample pitch q = p / sub
    # (cell or sub-cell 0 sits at FFT index 0); the transform's length n_pad sub
    c = (n_cells * sub - 1) / 2.0
    E = np.exp(1j * 2 * np.pi * (coords[:, None] + c * p / sub) * fk[None, :]) / (n_pad * sub)
    inc = incident_phase_rad(n_cells, p, source_distance_m, wavelength_m)
    return inc, (None if np.array_equal(idx, np.arange(n_pad * sub)) else idx), H, E


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
               guard_m, cell_model="bandlimited", subcells=1):
    """Cached device tensors ``(inc [N, N], idx [K] or None, H [K, K], E [M, K], E^T [K, M])``."""
    args = (int(n_cells), int(n_pad), float(optics_cfg.cell_pitch_m), float(optics_cfg.sensor_distance_m),
            float(optics_cfg.source_distance_m), float(wavelength_m), tuple(np.round(coords, 15).tolist()),
            float(_reach_m(n_cells, optics_cfg, window_px)), float(guard_m), bool(crop_band), str(cell_model),
            int(subcells))
    key = args + (cdtype, torch.device(device))
    hit = _OPS_CACHE.get(key)
    if hit is not None:
        _OPS_CACHE.move_to_end(key)
        return hit
    inc, idx, H, E = _operators_np(*args)
    # plain (non-inference) tensors, so a cache filled under inference_mode can be saved for backward later
    with torch.inference_mode(False), torch.no_grad():
        inc_t = torch.from_numpy(np.exp(1j * inc)).to(device=device, dtype=cdtype)
        idx_t = None if idx is None else torch.from_numpy(idx).to(device)
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


def _micro_batch(n_side: int, cdtype: torch.dtype, device: torch.device) -> int | None:
    """Elements per micro-batch whose ``n_side x n_side`` spectra stay under the CPU budget (None: all)."""
    if torch.device(device).type != "cpu":
        return None
    item = torch.empty((), dtype=cdtype).element_size()
    return max(1, _CPU_BATCH_BYTES // (n_side * n_side * item))


def _window_intensity(t: torch.Tensor, inc, idx, H, E, ET, n_pad: int, subcells: int = 1) -> torch.Tensor:
    """``|U|^2`` at the window samples ``[e, M, M]`` for transmissions ``t [e, N, N]``.

    ``U = E (H o S) E^T`` with ``S`` the 2-D DFT of the zero-padded field ``t o inc`` (each
    cell repeated ``subcells x subcells`` times: the reference engine's staircase grid), of
    length ``n_pad``, read at the kept frequency bins ``idx`` (all when ``None``; a bin may
    repeat: the staircase's replicas beyond the grid's Nyquist frequency).
    """
    field = t * inc
    if subcells > 1:
        field = field.repeat_interleave(subcells, dim=-1).repeat_interleave(subcells, dim=-2)
    S = torch.fft.fft2(field, s=(n_pad, n_pad))  # zero-pads at the end (cell 0 at index 0)
    if idx is not None:
        S = S.index_select(-2, idx).index_select(-1, idx)
    S = S.mul_(H)  # in place: mul's backward needs only H
    U = torch.matmul(torch.matmul(E, S), ET)
    return U.real ** 2 + U.imag ** 2


def _elements_intensity(inc, idx, H, E, ET, n_pad: int, subcells: int, micro: int | None,
                        *elements: torch.Tensor) -> torch.Tensor:
    """:func:`_window_intensity` of the ``[N, N]`` views ``elements``, ``micro`` at a time -> ``[e, M, M]``."""
    step = len(elements) if micro is None else micro
    outs = []
    for g in range(0, len(elements), step):
        grp = elements[g:g + step]
        t = grp[0].unsqueeze(0) if len(grp) == 1 else torch.stack(grp)
        outs.append(_window_intensity(t, inc, idx, H, E, ET, n_pad, subcells))
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
    cell_model = cell_model_of(optics_cfg)
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
        up = subcells_per_cell(n, optics_cfg, window_px, float(lam), guard) \
            if (engine == "reference" and cell_model == "staircase") else 1
        ops = _operators(n, n_pad, optics_cfg, float(lam), coords, engine == "fast", cdtype, device,
                         window_px, guard, cell_model, up)
        n_fft = n_pad * up
        micro = _micro_batch(max(n_fft, ops[2].shape[-1]), cdtype, device)
        for start in range(0, len(sel), chunk_size):
            part = sel[start:start + chunk_size]
            elems = [views[i] for i in part]
            if checkpoint:
                inten = _checkpoint(_elements_intensity, *ops, n_fft, up, micro, *elems, use_reentrant=False)
            else:
                inten = _elements_intensity(*ops, n_fft, up, micro, *elems)
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


__all__ = [
    "CELL_MODELS", "ENGINES", "asm_full_field", "band_limit_cycles_per_m", "cell_coords_m", "cell_model_of",
    "check_padding", "clear_operator_cache", "incident_phase_rad", "margin_m", "padded_size", "pixel_centres_m",
    "psf", "psf_fast", "psf_reference", "sample_coords_m", "spread_m", "subcells_per_cell",
    "window_cutoff_cycles_per_m",
]

# the analytic cost model lives in its own module; re-exported here, where it was first defined
from .psf_cost import count_psf_flops, psf_backward_recomputes, psf_flop_terms  # noqa: E402,F401

__all__ += ["count_psf_flops", "psf_backward_recomputes", "psf_flop_terms"]
