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


def optics_aware_section(paths: ProfilePaths) -> str:
    """Stage 1 with the aperture's passband as a penalty, against the electronic stage 1
    (``dko/optics_aware_stage1.csv``)."""
    table = _read(paths.dko / "optics_aware_stage1.csv")
    if table is None:
        return ""
    in_band = table[table["out_of_band_fraction"] == 0.0]
    trained = table[table["out_of_band_fraction"] > 0.0].copy()
    text = ("### A stage 1 that knows the optics (`dko/optics_aware_stage1.csv`)\n\n"
            "The optics-aware stage 1 adds `stage1.passband_weight` x the first layer's energy outside the "
            "aperture's passband D/(lambda z) to the depth loss (`scripts/optics_aware_stage1.py`); each "
            "stage 1 is then synthesised with the profile's stage 2 and read on the "
            f"{table['split'].iloc[0]} split.")
    if len(in_band):
        zs = ", ".join(f"{1e3 * z:.3g} mm" for z in in_band["sensor_distance_m"])
        text += (f" At {zs} (the profile's geometry) every electronic kernel is inside the passband, the "
                 "penalty is 0 and the optics-aware stage 1 is the electronic one: nothing to gain there.")
    if trained.empty:
        return text + "\n"
    trained["sensor distance mm"] = 1e3 * trained["sensor_distance_m"]
    trained["stage 1"] = [s if w == 0 else f"{s}, weight {w:g}" for s, w in zip(trained["stage1"], trained["passband_weight"])]
    cols = {"sensor distance mm": "sensor distance mm", "stage 1": "stage 1",
            "out_of_band_fraction": "kernel energy out of band", "electronic_abs_rel": "electronic AbsRel",
            "dko_corr_elem": "DKO corr.", "dko_err_elem": "DKO kernel error", "dko_light_crop": "light in crop",
            "dko_abs_rel_crop": "DKO AbsRel crop", "dko_abs_rel_full_psf_noise": "DKO AbsRel full PSF + noise"}
    for z, grp in trained.groupby("sensor_distance_m", sort=False):
        base, aware = grp[grp["passband_weight"] == 0], grp[grp["passband_weight"] > 0]
        if base.empty or aware.empty:
            continue
        b, a = base.iloc[0], aware.iloc[-1]
        text += (f" At {1e3 * z:.3g} mm the optics-aware stage 1 (weight {a['passband_weight']:g}) moves the kernels' "
                 f"out-of-band energy from {_fmt(b['out_of_band_fraction'])} to {_fmt(a['out_of_band_fraction'])}, "
                 f"DKO's kernel error from {_fmt(b['dko_err_elem'])} to {_fmt(a['dko_err_elem'])} and its AbsRel under "
                 f"noise from {_fmt(b['dko_abs_rel_full_psf_noise'])} to {_fmt(a['dko_abs_rel_full_psf_noise'])}, while "
                 f"the electronic network itself goes from {_fmt(b['electronic_abs_rel'])} to "
                 f"{_fmt(a['electronic_abs_rel'])}")
        if "constant_abs_rel" in a:
            worse = a["dko_abs_rel_full_psf_noise"] > a["constant_abs_rel"]
            text += (f" (constant predictor {_fmt(a['constant_abs_rel'])}: under noise the design "
                     + ("is still worse than it" if worse else "beats it") + ")")
        text += "."
    cols["constant_abs_rel"] = "constant predictor AbsRel"
    return text + " Where the kernels are out of band:\n\n" + _table(_renamed(trained, cols)) + "\n"
