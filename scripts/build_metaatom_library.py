#!/usr/bin/env python
"""Build a nanopillar meta-atom library with meent's RCWA.

    python scripts/build_metaatom_library.py \
        [--pillar-material TiO2_siefke] [--substrate-material SiO2_malitson] \
        [--height-m 600e-9] [--unit-cell-m 300e-9] [--out FILE.csv] [--quick]

By default the library goes to results/metaatoms/<pillar>_on_<substrate>_h<height>nm_a<cell>nm.csv
and its convergence study next to it (<out stem>_convergence.csv); relative paths are taken
from the project root. Use it with ``--set optics.meta_atom=<that path>`` (or the same key in
a profile). The packaged library dkolib/optics/data/metaatom_library.csv (TiO2_siefke pillars,
600 nm tall, 300 nm cell, on SiO2_malitson) is only written when --out names it explicitly,
and then only with those materials and sizes and without --quick:

    python scripts/build_metaatom_library.py \
        --out dkolib/optics/data/metaatom_library.csv \
        --convergence results/metaatoms/convergence.csv

Two steps:

1. Fourier-order convergence study: the zeroth-order transmission at the
   three design wavelengths and three radii for every order in
   ``--convergence-orders``; ``delta_vs_highest`` = |t_N - t_highest|.
2. The library: every (wavelength, radius) pair solved at ``--orders`` and
   at ``--orders - 1``. Where the two disagree by more than
   ``--consistency-tol`` the solve is not converged in Fourier order (in
   practice: a narrow lattice resonance whose radius RCWA cannot pin at
   these orders). Such points are replaced by a cubic spline through the
   converged radii of the same wavelength, and their count is printed. The
   amplitude is finally capped at 1 (power conservation) in case the spline
   overshoots.

Geometry, materials and conventions: see :mod:`dkolib.optics.rcwa` (substrate-side
incidence, exp(-i omega t), power-normalised amplitude). Materials are names of
meent's refractive-index table (listed by --help); the substrate must be lossless.
Runtime of the full build: 6-9 minutes on one CPU core (515 s measured on a shared 2-core machine).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.interpolate import CubicSpline
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dkolib.config import OpticsConfig
from dkolib.errors import InputError
from dkolib.io import write_csv
from dkolib.optics import rcwa
from dkolib.optics.metaatoms import DEFAULT_LIBRARY_PATH
from dkolib.root import project_root
from dkolib.study.cli import run_cli

PACKAGED = {"pillar_material": rcwa.TIO2_TABLE, "substrate_material": rcwa.SIO2_TABLE,
            "height_m": rcwa.DEFAULT_HEIGHT_M, "unit_cell_m": rcwa.DEFAULT_PERIOD_M}
"""The design the packaged library documents (dkolib/optics/metaatoms.py)."""


def nm_grid(start_nm: float, stop_nm: float, step_nm: float) -> np.ndarray:
    """Wavelengths in metres, each parsed from its decimal string so that 550 nm == 550e-9 exactly."""
    n = round((stop_nm - start_nm) / step_nm) + 1
    return np.array([float(f"{start_nm + i * step_nm:g}e-9") for i in range(n)])


def parse_args(argv=None) -> argparse.Namespace:
    materials = rcwa.available_materials()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="materials (meent's table, case-insensitive): " + ", ".join(materials))
    p.add_argument("--out", default=None,
                   help="library CSV (default: results/metaatoms/<pillar>_on_<substrate>_h<H>nm_a<A>nm.csv)")
    p.add_argument("--convergence", default=None, help="convergence CSV (default: <out stem>_convergence.csv)")
    p.add_argument("--pillar-material", default=PACKAGED["pillar_material"], type=str.upper,
                   choices=materials, metavar="NAME", help="pillar material (default %(default)s; list below)")
    p.add_argument("--substrate-material", default=PACKAGED["substrate_material"], type=str.upper,
                   choices=materials, metavar="NAME",
                   help="lossless substrate the light comes from (default %(default)s; list below)")
    p.add_argument("--quick", action="store_true", help="tiny grids and low orders (smoke test, seconds)")
    p.add_argument("--orders", type=int, default=rcwa.LIBRARY_ORDERS, help="Fourier harmonics per axis (-N..N) for the library")
    p.add_argument("--convergence-orders", type=int, nargs="+", default=[2, 3, 4, 5, 6, 7, 8])
    p.add_argument("--consistency-tol", type=float, default=0.1,
                   help="max |t_N - t_(N-1)| for a library point to count as converged")
    p.add_argument("--r-min-m", type=float, default=35e-9, help="smallest radius (70 nm diameter)")
    p.add_argument("--r-max-m", type=float, default=130e-9, help="largest radius (40 nm gap at 300 nm cell)")
    p.add_argument("--n-radii", type=int, default=48)
    p.add_argument("--wl-min-nm", type=float, default=400.0)
    p.add_argument("--wl-max-nm", type=float, default=700.0)
    p.add_argument("--wl-step-nm", type=float, default=25.0)
    p.add_argument("--height-m", type=float, default=rcwa.DEFAULT_HEIGHT_M, help="pillar height (metres)")
    p.add_argument("--unit-cell-m", type=float, default=rcwa.DEFAULT_PERIOD_M, help="lattice period (metres)")
    p.add_argument("--staircase-steps", type=int, default=rcwa.DEFAULT_STAIRCASE_STEPS)
    p.add_argument("--raw", default=None, help="optional CSV of the raw (unfiltered) solves at both orders")
    args = p.parse_args(argv)
    if args.quick:
        args.orders = min(args.orders, 3)
        args.convergence_orders = [1, 2, 3]
        args.n_radii = 8
        args.wl_step_nm = 150.0
    if args.orders < 1:
        p.error("--orders must be >= 1 (the consistency check compares with orders - 1)")
    if not 0 < args.r_min_m < args.r_max_m < args.unit_cell_m / 2:
        p.error("need 0 < --r-min-m < --r-max-m < unit cell / 2 (metres)")
    if not 0 < args.height_m < 1e-5:
        p.error("--height-m must be a positive height in metres (e.g. 600e-9)")
    resolve_outputs(args)
    return args


def _default_name(args) -> str:
    return (f"{args.pillar_material}_on_{args.substrate_material}_h{args.height_m * 1e9:.0f}nm_"
            f"a{args.unit_cell_m * 1e9:.0f}nm").lower()


def resolve_outputs(args) -> None:
    """Absolute ``args.out`` / ``args.convergence``; refuse to overwrite the packaged library by accident."""
    root = project_root()
    named = args.out is not None
    out = Path(args.out) if named else Path("results/metaatoms") / f"{_default_name(args)}.csv"
    out = out if out.is_absolute() else root / out
    if out.resolve() == DEFAULT_LIBRARY_PATH:
        differs = {k: getattr(args, k) for k, v in PACKAGED.items()
                   if (getattr(args, k) != v.upper() if isinstance(v, str) else not np.isclose(getattr(args, k), v))}
        if not named or differs or args.quick:
            why = f"with {differs}" if differs else "with --quick" if args.quick else "without naming it in --out"
            raise InputError(f"refusing to overwrite the packaged library {DEFAULT_LIBRARY_PATH} {why}: it documents "
                             f"{PACKAGED}; write your library elsewhere (--out) and set optics.meta_atom to it")
    conv = Path(args.convergence) if args.convergence else out.with_name(f"{out.stem}_convergence.csv")
    args.out, args.convergence = out, conv if conv.is_absolute() else root / conv
    if args.raw:
        args.raw = Path(args.raw) if Path(args.raw).is_absolute() else root / args.raw


def check_design(args, wavelengths_m) -> None:
    """Fail before any solve if a material is not tabulated (or the substrate absorbs) at a wavelength."""
    rcwa.check_material(args.pillar_material, wavelengths_m)
    rcwa.check_material(args.substrate_material, wavelengths_m, lossless=True)
    if args.unit_cell_m >= min(wavelengths_m):
        print(f"warning: unit cell {args.unit_cell_m * 1e9:.0f} nm >= shortest wavelength "
              f"{min(wavelengths_m) * 1e9:.0f} nm: higher diffraction orders propagate and the zeroth-order "
              "t no longer describes all transmitted light (local periodic approximation breaks down)")


def solve(args, radius_m: float, wavelength_m: float, n_orders: int) -> complex:
    return rcwa.pillar_transmission(
        radius_m, wavelength_m, n_orders, height_m=args.height_m, period_m=args.unit_cell_m,
        n_steps=args.staircase_steps, n_pillar=rcwa.refractive_index(args.pillar_material, wavelength_m),
        n_in=rcwa.refractive_index(args.substrate_material, wavelength_m),
    )


def convergence_study(args) -> pd.DataFrame:
    design = sorted(OpticsConfig().wavelengths_m)
    radii = [50e-9, 80e-9, 110e-9] if not args.quick else [50e-9, 110e-9]
    if args.quick:
        design = design[1:2]
    orders = sorted(args.convergence_orders)
    rows = []
    jobs = [(w, r, n) for w in design for r in radii for n in orders]
    for w, r, n in tqdm(jobs, desc="convergence", unit="solve"):
        rows.append({"n_orders": n, "wavelength_m": w, "radius_m": r, "t": solve(args, r, w, n)})
    df = pd.DataFrame(rows)
    highest = df[df.n_orders == orders[-1]].set_index(["wavelength_m", "radius_m"])["t"]
    df["delta_vs_highest"] = [abs(t - highest[(w, r)]) for t, w, r in zip(df.t, df.wavelength_m, df.radius_m)]
    df["amplitude"] = np.abs(df.t.to_numpy())
    df["phase_rad"] = np.angle(df.t.to_numpy())
    return df[["n_orders", "wavelength_m", "radius_m", "amplitude", "phase_rad", "delta_vs_highest"]]


def library_wavelengths(args) -> np.ndarray:
    """The wavelength grid (metres) plus the design wavelengths, sorted."""
    design = [float(w) for w in OpticsConfig().wavelengths_m]
    return np.unique(np.concatenate([nm_grid(args.wl_min_nm, args.wl_max_nm, args.wl_step_nm), design]))


def build_library(args) -> tuple[pd.DataFrame, pd.DataFrame]:
    wavelengths = library_wavelengths(args)
    radii = np.linspace(args.r_min_m, args.r_max_m, args.n_radii)
    hi, lo = args.orders, args.orders - 1
    t_hi = np.zeros((len(wavelengths), len(radii)), complex)
    t_lo = np.zeros_like(t_hi)
    jobs = [(i, j) for i in range(len(wavelengths)) for j in range(len(radii))]
    for i, j in tqdm(jobs, desc=f"library (orders {hi} and {lo})", unit="atom"):
        t_hi[i, j] = solve(args, radii[j], wavelengths[i], hi)
        t_lo[i, j] = solve(args, radii[j], wavelengths[i], lo)
    converged = np.abs(t_hi - t_lo) <= args.consistency_tol
    t = t_hi.copy()
    for i in range(len(wavelengths)):
        ok = converged[i]
        if ok.all():
            continue
        if ok.sum() < 4:
            print(f"warning: only {ok.sum()} converged radii at {wavelengths[i]:.3e} m; kept raw values")
            continue
        spline = CubicSpline(radii[ok], t_hi[i, ok])
        t[i, ~ok] = spline(radii[~ok])
    amp = np.abs(t)
    t = np.where(amp > 1.0, t / np.maximum(amp, 1e-300), t)
    lib = pd.DataFrame({
        "wavelength_m": np.repeat(wavelengths, len(radii)),
        "radius_m": np.tile(radii, len(wavelengths)),
        "t_real": t.real.ravel(),
        "t_imag": t.imag.ravel(),
        "amplitude": np.abs(t).ravel(),
        "phase_rad": np.angle(t).ravel(),
    })
    raw = pd.DataFrame({
        "wavelength_m": lib.wavelength_m, "radius_m": lib.radius_m,
        f"t{hi}_real": t_hi.real.ravel(), f"t{hi}_imag": t_hi.imag.ravel(),
        f"t{lo}_real": t_lo.real.ravel(), f"t{lo}_imag": t_lo.imag.ravel(),
        "converged": converged.ravel(),
    })
    return lib, raw


def main(argv=None) -> None:
    import torch

    torch.set_num_threads(1)
    args = parse_args(argv)
    check_design(args, library_wavelengths(args))
    print(f"{args.pillar_material} pillars, {args.height_m * 1e9:.0f} nm tall, {args.unit_cell_m * 1e9:.0f} nm "
          f"cell, on {args.substrate_material}; writing {args.out}")
    t0 = time.time()
    conv = convergence_study(args)
    write_csv(conv, args.convergence)
    top = conv[conv.n_orders == args.orders]
    if len(top):
        print(f"convergence: at N={args.orders} max |t_N - t_highest| = {top.delta_vs_highest.max():.3g}, "
              f"median {top.delta_vs_highest.median():.3g}")
    lib, raw = build_library(args)
    out = args.out
    write_csv(lib, out)
    if args.raw:
        write_csv(raw, args.raw)
    n_bad = int((~raw.converged).sum())
    print(f"library: {len(lib)} atoms, {n_bad} ({100 * n_bad / len(raw):.1f}%) not converged in order "
          f"and replaced by spline; max |t| = {lib.amplitude.max():.4f}; wrote {out} "
          f"in {time.time() - t0:.0f} s; use it with --set optics.meta_atom={out}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
