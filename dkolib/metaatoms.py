"""Meta-atom library: cylinder radius -> complex transmission, per wavelength.

The meta-atom is a TiO2 nanocylinder, 600 nm tall, in a 300 nm square lattice
on a fused-silica substrate, lit at normal incidence **from the substrate
side** (the zeroth transmitted order leaves into air). The table
``dkolib/data/metaatom_library.csv`` was computed with meent's RCWA by
``scripts/build_metaatom_library.py`` (see :mod:`dkolib.rcwa` for geometry,
Fourier orders and conventions). Materials: ALD TiO2 from T. Siefke et al.,
Adv. Opt. Mater. 4, 1780 (2016); SiO2 from I. H. Malitson, J. Opt. Soc. Am.
55, 1205 (1965), both from meent's bundled refractiveindex.info tables.

Conventions:

- ``t`` is the power-normalised zeroth-order amplitude: ``|t|^2`` is the
  fraction of the incident power transmitted in the zeroth order (so
  ``|t| <= 1``), phase in the ``exp(-i omega t)`` convention (the phase
  grows with optical path, i.e. with the radius). Absolute phase is
  referenced from the substrate/pillar interface to the pillar top; only
  phase differences between atoms matter for a PSF.
- Radii: 35-130 nm (70 nm smallest diameter, 40 nm smallest gap at a 300 nm
  cell); wavelengths: 400-700 nm every 25 nm (the design wavelengths
  400/550/700 nm are tabulated exactly).

Lookup (:meth:`MetaAtomLibrary.transmission_at`): a cubic spline (C2,
not-a-knot) of the real and imaginary parts over the tabulated radii at each
tabulated wavelength, linear interpolation between wavelengths; exact at
tabulated (wavelength, radius) pairs and differentiable w.r.t. the radius.

CSV columns: ``wavelength_m, radius_m, t_real, t_imag, amplitude, phase_rad``
(one row per pair, a full rectangular grid).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DEFAULT_LIBRARY_PATH = Path(__file__).resolve().parent / "data" / "metaatom_library.csv"
CSV_COLUMNS = ("wavelength_m", "radius_m", "t_real", "t_imag", "amplitude", "phase_rad")
BUILD_HINT = (
    "build it with `python scripts/build_metaatom_library.py --out dkolib/data/metaatom_library.csv "
    "--convergence results/metaatoms/convergence.csv` (6-9 minutes on one core) or the "
    "corresponding snakemake rule"
)
_NM = 1e9  # the splines work on radii in nanometres to keep the coefficients O(1)
_DENSE_RADII = 2048
_PHASE_TABLE = 4096


@dataclass(frozen=True, repr=False, eq=False)
class MetaAtomLibrary:
    """Frozen table of ``transmission[L, R]`` (complex128) on ``wavelengths_m[L]`` x ``radii_m[R]``.

    Both axes in metres, strictly increasing; at least 2 wavelengths and 4 radii.
    """

    radii_m: np.ndarray
    wavelengths_m: np.ndarray
    transmission: np.ndarray

    def __post_init__(self):
        from scipy.interpolate import CubicSpline

        radii = np.asarray(self.radii_m, dtype=np.float64).copy()
        wls = np.asarray(self.wavelengths_m, dtype=np.float64).copy()
        t = np.asarray(self.transmission, dtype=np.complex128).copy()
        if radii.ndim != 1 or len(radii) < 4 or not np.all(np.diff(radii) > 0):
            raise ValueError("radii_m must be a 1-D strictly increasing array with at least 4 radii (metres)")
        if wls.ndim != 1 or len(wls) < 2 or not np.all(np.diff(wls) > 0):
            raise ValueError("wavelengths_m must be a 1-D strictly increasing array with at least 2 entries (metres)")
        if t.shape != (len(wls), len(radii)):
            raise ValueError(
                f"transmission has shape {t.shape}, expected [L, R] = {(len(wls), len(radii))}"
            )
        if not np.all(np.isfinite(t)):
            raise ValueError("transmission contains NaN or inf; rebuild the library")
        if radii[0] <= 0 or radii[-1] > 1e-5 or wls[0] < 1e-7 or wls[-1] > 2e-5:
            raise ValueError("radii_m / wavelengths_m do not look like metres (e.g. 100e-9 for 100 nm)")
        for arr in (radii, wls, t):
            arr.setflags(write=False)
        object.__setattr__(self, "radii_m", radii)
        object.__setattr__(self, "wavelengths_m", wls)
        object.__setattr__(self, "transmission", t)
        spline = CubicSpline(radii * _NM, t, axis=1)  # complex, per wavelength
        # spline.c: [4, R-1, L], coefficient of (x - x_i)^(3-k); store as [L, R-1, 4]
        coeffs = np.ascontiguousarray(np.moveaxis(spline.c, (0, 1, 2), (2, 1, 0)))
        object.__setattr__(self, "_coeffs", torch.from_numpy(coeffs))
        object.__setattr__(self, "_knots_nm", torch.from_numpy(radii * _NM))
        object.__setattr__(self, "_wls", torch.tensor(wls))
        object.__setattr__(self, "_phase_tables", {})

    # ------------------------------------------------------------------ I/O
    @classmethod
    def load(cls, path: str | Path | None = None) -> "MetaAtomLibrary":
        """Read the library CSV (default: the packaged ``dkolib/data/metaatom_library.csv``)."""
        import pandas as pd

        path = DEFAULT_LIBRARY_PATH if path is None else Path(path)
        if not path.exists():
            raise FileNotFoundError(f"meta-atom library {path} is missing; {BUILD_HINT}")
        df = pd.read_csv(path)
        missing = [c for c in ("wavelength_m", "radius_m", "t_real", "t_imag") if c not in df.columns]
        if missing:
            raise ValueError(f"{path} lacks columns {missing} (expected {list(CSV_COLUMNS)}); {BUILD_HINT}")
        wls = np.unique(df.wavelength_m.to_numpy(np.float64))
        radii = np.unique(df.radius_m.to_numpy(np.float64))
        if len(df) != len(wls) * len(radii) or df.duplicated(["wavelength_m", "radius_m"]).any():
            raise ValueError(
                f"{path} is not a full (wavelength x radius) grid: {len(df)} rows for "
                f"{len(wls)} wavelengths x {len(radii)} radii; {BUILD_HINT}"
            )
        df = df.sort_values(["wavelength_m", "radius_m"])
        t = (df.t_real.to_numpy() + 1j * df.t_imag.to_numpy()).reshape(len(wls), len(radii))
        return cls(radii_m=radii, wavelengths_m=wls, transmission=t)

    def __repr__(self) -> str:
        return (
            f"MetaAtomLibrary(radii {self.r_min_m * 1e9:.1f}-{self.r_max_m * 1e9:.1f} nm x {len(self.radii_m)}, "
            f"wavelengths {self.wavelengths_m[0] * 1e9:.0f}-{self.wavelengths_m[-1] * 1e9:.0f} nm x "
            f"{len(self.wavelengths_m)})"
        )

    @property
    def r_min_m(self) -> float:
        return float(self.radii_m[0])

    @property
    def r_max_m(self) -> float:
        return float(self.radii_m[-1])

    # -------------------------------------------------------------- lookup
    def _wavelength_index(self, wavelength_m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bracket index j [same shape] and linear weight w of grid point j+1."""
        wl = wavelength_m.detach().to(torch.float64)
        lo, hi = float(self.wavelengths_m[0]), float(self.wavelengths_m[-1])
        tol = 1e-6 * hi
        if not torch.all(torch.isfinite(wl)) or wl.min() < lo - tol or wl.max() > hi + tol:
            raise ValueError(
                f"wavelength_m outside the library range [{lo:.4g}, {hi:.4g}] m "
                f"(got {wl.min().item():.4g} .. {wl.max().item():.4g}); wavelengths are in metres"
            )
        wl = wl.clamp(lo, hi)
        j = (torch.searchsorted(self._wls, wl, right=True) - 1).clamp(0, len(self.wavelengths_m) - 2)
        w = (wl - self._wls[j]) / (self._wls[j + 1] - self._wls[j])
        w = torch.where(w.abs() < 1e-6, torch.zeros_like(w), w)
        w = torch.where((1 - w).abs() < 1e-6, torch.ones_like(w), w)
        return j, w

    def transmission_at(self, radius_m: torch.Tensor, wavelength_m: torch.Tensor | float) -> torch.Tensor:
        """Complex transmission (complex64) of cylinders of ``radius_m`` at ``wavelength_m``.

        ``radius_m``: tensor of any shape ``[E, ...]`` (metres) inside
        ``[r_min_m, r_max_m]``; ``wavelength_m``: a float / 0-d tensor, or a
        tensor ``[E]`` (one wavelength per leading index of ``radius_m``,
        broadcast over the remaining dims). Returns a tensor of
        ``radius_m``'s (broadcast) shape; differentiable w.r.t. ``radius_m``.
        """
        r = torch.as_tensor(radius_m)
        if not torch.is_floating_point(r):
            r = r.to(torch.float64)
        lo, hi = self.r_min_m, self.r_max_m
        tol = 1e-6 * (hi - lo)
        rd = r.detach()
        if rd.numel() and (not torch.all(torch.isfinite(rd)) or rd.min() < lo - tol or rd.max() > hi + tol):
            raise ValueError(
                f"radius_m outside the library range [{lo:.4g}, {hi:.4g}] m (got {rd.min().item():.4g} .. "
                f"{rd.max().item():.4g}); parametrise radii with radius_from_latent() to stay inside"
            )
        device = r.device
        wl = torch.as_tensor(wavelength_m, dtype=torch.float64).to("cpu")
        if wl.ndim > 1:
            raise ValueError(f"wavelength_m must be a scalar or 1-D [E], got shape {tuple(wl.shape)}")
        if wl.ndim == 1 and (r.ndim == 0 or r.shape[0] != wl.shape[0]):
            raise ValueError(
                f"wavelength_m has shape {tuple(wl.shape)}; it must match radius_m's first dim "
                f"(radius_m shape {tuple(r.shape)})"
            )
        j, w = self._wavelength_index(wl)
        # Linear in wavelength: blend the (small) spline-coefficient tables first, in float64,
        # then evaluate once in complex64 (memory-lean for millions of cells).
        w_c = w.unsqueeze(-1).unsqueeze(-1)
        coeffs = ((1.0 - w_c) * self._coeffs[j] + w_c * self._coeffs[j + 1]).to(torch.complex64).to(device)
        knots = self._knots_nm.to(device)
        x = r.to(torch.float64).clamp(lo, hi) * _NM
        k = (torch.searchsorted(knots, x.detach().contiguous(), right=True) - 1).clamp(0, len(self.radii_m) - 2)
        s = (x - knots[k]).to(torch.float32)  # offset from the interval's left knot, nm
        if wl.ndim == 0:  # coeffs [R-1, 4]
            def coef(m):
                return coeffs[k, m]
        else:  # coeffs [E, R-1, 4]
            e = torch.arange(wl.shape[0], device=device).reshape((-1,) + (1,) * (r.ndim - 1)).expand(k.shape)

            def coef(m):
                return coeffs[e, k, m]
        t = coef(0) * s + coef(1)
        t = t * s + coef(2)
        t = t * s + coef(3)
        return t

    # ---------------------------------------------------- reverse lookup
    def _phase_table(self, wavelength_m: float, target_amplitude: float) -> np.ndarray:
        key = (float(wavelength_m), float(target_amplitude))
        if key not in self._phase_tables:
            dense = np.linspace(self.r_min_m, self.r_max_m, _DENSE_RADII)
            with torch.no_grad():
                t = self.transmission_at(torch.from_numpy(dense), float(wavelength_m)).to(torch.complex128).numpy()
            phases = np.arange(_PHASE_TABLE) * (2 * np.pi / _PHASE_TABLE)
            target = target_amplitude * np.exp(1j * phases)
            best = np.argmin(np.abs(t[None, :] - target[:, None]), axis=1)
            self._phase_tables[key] = dense[best]
        return self._phase_tables[key]

    def radius_for_phase(
        self, phase_rad: torch.Tensor, wavelength_m: float, target_amplitude: float = 1.0
    ) -> torch.Tensor:
        """Radius (metres) whose transmission is closest to ``target_amplitude * exp(i phase_rad)``.

        Searched over 2048 radii spanning the library and a 4096-step phase
        table (phase wrapped modulo 2 pi, resolution 1.5 mrad). Returns a
        tensor of ``phase_rad``'s shape (float64 unless ``phase_rad`` is a
        floating tensor, whose dtype is kept); not differentiable.
        """
        if not 0.0 < target_amplitude <= 1.0:
            raise ValueError(f"target_amplitude={target_amplitude!r} must lie in (0, 1]")
        phase = torch.as_tensor(phase_rad)
        dtype = phase.dtype if torch.is_floating_point(phase) else torch.float64
        table = self._phase_table(float(wavelength_m), target_amplitude)
        p = phase.detach().to(torch.float64).cpu().numpy()
        if not np.all(np.isfinite(p)):
            raise ValueError("phase_rad contains NaN or inf")
        idx = np.rint(np.mod(p, 2 * np.pi) / (2 * np.pi) * _PHASE_TABLE).astype(np.int64) % _PHASE_TABLE
        return torch.from_numpy(table[idx]).to(dtype=dtype, device=phase.device)

    def phase_coverage_rad(self, wavelength_m: float, min_amplitude: float = 0.0) -> float:
        """Phase coverage at ``wavelength_m``: 2 pi minus the largest gap of the reachable phases.

        Phases of 2048 radii spanning the library, on the circle; 2 pi means
        full coverage. Only radii with ``|t| >= min_amplitude`` count (with
        the default 0, a narrow low-transmission resonance can add phase
        that is of little use in a lens; pass e.g. 0.5 to exclude it).
        Returns 0 when no radius qualifies.
        """
        dense = torch.linspace(self.r_min_m, self.r_max_m, _DENSE_RADII, dtype=torch.float64)
        with torch.no_grad():
            t = self.transmission_at(dense, float(wavelength_m)).to(torch.complex128).numpy()
        t = t[np.abs(t) >= min_amplitude]
        if len(t) == 0:
            return 0.0
        ph = np.sort(np.mod(np.angle(t), 2 * np.pi))
        gaps = np.diff(np.concatenate([ph, [ph[0] + 2 * np.pi]]))
        return float(2 * np.pi - gaps.max())


class IdealPhaseAtom:
    """Idealised meta-atom: unit amplitude, phase equal to its parameter, for any wavelength."""

    def transmission_at(self, phase_rad: torch.Tensor, wavelength_m=None) -> torch.Tensor:
        """``exp(i phase_rad)`` as complex64, same shape as ``phase_rad``; ``wavelength_m`` is ignored."""
        phase = torch.as_tensor(phase_rad)
        if not torch.is_floating_point(phase):
            phase = phase.to(torch.float32)
        phase = phase.to(torch.float32)
        return torch.polar(torch.ones_like(phase), phase)

    def __repr__(self) -> str:
        return "IdealPhaseAtom()"


def radius_from_latent(latent: torch.Tensor, library: MetaAtomLibrary) -> torch.Tensor:
    """Unconstrained parameter -> radius (metres): ``r_min + (r_max - r_min) * sigmoid(latent)``."""
    latent = torch.as_tensor(latent)
    return library.r_min_m + (library.r_max_m - library.r_min_m) * torch.sigmoid(latent)


def latent_from_radius(radius_m, library: MetaAtomLibrary) -> torch.Tensor:
    """Inverse of :func:`radius_from_latent` (radius clamped inside the open interval first)."""
    r = torch.as_tensor(radius_m)
    if not torch.is_floating_point(r):
        r = r.to(torch.float64)
    u = (r - library.r_min_m) / (library.r_max_m - library.r_min_m)
    eps = 1e-6 if r.dtype == torch.float64 else 1e-4
    u = u.clamp(eps, 1 - eps)
    return torch.log(u) - torch.log1p(-u)


__all__ = [
    "MetaAtomLibrary",
    "IdealPhaseAtom",
    "radius_from_latent",
    "latent_from_radius",
    "DEFAULT_LIBRARY_PATH",
]

