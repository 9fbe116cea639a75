"""Stage 2 against crosstalk: kernel fidelity and where each design's light lands, per leakage weight.

Stage 2's leakage term (:func:`dkolib.dko.losses.leakage_loss`) penalises ``1 - E_crop``, the
fraction of each aperture's light that misses the kernel crop, wherever it lands: on the
metasurface's own read-out region (the halo) and on its neighbours' regions (crosstalk) alike.
Its weight trades that light against the kernels' fidelity. This study synthesises the whole
kernel bank at each weight of ``dko.operating_weights`` (the runs of
``scripts/operating_point.py``, shared with it), places each design on the whole sensor at the
profile's gap and walls (:mod:`dkolib.optics.sensor`) and reports, per weight, the kernel error
and correlation beside the light in the kernel, on the own region and in the neighbours' regions.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .paths import ProfilePaths

#: fidelity columns taken from a stage-2 ``summary.csv`` (per-metasurface gain model)
FIDELITY = {"corr_elem": "channel_corr_elem_mean", "err_elem": "channel_norm_err_elem_mean"}
#: light-budget columns averaged per weight (fractions of the light on each aperture)
LIGHT = ("kernel", "render_window", "own_region", "neighbours", "beyond_window")


def crosstalk_table(budgets: dict[float, pd.DataFrame], summaries: dict[float, pd.DataFrame]) -> pd.DataFrame:
    """One row per leakage weight: the mean of each :data:`LIGHT` column over the design's
    metasurfaces (``budgets[w]``: :func:`dkolib.study.sensor_study.budget_frame` rows), the same
    per wavelength as ``<column>_<nm>nm``, and the kernel fidelity of its stage-2 summary."""
    rows = []
    for w in sorted(budgets):
        b = budgets[w]
        row = {"leakage_weight": float(w)}
        row.update({c: float(b[c].mean()) for c in LIGHT})
        for nm, g in b.groupby("wavelength_nm"):
            for c in ("kernel", "neighbours"):
                row[f"{c}_{nm:g}nm"] = float(g[c].mean())
        s = summaries[w].iloc[0]
        row.update({k: float(s[v]) for k, v in FIDELITY.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def crosstalk_sentence(table: pd.DataFrame) -> str:
    """What raising the leakage weight does to crosstalk and fidelity, from :func:`crosstalk_table`."""
    if len(table) < 2:
        return ""
    t = table.sort_values("leakage_weight")
    lo, hi = t.iloc[0], t.iloc[-1]
    from .markdown import _fmt

    more = hi["neighbours"] > lo["neighbours"]
    verdict = ("so a larger weight does not keep light off the neighbours: the light it adds to the kernel comes "
               "with more on the neighbours' regions too" if more else
               "so a larger weight keeps light off the neighbours as well")
    return (f"Stage 2's leakage term counts every photon that misses the kernel crop, wherever it lands. From "
            f"leakage weight {_fmt(lo['leakage_weight'])} to {_fmt(hi['leakage_weight'])} the light in the "
            f"neighbours' regions goes from {_fmt(lo['neighbours'])} to {_fmt(hi['neighbours'])} of each "
            f"aperture's light (in the kernel: {_fmt(lo['kernel'])} to {_fmt(hi['kernel'])}; on the own region: "
            f"{_fmt(lo['own_region'])} to {_fmt(hi['own_region'])}) while the kernel error goes from "
            f"{_fmt(lo['err_elem'])} to {_fmt(hi['err_elem'])} (correlation {_fmt(lo['corr_elem'])} to "
            f"{_fmt(hi['corr_elem'])}), {verdict}.")


def run_crosstalk_study(cfg, stage1: Path, weights=None, work: Path | None = None, progress: bool = True,
                        sensor_cache: Path | None = None) -> pd.DataFrame:
    """Synthesise (or resume) the bank at each leakage weight and measure where its light lands.

    The profile's own weight reads the pipeline's DKO design (``results/<profile>/dko``); the
    others run stage 2 into ``work`` (default ``results/<profile>/dko/operating_point.work``, the
    operating point's runs). Whole-sensor PSFs are cached under ``sensor_cache`` (default
    ``cache/sensor/<profile>``, shared with the sensor study and the physical evaluation).
    """
    from ..depth.data import get_dataset
    from ..dko.evaluation import load_design
    from ..dko.sensor_eval import baffle_sin_of, geometry_for
    from .pipeline import run_dko_stage2
    from .sensor_study import budget_frame, cached_sensor_psfs

    paths = ProfilePaths(cfg.profile)
    weights = [float(w) for w in (weights if weights is not None else cfg.dko.operating_weights)]
    if not weights or any(w < 0 for w in weights):
        raise ValueError(f"leakage weights must be a non-empty list of numbers >= 0, got {weights}")
    work = Path(work) if work is not None else paths.dko / "operating_point.work"
    sensor_cache = Path(sensor_cache) if sensor_cache is not None else paths.root / "cache" / "sensor" / cfg.profile
    image_hw = tuple(get_dataset(cfg, "test", paths.data_cache)[0]["rgb"].shape[-2:])
    budgets, summaries = {}, {}
    for w in weights:
        cfg_w = cfg.replace({"dko.leakage_weight": w})
        run_dir = paths.dko if w == float(cfg.dko.leakage_weight) else work / f"w_{w:g}"
        summary_csv = run_dir / "summary.csv"
        summary = pd.read_csv(summary_csv) if summary_csv.exists() else None
        if summary is None or float(summary["leakage_weight"].iloc[0]) != w:
            if progress:
                print(f"stage 2 at leakage weight {w:g}", flush=True)
            summary = run_dko_stage2(cfg_w, stage1, run_dir, progress=progress)
        model = load_design(run_dir / "model.pt", cfg_w)
        geometry = geometry_for(model, cfg.sensor, cfg.optics, image_hw)
        psfs, _ = cached_sensor_psfs(model, cfg_w, geometry, baffle_sin_of(cfg.sensor, cfg.optics), sensor_cache,
                                     progress=progress)
        budgets[w] = budget_frame("dko", model, psfs, geometry, cfg_w, cfg.sensor.gap_m, cfg.sensor.baffle_wall_m)
        summaries[w] = summary
    return crosstalk_table(budgets, summaries)


def ensure_crosstalk_study(cfg, paths: ProfilePaths | None = None, progress: bool = True) -> pd.DataFrame:
    """``results/<profile>/dko/crosstalk.csv`` (stage 1, DKO and the study run first if missing) and
    its figure ``figures/<profile>/dko_crosstalk``."""
    from .. import plots
    from ..io import write_csv
    from .pipeline import ensure_dko
    from .reports import ensure_stage1

    paths = paths or ProfilePaths(cfg.profile)
    out = paths.dko / "crosstalk.csv"
    if not out.exists():
        ensure_stage1(cfg, paths, progress=progress)
        ensure_dko(cfg, paths, progress=progress)
        table = run_crosstalk_study(cfg, paths.stage1 / "model.pt", progress=progress)
        write_csv(table, out)
        plots.save_figure(plots.plot_crosstalk(table, cfg.dko.leakage_weight), paths.figures / "dko_crosstalk")
    return pd.read_csv(out)


__all__ = ["FIDELITY", "LIGHT", "crosstalk_sentence", "crosstalk_table", "ensure_crosstalk_study",
           "run_crosstalk_study"]
