"""GDSII mask layout of a designed metasurface array: nanopillars on the meta-atom lattice.

What is drawn
-------------
* Units: user unit 1 um, database unit 1 nm (``UNIT_M``, ``PRECISION_M``); every coordinate
  in the file is a whole number of nanometres.
* Pillars: layer 1, datatype 0 (``PILLAR_LAYER``, ``DATATYPE``). Radii are quantised to
  ``quantum_m`` (default 1 nm): drawn radius ``= round(r / quantum_m) * quantum_m``. One GDS
  cell per distinct drawn radius, named ``R`` + the radius in picometres (7 digits, e.g.
  ``R0100000`` = 100 nm), holds one circle centred on its origin: gdstk's polygon with every
  vertex within ``tolerance_m`` of the circle, scaled so that its area is ``pi r^2`` (the
  pillar's fill factor, which sets the meta-atom's phase, is the designed one).
* Aperture: layer 2, datatype 0 (``APERTURE_LAYER``): each metasurface's ``N p x N p``
  square. The simulation lets no light through outside it (a mask's opaque field).

From simulation cells to pillars (the local periodic approximation)
-------------------------------------------------------------------
The meta-atom library was computed by RCWA for an infinite square lattice of identical
pillars at period ``a = unit_cell_m`` (300 nm); the simulation samples the metasurface on
``N x N`` cells of pitch ``p = cell_pitch_m`` (2.5 um, ~8.33 periods), cell ``n`` centred at
``x_n = (n - (N-1)/2) p`` (:func:`dkolib.optics.propagation.cell_coords_m`). The pillars of
one metasurface sit on a square lattice of period ``a`` with a site on the optical axis:
site ``j`` at ``j a`` for ``|j| <= J = floor((N p - a) / (2 a))`` on each axis, i.e. every
site whose whole unit cell lies inside the aperture (``2J + 1`` sites per axis: 541 for 65
cells, 8541 for the paper's 1025). Every site takes the radius of the simulation cell its
centre falls in, cell ``n`` spanning ``[x_n - p/2, x_n + p/2)`` (a site exactly on a
boundary belongs to the cell on its + side). So a cell's pillars form a rectangular block of
8 or 9 sites per axis, each pillar among neighbours of its own radius except at the cell's
edge: the same local periodic approximation under which the library's phase is used in the
simulation. ``unit_cell_m`` must be a whole number of nm so that the lattice does not drift.

Frames and placement
--------------------
* Inside a metasurface cell (``MS`` + 5-digit element index): origin on the optical axis,
  ``x`` along the radius map's axis 1 (``cell_col``), ``y`` along axis 0 (``cell_row``), both
  increasing with the index: the frame of the simulation, in which the sensor window's pixel
  ``[j0, j1]`` sits at ``(y, x) = ((j0 - W//2) P, (j1 - W//2) P)``. The sensor must be laid out
  in the same frame (mirroring the mask mirrors every kernel).
* dkolib's optics gives no physical placement: each element's PSF is simulated on its own
  axis and its sensor image is read as a whole image (:mod:`dkolib.optics.render`), so the top
  cell ``TOP`` places the metasurfaces on a documented grid: element ``e = (o n_in + i) 2 + s``
  at row ``e // n_cols``, column ``e % n_cols``, its axis at ``(column, -row) (N p + gap_m)``
  (element 0 on the origin, rows going down in reading order). The default ``n_cols`` is the
  smallest multiple of ``2 n_in`` not below ``sqrt(E)``, so each column holds one (input
  colour, sign) and the grid is near square (48 elements: 12 x 4; 384: 24 x 16). An export
  of some elements keeps the positions they have in the full array.

References and file size
------------------------
Pillars are placed by GDS array references (AREF, ``columns x rows`` at spacing ``a``): one
per horizontal run of neighbouring cells of one cell row with equal drawn radius (at least
one per simulation cell holding sites; runs over ``MAX_REPEAT`` sites are split, the GDSII
count limit). The file is streamed one metasurface at a time (``gdstk.GdsWriter``) into a
temporary file renamed over the target when complete. The GDS timestamp is fixed so that a
design always gives the same bytes. :func:`estimate_layout_cost` predicts the counts and
bytes without writing, from record sizes measured on tiny exports.
"""

from __future__ import annotations

import datetime
import functools
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ..io import atomic_path

UNIT_M = 1e-6
PRECISION_M = 1e-9
PILLAR_LAYER = 1
APERTURE_LAYER = 2
DATATYPE = 0
MAX_REPEAT = 32767  # GDSII COLROW holds 2-byte signed counts
MAX_POINTS = 199  # gdstk fractures polygons with more vertices (write_gds/GdsWriter default)
XY_BYTES_PER_POINT = 8  # GDSII XY record: two 4-byte signed integers per point
TOP_CELL = "TOP"
LIBRARY_NAME = "DKOLIB"
TIMESTAMP = datetime.datetime(2000, 1, 1)
_DBU_PER_UNIT = round(UNIT_M / PRECISION_M)


@dataclass(frozen=True)
class PillarLattice:
    """Pillar sites of one metasurface along one axis (both axes alike), see module docstring.

    Attributes:
        n_cells: ``N`` simulation cells per side; ``cell_pitch_m``: ``p`` (m).
        pitch_dbu: lattice period ``a`` in database units (nm).
        site_dbu: ``[2J + 1]`` int64 site coordinates (nm), 0 on the optical axis.
        first_site: ``[N + 1]`` int64; cell ``n`` holds sites ``first_site[n] .. first_site[n+1] - 1``.
    """

    n_cells: int
    cell_pitch_m: float
    pitch_dbu: int
    site_dbu: np.ndarray
    first_site: np.ndarray

    @property
    def sites_per_axis(self) -> int:
        return int(self.site_dbu.size)

    @property
    def n_pillars(self) -> int:
        """Pillars of one metasurface."""
        return self.sites_per_axis ** 2

    @property
    def aperture_m(self) -> float:
        """Side ``N p`` of the metasurface (m)."""
        return self.n_cells * self.cell_pitch_m


def pillar_lattice(n_cells: int, cell_pitch_m: float, unit_cell_m: float) -> PillarLattice:
    """Lattice sites of an ``n_cells``-cell metasurface and the cell each falls in (see module docstring)."""
    if n_cells < 1 or n_cells % 2 != 1:
        raise InputError(f"n_cells must be a positive odd number (a cell on the optical axis), got {n_cells}")
    if not cell_pitch_m > 0:
        raise InputError(f"cell_pitch_m must be positive, got {cell_pitch_m}")
    a_dbu = unit_cell_m / PRECISION_M
    if not a_dbu >= 1 or abs(a_dbu - round(a_dbu)) > 1e-6 * a_dbu:
        raise InputError(f"unit_cell_m = {unit_cell_m * 1e9:.4g} nm is not a whole number of the layout's "
                         f"{PRECISION_M * 1e9:g} nm database unit, so the pillar lattice would drift; use a "
                         "lattice period in whole nanometres (optics.unit_cell_m)")
    a_dbu = round(a_dbu)
    p_dbu = round(cell_pitch_m / PRECISION_M, 6)  # whole femtometres: ties on cell boundaries stay exact
    half = math.floor((n_cells * p_dbu - a_dbu) / (2 * a_dbu) + 1e-9)
    if half < 0:
        raise InputError(f"a metasurface of {n_cells} x {cell_pitch_m * 1e6:g} um is smaller than one "
                         f"{unit_cell_m * 1e9:g} nm unit cell: no pillar fits")
    site = np.arange(-half, half + 1, dtype=np.int64) * a_dbu
    cell = np.floor(site / p_dbu + n_cells / 2.0).astype(np.int64)
    first = np.searchsorted(cell, np.arange(n_cells + 1), side="left").astype(np.int64)
    return PillarLattice(int(n_cells), float(cell_pitch_m), a_dbu, site, first)


def quantize_radii(radii_m, quantum_m: float) -> np.ndarray:
    """Radii (m, any shape) -> drawn radii in quanta (int64, same shape): ``round(r / quantum_m)``."""
    if not quantum_m >= PRECISION_M * (1 - 1e-9):
        raise InputError(f"quantum_m = {quantum_m:g} m is below the {PRECISION_M * 1e9:g} nm database unit, "
                         f"which cannot draw it; use quantum_m >= {PRECISION_M:g}")
    radii = np.asarray(radii_m, dtype=np.float64)
    if not np.isfinite(radii).all():
        raise InputError("the radius maps hold NaN or infinite values; the design is broken")
    return np.rint(radii / quantum_m).astype(np.int64)


def pillar_name(radius_m: float) -> str:
    """GDS cell name of a pillar of ``radius_m``: ``R`` + radius in picometres, 7 digits."""
    return f"R{round(radius_m * 1e12):07d}"


def metasurface_name(element: int) -> str:
    return f"MS{element:05d}"


def pillar_polygon(radius_m: float, tolerance_m: float):
    """Circle of ``radius_m`` on the origin (user units): vertices within ``tolerance_m``, area ``pi r^2``."""
    import gdstk

    if not tolerance_m > 0:
        raise InputError(f"tolerance_m must be positive, got {tolerance_m}")
    r = radius_m / UNIT_M
    poly = gdstk.ellipse((0, 0), r, tolerance=tolerance_m / UNIT_M, layer=PILLAR_LAYER, datatype=DATATYPE)
    if len(poly.points) > MAX_POINTS:
        raise InputError(f"a {radius_m * 1e9:g} nm circle at tolerance {tolerance_m * 1e9:g} nm needs "
                         f"{len(poly.points)} vertices, over GDSII's {MAX_POINTS}; raise tolerance_m")
    poly.scale(math.sqrt(math.pi * r * r / poly.area()))
    return poly


def _split(origin: np.ndarray, count: np.ndarray, pitch: int, limit: int):
    """Split runs of ``count`` sites from ``origin`` into runs of at most ``limit``; returns (parent, origin, count)."""
    pieces = -(-count // limit)
    parent = np.repeat(np.arange(count.size), pieces)
    k = np.arange(parent.size) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    return parent, origin[parent] + k * limit * pitch, np.minimum(count[parent] - k * limit, limit)


def pillar_runs(drawn: np.ndarray, lattice: PillarLattice) -> dict[str, np.ndarray]:
    """Array references of one metasurface: runs of equal drawn radius along each cell row.

    Args:
        drawn: ``[N, N]`` drawn radii (any integer code; equal codes merge), ``[cell_row, cell_col]``.
    Returns:
        dict of ``[R]`` int64 arrays: ``value`` (the code), ``x_dbu``, ``y_dbu`` (first pillar, nm),
        ``columns``, ``rows`` (pillars along x, y; each at most ``MAX_REPEAT``).
    """
    n = lattice.n_cells
    drawn = np.asarray(drawn)
    if drawn.shape != (n, n):
        raise InputError(f"radius map must be [{n}, {n}], got {tuple(drawn.shape)}")
    starts = np.ones((n, n), dtype=bool)
    starts[:, 1:] = drawn[:, 1:] != drawn[:, :-1]
    row, col = np.nonzero(starts)
    next_row, next_col = np.append(row[1:], n), np.append(col[1:], n)
    end_col = np.where(next_row == row, next_col, n)
    first = lattice.first_site
    columns, rows = first[end_col] - first[col], first[row + 1] - first[row]
    keep = (columns > 0) & (rows > 0)
    row, col, columns, rows = row[keep], col[keep], columns[keep], rows[keep]
    site, a = lattice.site_dbu, lattice.pitch_dbu
    value = drawn[row, col].astype(np.int64)
    parent, x, columns = _split(site[first[col]], columns, a, MAX_REPEAT)
    y, rows, value = site[first[row]][parent], rows[parent], value[parent]
    parent, y, rows = _split(y, rows, a, MAX_REPEAT)
    return {"value": value[parent], "x_dbu": x[parent], "y_dbu": y, "columns": columns[parent], "rows": rows}


def count_references(drawn: np.ndarray, lattice: PillarLattice) -> int:
    """Number of array references :func:`write_layout` writes for drawn maps ``[S, N, N]``."""
    return int(sum(pillar_runs(m, lattice)["value"].size for m in np.asarray(drawn)))


def default_columns(n_elements: int, n_in: int) -> int:
    """Grid columns of the top cell: the smallest multiple of ``2 n_in`` not below ``sqrt(n_elements)``."""
    group = 2 * n_in
    return group * max(1, math.ceil(math.ceil(math.sqrt(n_elements)) / group))


def element_centre_dbu(element: int, n_cols: int, aperture_m: float, gap_m: float) -> tuple[int, int]:
    """Optical axis ``(x, y)`` (nm) of ``element`` in the top cell (see module docstring)."""
    pitch = round((aperture_m + gap_m) / PRECISION_M)
    return (element % n_cols) * pitch, -(element // n_cols) * pitch


def _select(elements, n_elements: int) -> np.ndarray:
    if elements is None:
        return np.arange(n_elements)
    sel = np.unique(np.asarray(list(elements), dtype=np.int64))
    if sel.size == 0 or sel.min() < 0 or sel.max() >= n_elements:
        raise InputError(f"elements must be indices in 0..{n_elements - 1} (the array has {n_elements} "
                         f"metasurfaces), got {list(elements)}")
    return sel


def _check_radii(drawn: np.ndarray, quantum_m: float, pitch_dbu: int) -> None:
    lo, hi = int(drawn.min()), int(drawn.max())
    if lo < 1:
        raise InputError(f"a radius rounds to {lo * quantum_m * 1e9:g} nm at quantum {quantum_m * 1e9:g} nm; "
                         "radii must round to at least one quantum (use a smaller quantum_m)")
    if 2 * hi * quantum_m > pitch_dbu * PRECISION_M * (1 + 1e-9):
        raise InputError(f"a drawn radius of {hi * quantum_m * 1e9:g} nm does not fit the "
                         f"{pitch_dbu} nm unit cell (pillars would overlap)")


def _metasurface_cell(element: int, drawn: np.ndarray, lattice: PillarLattice, values: np.ndarray,
                      names: list[str]):
    import gdstk

    runs = pillar_runs(drawn, lattice)
    cell = gdstk.Cell(metasurface_name(element))
    h = lattice.aperture_m / 2 / UNIT_M
    cell.add(gdstk.rectangle((-h, -h), (h, h), layer=APERTURE_LAYER, datatype=DATATYPE))
    a = lattice.pitch_dbu / _DBU_PER_UNIT
    idx = np.searchsorted(values, runs["value"]).tolist()
    x, y = (runs["x_dbu"] / _DBU_PER_UNIT).tolist(), (runs["y_dbu"] / _DBU_PER_UNIT).tolist()
    cell.add(*[gdstk.Reference(names[k], (xi, yi), columns=c, rows=r, spacing=(a, a))
               for k, xi, yi, c, r in zip(idx, x, y, runs["columns"].tolist(), runs["rows"].tolist())])
    return cell, len(idx)


def write_layout(radii_m, path: str | Path, n_in: int, cell_pitch_m: float, unit_cell_m: float,
                 elements=None, quantum_m: float = 1e-9, tolerance_m: float = 1e-9, gap_m: float = 0.0,
                 n_cols: int | None = None, progress: bool = True) -> dict:
    """Write the GDSII layout of metasurfaces with radius maps ``radii_m`` (see module docstring).

    Args:
        radii_m: ``[E, N, N]`` pillar radii (m), element ``e = (o n_in + i) 2 + s``, ``[cell_row, cell_col]``.
        path: the ``.gds`` file (written atomically: a failed export leaves an existing file intact).
        n_in: input channels (sets the element order and the default grid).
        cell_pitch_m, unit_cell_m: simulation cell pitch ``p`` and lattice period ``a`` (m).
        elements: indices to export (default all); they keep their place in the full grid.
        quantum_m: radius quantum (m); tolerance_m: circle polygon tolerance (m).
        gap_m: gap between neighbouring apertures in the top-cell grid (m); n_cols: grid columns.
        progress: tqdm bar over metasurfaces.
    Returns:
        summary dict: ``n_metasurfaces, n_pillars, n_distinct_radii, n_references, file_bytes, seconds``
        and the parameters that define the file (units, layers, quantum, tolerance, grid).
    """
    import gdstk
    from tqdm import tqdm

    t0 = time.perf_counter()
    radii = np.asarray(radii_m, dtype=np.float64)
    if radii.ndim != 3 or radii.shape[1] != radii.shape[2]:
        raise InputError(f"radii_m must be [E, N, N], got {tuple(radii.shape)}")
    n_el = radii.shape[0]
    if n_in < 1 or n_el % (2 * n_in):
        raise InputError(f"{n_el} metasurfaces are not n_out x n_in={n_in} x 2 elements")
    if gap_m < 0:
        raise InputError(f"gap_m must be >= 0, got {gap_m}")
    n_cols = default_columns(n_el, n_in) if n_cols is None else int(n_cols)
    if n_cols < 1:
        raise InputError(f"n_cols must be >= 1, got {n_cols}")
    sel = _select(elements, n_el)
    lattice = pillar_lattice(radii.shape[1], cell_pitch_m, unit_cell_m)
    drawn = quantize_radii(radii[sel], quantum_m)
    _check_radii(drawn, quantum_m, lattice.pitch_dbu)
    values = np.unique(drawn)
    names = [pillar_name(v * quantum_m) for v in values.tolist()]
    n_refs = 0
    path = Path(path)
    with atomic_path(path) as tmp:
        writer = gdstk.GdsWriter(tmp, name=LIBRARY_NAME, unit=UNIT_M, precision=PRECISION_M,
                                 max_points=MAX_POINTS, timestamp=TIMESTAMP)
        try:
            for v, name in zip(values.tolist(), names):
                writer.write(gdstk.Cell(name).add(pillar_polygon(v * quantum_m, tolerance_m)))
            top = gdstk.Cell(TOP_CELL)
            for k, e in enumerate(tqdm(sel.tolist(), desc=f"GDS {path.name}", unit="metasurface",
                                       disable=not progress)):
                cell, n = _metasurface_cell(e, drawn[k], lattice, values, names)
                writer.write(cell)
                n_refs += n
                x, y = element_centre_dbu(e, n_cols, lattice.aperture_m, gap_m)
                top.add(gdstk.Reference(cell.name, (x / _DBU_PER_UNIT, y / _DBU_PER_UNIT)))
            writer.write(top)
        finally:
            writer.close()
    return {"n_metasurfaces": int(sel.size), "n_pillars": int(sel.size) * lattice.n_pillars,
            "n_distinct_radii": int(values.size), "n_references": n_refs, "file_bytes": path.stat().st_size,
            "seconds": time.perf_counter() - t0, "quantum_m": float(quantum_m), "tolerance_m": float(tolerance_m),
            "unit_m": UNIT_M, "precision_m": PRECISION_M, "pillar_layer": PILLAR_LAYER,
            "aperture_layer": APERTURE_LAYER, "datatype": DATATYPE, "n_cells": lattice.n_cells,
            "cell_pitch_m": float(cell_pitch_m), "unit_cell_m": float(unit_cell_m),
            "sites_per_axis": lattice.sites_per_axis, "gap_m": float(gap_m), "n_cols": n_cols}


def radii_table(radii_m, n_in: int, elements=None, quantum_m: float = 1e-9) -> pd.DataFrame:
    """One row per simulation cell of the selected elements.

    Columns: ``element, o, i, sign`` (+1: positive kernel part, s = 0; -1: negative, s = 1),
    ``cell_row, cell_col`` (radius-map indices: y, x), ``radius_m`` (designed) and
    ``radius_drawn_m`` (quantised to ``quantum_m``, as in the GDS file).
    """
    radii = np.asarray(radii_m, dtype=np.float64)
    sel = _select(elements, radii.shape[0])
    n = radii.shape[1]
    e = np.repeat(sel, n * n)
    rows, cols = np.divmod(np.tile(np.arange(n * n), sel.size), n)
    r = radii[sel].reshape(-1)
    return pd.DataFrame({"element": e, "o": e // (2 * n_in), "i": (e // 2) % n_in, "sign": 1 - 2 * (e % 2),
                         "cell_row": rows, "cell_col": cols, "radius_m": r,
                         "radius_drawn_m": quantize_radii(r, quantum_m) * quantum_m})


def export_array_layout(array, path: str | Path, elements=None, quantum_m: float = 1e-9, **kwargs):
    """:func:`write_layout` of a ``MetasurfaceArray`` (meta-atom library); returns ``(summary, radii table)``."""
    if not getattr(array, "is_library", False):
        raise InputError("this array uses ideal phase atoms: it has no pillar radii to draw "
                         "(design it with optics.meta_atom: tio2)")
    radii = array.radii_m().detach().cpu().double().numpy()
    cfg = array.optics_cfg
    summary = write_layout(radii, path, array.n_in, cfg.cell_pitch_m, cfg.unit_cell_m, elements=elements,
                           quantum_m=quantum_m, **kwargs)
    return summary, radii_table(radii, array.n_in, elements, quantum_m)


@functools.lru_cache(maxsize=8)
def _measured_record_bytes(quantum_m: float, tolerance_m: float) -> dict[str, float]:
    """Bytes per item of :func:`write_layout`'s files, measured by differences of tiny exports.

    Exports of element 0 of a two-element, 3 x 3-cell array: ``A`` (radius varies along each row:
    9 references) and ``B`` (along each column: 3 merged references) draw the same three pillars;
    ``C`` is ``B`` with element 1 too (a second metasurface); ``D`` is ``B`` without its third radius.
    The per-vertex size is GDSII's (``XY_BYTES_PER_POINT``).
    """
    k0 = max(1, round(40e-9 / quantum_m))
    radii = (k0 + np.arange(3)) * quantum_m
    a = math.ceil(2 * radii[-1] / PRECISION_M) * PRECISION_M
    along_rows, along_cols = np.broadcast_to(np.arange(3), (3, 3)), np.broadcast_to(np.arange(3)[:, None], (3, 3))
    dropped = np.broadcast_to(np.array([0, 0, 1])[:, None], (3, 3))
    exports = {"A": (along_rows, [0]), "B": (along_cols, [0]), "C": (along_cols, [0, 1]), "D": (dropped, [0])}
    size = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key, (index, elements) in exports.items():
            size[key] = write_layout(np.stack([radii[index]] * 2), Path(tmp) / f"{key}.gds", 1, 3 * a, a,
                                     elements=elements, quantum_m=quantum_m, tolerance_m=tolerance_m,
                                     progress=False)["file_bytes"]
    per_ref = (size["A"] - size["B"]) / 6
    per_ms = size["C"] - size["B"] - 3 * per_ref
    vertices = [len(pillar_polygon(r, tolerance_m).points) for r in radii]
    per_pillar = size["B"] - size["D"] - XY_BYTES_PER_POINT * vertices[2]
    fixed = size["B"] - per_ms - 3 * per_ref - 3 * per_pillar - XY_BYTES_PER_POINT * sum(vertices)
    return {"fixed": fixed, "per_metasurface": per_ms, "per_reference": per_ref, "per_pillar_cell": per_pillar}


def estimate_layout_cost(n_cells: int, cell_pitch_m: float, unit_cell_m: float, n_metasurfaces: int,
                         radii_m, n_references: int | None = None, quantum_m: float = 1e-9,
                         tolerance_m: float = 1e-9, seconds_per_reference: float | None = None) -> dict:
    """Counts and bytes of :func:`write_layout`'s file for a geometry, without writing it.

    Args:
        n_cells, cell_pitch_m, unit_cell_m: geometry of one metasurface.
        n_metasurfaces: metasurfaces exported.
        radii_m: the radii drawn (m, any shape; only their distinct quantised values count), e.g.
            a design's radius maps, or every quantum of the meta-atom library's range.
        n_references: array references (exact: :func:`count_references` of the design); ``None``:
            one per simulation cell, no merging (the most a design can need).
        seconds_per_reference: measured export time per reference (a partial export), to extrapolate.
    Returns:
        dict ``n_metasurfaces, n_pillars, n_distinct_radii, n_references, file_bytes, seconds,
        sites_per_axis`` (``seconds`` NaN without ``seconds_per_reference``). Bytes: ``fixed + per_metasurface E +
        per_reference n_references + sum over radii (per_pillar_cell + 8 vertices)``, the per-item
        sizes measured on tiny exports (:func:`_measured_record_bytes`).
    """
    lattice = pillar_lattice(n_cells, cell_pitch_m, unit_cell_m)
    values = np.unique(quantize_radii(radii_m, quantum_m))
    _check_radii(values, quantum_m, lattice.pitch_dbu)
    if n_references is None:
        distinct_in_rows = np.broadcast_to(np.arange(n_cells), (n_cells, n_cells))
        n_references = n_metasurfaces * count_references(distinct_in_rows[None], lattice)
    cost = _measured_record_bytes(float(quantum_m), float(tolerance_m))
    vertices = sum(len(pillar_polygon(v * quantum_m, tolerance_m).points) for v in values.tolist())
    file_bytes = (cost["fixed"] + cost["per_metasurface"] * n_metasurfaces + cost["per_reference"] * n_references
                  + cost["per_pillar_cell"] * values.size + XY_BYTES_PER_POINT * vertices)
    seconds = math.nan if seconds_per_reference is None else seconds_per_reference * n_references
    return {"n_metasurfaces": int(n_metasurfaces), "n_pillars": int(n_metasurfaces) * lattice.n_pillars,
            "n_distinct_radii": int(values.size), "n_references": int(n_references),
            "file_bytes": round(file_bytes), "seconds": seconds, "sites_per_axis": lattice.sites_per_axis}


__all__ = ["APERTURE_LAYER", "DATATYPE", "PILLAR_LAYER", "PRECISION_M", "UNIT_M", "PillarLattice",
           "count_references", "default_columns", "element_centre_dbu", "estimate_layout_cost",
           "export_array_layout", "pillar_lattice", "pillar_name", "pillar_polygon", "pillar_runs",
           "quantize_radii", "radii_table", "write_layout"]
