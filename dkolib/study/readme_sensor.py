"""README section on the whole sensor (``results/<profile>/sensor/``, written by ``scripts/sensor_study.py``)."""

from __future__ import annotations

import math

import pandas as pd

from .markdown import _fmt, _read, _table
from .paths import ProfilePaths

_LIGHT = {"kernel": "kernel", "render_window": "render window", "own_region": "own region",
          "neighbours": "neighbours' regions", "beyond_window": "past the neighbours"}


def _base(frame: pd.DataFrame, gap_m: float, wall_m: float) -> pd.DataFrame:
    return frame[(frame["gap_m"] == gap_m) & (frame["baffle_wall_m"] == wall_m)]


def paper_psf_scale(default_cfg, paper_cfg, image_hw_default, image_hw_paper) -> float:
    """Ratio of one whole-sensor PSF's cost, paper over default: the product of the kept
    frequencies per axis (the fine-grid FFT and its quadrature scale with it), shortest wavelength."""
    from ..optics.sensor import array_geometry
    from ..optics.sensor_psf import _axis_plan

    def size(cfg, hw):
        g = array_geometry(cfg.optics, 6, 3, hw, gap_m=cfg.sensor.gap_m)
        lam = min(cfg.optics.wavelengths_m)
        n = 1.0
        for r in g.halo_half_px():
            _, _, _, k_max = _axis_plan(cfg.optics.n_cells, cfg.optics, r, lam)
            k = 2 * k_max + 1
            n *= k * max(math.log2(k), 1.0)
        return n

    return size(paper_cfg, image_hw_paper) / size(default_cfg, image_hw_default)


def sensor_section(paths: ProfilePaths) -> str:
    """Light budget, accuracy and cost on the whole sensor."""
    light = _read(paths.results / "sensor" / "light_budget.csv")
    table = _read(paths.results / "sensor" / "sensor_eval.csv")
    cost = _read(paths.results / "sensor" / "cost.csv")
    if light is None or table is None:
        return ""
    from ..config import load_config

    cfg = load_config(paths.profile)
    gap, wall = cfg.sensor.gap_m, cfg.sensor.baffle_wall_m
    base = _base(light, gap, wall)
    budget = base.groupby(["design", "wavelength_nm"])[list(_LIGHT)].mean().reset_index()
    budget = budget.rename(columns={"wavelength_nm": "wavelength (nm)", **_LIGHT})
    dko = base[base["design"] == "dko"]
    parts = ["### The whole sensor (`sensor/light_budget.csv`, `sensor/sensor_eval.csv`)", "",
             "Every metasurface on the mask's grid over one sensor (`dkolib.optics.sensor`; apertures "
             f"{_fmt(gap * 1e6)} um apart, the pitch rounded up to whole pixels), each PSF computed over its "
             "nearest neighbours' read-out regions, the halo by one fine-grid FFT "
             "(`dkolib.optics.sensor_psf`) and the central render window by the exact engine. Fractions of "
             "the light on each aperture, mean over metasurfaces, for a point at the scene's centre "
             "(`own region`: the metasurface's whole read-out region, the kernel included; `past the "
             "neighbours`: transmitted light outside the computed window):", "", _table(budget), ""]
    if len(dko):
        parts.append(f"So the `full_psf` modes drop {_fmt(1 - (dko['render_window'] / dko['own_region']).mean())} of "
                     "the light that lands on a DKO metasurface's own region, and "
                     f"{_fmt(dko['neighbours'].mean())} of its light lands where its neighbours are read.")
        parts.append("")
    metrics = _read(paths.results / "stage1" / "metrics.csv")
    piv = table[table["gap_m"].isna() | ((table["gap_m"] == gap) & (table["baffle_wall_m"] == wall))]
    piv = piv.pivot_table(index="design", columns="eval", values="abs_rel").reset_index()
    n_img = int(table["images"].iloc[0]) if "images" in table else None
    refs = ""
    if metrics is not None:
        test = metrics[metrics["split"].str.endswith("test")].set_index("model")["abs_rel"]
        if "constant" in test:
            refs = f" The constant predictor reads {_fmt(test['constant'])} on the whole test split."
    parts += [f"AbsRel on the first {n_img} test images, the same noise seed in every noisy mode "
              "(`full_psf_noise`: today's single-window rendering; `sensor`: the whole sensor; "
              "`sensor_noise`: plus shot and read noise drawn on the summed sensor). The gains are the "
              "designs' own, unchanged." + refs, "", _table(piv), ""]
    variants = table[(table["design"] == "dko") & table["gap_m"].notna()].copy()
    if len(variants) > 2:
        variants["setting"] = [f"gap {_fmt(g * 1e6)} um" + (f", walls {_fmt(w * 1e3)} mm" if w else "")
                               for g, w in zip(variants["gap_m"], variants["baffle_wall_m"])]
        settings = variants.drop_duplicates(["gap_m", "baffle_wall_m"])
        vpiv = variants.pivot_table(index="setting", columns="eval", values="abs_rel").reindex(settings["setting"])
        vl = light[light["design"] == "dko"].groupby(["gap_m", "baffle_wall_m"])["neighbours"].mean()
        vpiv["light in neighbours' regions"] = [vl.get((g, w), float("nan"))
                                                for g, w in zip(settings["gap_m"], settings["baffle_wall_m"])]
        parts += ["The DKO design with more space or with walls between its metasurfaces (walls as an angular "
                  "cut-off, `sensor_psf.baffle_sin_for_wall`):", "", _table(vpiv.reset_index()), ""]
    if cost is not None and len(cost):
        c = cost[cost["psf_s"].notna()]
        if len(c):
            row = c.iloc[0]
            per_el = row["psf_s"] / row["n_elements"]
            text = (f"Cost: {_fmt(row['psf_s'])} s for the {int(row['n_elements'])} PSFs of one design "
                    f"({_fmt(per_el)} s each, window {row['psf_window_px']} px, one thread), "
                    f"{_fmt(row['render_s_per_image'])} s per whole-sensor image, peak memory "
                    f"{_fmt(row['peak_rss_mb'] / 1024)} GB.")
            try:
                paper = load_config("paper")
                scale = paper_psf_scale(cfg, paper, (cfg.data.height, cfg.data.width),
                                        (paper.data.height, paper.data.width))
                text += (f" At the paper's size (384 metasurfaces of {paper.optics.n_cells} cells, "
                         f"{paper.data.height} x {paper.data.width} images) one PSF costs about {_fmt(scale)}x as "
                         f"much (kept frequencies per axis, shortest wavelength): about "
                         f"{_fmt(per_el * scale * 384 / 3600)} CPU-hours for the array, scaled, not measured.")
            except Exception as err:  # noqa: BLE001 - an estimate that cannot be made is left out, not fatal
                text += f" (no paper-size estimate: {err})"
            parts += [text, ""]
    for name, caption in (("sensor_frame", "the whole sensor under the DKO array"),
                          ("sensor_light_budget", "where each metasurface's light lands")):
        png = paths.figures / f"{name}.png"
        if png.exists():
            parts.append(f"![{caption}]({png.relative_to(paths.root).as_posix()})\n")
    return "\n".join(parts) + "\n"


__all__ = ["paper_psf_scale", "sensor_section"]
