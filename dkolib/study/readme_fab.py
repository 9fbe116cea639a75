"""README sections on the optics as fabricated: designs read by another optical model, the simulation grid."""

from __future__ import annotations

import pandas as pd

from .markdown import _fmt, _read, _renamed, _table
from .paths import ProfilePaths


def as_fabricated_section(paths: ProfilePaths) -> str:
    """The previous optical model's designs read as designed and as fabricated (``as_fabricated.csv``)."""
    table, metrics = _read(paths.results / "as_fabricated.csv"), _read(paths.results / "stage1" / "metrics.csv")
    if table is None:
        return ""
    cols = {"design": "design", "reading": "read as", "light_crop": "light in crop", "corr": "channel corr.",
            "kernel_err": "kernel error", "abs_rel_crop": "AbsRel crop", "abs_rel_full_psf_noise": "AbsRel full PSF + noise"}
    by = table.set_index(["design", "reading"])
    designs = [d for d in table["design"].unique() if {(d, "as_designed"), (d, "as_fabricated")} <= set(by.index)]
    test = pd.Series(dtype=float) if metrics is None else metrics[metrics["split"].str.endswith("test")].set_index("model")["abs_rel"]
    refs = [f"{n} {_fmt(test[k])}" for k, n in (("electronic", "electronic"), ("constant", "constant predictor")) if k in test]
    worse = [d for d in designs if "constant" in test and "abs_rel_full_psf_noise" in by
             and by.loc[(d, "as_fabricated"), "abs_rel_full_psf_noise"] > test["constant"]]
    return ("### As designed versus as fabricated (`as_fabricated.csv`)\n\n"
            f"The designs of the previous optical model (cells `{table['designed_cell_model'].iloc[0]}`, library "
            f"`{table['designed_library'].iloc[0]}`) read by the model they were made with, by the staircase of "
            "cells the mask builds, and by the staircase with the current library (`scripts/as_fabricated.py`; "
            "gains refitted in closed form for each, as a built camera is calibrated; DKO against the electronic "
            "kernels, E2E against its own as-designed kernels). As fabricated, " + "; ".join(
                f"{d}'s light in the crop is {by.loc[(d, 'as_fabricated'), 'light_crop'] / by.loc[(d, 'as_designed'), 'light_crop']:.2f}x"
                " its designed" for d in designs) + "."
            + (f" References (AbsRel, test split): {', '.join(refs)}." if refs else "")
            + (f" Under sensor noise, as fabricated, {' and '.join(worse)} read worse than the constant predictor."
               if worse else "") + "\n\n" + _table(_renamed(table, cols)) + "\n")


def cell_pitch_section(paths: ProfilePaths) -> str:
    """One DKO design on finer simulation grids and on the mask's pillar lattice (``cell_pitch.csv``)."""
    table = _read(paths.results / "cell_pitch.csv")
    if table is None:
        return ""
    cols = {"cell_model": "cell model", "grid": "grid", "pitch_m": "pitch (m)", "light_crop": "light in crop",
            "rel_psf_err": "PSF error vs lattice", "corr": "channel corr.", "kernel_err": "kernel error"}
    design = table[table["grid"] == "cells/1"].set_index("cell_model")["rel_psf_err"]
    text = ("### Which grid to simulate on (`cell_pitch.csv`)\n\n"
            f"A DKO design (`{table['design'].iloc[0] if 'design' in table else 'dko'}`) simulated with each cell "
            "repeated on finer grids over the same aperture, and on the mask's "
            "own 300 nm pillar lattice (each site the transmission of the cell its centre falls in), which is the "
            "reference (`scripts/cell_pitch_study.py`; loss-window PSFs, gains refitted).")
    if {"staircase", "bandlimited"} <= set(design.index):
        text += (f" At the design's pitch the staircase model is {_fmt(100 * design['staircase'], 2)} % from the lattice, "
                 f"the band-limited one {_fmt(100 * design['bandlimited'], 2)} %.")
    return text + "\n\n" + _table(_renamed(table, cols)) + "\n"
