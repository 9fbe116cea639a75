"""Sampling checks of a metasurface geometry: can it be simulated, does the lens alias?

* :func:`check_sampling` raises ``ValueError`` where the simulation would be wrong
  (even cell count, aliased incident wave, a window beyond the light's reach,
  evanescent cell pitch) and warns :class:`SamplingWarning` where the focusing
  lens phase aliases at the aperture edge;
* :func:`lens_sin_theta` is the local direction sine of the imaging lens phase.

Units: metres; ``sin_theta`` values are dimensionless direction sines.
"""

from __future__ import annotations

import math
import warnings

import numpy as np


class SamplingWarning(UserWarning):
    """The metasurface sampling is marginal (e.g. the lens phase aliases at the aperture edge)."""


def lens_sin_theta(radius_m: float, optics_cfg) -> float:
    """Local ``sin(theta) = lambda |grad phase| / (2 pi)`` of the imaging lens phase at ``radius_m``."""
    z, d = optics_cfg.sensor_distance_m, optics_cfg.source_distance_m
    return radius_m / math.hypot(radius_m, z) + radius_m / math.hypot(radius_m, d)


def check_sampling(optics_cfg, n_cells: int | None = None, wavelengths_m=None,
                   window_px: int | None = None) -> dict:
    """Check that the geometry can be simulated; return a report, warn or raise.

    Raises ``ValueError`` (the simulation would be wrong, not only inaccurate) when
      * ``n_cells`` is even (the axis must fall on a cell);
      * the incident spherical wave itself aliases at the aperture corner
        (``sin(theta) > lambda / (2 p)``: move the source farther or reduce the pitch);
      * the sensor window is wider than the light can reach (window half-width
        beyond ``z * tan(theta_Nyquist) + D/2``), i.e. an empty/aliased PSF;
      * light would be evanescent at the cell-pitch Nyquist frequency
        (``p < lambda / 2``: the band-limited model no longer describes the cells).
    Warns :class:`SamplingWarning` when the lens phase that images the source onto the
    sensor has a local frequency above the cell-pitch Nyquist limit at the aperture
    edge (``sin(theta_max) > lambda / (2 p)``), i.e. the sampled lens aliases there.

    Returns a dict with, per wavelength, ``sin_theta_edge`` (on-axis edge),
    ``sin_theta_corner``, ``nyquist_sin_theta = lambda / (2 p)`` and the ratios.
    """
    n = int(optics_cfg.n_cells if n_cells is None else n_cells)
    wls = tuple(optics_cfg.wavelengths_m if wavelengths_m is None else np.atleast_1d(wavelengths_m).tolist())
    W = int(optics_cfg.render_window_px if window_px is None else window_px)
    if n % 2 != 1:
        raise ValueError(f"n_cells must be odd so the optical axis falls on a cell, got {n}")
    p, z, d = optics_cfg.cell_pitch_m, optics_cfg.sensor_distance_m, optics_cfg.source_distance_m
    r_edge = (n - 1) / 2 * p
    r_corner = math.sqrt(2) * r_edge
    report: dict = {"n_cells": n, "aperture_m": n * p, "per_wavelength": {}}
    aliased = []
    for lam in wls:
        lam = float(lam)
        nyq = lam / (2 * p)
        if nyq >= 1.0:
            raise ValueError(
                f"cell_pitch_m={p:g} is below lambda/2 ({lam / 2:g} m): the sampled field has evanescent "
                "components; use a larger cell pitch")
        src = r_corner / math.hypot(r_corner, d)
        if src > nyq:
            raise ValueError(
                f"the incident spherical wave aliases at the aperture corner at {lam * 1e9:.0f} nm "
                f"(sin theta {src:.3g} > lambda/(2p) {nyq:.3g}); increase source_distance_m or reduce cell_pitch_m")
        reach = r_edge + z * nyq / math.sqrt(1 - nyq * nyq)
        half_window = (W // 2 + 0.5) * optics_cfg.pixel_pitch_m
        if half_window > reach:
            raise ValueError(
                f"sensor window half-width {half_window * 1e6:.1f} um exceeds what light from the aperture can "
                f"reach at the cell-pitch Nyquist angle ({reach * 1e6:.1f} um) at {lam * 1e9:.0f} nm; "
                "reduce the window or the cell pitch")
        s_edge, s_corner = lens_sin_theta(r_edge, optics_cfg), lens_sin_theta(r_corner, optics_cfg)
        report["per_wavelength"][lam] = {
            "sin_theta_edge": s_edge, "sin_theta_corner": s_corner, "nyquist_sin_theta": nyq,
            "edge_over_nyquist": s_edge / nyq, "corner_over_nyquist": s_corner / nyq,
            "alias_free_radius_m": _alias_free_radius(nyq, optics_cfg),
        }
        if s_edge > nyq:
            aliased.append(f"{lam * 1e9:.0f} nm: sin(theta) {s_edge:.4f} = {s_edge / nyq:.2f} x lambda/(2p)")
    if aliased:
        warnings.warn(
            "the focusing-lens phase aliases at the aperture edge (local frequency above the cell-pitch "
            f"Nyquist limit, pitch {p * 1e6:.3g} um, f = {z * 1e3:.3g} mm, aperture {n * p * 1e3:.3g} mm): "
            + "; ".join(aliased) + ". The outer zone then diffracts into aliased orders; use a smaller "
            "cell_pitch_m or fewer cells if this matters.", SamplingWarning, stacklevel=2)
    return report


def _alias_free_radius(nyq_sin: float, optics_cfg) -> float:
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if lens_sin_theta(mid, optics_cfg) > nyq_sin:
            hi = mid
        else:
            lo = mid
    return lo
