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

1. The library: every (wavelength, radius) pair solved at ``--orders``
   (default ``rcwa.LIBRARY_ORDERS``) with ``--method`` (default
   ``rcwa.LIBRARY_METHOD``: the exact circle with the normal-vector
   factorisation, see :mod:`dkolib.optics.rcwa`). The amplitude is capped at
   1 (power conservation). Optionally (``--consistency-tol``) every pair is
   also solved at ``--orders - 1`` and points where the two differ by more
   than the tolerance are replaced by a cubic spline through the others of
   the same wavelength (off by default: it doubles the runtime, and the
   check below is the stronger one).
2. Fourier-order convergence check: at every library wavelength, on every
   ``--convergence-every``-th library radius (from the largest down) plus
   the radius nearest each ``--convergence-radius-m`` (120 nm: the lossy
   400 nm resonance, the hardest point), the library's solve is compared
   with one at ``--reference-orders``. ``--convergence`` gets one row per
   wavelength (``n_orders``, ``n_orders_ref``, ``method``, ``n_radii``,
   ``max_abs_dt``, ``max_abs_damplitude``, ``max_abs_dphase_rad``,
   ``worst_radius_m``) and ``<convergence stem>_points.csv`` the checked points.

Geometry, materials and conventions: see :mod:`dkolib.optics.rcwa` (substrate-side
incidence, exp(-i omega t), power-normalised amplitude). Materials are names of
meent's refractive-index table (listed by --help); the substrate must be lossless.
Runtime of the full build (defaults): about 50 minutes on one CPU core, half of it the convergence check
(2993 s measured on a shared 2-core machine: 1471 s for the 624 atoms at 9 orders, ~2.4 s each; 1522 s for
the 52 checks at 14 orders, ~29 s each).
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
    p.add_argument("--method", default=rcwa.LIBRARY_METHOD, choices=rcwa.METHODS,
                   help="circle model / factorisation (default %(default)s; see dkolib.optics.rcwa)")
    p.add_argument("--reference-orders", type=int, default=14,
                   help="the much higher order the library's order is checked against (convergence CSV)")
    p.add_argument("--convergence-orders", type=int, nargs="+", default=None,
                   help="older spelling: the highest of these is used as --reference-orders")
    p.add_argument("--convergence-every", type=int, default=16,
                   help="convergence check on every k-th library radius (from the largest down) ...")
    p.add_argument("--convergence-radius-m", type=float, nargs="*", default=[120e-9],
                   help="... plus the library radii nearest these (default: the 400 nm lossy resonance)")
    p.add_argument("--consistency-tol", type=float, default=None,
                   help="optional: also solve every atom at orders - 1 and replace points with "
                        "|t_N - t_(N-1)| above this by a spline (off by default: doubles the runtime)")
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
        args.reference_orders = min(args.reference_orders, 5)
        args.convergence_every = 4
        args.n_radii = 8
        args.wl_step_nm = 150.0
    if args.convergence_orders:
        args.reference_orders = max(args.convergence_orders)
    if args.orders < 1 or args.reference_orders < args.orders:
        p.error("need 1 <= --orders <= --reference-orders")
    if args.reference_orders == args.orders:
        print(f"warning: --reference-orders = --orders = {args.orders}: the convergence check compares "
              "the library with itself")
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
        n_in=rcwa.refractive_index(args.substrate_material, wavelength_m), method=args.method,
    )


def convergence_radii(args, radii: np.ndarray) -> np.ndarray:
    """Indices of the library radii checked: every ``--convergence-every``-th from the largest down,
    plus the radius nearest each ``--convergence-radius-m`` (the 400 nm resonance by default)."""
    idx = set(range(len(radii) - 1, -1, -max(1, args.convergence_every)))
    idx |= {int(np.argmin(np.abs(radii - r))) for r in args.convergence_radius_m}
    return np.array(sorted(idx))


def convergence_study(args, t_lib: np.ndarray, wavelengths: np.ndarray, radii: np.ndarray):
    """The library's order against ``--reference-orders`` at every library wavelength.

    ``t_lib`` [wavelength, radius] are the library's solves (at ``--orders``);
    returns the per-point table and the per-wavelength summary (max |dt|,
    max |d amplitude|, max |d phase| over the checked radii).
    """
    sel = convergence_radii(args, radii)
    rows = []
    jobs = [(i, j) for i in range(len(wavelengths)) for j in sel]
    for i, j in tqdm(jobs, desc=f"convergence (orders {args.orders} vs {args.reference_orders})", unit="solve"):
        t_ref = solve(args, radii[j], wavelengths[i], args.reference_orders)
        t = t_lib[i, j]
        rows.append({"wavelength_m": wavelengths[i], "radius_m": radii[j], "n_orders": args.orders,
                     "n_orders_ref": args.reference_orders, "amplitude": abs(t), "phase_rad": np.angle(t),
                     "amplitude_ref": abs(t_ref), "phase_ref_rad": np.angle(t_ref), "abs_dt": abs(t - t_ref),
                     "abs_damplitude": abs(abs(t) - abs(t_ref)),
                     "abs_dphase_rad": abs(np.angle(t / t_ref)) if t_ref != 0 else np.nan})
    points = pd.DataFrame(rows)
    summary = points.groupby("wavelength_m", as_index=False).agg(
        n_orders=("n_orders", "first"), n_orders_ref=("n_orders_ref", "first"), n_radii=("radius_m", "size"),
        max_abs_dt=("abs_dt", "max"), max_abs_damplitude=("abs_damplitude", "max"),
        max_abs_dphase_rad=("abs_dphase_rad", "max"))
    worst = points.loc[points.groupby("wavelength_m").abs_dt.idxmax(), ["wavelength_m", "radius_m"]]
    summary = summary.merge(worst.rename(columns={"radius_m": "worst_radius_m"}), on="wavelength_m")
    summary.insert(3, "method", args.method)
    return points, summary


def library_wavelengths(args) -> np.ndarray:
    """The wavelength grid (metres) plus the design wavelengths, sorted."""
    design = [float(w) for w in OpticsConfig().wavelengths_m]
    return np.unique(np.concatenate([nm_grid(args.wl_min_nm, args.wl_max_nm, args.wl_step_nm), design]))


def build_library(args) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    wavelengths = library_wavelengths(args)
    radii = np.linspace(args.r_min_m, args.r_max_m, args.n_radii)
    hi, lo = args.orders, args.orders - 1
    check = args.consistency_tol is not None
    t_hi = np.zeros((len(wavelengths), len(radii)), complex)
    t_lo = np.full_like(t_hi, np.nan)
    jobs = [(i, j) for i in range(len(wavelengths)) for j in range(len(radii))]
    desc = f"library (orders {hi} and {lo})" if check else f"library (orders {hi})"
    for i, j in tqdm(jobs, desc=desc, unit="atom"):
        t_hi[i, j] = solve(args, radii[j], wavelengths[i], hi)
        if check:
            t_lo[i, j] = solve(args, radii[j], wavelengths[i], lo)
    converged = np.abs(t_hi - t_lo) <= args.consistency_tol if check else np.ones(t_hi.shape, bool)
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
    return lib, raw, t_hi


def main(argv=None) -> None:
    import torch

    torch.set_num_threads(1)
    args = parse_args(argv)
    check_design(args, library_wavelengths(args))
    print(f"{args.pillar_material} pillars, {args.height_m * 1e9:.0f} nm tall, {args.unit_cell_m * 1e9:.0f} nm "
          f"cell, on {args.substrate_material}; writing {args.out}")
    t0 = time.time()
    lib, raw, t_solved = build_library(args)
    out = args.out
    write_csv(lib, out)
    if args.raw:
        write_csv(raw, args.raw)
    n_bad = int((~raw.converged).sum())
    print(f"library: {len(lib)} atoms at {args.orders} orders ({args.method}), {n_bad} "
          f"({100 * n_bad / len(raw):.1f}%) replaced by spline; max |t| = {lib.amplitude.max():.4f}; wrote {out} "
          f"in {time.time() - t0:.0f} s; use it with --set optics.meta_atom={out}")
    radii = np.linspace(args.r_min_m, args.r_max_m, args.n_radii)
    points, summary = convergence_study(args, t_solved, library_wavelengths(args), radii)
    write_csv(summary, args.convergence)
    write_csv(points, args.convergence.with_name(f"{args.convergence.stem}_points.csv"))
    print(f"convergence: N={args.orders} vs N={args.reference_orders} on {summary.n_radii.iloc[0]} radii per "
          f"wavelength: max |dt| = {summary.max_abs_dt.max():.4f} (at {summary.wavelength_m[summary.max_abs_dt.idxmax()] * 1e9:.0f} nm), "
          f"max |d amplitude| = {summary.max_abs_damplitude.max():.4f}, max |d phase| = "
          f"{summary.max_abs_dphase_rad.max():.4f} rad; wrote {args.convergence}; total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    sys.exit(run_cli(main))
