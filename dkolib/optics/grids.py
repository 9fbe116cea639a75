"""Sampling grids of the PSF engines: cells, sensor samples, padding, the window band limit.

The conventions are documented in :mod:`dkolib.optics.propagation` (cell and pixel
centres, the window band limit and its guard band, the cell models). Units: metres,
cycles per metre, radians.
"""

from __future__ import annotations

import math

import numpy as np

ENGINES = ("fast", "reference")
CELL_MODELS = ("staircase", "bandlimited")


def cell_model_of(optics_cfg) -> str:
    """The cell model an optics config asks for (``staircase`` when it has no ``cell_model``)."""
    model = getattr(optics_cfg, "cell_model", "staircase")
    if model not in CELL_MODELS:
        raise ValueError(f"optics.cell_model must be one of {CELL_MODELS}, got {model!r}: 'staircase' is the "
                         "field the fabricated cells make, 'bandlimited' the paper's sampled-field convention")
    return model


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


def window_cutoff_cycles_per_m(n_cells: int, optics_cfg, window_px: int, wavelength_m: float,
                               guard_m: float | None = None) -> float:
    """Highest spatial frequency (cycles/m, per axis) the window band limit lets reach the window.

    The taper's support ends where a component travels ``t_cut = reach + 2 m`` over ``z``
    (module docstring); ``guard_m`` is ``m`` (default :func:`margin_m`).
    """
    m = margin_m(optics_cfg, wavelength_m) if guard_m is None else float(guard_m)
    t_cut = _reach_m(n_cells, optics_cfg, window_px) + 2.0 * m
    return _freq_for_travel(t_cut, wavelength_m, optics_cfg.sensor_distance_m)


def subcells_per_cell(n_cells: int, optics_cfg, window_px: int, wavelength_m: float,
                      guard_m: float | None = None) -> int:
    """Sub-cells per cell (per axis) of the reference engine's staircase grid.

    The smallest ``u >= 1`` whose sub-cell Nyquist frequency ``u / (2 p)`` passes the
    window cut-off (:func:`window_cutoff_cycles_per_m`), so the grid of ``u x u`` copies
    of each cell holds every frequency of the staircase field that can reach the window.
    """
    f_cut = window_cutoff_cycles_per_m(n_cells, optics_cfg, window_px, wavelength_m, guard_m)
    return max(1, int(math.ceil(2.0 * optics_cfg.cell_pitch_m * f_cut - 1e-9)))



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
    "CELL_MODELS", "ENGINES", "band_limit_cycles_per_m", "cell_coords_m", "cell_model_of", "check_padding",
    "incident_phase_rad", "margin_m", "padded_size", "pixel_centres_m", "sample_coords_m", "spread_m",
    "subcells_per_cell", "window_cutoff_cycles_per_m",
]
