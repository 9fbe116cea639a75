"""Meta-atom libraries from a user's CSV (load_atom) and the library builder's material options."""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dkolib.config import load_config
from dkolib.dko.synthesis import make_atom
from dkolib.errors import DataError, InputError
from dkolib.optics import MetasurfaceArray, rcwa
from dkolib.optics.metaatoms import (
    DEFAULT_LIBRARY_PATH,
    IdealPhaseAtom,
    MetaAtomLibrary,
    load_atom,
)

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parent.parent

WAVELENGTHS_M = (500e-9, 550e-9, 600e-9)
WIDTHS_M = (100e-9, 120e-9, 140e-9, 160e-9, 180e-9)


def _known_t(wavelength_m: float, width_m: float) -> complex:
    """A transmission written by hand: amplitude 0.6-0.96, phase growing with width and falling with wavelength."""
    amplitude = 0.6 + 0.3 * (width_m - 100e-9) / 80e-9 + 0.06 * (wavelength_m - 500e-9) / 100e-9
    phase = 2 * math.pi * (width_m / 200e-9) * (550e-9 / wavelength_m)
    return amplitude * complex(math.cos(phase), math.sin(phase))


def _write_csv(path: Path, size_column: str = "width_m", drop: int | None = None, **extra) -> Path:
    rows = [{"wavelength_m": w, size_column: r, "t_real": _known_t(w, r).real, "t_imag": _known_t(w, r).imag,
             "comment": "ignored"} for w in WAVELENGTHS_M for r in WIDTHS_M]
    if drop is not None:
        rows.pop(drop)
    df = pd.DataFrame(rows[::-1])   # any row order
    for key, value in extra.items():
        df[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    return path


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A project root of its own (config/ with a profile, as the real one)."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "smoke.yaml").write_text((ROOT / "config" / "smoke.yaml").read_text())
    monkeypatch.setenv("DKOLIB_ROOT", str(tmp_path))
    return tmp_path


def test_hand_written_csv_is_looked_up_exactly_at_grid_points(root):
    _write_csv(root / "libs" / "mine.csv")
    lib = load_atom("libs/mine.csv")                    # relative to the project root
    assert isinstance(lib, MetaAtomLibrary) and lib.size_column == "width_m"
    assert np.array_equal(lib.radii_m, np.array(WIDTHS_M)) and np.array_equal(lib.wavelengths_m, WAVELENGTHS_M)
    widths = torch.tensor(WIDTHS_M, dtype=torch.float64)
    for w in WAVELENGTHS_M:
        got = lib.transmission_at(widths, w).to(torch.complex128).numpy()
        want = np.array([_known_t(w, r) for r in WIDTHS_M])
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-7)   # complex64 rounding of |t| <= 1
    # between grid wavelengths the lookup is linear in wavelength
    mid = lib.transmission_at(widths, 525e-9).to(torch.complex128).numpy()
    np.testing.assert_allclose(mid, 0.5 * np.array([_known_t(500e-9, r) + _known_t(550e-9, r) for r in WIDTHS_M]),
                               atol=2e-7)


def test_optics_config_names_the_csv_everywhere_an_atom_is_built(root):
    _write_csv(root / "libs" / "mine.csv", size_column="radius_m")
    cfg = load_config("smoke", {"optics.meta_atom": "libs/mine.csv"})
    atom = make_atom(cfg.optics)
    assert isinstance(atom, MetaAtomLibrary) and atom.size_column == "radius_m"
    array = MetasurfaceArray(1, 1, cfg.optics, atom, init="random", wavelengths_m=(550e-9,), n_cells=9,
                             generator=torch.Generator().manual_seed(0))
    r = array.radii_m().detach()
    assert float(r.min()) >= WIDTHS_M[0] and float(r.max()) <= WIDTHS_M[-1]
    assert isinstance(load_atom("ideal"), IdealPhaseAtom)
    assert load_atom("tio2").size_column == "radius_m"


@pytest.mark.parametrize("case, error, match", [
    ("missing_file", FileNotFoundError, "project root"),
    ("no_t_imag", DataError, "t_imag"),
    ("no_size", DataError, "radius_m or width_m or diameter_m"),
    ("two_sizes", DataError, "several size columns"),
    ("not_a_grid", DataError, "not a full"),
    ("duplicate", DataError, "not a full"),
    ("text", DataError, "non-numeric"),
    ("gain", DataError, r"\|t\| = .* > 1"),
    ("nanometres", DataError, "metres"),
    ("not_csv", InputError, "'tio2', 'ideal'"),
])
def test_bad_csvs_are_explained(root, case, error, match):
    path = root / "bad.csv"
    if case == "no_t_imag":
        _write_csv(path).write_text(pd.read_csv(path).drop(columns="t_imag").to_csv(index=False))
    elif case == "no_size":
        pd.read_csv(_write_csv(path)).drop(columns="width_m").to_csv(path, index=False)
    elif case == "two_sizes":
        _write_csv(path, diameter_m=1e-7)
    elif case == "not_a_grid":
        _write_csv(path, drop=3)
    elif case == "duplicate":
        df = pd.read_csv(_write_csv(path, drop=3))
        pd.concat([df, df.iloc[:1]]).to_csv(path, index=False)
    elif case == "text":
        df = pd.read_csv(_write_csv(path))
        df["t_real"] = df["t_real"].astype(object)
        df.loc[2, "t_real"] = "n/a"
        df.to_csv(path, index=False)
    elif case == "gain":
        df = pd.read_csv(_write_csv(path))
        df.loc[0, "t_real"] = 1.5
        df.to_csv(path, index=False)
    elif case == "nanometres":
        df = pd.read_csv(_write_csv(path))
        df["width_m"] *= 1e9
        df.to_csv(path, index=False)
    spec = {"missing_file": "nope/missing.csv", "not_csv": "tio3"}.get(case, "bad.csv")
    with pytest.raises(error, match=match):
        load_atom(spec)


# ------------------------------------------------------------------ the library builder
def _builder():
    spec = importlib.util.spec_from_file_location("build_metaatom_library", ROOT / "scripts" / "build_metaatom_library.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_builder_defaults_away_from_the_packaged_library_and_refuses_to_overwrite_it(root, capsys):
    build = _builder()
    args = build.parse_args(["--pillar-material", "si3n4_luke"])
    assert args.out == root / "results" / "metaatoms" / "si3n4_luke_on_sio2_malitson_h600nm_a300nm.csv"
    assert args.convergence.parent == args.out.parent
    assert build.parse_args([]).out != DEFAULT_LIBRARY_PATH
    named = build.parse_args(["--out", str(DEFAULT_LIBRARY_PATH)])        # explicit: allowed
    assert named.out == DEFAULT_LIBRARY_PATH
    for extra in (["--quick"], ["--pillar-material", "SI3N4_LUKE"], ["--height-m", "500e-9"]):
        with pytest.raises(InputError, match="refusing to overwrite the packaged library"):
            build.parse_args(["--out", str(DEFAULT_LIBRARY_PATH), *extra])
    with pytest.raises(SystemExit):
        build.parse_args(["--help"])
    assert "SI3N4_LUKE" in capsys.readouterr().out                        # materials listed in --help
    with pytest.raises(InputError, match="substrate"):
        build.check_design(build.parse_args(["--substrate-material", "SI_ASPNES"]), [400e-9, 700e-9])
    with pytest.raises(InputError, match="tabulated"):
        build.check_design(build.parse_args(["--pillar-material", "TIO2_BOND-O"]), [400e-9, 700e-9])


def test_builder_uses_the_chosen_materials(root):
    build = _builder()
    out = root / "libs" / "sin.csv"
    build.main(["--pillar-material", "SI3N4_LUKE", "--out", str(out), "--orders", "2", "--convergence-orders", "1",
                "2", "--n-radii", "4", "--wl-step-nm", "150"])
    lib = load_atom(str(out))
    assert lib.wavelengths_m.tolist() == [400e-9, 550e-9, 700e-9]
    # a grid point against an RCWA solve with the silicon-nitride index passed explicitly
    r, w = float(lib.radii_m[1]), 550e-9
    want = rcwa.pillar_transmission(r, w, 2, n_pillar=rcwa.refractive_index("SI3N4_LUKE", w),
                                    n_in=rcwa.refractive_index("SIO2_MALITSON", w))
    got = complex(lib.transmission_at(torch.tensor([r], dtype=torch.float64), w)[0])
    assert abs(got - want) < 1e-6
    tio2 = rcwa.pillar_transmission(r, w, 2)                             # the default pillar differs
    assert abs(tio2 - want) > 1e-2
