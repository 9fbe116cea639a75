"""Meta-atom library: cylinder radius -> complex transmission, per wavelength.

The meta-atom is a TiO2 nanocylinder, 600 nm tall, in a 300 nm square lattice
on a fused-silica substrate, lit at normal incidence **from the substrate
side** (the zeroth transmitted order leaves into air). The table
``dkolib/optics/data/metaatom_library.csv`` was computed with meent's RCWA by
``scripts/build_metaatom_library.py`` (see :mod:`dkolib.optics.rcwa` for geometry,
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

For speed the spline is evaluated through a cubic Hermite table on a uniform
radius grid (the spline's own values and derivatives at the nodes; C1 in the
radius). When the tabulated radii are uniformly spaced (the packaged
library) the nodes are the knots and the table reproduces the spline exactly
(up to float32 rounding); otherwise the grid has ``_DENSE_CELLS`` cells and
agrees with the spline to ~1e-6. The cell index is computed by arithmetic,
every gather is a float32 lookup into a small per-wavelength table (cached),
and the backward pass uses the tabulated derivative ``dt/dr`` directly. The
original spline evaluation is kept as ``MetaAtomLibrary._transmission_reference``.

CSV columns: ``wavelength_m, radius_m, t_real, t_imag, amplitude, phase_rad``
(one row per pair, a full rectangular grid).

Your own library
----------------
:func:`load_atom` is the one factory for the meta-atom model that
``optics.meta_atom`` names: ``'tio2'`` (the packaged library above),
``'ideal'`` (:class:`IdealPhaseAtom`) or a path to a CSV (relative paths are
resolved against :func:`dkolib.root.project_root`). A CSV needs the columns
``wavelength_m``, ``t_real``, ``t_imag`` and exactly one size column
(:data:`SIZE_COLUMNS`: ``radius_m``, ``width_m`` or ``diameter_m``, metres),
one row per (wavelength, size) pair on a full grid (at least 2 wavelengths and
4 sizes); extra columns are ignored. The size plays the role of the radius
everywhere (``MetasurfaceArray.radii_m`` then holds widths, say); ``t`` follows
the conventions above (power-normalised, ``|t| <= 1``).
``scripts/build_metaatom_library.py`` writes such a file for other pillar and
substrate materials.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from ..errors import DataError, InputError

DEFAULT_LIBRARY_PATH = Path(__file__).resolve().parent / "data" / "metaatom_library.csv"
CSV_COLUMNS = ("wavelength_m", "radius_m", "t_real", "t_imag", "amplitude", "phase_rad")
SIZE_COLUMNS = ("radius_m", "width_m", "diameter_m")
"""Accepted names of a library CSV's size column (metres); exactly one must be present."""
REQUIRED_COLUMNS = ("wavelength_m", "t_real", "t_imag")
ATOM_NAMES = ("tio2", "ideal")
"""Built-in values of ``optics.meta_atom``; anything else is a path to a library CSV."""
CSV_FORMAT = (
    f"a meta-atom library CSV has the columns {', '.join(REQUIRED_COLUMNS)} and one size column "
    f"({' or '.join(SIZE_COLUMNS)}), in metres, one row per (wavelength, size) pair of a full grid"
)
BUILD_HINT = (
    "build it with `python scripts/build_metaatom_library.py --out dkolib/optics/data/metaatom_library.csv "
    "--convergence results/metaatoms/convergence.csv` (about 50 minutes on one core) or the "
    "corresponding snakemake rule"
)
_NM = 1e9  # the splines work on radii in nanometres to keep the coefficients O(1)
_DENSE_RADII = 2048
_PHASE_TABLE = 4096
_DENSE_CELLS = 4096  # Hermite cells over the radius range when the tabulated radii are not uniform
_CHUNK = 32768  # CPU chunk (elements): cache-resident and below torch's intra-op grain size
_TABLE_CACHE_SIZE = 64


def _hermite_cells(f: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Per-cell cubic coefficients ``[4, ..., M + 1]`` (powers 0..3 of the in-cell offset s in [0, 1]).

    ``f``/``d``: node values and derivatives (already scaled by the cell width) ``[..., M + 1]``.
    Cell ``M`` is the last cell's cubic re-expanded at its right end, so that an index
    ``floor(u)`` with ``u`` up to (or slightly past) ``M`` needs no clamp.
    """
    f0, f1, d0, d1 = f[..., :-1], f[..., 1:], d[..., :-1], d[..., 1:]
    a2 = 3 * (f1 - f0) - 2 * d0 - d1
    a3 = 2 * (f0 - f1) + d0 + d1
    c = np.stack([f0, d0, a2, a3])
    last = c[..., -1]
    pad = np.stack([last.sum(0), last[1] + 2 * last[2] + 3 * last[3], last[2] + 3 * last[3], last[3]])
    return np.concatenate([c, pad[..., None]], axis=-1)


def _hermite_index(r, a, b, dtype):
    """Cell index (trunc of ``u = a * r + b``, u >= 0 by the range check) and in-cell offset s."""
    u = r * a
    u.add_(b)
    i = u.to(torch.int32 if u.device.type == "cpu" else torch.int64)
    s = u.frac_()
    return i, (s if s.dtype == dtype else s.to(dtype))


def _hermite_poly(i, s, oc, dc, tab):
    """Horner evaluation of the gathered cell cubics: ``oc[:, part] = t``, ``dc[:, part] = dt/ds``.

    ``i``, ``s``: 1-D; ``oc``/``dc``: [m, 2] (dc may be None); ``tab``: [4 (power), 2 (re, im), cells].
    """
    g3 = torch.empty_like(s)
    g2 = torch.empty_like(s)
    dp = torch.empty_like(s) if dc is not None else None
    for part in (0, 1):
        torch.index_select(tab[3, part], 0, i, out=g3)
        torch.index_select(tab[2, part], 0, i, out=g2)
        if dc is not None:
            torch.addcmul(g2, g3, s, value=1.5, out=dp)  # (3 a3 s + 2 a2) / 2
        p = g2.addcmul_(g3, s)  # a3 s + a2
        g1 = torch.index_select(tab[1, part], 0, i, out=g3)
        if dc is not None:
            torch.addcmul(g1, dp, s, value=2, out=dc[:, part])  # a1 + 2 a2 s + 3 a3 s^2
        p = g1.addcmul_(p, s)
        g0 = torch.index_select(tab[0, part], 0, i, out=g2)
        torch.addcmul(g0, p, s, out=oc[:, part])


def _hermite_eval(r, table, rows, a, b, need_grad, chunked):
    """Evaluate the Hermite table at ``u = a * r + b``; returns (t, dt/ds) complex (dt/ds None unless asked).

    ``r``: contiguous; ``table``: [4 (power), 2 (re, im), U * n_row]; ``rows``: None (one
    wavelength, row 0) or a list of E row indices, one per leading slice of ``r``.
    """
    dtype = table.dtype
    n_row = table.shape[-1] // (1 if rows is None else max(rows) + 1)
    lead = 1 if rows is None else len(rows)
    out = torch.empty(r.shape + (2,), dtype=dtype, device=r.device)
    dt = torch.empty(r.shape + (2,), dtype=dtype, device=r.device) if need_grad else None
    rf, of = r.reshape(lead, -1), out.view(lead, -1, 2)
    df = dt.view(lead, -1, 2) if need_grad else None
    if chunked:  # CPU: cache-sized single-threaded blocks, one wavelength row at a time
        for e in range(lead):
            row = 0 if rows is None else rows[e]
            tab = table[:, :, row * n_row:(row + 1) * n_row]
            for c0 in range(0, rf.shape[1], _CHUNK):
                c1 = min(c0 + _CHUNK, rf.shape[1])
                i, s = _hermite_index(rf[e, c0:c1], a, b, dtype)
                _hermite_poly(i, s, of[e, c0:c1], None if df is None else df[e, c0:c1], tab)
    else:  # one vectorised pass (GPU, small inputs, many short leading slices)
        i, s = _hermite_index(rf, a, b, dtype)
        if rows is not None:
            i.add_(torch.tensor(rows, dtype=i.dtype, device=i.device).mul_(n_row).unsqueeze(1))
        _hermite_poly(i.reshape(-1), s.reshape(-1), out.view(-1, 2), None if dt is None else dt.view(-1, 2), table)
    return torch.view_as_complex(out), (torch.view_as_complex(dt) if need_grad else None)


class _HermiteLookup(torch.autograd.Function):
    """``t(r)`` from a Hermite table; backward ``grad_r = Re(conj(grad_t) * dt/dr)``."""

    @staticmethod
    def forward(ctx, r, table, rows, a, b, chunked):
        t, dt = _hermite_eval(r, table, rows, a, b, ctx.needs_input_grad[0], chunked)
        if dt is not None:
            ctx.save_for_backward(dt)
        ctx.a, ctx.r_dtype, ctx.chunked = a, r.dtype, chunked
        return t

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_t):
        (dt,) = ctx.saved_tensors
        g = torch.view_as_real(grad_t.to(dt.dtype).contiguous()).reshape(-1, 2)
        d = torch.view_as_real(dt).reshape(-1, 2)
        grad_r = torch.empty(dt.shape, dtype=d.dtype, device=d.device)
        gf = grad_r.view(-1)
        step = _CHUNK if ctx.chunked else max(gf.numel(), 1)
        for c0 in range(0, gf.numel(), step):
            c1 = min(c0 + step, gf.numel())
            o = torch.mul(g[c0:c1, 0], d[c0:c1, 0], out=gf[c0:c1])
            o.addcmul_(g[c0:c1, 1], d[c0:c1, 1]).mul_(ctx.a)  # d s / d r = a
        return grad_r.to(ctx.r_dtype), None, None, None, None, None


def _wavelengths_for(wavelength_m, radius_m: torch.Tensor) -> torch.Tensor:
    """``wavelength_m`` as a CPU float64 tensor: a scalar, or 1-D ``[E]`` matching ``radius_m``'s first dim."""
    wl = torch.as_tensor(wavelength_m, dtype=torch.float64).to("cpu")
    if wl.ndim > 1:
        raise ValueError(f"wavelength_m must be a scalar or 1-D [E], got shape {tuple(wl.shape)}")
    if wl.ndim == 1 and (radius_m.ndim == 0 or radius_m.shape[0] != wl.shape[0]):
        raise ValueError(
            f"wavelength_m has shape {tuple(wl.shape)}; it must match radius_m's first dim "
            f"(radius_m shape {tuple(radius_m.shape)})"
        )
    return wl


@dataclass(frozen=True, repr=False, eq=False)
class MetaAtomLibrary:
    """Frozen table of ``transmission[L, R]`` (complex128) on ``wavelengths_m[L]`` x ``radii_m[R]``.

    Both axes in metres, strictly increasing; at least 2 wavelengths and 4 radii.
    ``size_column`` names what the "radii" are (``'radius_m'``; a user library may
    tabulate ``'width_m'`` or ``'diameter_m'``, see :data:`SIZE_COLUMNS`).
    """

    radii_m: np.ndarray
    wavelengths_m: np.ndarray
    transmission: np.ndarray
    size_column: str = "radius_m"

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
        # Hermite table on a uniform radius grid: the knots when they are uniform (then the table is
        # the spline itself), else _DENSE_CELLS cells. Values and derivatives come from the spline.
        steps = np.diff(radii)
        if np.allclose(steps, steps.mean(), rtol=1e-6, atol=0.0):
            nodes_nm = radii * _NM
        else:
            nodes_nm = np.linspace(radii[0], radii[-1], _DENSE_CELLS + 1) * _NM
        h_nm = (nodes_nm[-1] - nodes_nm[0]) / (len(nodes_nm) - 1)
        f = t if len(nodes_nm) == len(radii) else spline(nodes_nm)  # [L, M + 1] complex
        d = spline(nodes_nm, 1) * h_nm
        cells = _hermite_cells(np.stack([f.real, f.imag], 1), np.stack([d.real, d.imag], 1))  # [4, L, 2, M+1]
        object.__setattr__(self, "_cells", np.ascontiguousarray(np.moveaxis(cells, 1, 0)))  # [L, 4, 2, M+1]
        # u = a * r + b is the (fractional) cell coordinate of a radius in metres
        n_cells = len(nodes_nm) - 1
        object.__setattr__(self, "_cell_scale", n_cells / (radii[-1] - radii[0]))
        object.__setattr__(self, "_cell_offset", -radii[0] * n_cells / (radii[-1] - radii[0]))
        object.__setattr__(self, "_table_cache", {})

    # ------------------------------------------------------------------ I/O
    @classmethod
    def load(cls, path: str | Path | None = None) -> MetaAtomLibrary:
        """Read a library CSV (default: the packaged ``dkolib/optics/data/metaatom_library.csv``).

        The format is :data:`CSV_FORMAT` (see the module docstring). Raises
        ``FileNotFoundError`` for a missing file and :class:`~dkolib.errors.DataError`
        for a malformed one (missing or ambiguous columns, non-numeric values, not a
        full grid, values not in metres, ``|t| > 1``).
        """
        import pandas as pd

        packaged = path is None or Path(path).resolve() == DEFAULT_LIBRARY_PATH
        path = DEFAULT_LIBRARY_PATH if path is None else Path(path)
        hint = BUILD_HINT if packaged else f"{CSV_FORMAT}; scripts/build_metaatom_library.py writes one"
        if not path.is_file():
            raise FileNotFoundError(f"meta-atom library {path} is missing; {hint}")
        try:
            df = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise DataError(f"cannot read meta-atom library {path} as CSV ({err}); {hint}") from err
        sizes = [c for c in SIZE_COLUMNS if c in df.columns]
        missing = [c for c in REQUIRED_COLUMNS if c not in df.columns] + ([] if sizes else [" or ".join(SIZE_COLUMNS)])
        if missing:
            raise DataError(f"{path} lacks the column(s) {missing} (it has {list(df.columns)}); {hint}")
        if len(sizes) > 1:
            raise DataError(f"{path} has several size columns {sizes}: keep exactly one of {list(SIZE_COLUMNS)}")
        size = sizes[0]
        cols = ["wavelength_m", size, "t_real", "t_imag"]
        values = df[cols].apply(pd.to_numeric, errors="coerce")
        bad = [c for c in cols if not np.all(np.isfinite(values[c].to_numpy(np.float64)))]
        if bad:
            raise DataError(f"{path}: column(s) {bad} hold empty, non-numeric or infinite values; {hint}")
        wls = np.unique(values.wavelength_m.to_numpy(np.float64))
        radii = np.unique(values[size].to_numpy(np.float64))
        if len(values) != len(wls) * len(radii) or values.duplicated(["wavelength_m", size]).any():
            raise DataError(
                f"{path} is not a full (wavelength x {size}) grid: {len(values)} rows for "
                f"{len(wls)} wavelengths x {len(radii)} sizes (every pair exactly once); {hint}"
            )
        values = values.sort_values(["wavelength_m", size])
        t = (values.t_real.to_numpy() + 1j * values.t_imag.to_numpy()).reshape(len(wls), len(radii))
        if np.abs(t).max() > 1.0 + 1e-3:
            raise DataError(f"{path}: max |t| = {np.abs(t).max():.4g} > 1; t must be the power-normalised "
                            "zeroth-order amplitude of a passive meta-atom (|t|^2 = transmitted power fraction)")
        try:
            return cls(radii_m=radii, wavelengths_m=wls, transmission=t, size_column=size)
        except ValueError as err:
            raise DataError(f"{path}: {err}; {hint}") from err

    def __repr__(self) -> str:
        return (
            f"MetaAtomLibrary({self.size_column[:-2]} {self.r_min_m * 1e9:.1f}-{self.r_max_m * 1e9:.1f} nm x "
            f"{len(self.radii_m)}, "
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

    def _check_radius(self, r: torch.Tensor) -> bool:
        """Raise on radii outside the library (tolerance 1e-6 of the range); True if any needs clamping."""
        lo, hi = self.r_min_m, self.r_max_m
        tol = 1e-6 * (hi - lo)
        if r.numel() == 0:
            return False
        mn, mx = (v.item() for v in torch.aminmax(r.detach()))
        if not (mn >= lo - tol and mx <= hi + tol):  # also catches NaN and inf
            raise ValueError(
                f"radius_m outside the library range [{lo:.4g}, {hi:.4g}] m (got {mn:.4g} .. "
                f"{mx:.4g}); parametrise radii with radius_from_latent() to stay inside"
            )
        return mn < lo or mx > hi

    def _table(self, wavelengths: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """Hermite cell table [4, 2, U * (M + 1)] for the wavelengths (linear blend of tabulated rows), cached."""
        key = (wavelengths, dtype, device)
        tab = self._table_cache.get(key)
        if tab is None:
            j, w = self._wavelength_index(torch.tensor(wavelengths, dtype=torch.float64))
            j, w = j.numpy(), w.numpy()[:, None, None, None]
            rows = (1.0 - w) * self._cells[j] + w * self._cells[j + 1]  # [U, 4, 2, M+1], float64
            rows = np.where(w == 0.0, self._cells[j], np.where(w == 1.0, self._cells[j + 1], rows))
            flat = np.ascontiguousarray(np.moveaxis(rows, 0, 2).reshape(4, 2, -1))
            tab = torch.from_numpy(flat).to(dtype=dtype, device=device)
            if len(self._table_cache) >= _TABLE_CACHE_SIZE:
                self._table_cache.clear()
            self._table_cache[key] = tab
        return tab

    def _lookup(self, radius_m, wavelength_m, dtype: torch.dtype = torch.float32,
                chunked: bool | None = None) -> torch.Tensor:
        """Hermite-table lookup in ``dtype`` (float32: complex64 result, float64: complex128).

        ``chunked``: None picks cache-sized blocks on the CPU for large inputs, one vectorised
        pass otherwise.
        """
        r = torch.as_tensor(radius_m)
        if not torch.is_floating_point(r):
            r = r.to(torch.float64)
        if self._check_radius(r):
            r = r.clamp(self.r_min_m, self.r_max_m)
        if r.dtype not in (torch.float32, torch.float64) or (dtype == torch.float64 and r.dtype != dtype):
            r = r.to(dtype if dtype == torch.float64 else torch.float32)
        wl = _wavelengths_for(wavelength_m, r)
        self._wavelength_index(wl)  # range check
        if wl.ndim == 0:
            wavelengths, rows = (float(wl),), None
        else:
            uniq, inverse = torch.unique(wl, return_inverse=True)
            wavelengths, rows = tuple(uniq.tolist()), inverse.tolist()
            if len(wavelengths) == 1:
                rows = None
        table = self._table(wavelengths, dtype, r.device)
        if chunked is None:
            per_row = r.numel() // (1 if rows is None else len(rows))
            chunked = r.device.type == "cpu" and r.numel() > _CHUNK and per_row >= 4096
        return _HermiteLookup.apply(r.contiguous(), table, rows, self._cell_scale, self._cell_offset, chunked)

    def transmission_at(self, radius_m: torch.Tensor, wavelength_m: torch.Tensor | float) -> torch.Tensor:
        """Complex transmission (complex64) of cylinders of ``radius_m`` at ``wavelength_m``.

        ``radius_m``: tensor of any shape ``[E, ...]`` (metres) inside
        ``[r_min_m, r_max_m]``; ``wavelength_m``: a float / 0-d tensor, or a
        tensor ``[E]`` (one wavelength per leading index of ``radius_m``,
        broadcast over the remaining dims). Returns a tensor of
        ``radius_m``'s (broadcast) shape; differentiable w.r.t. ``radius_m``
        (first derivatives; the backward pass is not itself differentiable).
        """
        return self._lookup(radius_m, wavelength_m, torch.float32)

    def _transmission_reference(self, radius_m: torch.Tensor, wavelength_m: torch.Tensor | float) -> torch.Tensor:
        """Slow reference for :meth:`transmission_at`: direct evaluation of the spline coefficients.

        Same contract as :meth:`transmission_at` (kept to validate the fast Hermite-table path).

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
        wl = _wavelengths_for(wavelength_m, r)
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


def resolve_library_path(path: str | Path) -> Path:
    """A library CSV path as given, or relative to :func:`dkolib.root.project_root` when relative."""
    from ..root import project_root

    path = Path(path).expanduser()
    return path if path.is_absolute() else project_root() / path


def load_atom(name_or_path: str | Path = "tio2"):
    """The meta-atom model that ``optics.meta_atom`` names (the one factory used everywhere).

    ``'tio2'``: the packaged TiO2 library (:meth:`MetaAtomLibrary.load`); ``'ideal'``: an
    :class:`IdealPhaseAtom`; anything else: the path of a library CSV (format in the module
    docstring; a relative path is taken from the project root). Raises ``FileNotFoundError``
    for a missing file, :class:`~dkolib.errors.DataError` for a malformed one and
    :class:`~dkolib.errors.InputError` for a value that is neither a name nor a ``.csv`` path.
    """
    if isinstance(name_or_path, str) and name_or_path in ATOM_NAMES:
        return IdealPhaseAtom() if name_or_path == "ideal" else MetaAtomLibrary.load()
    if not isinstance(name_or_path, (str, Path)) or Path(name_or_path).suffix.lower() != ".csv":
        raise InputError(f"optics.meta_atom must be one of {list(ATOM_NAMES)} or the path of a .csv meta-atom "
                         f"library, got {name_or_path!r}")
    path = resolve_library_path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"meta-atom library {path} is missing (optics.meta_atom = {str(name_or_path)!r}; a relative path is "
            f"taken from the project root, the folder that holds config/ or $DKOLIB_ROOT); {CSV_FORMAT}; "
            "scripts/build_metaatom_library.py --out <file> writes one")
    return MetaAtomLibrary.load(path)


__all__ = [
    "ATOM_NAMES",
    "DEFAULT_LIBRARY_PATH",
    "SIZE_COLUMNS",
    "IdealPhaseAtom",
    "MetaAtomLibrary",
    "latent_from_radius",
    "load_atom",
    "radius_from_latent",
    "resolve_library_path",
]

