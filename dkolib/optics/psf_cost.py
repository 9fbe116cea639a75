"""Analytic cost model of the PSF engines: real FLOPs per element, per kind of operation.

Used by the compute budgets of the equal-budget study (:mod:`dkolib.dko.budget`); checked
operation by operation against the engines themselves in ``tests/test_flop_accounting.py``.
"""

from __future__ import annotations

import inspect
import math

import numpy as np

from .propagation import (ENGINES, cell_model_of, padded_size, psf_fast, psf_reference, subcells_per_cell,
                          window_cutoff_cycles_per_m)


def _kept_frequencies(n_cells: int, cfg, window_px: int, engine: str, wavelength_m: float, n_pad: int) -> int:
    """``K``: frequencies per axis the engine keeps, as ``_operators_np`` (fast: inside the taper's
    support, for the staircase beyond the grid's Nyquist frequency too; reference: every bin of its
    FFT grid, ``n_pad`` cells or, for the staircase, ``n_pad u`` sub-cells)."""
    staircase = cell_model_of(cfg) == "staircase"
    f_cut = window_cutoff_cycles_per_m(n_cells, cfg, window_px, wavelength_m)
    if engine != "fast":
        return n_pad * (subcells_per_cell(n_cells, cfg, window_px, wavelength_m) if staircase else 1)
    if staircase:
        return 2 * int(np.floor(f_cut * n_pad * cfg.cell_pitch_m)) + 1
    return int(np.sum(np.abs(np.fft.fftfreq(n_pad, d=cfg.cell_pitch_m)) <= f_cut))


def psf_flop_terms(n_cells: int, window_px: int, subpixel: int, engine: str = "fast", optics_cfg=None,
                   wavelength_m: float | None = None, pad_factor: float = 2.0) -> dict[str, float]:
    """Real FLOPs of one PSF forward of ONE element, per kind of operation.

    With ``N`` cells, FFT grid ``Np`` (:func:`padded_size`; the reference engine's staircase
    grid has ``u`` sub-cells per cell, :func:`~dkolib.optics.propagation.subcells_per_cell`, and
    transforms ``u Np``), ``K`` kept frequencies per axis (fast: those inside the taper's support,
    beyond the grid's Nyquist frequency for the staircase; reference: its whole grid) and
    ``M = window_px * subpixel`` samples per axis; a complex multiply-add is 8 real
    FLOPs, a complex multiply 6:

    * ``"fft"``: one complex 2-D FFT of ``Np x Np`` points, ``5 Np^2 log2(Np^2)``
      (the usual ``5 n log2 n`` convention for a complex FFT of ``n`` points; the zero
      padding is an input of the FFT, not extra work);
    * ``"matmul"``: the two complex matmuls ``(E S) E^T``, ``8 (M K^2 + M^2 K)``;
    * ``"pointwise"``: incident-wave product ``6 N^2``, transfer-function product
      ``6 K^2``, ``|U|^2`` ``3 M^2``, pixel sums and scaling ``M^2``.

    ``optics_cfg``: :class:`~dkolib.config.OpticsConfig` (default: the ``default``
    profile geometry); ``wavelength_m`` (metres; default: the shortest configured)
    fixes the padding and the band limit, so elements at other wavelengths can cost
    more or less (:func:`count_psf_flops` per element).
    """
    from ..config import OpticsConfig
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if int(n_cells) < 1 or int(window_px) < 1 or int(subpixel) < 1:
        raise ValueError(f"n_cells, window_px and subpixel must be >= 1, got {n_cells}, {window_px}, {subpixel}")
    cfg = optics_cfg if optics_cfg is not None else OpticsConfig()
    lam = float(min(cfg.wavelengths_m) if wavelength_m is None else wavelength_m)
    n = int(n_cells)
    n_pad = padded_size(n, cfg, window_px, engine, lam, pad_factor)
    K = _kept_frequencies(n, cfg, window_px, engine, lam, n_pad)
    if engine == "reference":
        n_pad = K  # its FFT grid
    M = int(window_px) * int(subpixel)
    return {"fft": 5.0 * n_pad ** 2 * math.log2(n_pad ** 2),
            "matmul": 8.0 * (M * K * K + M * M * K),
            "pointwise": float(6 * n * n + 6 * K * K + 4 * M * M)}


def count_psf_flops(n_cells: int, window_px: int, subpixel: int, engine: str = "fast", optics_cfg=None,
                    wavelength_m: float | None = None, pad_factor: float = 2.0) -> float:
    """Real FLOPs of one PSF forward of ONE element: the sum of :func:`psf_flop_terms`.

    Same arguments. The count is per element *at its wavelength*: summing over an
    array means one call per element wavelength (:func:`dkolib.dko.budget.psf_simulation_flops`).
    A backward pass costs :data:`dkolib.dko.budget.BACKWARD_FACTOR` x this, plus one
    more forward when the engine recomputes it (:func:`psf_backward_recomputes`).
    """
    return float(sum(psf_flop_terms(n_cells, window_px, subpixel, engine, optics_cfg, wavelength_m,
                                    pad_factor).values()))


def psf_backward_recomputes(n_elements: int, engine: str, chunk_size: int | None = None,
                            checkpoint: bool | None = None) -> bool:
    """Whether a differentiated :func:`psf` call recomputes its forward during backward.

    The engines checkpoint activations per chunk when ``checkpoint`` is left at None
    and there are more elements than ``chunk_size`` (default: the engine's own
    default, :func:`psf_fast` 8, :func:`psf_reference` 2); the backward pass then runs
    every chunk's forward again before differentiating it.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if checkpoint is not None:
        return bool(checkpoint)
    if chunk_size is None:
        fn = psf_fast if engine == "fast" else psf_reference
        chunk_size = inspect.signature(fn).parameters["chunk_size"].default
    return int(n_elements) > int(chunk_size)


__all__ = ["count_psf_flops", "psf_backward_recomputes", "psf_flop_terms"]
