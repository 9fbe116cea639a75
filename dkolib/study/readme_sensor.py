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


def sensor_sentence(piv: pd.DataFrame) -> str:
    """The whole-sensor targets in words: the best DKO design under noise against the electronic
    network, the ideal-optics bound on the same sensor and E2E read from the same images."""
    t = piv.set_index("design")
    if "sensor_noise" not in t or "electronic" not in t.index:
        return ""
    noisy = t["sensor_noise"].dropna()
    dko = [d for d in noisy.index if d.startswith("dko")]
    e2e = [d for d in noisy.index if d.startswith("e2e")]
    if not dko:
        return ""
    best = noisy[dko].idxmin()
    ref = t.loc["electronic", "full_psf_noise"]
    text = (f"On the noisy whole sensor the best DKO design is `{best}` at {_fmt(noisy[best])}, "
            f"{_fmt(noisy[best] / ref)}x the electronic network ({_fmt(ref)})")
    if "ideal_optics" in t.index:
        on_sensor = pd.notna(t.loc["ideal_optics"].get("sensor_noise", float("nan")))
        bound = t.loc["ideal_optics", "sensor_noise" if on_sensor else "full_psf_noise"]
        if pd.notna(bound):
            where = "on the same sensor" if on_sensor else "in one window per metasurface"
            text += f" and {_fmt(noisy[best] / bound)}x the bound ideal optics sets {where} ({_fmt(bound)})"
    if e2e:
        tuned = [d for d in e2e if d.endswith("_finetune_sensor")]
        b2 = noisy[tuned or e2e].idxmin()
        what = "E2E with a back end trained on the same noisy whole-sensor images" if tuned else "the best E2E design"
        verdict = "better than" if noisy[best] < noisy[b2] else "not better than"
        text += f"; {what}, `{b2}`, reads {_fmt(noisy[b2])}, so DKO is {verdict} E2E there"
    if "full_psf_noise" in t and pd.notna(t.loc[best, "full_psf_noise"]):
        text += (f". Read through one window per metasurface the same design scored "
                 f"{_fmt(t.loc[best, 'full_psf_noise'])}")
    return text + "."


def below_constant_sentence(piv: pd.DataFrame, constant: float | None) -> str:
    """Which designs read worse than the constant predictor on the noisy whole sensor, and why."""
    if constant is None or "sensor_noise" not in piv:
        return ""
    noisy = piv.set_index("design")["sensor_noise"].dropna()
    worse = [d for d in noisy.index if noisy[d] > constant]
    if not worse:
        return f"Every design reads better than the constant predictor ({_fmt(constant)}) on the noisy whole sensor."
    return (f"Read with the gains they were designed with, {', '.join(f'`{d}`' for d in worse)} "
            f"{'is' if len(worse) == 1 else 'are'} worse than the constant predictor ({_fmt(constant)}) on the "
            "noisy whole sensor: each channel is gained for the light in its kernel window, and the halo on its "
            "own region and its neighbours' light, which a single-window rendering drops, add a broad blur of "
            "the scene and other channels' images at a strength comparable to the kernel's. Only a back end that has seen whole-sensor images reads "
            "them (`*_finetune_sensor`).")


def setting_sentence(vpiv: pd.DataFrame) -> str:
    """What a gap or walls recover, from the DKO variants table (first row: the profile's setting)."""
    if "sensor_noise" not in vpiv or len(vpiv) < 2:
        return ""
    base, rest = vpiv.iloc[0], vpiv.iloc[1:]
    best = rest["sensor_noise"].idxmin()
    return (f"A wider spacing or walls change how much light crosses over, but not the verdict: the best "
            f"setting tried, {best}, moves DKO as designed from {_fmt(base['sensor_noise'])} to "
            f"{_fmt(rest.loc[best, 'sensor_noise'])} under noise, with "
            f"{_fmt(rest.loc[best, vpiv.columns[-1]])} of its light in the neighbours' regions "
            f"(from {_fmt(base[vpiv.columns[-1]])}); what is left is the halo on each metasurface's own region.")


def bench_sentence(bench: pd.DataFrame) -> str:
    """The whole sensor's cost at each benchmarked size (``results/benchmarks/sensor_cost.csv``,
    ``scripts/bench_sensor.py``): one PSF per wavelength and one frame, measured; the array's PSFs
    estimated from them."""
    parts = []
    for size, g in bench.groupby("size", sort=False):
        psf = g[g["part"] == "psf"]
        render = g[g["part"] == "render"]
        if not len(psf) or not len(render):
            continue
        r = render.iloc[0]
        per_wl = ", ".join(f"{_fmt(row['seconds'])} s at {row['wavelength_nm']:g} nm" for _, row in psf.iterrows())
        parts.append(f"`{size}` ({int(r['n_elements'])} metasurfaces of {int(r['n_cells'])} cells, {r['image_hw']} "
                     f"regions, PSF window {r['psf_window_px']} px): one PSF {per_wl}, so about "
                     f"{_fmt(psf['array_seconds_estimate'].sum() / 3600)} CPU-hours for the array's PSFs; one "
                     f"noisy frame {_fmt(r['seconds'])} s from {_fmt(r['spectra_gb'])} GB of region spectra; "
                     f"peak {_fmt(r['peak_rss_mb'] / 1024)} GB")
    if not parts:
        return ""
    return ("Measured on one thread by `scripts/bench_sensor.py` (`results/benchmarks/sensor_cost.csv`; a random "
            "phase per PSF, the array's PSF time scaled from them): " + "; ".join(parts) + ".")


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
    # the DKO fine-tunes share DKO's array, hence its light budget: one row set for them all
    shown = base[~base["design"].str.startswith("dko_")]
    budget = shown.groupby(["design", "wavelength_nm"])[list(_LIGHT)].mean().reset_index()
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
    refs, constant = "", None
    if metrics is not None:
        test = metrics[metrics["split"].str.endswith("test")].set_index("model")["abs_rel"]
        if "constant" in test:
            constant = float(test["constant"])
            refs = f" The constant predictor reads {_fmt(constant)} on the whole test split."
    parts += [f"AbsRel on the first {n_img} test images, the same noise seed in every noisy mode "
              "(`full_psf_noise`: today's single-window rendering; `sensor`: the whole sensor; "
              "`sensor_noise`: plus shot and read noise drawn on the summed sensor). The gains are the "
              "designs' own, unchanged; `*_finetune_sensor` are back ends fine-tuned on noisy whole-sensor "
              f"images, the optics frozen ({cfg.sensor.finetune_steps} steps each, `sensor.finetune_steps`). Ideal "
              "optics (the electronic kernels, all the light in the kernel window) has no halo and no crosstalk: "
              "its `sensor` row is the electronic network's, its `sensor_noise` row the bound that noise on the "
              "summed sensor sets." + refs, "", _table(piv), "", sensor_sentence(piv), "",
              below_constant_sentence(piv, constant), ""]
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
                  "cut-off, `sensor_psf.baffle_sin_for_wall`):", "", _table(vpiv.reset_index()), "",
                  setting_sentence(vpiv), ""]
    crosstalk = _read(paths.dko / "crosstalk.csv")
    if crosstalk is not None and len(crosstalk) > 1:
        from .crosstalk import crosstalk_sentence

        shown = crosstalk[["leakage_weight", "kernel", "own_region", "neighbours", "err_elem", "corr_elem"]].rename(
            columns={"leakage_weight": "leakage weight", "own_region": "own region",
                     "neighbours": "neighbours' regions", "err_elem": "kernel error", "corr_elem": "correlation"})
        parts += [f"Stage 2 against crosstalk (`dko/crosstalk.csv`): the whole kernel bank synthesised at each "
                  f"leakage weight of `dko.operating_weights` (the profile's: {_fmt(cfg.dko.leakage_weight)}), "
                  "each design on the same sensor; fractions of each aperture's light, mean over metasurfaces, "
                  "beside the per-metasurface kernel error and correlation:", "", _table(shown), "",
                  crosstalk_sentence(crosstalk), ""]
    if cost is not None and len(cost):
        c = cost[cost["psf_s"].notna()]
        if "psf_source" in c:  # a time measured in this run, not read from a cache or another design's row
            c = c[c["psf_source"] == "computed"]
        # prefer a design computed at the profile's own setting (a cached array has no time)
        at_base = c[(c["gap_m"] == gap) & (c["baffle_wall_m"] == wall)]
        c = at_base if len(at_base) else c
        if len(c):
            row = c.iloc[0]
            per_el = row["psf_s"] / row["n_elements"]
            text = (f"Cost (`{row['design']}`, gap {_fmt(row['gap_m'] * 1e6)} um): {_fmt(row['psf_s'])} s for "
                    f"its {int(row['n_elements'])} PSFs ({_fmt(per_el)} s each, window {row['psf_window_px']} px, "
                    f"this machine's CPU), {_fmt(row['render_s_per_image'])} s per whole-sensor image; the "
                    f"study's process peaked at {_fmt(row['peak_rss_mb'] / 1024)} GB.")
            bench = _read(paths.root / "results" / "benchmarks" / "sensor_cost.csv")
            if bench is not None and bench_sentence(bench):
                text += " " + bench_sentence(bench)
            else:
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
                          ("sensor_light_budget", "where each metasurface's light lands"),
                          ("dko_crosstalk", "stage 2: kernel error against crosstalk")):
        png = paths.figures / f"{name}.png"
        if png.exists():
            parts.append(f"![{caption}]({png.relative_to(paths.root).as_posix()})\n")
    return "\n".join(parts) + "\n"


__all__ = ["below_constant_sentence", "bench_sentence", "paper_psf_scale", "sensor_section", "sensor_sentence", "setting_sentence"]
