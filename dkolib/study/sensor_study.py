"""The sensor study: where every design's light lands on the whole sensor, and what that does to depth.

For each design (and, for DKO, each gap and baffle of ``config.sensor``) it computes the
whole-sensor PSFs (:mod:`dkolib.optics.sensor`), the light budget of every metasurface
(kernel, render window, own region, neighbours' regions, beyond the computed window), and
the depth metrics on the same test images in ``full_psf_noise`` (today's single-window
rendering), ``sensor`` and ``sensor_noise``, with the same noise seed. It also times the
PSFs and one whole-sensor render, for the cost table.

PSFs are cached under ``cache/sensor/<profile>/`` keyed by a digest of the transmission,
the geometry and the options, so an interrupted study resumes without recomputing them.
"""

from __future__ import annotations

import hashlib
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..dko.evaluation import _evaluate, evaluate_design, find_frontend, load_design
from ..dko.sensor_eval import (SENSOR_MODES, baffle_sin_of, geometry_for, ideal_optics_sensor_model, sensor_model,
                                sensor_psfs_for)
from ..io import load_torch, save_torch
from ..optics.sensor import light_budget, sensor_image
from .paths import ProfilePaths

LIGHT_COLUMNS = ("kernel", "render_window", "own_region", "neighbours", "window", "beyond_window")


def sensor_finetune_dirs(cfg, paths: ProfilePaths) -> dict[str, Path]:
    """``{design: results/<profile>/<design>_finetune_sensor}`` for ``cfg.sensor.finetune_designs``."""
    return {name: paths.results / f"{name}_finetune_sensor" for name in cfg.sensor.finetune_designs}


def _digest(model, geometry, baffle_sin, oversample, cell_model) -> str:
    fe = find_frontend(model)
    h = hashlib.sha1()
    with torch.no_grad():
        h.update(fe.array.transmission().detach().to(torch.complex64).numpy().tobytes())
    h.update(repr((geometry, baffle_sin, float(oversample), cell_model, fe.optics_cfg)).encode())
    return h.hexdigest()[:16]


def cached_sensor_psfs(model, cfg, geometry, baffle_sin, cache_dir: Path, progress: bool = True):
    """``(psfs, seconds)``: the design's whole-sensor PSFs and the seconds they took when computed
    (kept in the cache with them; NaN for a cache written without them)."""
    key = _digest(model, geometry, baffle_sin, cfg.sensor.oversample, cfg.optics.cell_model)
    path = Path(cache_dir) / f"psfs_{key}.pt"
    if path.exists():
        stored = load_torch(path)
        if isinstance(stored, dict):
            return stored["psfs"], float(stored["seconds"])
        return stored, float("nan")
    t0 = time.perf_counter()
    psfs = sensor_psfs_for(model, cfg.optics, geometry, baffle_sin, cfg.sensor.oversample, progress=progress)
    seconds = time.perf_counter() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    save_torch({"psfs": psfs, "seconds": torch.tensor(seconds, dtype=torch.float64)}, path)
    return psfs, seconds


def transmitted_fraction(model) -> torch.Tensor:
    """``[E]``: the fraction of the incident light each metasurface transmits, ``mean |t|^2``."""
    with torch.no_grad():
        t = find_frontend(model).array.transmission().detach()
    return (t.abs() ** 2).mean((-2, -1)).double()


def budget_frame(design: str, model, psfs, geometry, cfg, gap_m: float, wall_m: float) -> pd.DataFrame:
    """One row per metasurface: where its light lands (fractions of the light on its aperture)."""
    b = light_budget(psfs.double(), geometry, cfg.optics.kernel_size, cfg.optics.render_window_px,
                     transmitted=transmitted_fraction(model))
    wl = find_frontend(model).array.wavelengths_m.detach().double().numpy()
    frame = pd.DataFrame({k: b[k].numpy() for k in LIGHT_COLUMNS})
    frame.insert(0, "wavelength_nm", np.round(wl * 1e9, 3))
    frame.insert(0, "element", np.arange(len(frame)))
    frame.insert(0, "baffle_wall_m", float(wall_m))
    frame.insert(0, "gap_m", float(gap_m))
    frame.insert(0, "design", design)
    return frame


def time_render(model, dataset, repeats: int = 2) -> dict:
    """Seconds per whole-sensor image (mean of ``repeats`` single-image forwards) and peak RSS (MB)."""
    fe = find_frontend(model)
    x = dataset[0]["rgb"][None]
    with torch.no_grad():
        fe(x)  # builds the PSF spectra
        t0 = time.perf_counter()
        for _ in range(repeats):
            fe(x)
    return {"render_s_per_image": (time.perf_counter() - t0) / repeats,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}


def _sensor_rows(name, model, psfs, geometry, dataset, cfg, seed, items, gap, wall) -> pd.DataFrame:
    rows = []
    for mode in SENSOR_MODES:
        metrics = _evaluate(sensor_model(model, psfs, geometry, mode), dataset, cfg, seed, items)
        rows.append({"design": name, "gap_m": float(gap), "baffle_wall_m": float(wall), "eval": mode,
                     **{k: float(v) for k, v in metrics.items()}})
    return pd.DataFrame(rows)


def run_sensor_study(cfg, designs: dict[str, Path], stage1: Path | None = None, cache_dir: Path | None = None,
                     data_cache: Path | None = None, max_items: int | None = None, seed: int = 0,
                     progress: bool = True, finetune_dirs: dict[str, Path] | None = None) -> dict:
    """Light budgets, depth metrics and costs of ``designs`` on the whole sensor.

    Returns ``{"light": per-metasurface budgets, "eval": metrics per design / variant / mode,
    "cost": seconds and memory per design / variant, "frames": {design: (sensor image of the
    first test scene [S0, S1], origin, geometry)}}``. ``stage1`` (an electronic checkpoint) is
    also the back end of DKO folders and adds the rows ``electronic`` and ``ideal_optics``
    (``full_psf_noise``) on the same images. ``max_items`` defaults to ``cfg.sensor.eval_items``
    (0: the whole split). ``finetune_dirs`` ``{design: folder}``: also fine-tune those designs' back
    ends on noisy whole-sensor images (:func:`dkolib.study.pipeline.finetune_dko`, mode
    ``sensor_noise``, resumable there) and read them as ``<design>_finetune_sensor``; their paths in
    ``designs`` must then be ``model.pt`` checkpoints.
    """
    from ..depth.data import get_dataset
    from ..dko.evaluation import ideal_optics_model

    paths = ProfilePaths(cfg.profile)
    dataset = get_dataset(cfg, "test", data_cache or paths.data_cache)
    items = max_items if max_items is not None else (cfg.sensor.eval_items or None)
    cache_dir = Path(cache_dir) if cache_dir is not None else paths.root / "cache" / "sensor" / cfg.profile
    H, W = dataset[0]["rgb"].shape[-2:]
    light, evals, costs, frames = [], [], [], {}
    computed: dict[tuple, str] = {}  # (transmission digest, gap, wall) -> the design whose PSFs they are
    if stage1 is not None:
        base_net = load_design(stage1, cfg)
        evals.append(evaluate_design(base_net, dataset, cfg, evals=("full_psf_noise",), seed=seed,
                                     design="electronic", max_items=items))
        evals.append(evaluate_design(lambda mode: ideal_optics_model(base_net, cfg.optics, mode), dataset, cfg,
                                     evals=("full_psf_noise",), seed=seed, design="ideal_optics", max_items=items))
        ideal = evaluate_design(lambda mode: ideal_optics_sensor_model(base_net, cfg.optics, cfg.sensor, (H, W), mode),
                                dataset, cfg, evals=SENSOR_MODES, seed=seed, design="ideal_optics", max_items=items)
        ideal.insert(1, "gap_m", float(cfg.sensor.gap_m))
        ideal.insert(2, "baffle_wall_m", float(cfg.sensor.baffle_wall_m))  # walls stop nothing it sends
        evals.append(ideal)
    for name, path in designs.items():
        model = load_design(path, cfg, stage1=stage1)
        if find_frontend(model) is None:
            raise ValueError(f"design {name!r} is electronic: the sensor study reads optical designs only")
        variants = [(cfg.sensor.gap_m, cfg.sensor.baffle_wall_m)]
        if name == "dko":
            variants += [(g, cfg.sensor.baffle_wall_m) for g in cfg.sensor.study_gaps_m]
            variants += [(cfg.sensor.gap_m, w) for w in cfg.sensor.study_baffle_walls_m]
        variants = list(dict.fromkeys(variants))
        base = evaluate_design(model, dataset, cfg, evals=("full_psf_noise",), seed=seed, design=name,
                               max_items=items)
        base.insert(1, "gap_m", float("nan"))
        base.insert(2, "baffle_wall_m", float("nan"))
        evals.append(base)
        for gap, wall in variants:
            geometry = geometry_for(model, cfg.sensor, cfg.optics, (H, W), gap_m=gap)
            bsin = baffle_sin_of(cfg.sensor, cfg.optics, wall)
            if progress:
                print(f"{name}: gap {gap * 1e6:g} um, baffle {wall * 1e3:g} mm, pitch {geometry.pitch_px} px")
            key = (_digest(model, geometry, bsin, cfg.sensor.oversample, cfg.optics.cell_model), gap, wall)
            cached_before = (Path(cache_dir) / f"psfs_{key[0]}.pt").exists()
            psfs, seconds = cached_sensor_psfs(model, cfg, geometry, bsin, cache_dir, progress)
            # where the PSF seconds come from: measured here, read from the cache (measured when it was
            # written), or the same array as a design above (its fine-tunes change only the back end)
            source = (f"same array as {computed[key]}" if key in computed
                      else "cache" if cached_before else "computed")
            computed.setdefault(key, name)
            light.append(budget_frame(name, model, psfs, geometry, cfg, gap, wall))
            if (gap, wall) == variants[0]:
                canvas, origin = sensor_frame(model, psfs, geometry, dataset[0]["rgb"])
                frames[name] = (canvas, origin, geometry)
            evals.append(_sensor_rows(name, model, psfs, geometry, dataset, cfg, seed, items, gap, wall))
            if name in (finetune_dirs or {}) and (gap, wall) == variants[0]:
                from .pipeline import finetune_dko

                tuned = finetune_dko(cfg, Path(path), Path(finetune_dirs[name]), progress=progress,
                                     mode="sensor_noise", sensor=(psfs, geometry),
                                     steps=cfg.sensor.finetune_steps)
                tuned_name = f"{name}_finetune_sensor"
                base_t = evaluate_design(tuned, dataset, cfg, evals=("full_psf_noise",), seed=seed,
                                         design=tuned_name, max_items=items)
                base_t.insert(1, "gap_m", float("nan"))
                base_t.insert(2, "baffle_wall_m", float("nan"))
                evals += [base_t, _sensor_rows(tuned_name, tuned, psfs, geometry, dataset, cfg, seed, items, gap, wall)]
            timing = time_render(sensor_model(model, psfs, geometry, "sensor"), dataset)
            costs.append({"design": name, "gap_m": float(gap), "baffle_wall_m": float(wall),
                          "n_elements": int(psfs.shape[0]), "psf_window_px": "x".join(map(str, psfs.shape[-2:])),
                          "pitch_px": geometry.pitch_px, "psf_s": seconds, "psf_source": source, **timing})
    evals = pd.concat(evals, ignore_index=True)
    evals["images"] = len(dataset) if items is None else min(len(dataset), items)
    return {"light": pd.concat(light, ignore_index=True), "eval": evals, "cost": pd.DataFrame(costs),
            "frames": frames}


def sensor_frame(model, psfs, geometry, image: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """The noiseless whole-sensor image ``[S0, S1]`` of one scene ``[C_in, H, W]`` (for the figure)."""
    fe = find_frontend(model)
    with torch.no_grad():
        canvas, origin = sensor_image(image[None], psfs, geometry, fe.n_in)
    return canvas[0], origin


def write_sensor_study(result: dict, out_dir: Path, figures: Path) -> None:
    """``light_budget.csv``, ``sensor_eval.csv``, ``cost.csv`` under ``out_dir`` and the figures
    ``sensor_light_budget`` and ``sensor_frame`` (the first design's sensor) under ``figures``."""
    from ..io import write_csv
    from ..plots import plot_light_budget, plot_sensor_frame, save_figure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(result["light"], out_dir / "light_budget.csv")
    write_csv(result["eval"], out_dir / "sensor_eval.csv")
    write_csv(result["cost"], out_dir / "cost.csv")
    save_figure(plot_light_budget(result["light"]), Path(figures) / "sensor_light_budget")
    first = next(iter(result["frames"]))
    canvas, origin, geometry = result["frames"][first]
    P = geometry.pixel_pitch_m * 1e3
    s0, s1 = canvas.shape
    extent = (origin[1] * P, (origin[1] + s1) * P, origin[0] * P, (origin[0] + s0) * P)
    save_figure(plot_sensor_frame(canvas.numpy(), extent, f"{first}: the whole sensor, first test scene"),
                Path(figures) / "sensor_frame")


def ensure_sensor_study(cfg, paths: ProfilePaths | None = None, progress: bool = True) -> dict[str, pd.DataFrame]:
    """``results/<profile>/sensor/``: the study's tables (run, designs built first, if missing).

    Returns ``{"light", "eval", "cost"}`` as read back from the CSVs.
    """
    from .pipeline import ensure_designs

    paths = paths or ProfilePaths(cfg.profile)
    out = paths.results / "sensor"
    names = ("light_budget", "sensor_eval", "cost")
    if not all((out / f"{n}.csv").exists() for n in names):
        designs = ensure_designs(cfg, ("electronic",) + tuple(cfg.sensor.designs), paths, progress=progress)
        stage1 = designs.pop("electronic")
        result = run_sensor_study(cfg, designs, stage1=stage1, progress=progress,
                                  finetune_dirs=sensor_finetune_dirs(cfg, paths))
        write_sensor_study(result, out, paths.figures)
    return dict(zip(("light", "eval", "cost"), (pd.read_csv(out / f"{n}.csv") for n in names)))


__all__ = ["LIGHT_COLUMNS", "budget_frame", "cached_sensor_psfs", "ensure_sensor_study", "run_sensor_study",
           "sensor_finetune_dirs", "sensor_frame", "time_render", "transmitted_fraction", "write_sensor_study"]
