"""Can a metasurface aperture render a kernel at all? The passband test of a kernel bank.

Physics
-------
A metasurface of width ``D = n_cells * cell_pitch_m`` sits at ``z = sensor_distance_m``
in front of the sensor. Light reaching a sensor point near the axis comes from
aperture points at lateral offsets up to ``D / 2``, i.e. as plane waves of spatial
frequency up to ``D / (2 lambda z)`` per axis: the coherent transfer function of
the aperture passes ``|f_x|, |f_y| <= D / (2 lambda z)`` (a ray / stationary-phase
argument, valid for a sensor window small compared with ``D``). The PSF is the
intensity ``|field|^2``, whose spectrum is the autocorrelation of the field's:
it passes ``|f_x|, |f_y| <= f_c = D / (lambda z)`` (the support of the incoherent
OTF). Every kernel the array can form (``g+ PSF+ - g- PSF-``) has no energy above
``f_c``, whatever the meta-atoms do.

The sensor samples at ``pixel_pitch_m`` ``P``, so a ``k x k`` kernel's spectrum (its
DFT on the pixel grid) fills the Nyquist square ``|f_x|, |f_y| <= f_N = 1 / (2 P)``.
:func:`realisability` reports, per kernel ``(o, i)`` at input channel ``i``'s
wavelength, the fraction of the kernel's energy (``sum K^2``, by Parseval the sum
of ``|DFT|^2``) at frequencies outside the passband: the part no metasurface pair
can produce. ``f_c >= f_N`` (square passband) means every kernel is in band.

Passband shapes: ``'square'`` (default) is the support above for the square
metasurfaces of :class:`~dkolib.optics.metasurface.MetasurfaceArray`; ``'disk'``,
``|f| <= f_c``, is the support of a circular aperture of diameter ``D`` (the disk
inscribed in the square; stricter).

Not modelled: the OTF's fall-off inside the passband (frequencies near ``f_c``
need much more light than low ones), sensor pixel integration (a sinc that
attenuates but cuts nothing), and off-axis (field-dependent) PSF changes.

Numerics: the DFT is zero-padded to ``n_fft x n_fft`` bins of ``1 / (n_fft P)``
cycles/m and each bin is counted in or out of band by its centre, so the
fraction is exact up to the bins that the passband edge crosses (at most
``4 (L / delta + 1)`` of ``n_fft^2`` bins for an edge of length ``L``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..errors import InputError

PASSBANDS = ("square", "disk")


class RealisabilityWarning(UserWarning):
    """Kernels carry energy outside the spatial frequencies the aperture can render."""


@dataclass
class Realisability:
    """Result of :func:`realisability`.

    Attributes:
        table: one row per kernel ``(o, i)``: ``out_channel``, ``in_channel``,
            ``wavelength_m``, ``cutoff_cycles_per_m`` (``f_c = D / (lambda z)``),
            ``nyquist_cycles_per_m`` (``1 / (2 P)``), ``cutoff_over_nyquist``,
            ``energy`` (``sum K^2``), ``out_of_band_fraction`` (NaN for an all-zero
            kernel) and ``realisable`` (fraction <= threshold).
        summary: ``n_kernels``, ``n_over_threshold``, ``threshold``, ``passband``,
            ``aperture_m``, ``sensor_distance_m``, ``pixel_pitch_m``,
            ``out_of_band_fraction_total`` (energy-weighted over all kernels),
            ``out_of_band_fraction_max``, ``cutoff_over_nyquist_min``.
    """

    table: pd.DataFrame
    summary: dict


def passband_cutoff_cycles_per_m(optics_cfg, wavelength_m: float) -> float:
    """Intensity-PSF (incoherent OTF) cutoff ``f_c = D / (lambda z)`` in cycles/m, ``D = n_cells * cell_pitch_m``."""
    aperture_m = optics_cfg.n_cells * optics_cfg.cell_pitch_m
    return aperture_m / (float(wavelength_m) * optics_cfg.sensor_distance_m)


def _band_energies(kernels: torch.Tensor, pixel_pitch_m: float, cutoff_cycles_per_m: float, passband: str,
                   n_fft: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(outside, total)`` energies ``[...]`` of kernels ``[..., k, k]`` (float64, on their device,
    differentiable): the sum of ``|DFT|^2`` over the bins outside the passband, and over all bins."""
    if passband not in PASSBANDS:
        raise InputError(f"passband must be one of {PASSBANDS}, got {passband!r}")
    k = kernels.shape[-1]
    if kernels.dim() < 2 or kernels.shape[-2] != k:
        raise InputError(f"kernels must be [..., k, k], got {tuple(kernels.shape)}")
    if n_fft < k:
        raise InputError(f"n_fft ({n_fft}) must be at least the kernel size ({k})")
    f = torch.fft.fftfreq(n_fft, d=float(pixel_pitch_m), dtype=torch.float64).to(kernels.device)
    fy, fx = f[:, None], f[None, :]
    if passband == "square":
        inside = (fx.abs() <= cutoff_cycles_per_m) & (fy.abs() <= cutoff_cycles_per_m)
    else:
        inside = fx * fx + fy * fy <= cutoff_cycles_per_m ** 2
    power = torch.fft.fft2(kernels.to(torch.float64), s=(n_fft, n_fft)).abs().square()
    return (power * (~inside)).sum((-2, -1)), power.sum((-2, -1))


def out_of_band_fraction(kernels: torch.Tensor, pixel_pitch_m: float, cutoff_cycles_per_m: float,
                         passband: str = "square", n_fft: int = 256) -> torch.Tensor:
    """Fraction of each kernel's energy outside the passband ``[...]`` (NaN for all-zero kernels).

    Args:
        kernels: ``[..., k, k]`` real kernels on the sensor pixel grid.
        pixel_pitch_m: sensor pixel pitch ``P`` (metres).
        cutoff_cycles_per_m: passband edge ``f_c`` (cycles/m).
        passband: ``'square'`` (``|f_x|, |f_y| <= f_c``) or ``'disk'`` (``|f| <= f_c``).
        n_fft: DFT size per axis (``>= k``); bins are ``1 / (n_fft P)`` apart.
    """
    outside, total = _band_energies(kernels.detach().cpu(), pixel_pitch_m, cutoff_cycles_per_m, passband, n_fft)
    return torch.where(total > 0, outside / torch.where(total > 0, total, torch.ones_like(total)),
                       torch.full_like(total, float("nan")))


def passband_penalty(kernels: torch.Tensor, optics_cfg, wavelengths_m=None, passband: str = "square",
                     n_fft: int = 64) -> torch.Tensor:
    """Differentiable energy-weighted out-of-band fraction of a kernel bank (scalar, in ``[0, 1]``).

    ``sum_(o,i) E_out(o, i) / sum_(o,i) E(o, i)`` with the energies of :func:`out_of_band_fraction`
    (kernel ``(o, i)`` against input channel ``i``'s passband ``D / (lambda_i z)``). Added to the
    stage-1 loss (``stage1.passband_weight``) it teaches the electronic network kernels that the
    aperture can render; 0 when every kernel is in band (e.g. when ``D / (lambda z)`` exceeds the
    sensor's Nyquist frequency at every wavelength).

    Args:
        kernels: ``[C_out, C_in, k, k]`` (gradients flow to it).
        optics_cfg, wavelengths_m, passband, n_fft: as :func:`realisability`.
    """
    if kernels.dim() != 4:
        raise InputError(f"kernels must be [C_out, C_in, k, k], got {tuple(kernels.shape)}")
    wls = input_wavelengths_m(int(kernels.shape[1]), optics_cfg, wavelengths_m)
    outside, total = zip(*(_band_energies(kernels[:, i], optics_cfg.pixel_pitch_m,
                                          passband_cutoff_cycles_per_m(optics_cfg, lam), passband, n_fft)
                           for i, lam in enumerate(wls)))
    return (torch.stack(outside).sum() / torch.stack(total).sum().clamp_min(1e-300)).to(kernels.dtype)


def realisability(kernels: torch.Tensor, optics_cfg, wavelengths_m=None, threshold: float = 0.05,
                  passband: str = "square", n_fft: int = 256, warn: bool = True) -> Realisability:
    """Per kernel, the fraction of its energy outside the aperture's passband (see module docstring).

    Args:
        kernels: ``[C_out, C_in, k, k]`` signed kernels (e.g. a conv weight) on the sensor pixel grid.
        optics_cfg: :class:`dkolib.config.OpticsConfig` (``n_cells``, ``cell_pitch_m``,
            ``sensor_distance_m``, ``pixel_pitch_m``, ``wavelengths_m``).
        wavelengths_m: one wavelength (metres) per input channel (default: the first ``C_in``
            of ``optics_cfg.wavelengths_m``).
        threshold: out-of-band fraction above which a kernel counts as not realisable.
        passband: ``'square'`` (the square aperture) or ``'disk'`` (inscribed circular aperture).
        n_fft: DFT bins per axis.
        warn: issue a :class:`RealisabilityWarning` when some kernel exceeds ``threshold``.
    """
    if not torch.is_tensor(kernels) or kernels.dim() != 4 or kernels.shape[-1] != kernels.shape[-2]:
        shape = tuple(kernels.shape) if torch.is_tensor(kernels) else type(kernels).__name__
        raise InputError(f"kernels must be a tensor [C_out, C_in, k, k], got {shape}")
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"threshold must lie in [0, 1], got {threshold}")
    c_out, c_in = int(kernels.shape[0]), int(kernels.shape[1])
    wls = input_wavelengths_m(c_in, optics_cfg, wavelengths_m)
    nyquist = 1.0 / (2.0 * optics_cfg.pixel_pitch_m)
    rows = []
    for i, lam in enumerate(wls):
        cutoff = passband_cutoff_cycles_per_m(optics_cfg, lam)
        frac = out_of_band_fraction(kernels[:, i], optics_cfg.pixel_pitch_m, cutoff, passband, n_fft)
        energy = kernels[:, i].detach().to(torch.float64).cpu().square().sum((-2, -1))
        for o in range(c_out):
            rows.append({"out_channel": o, "in_channel": i, "wavelength_m": lam, "cutoff_cycles_per_m": cutoff,
                         "nyquist_cycles_per_m": nyquist, "cutoff_over_nyquist": cutoff / nyquist,
                         "energy": float(energy[o]), "out_of_band_fraction": float(frac[o])})
    table = pd.DataFrame(rows).sort_values(["out_channel", "in_channel"], ignore_index=True)
    table["realisable"] = ~(table["out_of_band_fraction"] > threshold)
    lit = table["energy"] > 0
    total_energy = float(table.loc[lit, "energy"].sum())
    summary = {
        "n_kernels": len(table),
        "n_over_threshold": int((~table["realisable"]).sum()),
        "threshold": float(threshold),
        "passband": passband,
        "aperture_m": optics_cfg.n_cells * optics_cfg.cell_pitch_m,
        "sensor_distance_m": optics_cfg.sensor_distance_m,
        "pixel_pitch_m": optics_cfg.pixel_pitch_m,
        "out_of_band_fraction_total": (float((table.loc[lit, "out_of_band_fraction"] * table.loc[lit, "energy"]).sum())
                                       / total_energy) if total_energy > 0 else math.nan,
        "out_of_band_fraction_max": float(table["out_of_band_fraction"].max()) if lit.any() else math.nan,
        "cutoff_over_nyquist_min": float(table["cutoff_over_nyquist"].min()),
    }
    if warn and summary["n_over_threshold"]:
        worst = table.loc[table["out_of_band_fraction"].idxmax()]
        warnings.warn(
            f"{summary['n_over_threshold']} of {len(table)} kernels have more than {threshold:.0%} of their energy "
            f"outside the spatial frequencies the aperture can render (energy-weighted out-of-band fraction "
            f"{summary['out_of_band_fraction_total']:.3f}; worst: kernel ({int(worst.out_channel)}, "
            f"{int(worst.in_channel)}) at {worst.wavelength_m * 1e9:.0f} nm, {worst.out_of_band_fraction:.3f}, "
            f"cutoff D/(lambda z) = {worst.cutoff_over_nyquist:.2f} x the sensor Nyquist frequency). "
            "Raise D/z (more cells, a larger cell pitch or a shorter sensor_distance_m) or use smoother kernels.",
            RealisabilityWarning, stacklevel=2)
    return Realisability(table=table, summary=summary)


def input_wavelengths_m(n_in: int, optics_cfg, wavelengths_m=None) -> tuple[float, ...]:
    """One wavelength (metres) per input channel: the first ``n_in`` of ``wavelengths_m`` or the config's.

    Raises :class:`~dkolib.errors.InputError` when there are fewer wavelengths than input channels.
    """
    source = "wavelengths_m" if wavelengths_m is not None else "optics.wavelengths_m"
    wls = tuple(float(w) for w in np.atleast_1d(
        optics_cfg.wavelengths_m if wavelengths_m is None else np.asarray(wavelengths_m, dtype=np.float64)))
    if len(wls) < n_in:
        raise InputError(f"{n_in} input channels need {n_in} wavelengths (one per channel, metres), but {source} "
                         f"has {len(wls)}: {wls}; pass wavelengths_m=(...) with one entry per input channel")
    if not all(1e-8 < w < 1e-4 for w in wls[:n_in]):
        raise InputError(f"wavelengths must be in metres (e.g. 550e-9), got {wls[:n_in]}")
    return wls[:n_in]


__all__ = ["PASSBANDS", "Realisability", "RealisabilityWarning", "input_wavelengths_m", "out_of_band_fraction",
           "passband_cutoff_cycles_per_m", "realisability"]
