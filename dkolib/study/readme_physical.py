"""README section on the physical evaluation (``results/<profile>/physical_eval.csv``): every design in
the paper's crop, the whole PSF in one window (with noise) and on the whole sensor (with noise)."""

from __future__ import annotations

import pandas as pd

from .markdown import _fmt, _read, _table
from .paths import ProfilePaths
from .readme_budgets import e2e_budget_sentence


def physical_section(paths: ProfilePaths) -> str:
    phys = _read(paths.results / "physical_eval.csv")
    if phys is None:
        return ""
    pivot = phys.pivot_table(index="design", columns="eval", values="abs_rel").reset_index()
    return ("### Idealised versus physical evaluation (`physical_eval.csv`, AbsRel, test split)\n\n"
            "`crop`: the idealised k x k kernel; `full_psf`: the sensor image rendered with the whole PSF "
            "window; `full_psf_noise`: plus shot and read noise. `dko_finetune` fine-tunes the back end on "
            "the crop kernel (as the paper does), `dko_finetune_psf` on full-PSF sensor images, "
            "`dko_finetune_noise` on the noisy sensor images the camera delivers (whole PSF window and sensor "
            "noise: its back end's normalisation expects noise, so it is meant for that mode only). `sensor`: "
            "every metasurface's whole PSF on one sensor under the array (halo on its own read-out region, "
            "crosstalk on its neighbours', the profile's gap and walls), each region read out as in the other "
            "modes; `sensor_noise`: plus shot and read noise drawn on the summed sensor; `*_finetune_sensor`: "
            "back ends fine-tuned on noisy whole-sensor images, the optics frozen (the sensor study below). "
            "`ideal_optics` is the electronic network read "
            "through optics that deliver its exact kernels with all the light in the kernel window, under the "
            "same noise: the bound that the photon level sets on a design that keeps the electronic back "
            "end.\n\n" + _table(pivot) + "\n\n" + physical_sentence(phys) + "\n\n"
            + e2e_budget_sentence(paths) + "\n")


def physical_sentence(phys: pd.DataFrame) -> str:
    """The physical-evaluation targets in words: best DKO design per mode against the electronic network."""
    abs_rel = phys.pivot_table(index="design", columns="eval", values="abs_rel")
    if "electronic" not in abs_rel.index:
        return ""
    ref = abs_rel.loc["electronic"]
    dko = [d for d in abs_rel.index if d.startswith("dko")]
    parts = []
    for mode in ("crop", "full_psf", "full_psf_noise", "sensor", "sensor_noise"):
        if mode not in abs_rel or not dko or abs_rel.loc[dko, mode].isna().all():
            continue
        best = abs_rel.loc[dko, mode].idxmin()
        text = (f"`{mode}`: best DKO design `{best}` at {_fmt(abs_rel.loc[best, mode])} "
                f"({_fmt(abs_rel.loc[best, mode] / ref[mode])}x the electronic network")
        e2e = [d for d in abs_rel.index if d.startswith("e2e") and pd.notna(abs_rel.loc[d, mode])]
        if e2e == ["e2e"]:
            text += f"; E2E {_fmt(abs_rel.loc['e2e', mode])}"
        elif e2e:
            text += "; E2E " + ", ".join(f"`{d}` {_fmt(abs_rel.loc[d, mode])}" for d in e2e)
        if mode.endswith("noise") and "ideal_optics" in abs_rel.index:
            bound = abs_rel.loc["ideal_optics", mode]
            text += (f"; ideal optics {_fmt(bound)}, {_fmt(bound / ref[mode])}x; the best DKO design is "
                     f"{_fmt(abs_rel.loc[best, mode] / bound)}x that bound")
        parts.append(text + ")")
    return "Against the electronic network: " + "; ".join(parts) + "." if parts else ""


__all__ = ["physical_section", "physical_sentence"]
