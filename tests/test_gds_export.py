"""GDSII export of metasurface arrays, read back with an independent GDSII record parser."""

import csv
import importlib.util
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from dkolib.config import load_config
from dkolib.dko.synthesis import save_array
from dkolib.errors import InputError
from dkolib.fab import layout
from dkolib.fab.layout import (
    count_references,
    estimate_layout_cost,
    pillar_lattice,
    radii_table,
    write_layout,
)
from dkolib.optics import MetaAtomLibrary, MetasurfaceArray
from dkolib.study.cli import run_cli

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parent.parent
NM = 1e-9
PITCH_M, UNIT_CELL_M, GAP_M = 2.5e-6, 300e-9, 1e-6

# GDSII record types (Calma stream format)
HEADER, BGNLIB, LIBNAME, UNITS, ENDLIB, BGNSTR, STRNAME, ENDSTR = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07
BOUNDARY, SREF, AREF, LAYER, DATATYPE, XY, ENDEL, SNAME, COLROW = 0x08, 0x0A, 0x0B, 0x0D, 0x0E, 0x10, 0x11, 0x12, 0x13


def _real8(raw: bytes) -> float:
    """GDSII 8-byte real: sign bit, base-16 exponent in excess 64, 56-bit mantissa."""
    sign = -1.0 if raw[0] & 0x80 else 1.0
    return sign * int.from_bytes(raw[1:8], "big") / 2.0 ** 56 * 16.0 ** ((raw[0] & 0x7F) - 64)


def read_gds(path: Path) -> dict:
    """Minimal GDSII reader: units, and per structure its boundaries and (array) references."""
    data, i = path.read_bytes(), 0
    lib = {"units": None, "structures": {}}
    struct_name, element = None, None
    while i < len(data):
        size, rtype, _ = struct.unpack(">HBB", data[i:i + 4])
        body = data[i + 4:i + size]
        i += size
        if rtype == UNITS:
            lib["units"] = (_real8(body[:8]), _real8(body[8:16]))
        elif rtype == STRNAME:
            struct_name = body.rstrip(b"\0").decode()
            lib["structures"][struct_name] = {"boundaries": [], "refs": []}
        elif rtype in (BOUNDARY, SREF, AREF):
            element = {"kind": rtype, "colrow": (1, 1)}
        elif rtype == LAYER:
            element["layer"] = struct.unpack(">h", body)[0]
        elif rtype == DATATYPE:
            element["datatype"] = struct.unpack(">h", body)[0]
        elif rtype == SNAME:
            element["sname"] = body.rstrip(b"\0").decode()
        elif rtype == COLROW:
            element["colrow"] = struct.unpack(">hh", body)
        elif rtype == XY:
            element["xy"] = np.array(struct.unpack(f">{len(body) // 4}i", body), dtype=np.int64).reshape(-1, 2)
        elif rtype == ENDEL:
            key = "boundaries" if element["kind"] == BOUNDARY else "refs"
            lib["structures"][struct_name][key].append(element)
        elif rtype == ENDLIB:
            break
    return lib


def _origins(ref: dict) -> np.ndarray:
    """Insertion points (database units) of an SREF or AREF."""
    if ref["kind"] == SREF:
        return ref["xy"][:1]
    cols, rows = ref["colrow"]
    p0, p1, p2 = ref["xy"]
    c, r = np.meshgrid(np.arange(cols), np.arange(rows), indexing="ij")
    step_c, step_r = (p1 - p0) // cols, (p2 - p0) // rows
    return (p0 + c.reshape(-1, 1) * step_c + r.reshape(-1, 1) * step_r).reshape(-1, 2)


def pillars(lib: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flattened pillars of ``TOP``: centres ``[P, 2]`` (nm), area-equivalent radii ``[P]`` (nm), and
    half x-extents ``[P]`` (nm)."""
    shapes = {}
    for name, s in lib["structures"].items():
        poly = [b for b in s["boundaries"] if b["layer"] == layout.PILLAR_LAYER]
        if poly:
            x, y = poly[0]["xy"][:, 0].astype(float), poly[0]["xy"][:, 1].astype(float)
            area = 0.5 * abs(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))  # shoelace, closed ring
            shapes[name] = (math.sqrt(area / math.pi), (x.max() - x.min()) / 2)
    centres, radii, half_extents = [], [], []
    for top_ref in lib["structures"]["TOP"]["refs"]:
        for ref in lib["structures"][top_ref["sname"]]["refs"]:
            pts = _origins(ref) + top_ref["xy"][0]
            centres.append(pts)
            radii.append(np.full(len(pts), shapes[ref["sname"]][0]))
            half_extents.append(np.full(len(pts), shapes[ref["sname"]][1]))
    return np.concatenate(centres), np.concatenate(radii), np.concatenate(half_extents)


def _hand_array() -> np.ndarray:
    """2 elements x 5 x 5 cells: element 0 has radius 40 + 5 row + col nm (all distinct); element 1 is
    100 nm except 60 nm in its centre cell (60 nm is also element 0's cell (4, 0))."""
    rows, cols = np.meshgrid(np.arange(5), np.arange(5), indexing="ij")
    e0 = 40.0 + 5 * rows + cols
    e1 = np.full((5, 5), 100.0)
    e1[2, 2] = 60.0
    return np.stack([e0, e1]) * NM


def _cell_of(coord_nm: np.ndarray) -> np.ndarray:
    """Cell index of a coordinate in a 5-cell metasurface at 2.5 um: boundaries at +-1250, +-3750 nm."""
    return np.digitize(coord_nm, [-3750, -1250, 1250, 3750])


@pytest.fixture(scope="module")
def hand_export(tmp_path_factory):
    path = tmp_path_factory.mktemp("gds") / "hand.gds"
    summary = write_layout(_hand_array(), path, n_in=1, cell_pitch_m=PITCH_M, unit_cell_m=UNIT_CELL_M,
                           gap_m=GAP_M, progress=False)
    return path, summary, read_gds(path)


def test_units_layers_and_one_cell_per_radius(hand_export):
    path, summary, lib = hand_export
    user_in_db, db_in_m = lib["units"]
    assert user_in_db == pytest.approx(1e-3, rel=1e-12) and db_in_m == pytest.approx(1e-9, rel=1e-12)
    pillar_cells = [n for n, s in lib["structures"].items() if any(b["layer"] == 1 for b in s["boundaries"])]
    assert len(pillar_cells) == 26 == summary["n_distinct_radii"]  # 25 radii of element 0 + 100 nm
    for name in ("MS00000", "MS00001"):
        (aperture,) = lib["structures"][name]["boundaries"]
        assert aperture["layer"] == 2 and aperture["datatype"] == 0
        assert aperture["xy"].min() == -6250 and aperture["xy"].max() == 6250  # 5 cells x 2.5 um
    assert summary["file_bytes"] == path.stat().st_size


def test_pillar_count_positions_and_radii_follow_the_cells(hand_export):
    _, summary, lib = hand_export
    centres, radius_nm, half_extent_nm = pillars(lib)
    # 12.5 um aperture, 300 nm lattice with a site on axis: sites -6000 .. 6000 nm, 41 per axis
    assert len(centres) == 2 * 41 ** 2 == summary["n_pillars"]
    assert len(np.unique(centres, axis=0)) == len(centres)
    radii_nm = _hand_array() / NM
    element = (centres[:, 0] > 6250).astype(int)  # element 1 sits one aperture + 1 um gap to the right
    local = centres - np.stack([element * 13500, np.zeros_like(element)], axis=1)
    assert set(np.unique(local)) == set(range(-6000, 6001, 300))
    expected = radii_nm[element, _cell_of(local[:, 1]), _cell_of(local[:, 0])]
    # the polygon has the circle's area; vertices snapped to the 1 nm grid move it by <= sqrt(2)/2 nm
    assert np.abs(radius_nm - expected).max() <= math.sqrt(2) / 2
    assert np.abs(half_extent_nm - expected).max() <= 1.0 + math.sqrt(2) / 2  # tolerance + snapping
    for (x, y), r in [((-6000, -6000), 40), ((-3900, 1200), 50), ((0, 0), 52), ((3600, -1500), 48),
                      ((3900, -1200), 54), ((13500, 0), 60), ((13500 + 1500, 0), 100)]:
        (k,) = np.nonzero((centres[:, 0] == x) & (centres[:, 1] == y))[0]
        assert abs(radius_nm[k] - r) <= math.sqrt(2) / 2, (x, y)


def test_equal_neighbouring_cells_share_one_array_reference(hand_export):
    _, summary, lib = hand_export
    arefs = [[r for r in lib["structures"][f"MS0000{e}"]["refs"] if r["kind"] == AREF] for e in (0, 1)]
    # element 0: every cell its own radius (25); element 1: one run per row, row 2 split in 3 (7)
    assert [len(a) for a in arefs] == [25, 7] and summary["n_references"] == 32
    assert sorted(r["colrow"] for r in arefs[1] if r["colrow"][0] == 41) == [(41, 8), (41, 8), (41, 8), (41, 8)]


def test_top_cell_places_elements_on_the_documented_grid(tmp_path):
    # 12 elements (n_out 2, n_in 3) of 3 cells: default grid 6 columns, element e at (e % 6, -(e // 6)) x pitch
    radii = np.full((12, 3, 3), 80 * NM)
    write_layout(radii, tmp_path / "grid.gds", n_in=3, cell_pitch_m=PITCH_M, unit_cell_m=UNIT_CELL_M,
                 gap_m=GAP_M, elements=[0, 5, 7], progress=False)
    top = {r["sname"]: tuple(r["xy"][0]) for r in read_gds(tmp_path / "grid.gds")["structures"]["TOP"]["refs"]}
    pitch = 3 * 2500 + 1000
    assert top == {"MS00000": (0, 0), "MS00005": (5 * pitch, 0), "MS00007": (pitch, -pitch)}


def test_cost_model_predicts_a_larger_export_exactly(tmp_path):
    rng = np.random.default_rng(3)
    radii = rng.uniform(35, 130, size=(4, 7, 7)).round() * NM  # 4 elements (n_in 2), 7 x 7 cells
    radii[:, :, 3:6] = radii[:, :, 3:4]  # runs of equal cells to merge
    summary = write_layout(radii, tmp_path / "r.gds", n_in=2, cell_pitch_m=PITCH_M, unit_cell_m=UNIT_CELL_M,
                           progress=False)
    lattice = pillar_lattice(7, PITCH_M, UNIT_CELL_M)
    drawn = np.rint(radii / NM)
    n_refs = count_references(drawn, lattice)
    assert n_refs == sum(r["kind"] == AREF for s in read_gds(tmp_path / "r.gds")["structures"].values()
                         for r in s["refs"])
    est = estimate_layout_cost(7, PITCH_M, UNIT_CELL_M, 4, radii, n_references=n_refs)
    assert est["file_bytes"] == summary["file_bytes"] == (tmp_path / "r.gds").stat().st_size
    assert est["n_pillars"] == summary["n_pillars"] == 4 * (2 * 28 + 1) ** 2  # 17.5 um: sites -8400..8400 nm
    worst = estimate_layout_cost(7, PITCH_M, UNIT_CELL_M, 4, radii)
    assert worst["n_references"] == 4 * 49 and worst["file_bytes"] > summary["file_bytes"]
    # GDSII AREF element: AREF + SNAME ('R' + 7 digits) + COLROW + XY (3 points) + ENDEL
    assert layout._measured_record_bytes(1e-9, 1e-9)["per_reference"] == 4 + (4 + 8) + (4 + 4) + (4 + 24) + 4


def test_interrupted_export_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "a.gds"
    write_layout(_hand_array(), path, n_in=1, cell_pitch_m=PITCH_M, unit_cell_m=UNIT_CELL_M, progress=False)
    good = path.read_bytes()
    real, calls = layout._metasurface_cell, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(layout, "_metasurface_cell", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        write_layout(_hand_array() * 1.1, path, n_in=1, cell_pitch_m=PITCH_M, unit_cell_m=UNIT_CELL_M,
                     progress=False)
    assert path.read_bytes() == good and sorted(p.name for p in tmp_path.iterdir()) == ["a.gds"]


def test_radii_table_names_each_cell_and_quantises():
    radii = np.full((12, 3, 3), 100.4 * NM)
    radii[7, 1, 2] = 102.6 * NM
    table = radii_table(radii, n_in=3, elements=[7], quantum_m=5 * NM)
    assert len(table) == 9 and set(table["element"]) == {7}
    row = table[(table["cell_row"] == 1) & (table["cell_col"] == 2)].iloc[0]
    assert (row["o"], row["i"], row["sign"]) == (1, 0, -1)  # 7 = (1 * 3 + 0) * 2 + 1
    assert row["radius_m"] == 102.6 * NM and row["radius_drawn_m"] == pytest.approx(105 * NM)
    assert set(np.round(table["radius_drawn_m"] / NM, 6)) == {100.0, 105.0}


@pytest.mark.parametrize("kwargs, says", [
    ({"unit_cell_m": 300.5e-9}, "whole number"),
    ({"elements": [2]}, "0..1"),
    ({"quantum_m": 0.5e-9}, "database unit"),
    ({"unit_cell_m": 100e-9}, "does not fit"),
])
def test_bad_input_is_refused_with_the_fix(tmp_path, kwargs, says):
    args = {"n_in": 1, "cell_pitch_m": PITCH_M, "unit_cell_m": UNIT_CELL_M, "progress": False, **kwargs}
    with pytest.raises(InputError, match=says):
        write_layout(_hand_array(), tmp_path / "x.gds", **args)
    assert not (tmp_path / "x.gds").exists()


def _script_main():
    spec = importlib.util.spec_from_file_location("export_layout", ROOT / "scripts" / "export_layout.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_script_exports_a_subset_and_estimates_the_paper_geometry(tmp_path, capsys):
    optics = load_config("smoke").optics
    array = MetasurfaceArray(1, 1, optics, MetaAtomLibrary.load(), init="random",
                             generator=torch.Generator().manual_seed(0))
    save_array(array, tmp_path / "array.pt", optics)
    out = {k: tmp_path / f"{k}.{ext}" for k, ext in (("gds", "gds"), ("radii", "csv"), ("summary", "csv"))}
    argv = ["--profile", "smoke", "--design", str(tmp_path / "array.pt"), "--elements", "1", "--no-progress",
            "--out-gds", str(out["gds"]), "--out-radii", str(out["radii"]), "--out-summary", str(out["summary"])]
    main = _script_main()
    assert run_cli(main, argv) == 0
    rows = {(r["kind"], r["basis"]): r for r in csv.DictReader(out["summary"].open())}
    measured, model, paper = rows["export", "measured"], rows["export", "model"], rows["paper", "model"]
    assert int(measured["file_bytes"]) == out["gds"].stat().st_size == int(model["file_bytes"])
    assert int(measured["n_pillars"]) == 541 ** 2  # 162.5 um: 2 floor((162500 - 300) / 600) + 1 sites
    assert int(paper["n_metasurfaces"]) == 64 * 3 * 2 and int(paper["n_pillars"]) == 384 * 8541 ** 2
    radii = list(csv.DictReader(out["radii"].open()))
    assert len(radii) == 65 * 65 and {r["element"] for r in radii} == {"1"}
    expected = array.radii_m()[1].detach().double().numpy().reshape(-1)
    assert np.allclose([float(r["radius_m"]) for r in radii], expected, rtol=1e-6)
    capsys.readouterr()
    assert run_cli(main, [*argv[:1], "default", *argv[2:]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "n_cells" in err[0]
