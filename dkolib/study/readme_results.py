"""The README's results section, generated from the CSVs under ``results/``.

No number in the README is typed by hand: :func:`render` reads the pipeline's tables and writes
markdown (tables, figure links and the verdicts on the paper's three claims, each verdict computed
from the numbers by the rules stated in its text). :func:`splice` puts it between the README's markers.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from .markdown import _fmt, _read, _renamed, _table, splice_between
from .paths import ProfilePaths
from .readme_bench import e2e_measured_section, e2e_scaling_section, scaling_section
from .readme_claims import paper_run_ratios
from .readme_fab import as_fabricated_section, cell_pitch_section, optics_aware_section
from .readme_physical import physical_section, physical_sentence  # noqa: F401 - re-exported
from .readme_sensor import sensor_section

START, END = "<!-- results:start -->", "<!-- results:end -->"


def _figure(paths: ProfilePaths, name: str, caption: str, repo_root: Path) -> str:
    png = paths.figures / f"{name}.png"
    if not png.exists():
        return ""
    return f"![{caption}]({png.relative_to(repo_root).as_posix()})\n"


def optics_section(root: Path) -> str:
    bench = _read(root / "results" / "benchmarks" / "psf_engines.csv")
    if bench is None:
        return ""
    fwd = bench[~bench["engine"].str.endswith("_fwd_bwd")]
    pivot = fwd.pivot_table(index="n_cells", columns="engine", values="seconds_per_psf")
    err = fwd.pivot_table(index="n_cells", columns="engine", values="rel_err_vs_reference")
    out = pd.DataFrame({"cells per side": pivot.index})
    for eng in ("dflat", "reference", "fast"):
        if eng in pivot:
            out[f"{eng} s/PSF"] = pivot[eng].values
    fast_rows = fwd[fwd["engine"] == "fast"].set_index("n_cells")
    if "speedup_equal_accuracy" in fast_rows:
        out["fast vs D-Flat (both within 1 %)"] = fast_rows["speedup_equal_accuracy"].reindex(pivot.index).values
    if "dflat" in pivot and "fast" in pivot:
        out["fast vs D-Flat (same grid)"] = (pivot["dflat"] / pivot["fast"]).values
    if "dflat" in err:
        out["D-Flat rel. error (same grid)"] = err["dflat"].values
    if "reference" in pivot and "fast" in pivot:
        out["fast vs reference"] = (pivot["reference"] / pivot["fast"]).values
    if "fast" in err:
        out["fast rel. error"] = err["fast"].values
    threads = int(bench["threads"].iloc[0]) if "threads" in bench else None
    return ("### PSF engines (`results/benchmarks/psf_engines.csv`)\n\n"
            f"Forward time per PSF on this CPU ({threads} threads), measured side by side in one run, "
            "and relative L2 errors against the reference. The first speed-up compares with D-Flat at the "
            "input sampling and padding it needs to agree with the reference to 1 % (n/a where no setup "
            "does); the same-grid one compares with D-Flat on the fast engine's grid, where its error is "
            "the one shown:\n\n" + _table(out) + "\n")


WORKFLOW_PROFILE = Path("profiles") / "default" / "config.yaml"
"""Snakemake's workflow profile, loaded by every ``snakemake`` run in the repository root."""


def workflow_cpu_slots(root: Path) -> int | None:
    """``resources: cpu_slots`` of the workflow profile under ``root``: how many single-threaded
    jobs ran at once (None when the profile or the setting is missing)."""
    import yaml

    path = Path(root) / WORKFLOW_PROFILE
    if not path.exists():
        return None
    slots = (yaml.safe_load(path.read_text()) or {}).get("resources", {}).get("cpu_slots")
    return int(slots) if slots is not None else None


def dag_section(paths: ProfilePaths) -> str:
    """Wall time of the last recorded full run (``scripts/dag_timing.py`` after ``snakemake``)."""
    timing = _read(paths.results / "dag_timing.csv")
    if timing is None or "TOTAL" not in set(timing["rule"]):
        return ""
    total = timing[timing["rule"] == "TOTAL"].iloc[0]
    rules = timing[timing["rule"] != "TOTAL"][["rule", "n_jobs", "job_s_sum", "job_s_max"]]
    segments = int(total["segments"]) if "segments" in total and pd.notna(total["segments"]) else 1
    resumed = ("" if segments <= 1 else
               f" in {segments} starts (stopped and resumed; the time between them is not counted, and a "
               f"resumed job's own time covers only its last start)")
    slots = workflow_cpu_slots(paths.root)
    at_once = f", {slots} CPU slots of `{WORKFLOW_PROFILE.as_posix()}`" if slots else ""
    kind = "full run" if "eb_summary" in set(rules["rule"]) else "run (a part of the pipeline: the rules below)"
    text = (f"### Pipeline wall time (`dag_timing.csv`)\n\n"
            f"The last recorded {kind} of this profile took {_fmt(total['wall_s'] / 60, 3)} min wall clock{resumed} "
            f"for {int(total['n_jobs'])} jobs ({_fmt(total['job_s_sum'] / 60, 3)} min of job time{at_once}). "
            f"Per rule, in seconds:\n\n" + _table(rules) + "\n")
    e2e = ""
    if "eb_e2e" in set(rules["rule"]) and slots:  # the recorded run trained E2E's ladder
        e2e = e2e_ladder_text(_read(paths.results / "equal_budget.csv"), float(total["wall_s"]), cores=slots)
    return text + ("\n" + e2e + "\n" if e2e else "")


def e2e_ladder_text(runs: pd.DataFrame | None, run_wall_s: float, cores: int) -> str:
    """What E2E's ladder costs: the training seconds of E2E from scratch (fast engine, first budget
    axis) at the top of the ladder, per seed and summed, against the run's wall time on ``cores``
    cores. Its learning-rate search is not included. Empty when the table has no such rows."""
    if runs is None or not len(runs) or "spent_s" not in runs:
        return ""
    e2e = runs[(runs["method"] == "e2e_scratch") & (runs["engine"] == "fast") & (runs["eval"] == "crop")]
    if "budget_axis" in e2e and len(e2e):
        e2e = e2e[e2e["budget_axis"] == e2e["budget_axis"].iloc[0]]
    if not len(e2e):
        return ""
    top = float(e2e["budget_fraction"].max())
    per_seed = e2e[e2e["budget_fraction"] == top].groupby("seed")["spent_s"].max()
    total = float(per_seed.sum())
    share = total / cores / run_wall_s
    lead = "Most of that is E2E" if share > 0.5 else "E2E's share"
    return (f"{lead}: trained from scratch to {_fmt(top, 3)}x C_ref, it spends "
            f"{_fmt(float(per_seed.median()) / 60, 3)} min per seed (median; {_fmt(total / 3600, 3)} h for "
            f"{len(per_seed)} seeds, its learning-rate search not counted), {_fmt(total / cores / 60, 3)} min of "
            f"the run's {_fmt(run_wall_s / 60, 3)} min on {cores} cores ({_fmt(share * 100, 2)} %).")


def stage1_section(paths: ProfilePaths) -> str:
    metrics = _read(paths.stage1 / "metrics.csv")
    if metrics is None:
        return ""
    from .stage1_convergence import convergence_section

    return ("### Stage 1: the electronic network (`stage1/metrics.csv`)\n\n" + _table(metrics) + "\n"
            + convergence_section(paths, _figure(paths, "stage1_convergence",
                                                 "Stage 1's validation AbsRel under other schedules", paths.root)))


def dko_section(paths: ProfilePaths) -> str:
    summary = _read(paths.dko / "summary.csv")
    if summary is None:
        return ""
    cols = {"steps": "steps", "stage2_wall_s": "stage-2 wall s",
            "channel_norm_err_elem_mean": "kernel error (gain per metasurface)",
            "channel_corr_elem_mean": "kernel correlation (per metasurface)",
            "channel_norm_err_mean": "kernel error (gain per channel)",
            "channel_corr_mean": "kernel correlation (per channel)", "eff_crop_mean": "light in 7x7 crop",
            "eff_render_mean": "light in render window"}
    out = _renamed(summary, cols)
    return ("### DKO stage 2 (`dko/summary.csv`)\n\n"
            "Kernel error is `||g P - K|| / ||K||` per output channel with the closed-form gains (one per "
            "metasurface, the default read-out, or one per output channel, the paper's); an all-zero optical "
            "kernel scores 1. Light fractions are of the energy through each aperture (means over "
            "metasurfaces).\n\n" + _table(out) + "\n")


def synthesis_section(paths: ProfilePaths) -> str:
    """The stage-2 settings study (``dko/synthesis_study.csv``): init x lr, and the fidelity / light trade-off."""
    study = _read(paths.dko / "synthesis_study.csv")
    if study is None:
        return ""
    grids = study[study["grid"] != "steps"]  # the steps grid runs past the other settings' caps
    last = grids[grids["step_cap"] == grids["step_cap"].max()]
    cols = {"corr_elem": "correlation", "err_elem": "kernel error", "err_ch": "error, gain per channel",
            "eff_crop": "light in crop", "s_per_step": "s / step"}
    init_lr = last[last["grid"] == "init_lr"][["init", "lr", *cols]].rename(columns=cols)
    leak = last[last["grid"] == "leakage"][["loss", "leakage_weight", *cols]].rename(columns=cols)
    return ("### Stage-2 settings (`dko/synthesis_study.csv`)\n\n"
            f"Fitted on output channels {study['channels'].iloc[0]} of the stage-1 kernels, "
            f"{int(last['step_cap'].iloc[0])} steps, gains per metasurface unless stated. Initialisation "
            "and learning rate (profile loss):\n\n" + _table(init_lr) + "\n\n"
            "Loss and leakage weight (profile init and lr): the weight trades kernel error against the "
            "light that reaches the crop.\n\n" + _table(leak) + "\n\n" + steps_text(study)
            + smoothness_text(last, cols, _profile_optics(paths))
            + _figure(paths, "dko_pareto", "stage-2 kernel error against light in the crop", paths.root)
            + paper_geometry_text(paths))


def steps_text(study: pd.DataFrame) -> str:
    """The ``steps`` grid of the synthesis study: the profile's setting run on past its cap."""
    rows = study[study["grid"] == "steps"]
    if rows.empty:
        return ""
    rows = rows.sort_values("step_cap")
    first, end = rows.iloc[0], rows.iloc[-1]
    cols = {"step_cap": "steps", "corr_elem": "correlation", "err_elem": "kernel error", "eff_crop": "light in crop"}
    return (f"A longer stage 2 at the profile's setting (weight {end['leakage_weight']:g}, the stopping rule off): "
            f"from {int(first['step_cap'])} to {int(end['step_cap'])} steps the light in the crop goes from "
            f"{_fmt(first['eff_crop'])} to {_fmt(end['eff_crop'])} and the kernel error from "
            f"{_fmt(first['err_elem'])} to {_fmt(end['err_elem'])}.\n\n"
            + _table(rows[list(cols)].rename(columns=cols)) + "\n\n")


def _profile_optics(paths: ProfilePaths):
    """The profile's optics section, or None where the profile has no config file under ``paths.root``."""
    from ..config import load_config

    if not (paths.root / "config" / f"{paths.profile}.yaml").exists():
        return None
    return load_config(paths.profile).optics


def smoothness_setting_label(row) -> str:
    """Short label of a ``smoothness`` row of the synthesis study."""
    if row["init"] == "smooth_random":
        return f"start corr. {row['init_corr_cells']:g} cells"
    if row["smoothness_weight"] > 0:
        return f"smoothness {row['smoothness_weight']:g}"
    return f"blocks {int(row['phase_block_cells'])}x{int(row['phase_block_cells'])}"


def smoothness_text(last: pd.DataFrame, cols: dict, optics_cfg=None) -> str:
    """The ``smoothness`` grid of the synthesis study: does a smoother phase keep the light?"""
    rows = last[last["grid"] == "smoothness"] if "roughness" in last else last.iloc[:0]
    if rows.empty:
        return ""
    base = last[(last["grid"] == "leakage") & (last["loss"] == "leakage")
                & (last["leakage_weight"] == rows["leakage_weight"].iloc[0])]
    table = pd.concat([base.assign(setting="profile (white random start)"),
                       rows.assign(setting=rows.apply(smoothness_setting_label, axis=1))])
    light = table.set_index("setting")["eff_crop"]
    table = table[["setting", "roughness", *cols]].rename(columns=cols)
    text = ("Smoother phase at the profile's weight: a random start correlated over a few cells, a "
            "cell-to-cell smoothness term, a coarser phase grid (`roughness`: 1 for white phase, 0 for a "
            "uniform surface). Under the staircase a cell-to-cell phase step sends light to high angles, "
            "out of the crop's reach; these rows ask whether a smoother design keeps more of it.")
    if len(base):
        best = light.iloc[1:].idxmax()
        if light.iloc[1:].max() > light.iloc[0]:
            text += (f" The most light: {best}, {_fmt(light[best])} against the white start's {_fmt(light.iloc[0])}.")
        else:
            text += (f" None keeps more than the white start ({_fmt(light.iloc[0])}; the best of them, {best}, "
                     f"{_fmt(light[best])}), and the smoother the design the less light reaches the crop")
            if optics_cfg is not None:
                aperture_m = optics_cfg.n_cells * optics_cfg.cell_pitch_m
                steps = [aperture_m / (2 * lam * optics_cfg.sensor_distance_m) * optics_cfg.cell_pitch_m
                         for lam in sorted(optics_cfg.wavelengths_m)]
                text += (": light from the rim of the aperture reaches the axis only through a phase tilt of "
                         f"D / (2 lambda z) = {_fmt(steps[-1], 2)}-{_fmt(steps[0], 2)} cycles per cell (at "
                         f"{_fmt(1e9 * max(optics_cfg.wavelengths_m))}-{_fmt(1e9 * min(optics_cfg.wavelengths_m))} nm), "
                         "steps that a smooth phase does not have")
            text += "."
    return text + "\n\n" + _table(table) + "\n\n"


def paper_geometry_text(paths: ProfilePaths) -> str:
    """Does the scaled-down profile stand for the paper's aperture? (``dko/synthesis_paper_geometry.csv``)."""
    study = _read(paths.dko / "synthesis_paper_geometry.csv")
    if study is None:
        return ""
    rows = study[study["grid"] == "init_lr"]
    cols = {"n_cells": "cells", "sensor_distance_m": "sensor distance m", "step_cap": "steps",
            "corr_elem": "correlation", "err_elem": "kernel error", "eff_crop": "light in crop"}
    return ("\nThe same setting at the paper's aperture (1025 cells at 1 cm, output channels "
            f"{study['channels'].iloc[0]}, `scripts/synthesis_study.py --set optics.n_cells=1025 --set "
            "optics.sensor_distance_m=1.0e-2`, measured outside the DAG, `dko/synthesis_paper_geometry.csv`):\n\n"
            + _table(rows[list(cols)].rename(columns=cols)) + "\n")


def operating_point_section(paths: ProfilePaths) -> str:
    """Stage 2's leakage weight read under sensor noise (``dko/operating_point.csv``)."""
    table = _read(paths.dko / "operating_point.csv")
    if table is None:
        return ""
    dko = table[table["design"] == "dko"]
    pivot = dko.pivot_table(index="leakage_weight", columns="eval", values="abs_rel").reset_index()
    fid = dko.groupby("leakage_weight")[["err_elem", "light_crop"]].first().reset_index()
    noisy = dko[dko["eval"] == "full_psf_noise"].set_index("leakage_weight")
    out = (pivot.merge(fid, on="leakage_weight")
           .merge(noisy["a1"].rename("a1 under noise").reset_index(), on="leakage_weight")
           .rename(columns={"err_elem": "kernel error", "light_crop": "light in crop"}))
    ideal = table[table["design"] == "ideal_optics"].set_index("eval")["abs_rel"]
    split = table["split"].iloc[0] if "split" in table else "val"
    return ("### Stage-2 operating point (`dko/operating_point.csv`, AbsRel, "
            f"{split} split)\n\n"
            "The whole stage-1 kernel bank synthesised at each leakage weight and read in the three modes "
            "(no fine-tune): less light in the crop means larger gains, which amplify each read-out's "
            "noise.\n\n" + _table(out) + "\n\n" + operating_point_sentence(table, ideal) + "\n\n"
            + _figure(paths, "dko_operating_point", "stage-2 operating point under sensor noise", paths.root))


def operating_point_sentence(table: pd.DataFrame, ideal: pd.Series | None = None) -> str:
    """How much the noisy accuracy varies across leakage weights, which weight reads best, which the profile uses."""
    dko = table[(table["design"] == "dko") & (table["eval"] == "full_psf_noise")].set_index("leakage_weight")
    lo, hi = float(dko["abs_rel"].min()), float(dko["abs_rel"].max())
    text = (f"Under sensor noise the AbsRel spans {_fmt(lo)}-{_fmt(hi)} across the weights "
            f"({_fmt(100 * (hi - lo) / lo, 2)} % of the best): lowest at weight {_fmt(float(dko['abs_rel'].idxmin()))}; "
            f"delta < 1.25 is highest at weight {_fmt(float(dko['a1'].idxmax()))} and RMSE lowest at weight "
            f"{_fmt(float(dko['rmse'].idxmin()))}.")
    own = dko[dko["profile_weight"].astype(bool)] if "profile_weight" in dko else dko.iloc[:0]
    if len(own):
        text += f" The profile uses weight {_fmt(float(own.index[0]))}."
        text += _significance_text(dko)
    if ideal is not None and "full_psf_noise" in ideal:
        text += f" The same network through ideal optics reads {_fmt(float(ideal['full_psf_noise']))} under the same noise."
    return text


def _significance_text(noisy: pd.DataFrame) -> str:
    """Whether any weight reads significantly better under noise than the profile's (paired intervals)."""
    if "diff_ci_hi" not in noisy or noisy["diff_ci_hi"].isna().all():
        return ""
    others = noisy[~noisy["profile_weight"].astype(bool)]
    better = others[others["diff_ci_hi"] < 0]
    n = int(noisy["n_images"].iloc[0]) if "n_images" in noisy else None
    imgs = f" ({n} images)" if n else ""
    if len(better):
        w = float(better["noisy_abs_rel_minus_profile"].idxmin())
        r = better.loc[w]
        return (f" Paired image by image{imgs}, weight {_fmt(w)} reads significantly better than the profile's: "
                f"AbsRel {_signed(r['noisy_abs_rel_minus_profile'])} (95 % CI {_signed(r['diff_ci_lo'])} to "
                f"{_signed(r['diff_ci_hi'])}).")
    w = float(others["noisy_abs_rel_minus_profile"].idxmin()) if len(others) else None
    if w is None:
        return ""
    r = others.loc[w]
    return (f" Paired image by image{imgs}, no weight reads significantly better than the profile's (closest: "
            f"weight {_fmt(w)}, AbsRel {_signed(r['noisy_abs_rel_minus_profile'])}, 95 % CI "
            f"{_signed(r['diff_ci_lo'])} to {_signed(r['diff_ci_hi'])}), so the profile keeps its weight.")


def _signed(x) -> str:
    return f"{float(x):+.3g}"


def tolerance_section(paths: ProfilePaths) -> str:
    """Each design's AbsRel under fabrication and sensor errors (``tolerances.csv``), with intervals."""
    from ..fab.tolerances import degradation

    table = _read(paths.results / "tolerances.csv")
    if table is None:
        return ""
    deg = degradation(table)
    if deg.empty:
        return ""
    ref = table[table["perturbation"] == "none"].groupby("design")["abs_rel"].mean()

    def cell(r) -> str:
        if not math.isfinite(r.delta_lo):
            return f"{_fmt(r.value)} ({r.delta:+.3f})"
        return f"{_fmt(r.value)} ({r.delta:+.3f} [{r.delta_lo:+.3f}, {r.delta_hi:+.3f}])"

    deg = deg.assign(text=[cell(r) for r in deg.itertuples()],
                     error=[f"{p} {_fmt(lv)} {u if isinstance(u, str) else ''}".strip()
                            for p, lv, u in zip(deg["perturbation"], deg["level"], deg["unit"])])
    wide = deg.pivot_table(index="error", columns="design", values="text", aggfunc="first", sort=False).reset_index()
    designs = [c for c in wide.columns if c != "error"]
    nominal = {"error": "none"} | {d: _fmt(ref.get(d, float("nan"))) for d in designs}
    wide = pd.concat([pd.DataFrame([nominal]), wide], ignore_index=True)
    mean_rise = deg.groupby("design")["delta"].mean().sort_values()
    best = deg.groupby(["perturbation", "level"], sort=False)["value"].idxmin().map(deg["design"])
    n_items = int(table["eval_items"].iloc[0]) if "eval_items" in table else None
    refs = ", ".join(f"{d} {_fmt(ref[d])}" for d in ("electronic", "constant") if d in ref)
    return ("### Tolerances (`tolerances.csv`, AbsRel under sensor noise, test split"
            + (f", first {n_items} images" if n_items else "") + ")\n\n"
            "Each design read in `full_psf_noise` mode with one error at a time: random radius errors "
            "(one per simulation cell, several draws) and a radius bias, a sensor-distance error, fewer or "
            "more photons, read noise, and a wavelength band instead of one wavelength (cut at the meta-atom "
            "library's 400-700 nm). Cells: mean AbsRel (rise over the design's unperturbed value, 95 % "
            f"interval over draws where there are draws). References: {refs}.\n\n"
            + _table(wide) + "\n\n"
            "Mean rise over all errors: " + ", ".join(f"{d} {v:+.3f}" for d, v in mean_rise.items())
            + f"; `{mean_rise.index[0]}` degrades least. Lowest AbsRel under an error: "
            + ", ".join(f"`{d}` in {n} of {len(best)}" for d, n in best.value_counts().items())
            + " (a small rise from a poor start is not a better design: compare the values).\n\n"
            + _figure(paths, "tolerances", "AbsRel under fabrication and sensor errors", paths.root))


def layout_section(paths: ProfilePaths) -> str:
    """The mask export's size and time (``layout/summary.csv``), measured and extrapolated to the paper's array."""
    summary = _read(paths.results / "layout" / "summary.csv")
    if summary is None:
        return ""
    cols = {"kind": "what", "basis": "basis", "n_metasurfaces": "metasurfaces", "n_pillars": "pillars",
            "n_references": "array references", "file_bytes": "GDS bytes", "seconds": "seconds"}
    out = _renamed(summary, cols)
    return ("### Mask layout (`layout/summary.csv`)\n\n"
            "`scripts/export_layout.py` writes the DKO design's first metasurfaces as GDSII (pillars on the "
            "meta-atom lattice, one referenced cell per 1 nm radius, array references along runs of equal "
            "cells); the cost model (`dkolib.fab.layout.estimate_layout_cost`) predicts the export's size "
            "and extrapolates to the paper's 384 metasurfaces of 1025 cells.\n\n" + _table(out) + "\n")


def cost_section(root: Path) -> tuple[str, dict]:
    costs = _read(root / "results" / "costs.csv")
    if costs is None:
        return "", {}
    facts = {}
    for size in ("default", "paper"):
        c = costs[costs["size"] == size].set_index("method")
        if {"dko_stage2", "e2e_step"} <= set(c.index):
            facts[size] = float(c.loc["e2e_step", "seconds_per_iter"] / c.loc["dko_stage2", "seconds_per_iter"])
    return ("### Cost per iteration (`results/costs.csv`)\n\n" + _table(costs) + "\n"), facts


def equal_budget_section(paths: ProfilePaths, tta: pd.DataFrame | None = None) -> tuple[str, pd.DataFrame | None]:
    """The equal-budget table (crop evaluation, first budget axis) with the constant predictor and the
    electronic network beside it, and the time-to-accuracy table and figure when ``tta`` is given."""
    from .equal_budget_text import references_table, tta_table

    summary = _read(paths.results / "equal_budget_summary.csv")
    if summary is None:
        return "", None
    sel = summary[(summary["eval"] == "crop")]
    if "budget_axis" in sel:
        sel = sel[sel["budget_axis"] == sel["budget_axis"].iloc[0]]
    keep = ["method", "engine", "budget_fraction", "n_seeds", "abs_rel_mean", "abs_rel_std",
            "ratio_vs_dko", "ratio_ci_lo", "ratio_ci_hi", "ratio_n_resamples"]
    table = sel[[c for c in keep if c in sel]].sort_values(["engine", "budget_fraction", "method"])
    axis = f", {sel['budget_axis'].iloc[0]} budget axis" if "budget_axis" in sel and len(sel) else ""
    refs = references_table(_read(paths.stage1 / "metrics.csv"), tta,
                            convergence=_read(paths.stage1 / "convergence.csv"))
    text = (f"### Equal budget (`equal_budget_summary.csv`, idealised crop evaluation{axis})\n\n"
            "Budget fractions are multiples of C_ref, the cost of one full DKO run (stage 1 + stage 2); "
            "`ratio_vs_dko` is the method's AbsRel divided by DKO's at the same budget, with a bootstrap "
            "95 % interval over seeds (`ratio_n_resamples`: the distinct resamples of the seeds that interval "
            "rests on).\n\n" + _table(table) + "\n\n")
    if len(refs):
        text += ("The constant predictor (every pixel the training set's median depth) and the electronic network, "
                 "beside the table (test split; in this study, which reads the first `budget.eval_items` test images, "
                 "the mean over seeds of the `electronic` method, the reference of the time-to-accuracy targets):\n\n" + _table(refs) + "\n\n")
    if tta is not None and len(tta):
        text += ("Time to accuracy (`time_to_accuracy.csv`, AbsRel, crop evaluation): the budget at which the "
                 "median seed first comes within 1.5x / 1.25x / 1.1x of the electronic network's AbsRel at 1x "
                 "C_ref (same engine and axis), [95 % bootstrap interval over seeds]; `never <= Nx`: the median "
                 "seed does not get there within the ladder (seeds that do / seeds).\n\n"
                 + _table(tta_table(tta)) + "\n\n"
                 + _figure(paths, "time_to_accuracy", "budget needed to come within a factor of the electronic "
                           "network", paths.root))
    return text, summary


def equal_budget_tables(paths: ProfilePaths, n_boot: int = 2000) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """``(time_to_accuracy, error_ratios)`` of the profile: the time-to-accuracy table from
    ``time_to_accuracy.csv`` (computed from ``equal_budget.csv`` when that file is absent) and the
    E2E / DKO error ratios per metric from ``equal_budget.csv``; None where there is no input."""
    from .stats import error_ratios, time_to_accuracy

    runs = _read(paths.results / "equal_budget.csv")
    tta = _read(paths.results / "time_to_accuracy.csv")
    if tta is None and runs is not None and len(runs):
        try:
            tta = time_to_accuracy(runs, n_boot=n_boot)
        except ValueError:  # no electronic reference at 1x C_ref: no time-to-accuracy statement
            tta = None
    ratios = error_ratios(runs, n_boot=n_boot) if runs is not None and len(runs) else None
    return tta, ratios


def _ratio_parts(summary: pd.DataFrame, eval_mode: str, verdict: bool = True) -> list[str]:
    """E2E-from-scratch / DKO AbsRel at the reference budget, one phrase per (engine, axis)."""
    ref = summary[(summary["eval"] == eval_mode) & (summary["method"] == "e2e_scratch")
                  & (np.isclose(summary["budget_fraction"], 1.0))]
    parts = []
    for _, r in ref.sort_values(["engine"] + (["budget_axis"] if "budget_axis" in ref else [])).iterrows():
        if not math.isfinite(r["ratio_vs_dko"]):
            continue
        lo, hi = r["ratio_ci_lo"], r["ratio_ci_hi"]
        if lo > 1:
            what = "DKO is more accurate"
        elif hi < 1:
            what = "E2E is more accurate"
        else:
            what = "no significant difference"
        axis = f" ({r['budget_axis']} budget)" if "budget_axis" in r else ""
        parts.append(f"{r['engine']} engine{axis}: " + ("E2E's AbsRel is " if verdict else "")
                     + f"{r['ratio_vs_dko']:.2f}x DKO's (95 % CI {lo:.2f}-{hi:.2f}"
                     + (f", {what})" if verdict else ")"))
    return parts


def _catchup_parts(catchup: pd.DataFrame | None) -> list[str]:
    """From which budget on E2E from scratch stays level with DKO (:func:`~dkolib.study.stats.catch_up`: at
    that budget and every larger one of the ladder), per (engine, axis); idealised evaluation."""
    if catchup is None or not len(catchup):
        return []
    rows = catchup[(catchup["method"] == "e2e_scratch") & (catchup["eval"] == "crop")]
    parts = []
    for _, r in rows.sort_values(["engine", "budget_axis"]).iterrows():
        mean, ci, last = r["first_fraction_mean"], r["first_fraction_ci"], r["ratio_at_largest"]
        if not (math.isfinite(mean) or math.isfinite(ci)):
            text = (f"not within the ladder: at its largest budget E2E's AbsRel is still {last:.2f}x DKO's, "
                    "DKO significantly better")
        else:
            text = (f"its mean is at or below DKO's from {_fmt(mean)}x on" if math.isfinite(mean)
                    else "its mean is still above DKO's at the largest budget") + (
                f", DKO is no longer significantly better from {_fmt(ci)}x on" if math.isfinite(ci)
                else ", DKO is still significantly better at the largest budget") + f" (ratio {last:.2f} at the largest budget)"
        parts.append(f"{r['engine']} engine ({r['budget_axis']}): {text}")
    return parts


def verdicts(summary: pd.DataFrame | None, cost_ratios: dict, run_ratios: dict | None = None,
             catchup: pd.DataFrame | None = None, tta: pd.DataFrame | None = None,
             ratios: pd.DataFrame | None = None) -> str:
    """One paragraph per claim of the paper, each derived from the tables by the rule it states.

    ``tta``: :func:`~dkolib.study.stats.time_to_accuracy` (the primary statement);
    ``ratios``: :func:`~dkolib.study.stats.error_ratios` (the 2x claim on AbsRel, a1 and RMSE;
    without it the claim is checked on the summary's AbsRel ratios only).
    """
    from .equal_budget_text import claim_sentence, cost_sentence, ratios_from_summary, stability_sentence, tta_sentence

    lines = ["### Verdicts on the paper's claims", ""]
    if summary is not None and len(summary):
        evals = ["crop"] + [e for e in ("full_psf_noise",) if e in set(summary["eval"])]
        primary = [t for t in (tta_sentence(tta, e) for e in evals) if t]
        if primary:
            lines.append("**Time to accuracy** (budgets as multiples of C_ref, one full DKO run). " + " ".join(primary))
            lines.append("")
        checked = ratios if ratios is not None and len(ratios) else ratios_from_summary(summary)
        claim = [t for t in (claim_sentence(checked, e) for e in evals) if t]
        parts = _ratio_parts(summary, "crop")
        lines.append("**Accuracy at equal budget** (the paper reports about 2x: E2E from scratch's error over "
                     "DKO's at the same budget; the claim holds at a budget where that ratio's 95 % interval lies "
                     "above 1 and reaches 2). " + (" ".join(claim) or "Not available."))
        lines.append("At the budget of one full DKO run, on AbsRel (a confidence interval above 1 means DKO is "
                     "better): " + ("; ".join(parts) or "not available") + ".")
        physical = _ratio_parts(summary, "full_psf", verdict=False)
        if physical:
            lines.append("Evaluated physically (the whole PSF rendered on the sensor) the same ratios are: "
                         + "; ".join(physical) + ".")
        later = _catchup_parts(catchup)
        if later:
            lines.append("Where E2E catches up for good, if it does (from that budget on, at every larger budget of the "
                         "ladder; budgets as multiples of one DKO run): "
                         + "; ".join(later) + ".")
        lines.append("")
        stab = stability_sentence(summary)
        if stab:
            lines += [stab, ""]
    if cost_ratios:
        txt = ", ".join(f"{_fmt(v)}x at {k} size" for k, v in cost_ratios.items())
        lines.append(f"**Cost** (seconds per E2E step / seconds per DKO stage-2 iteration): {txt}. "
                     "The paper's 'hundreds of times' refers to whole runs (E2E 50,000 steps vs DKO 500 "
                     "stage-2 steps)" + (
                         f": from these per-iteration costs a whole E2E run costs {_fmt(run_ratios['without_stage1'])}x "
                         f"DKO's stage 2 and {_fmt(run_ratios['with_stage1'])}x DKO's stage 1 + stage 2 "
                         "(the paper's step counts from `config/paper.yaml`; paper-size costs extrapolated from "
                         "measured chunks on this CPU). " + cost_sentence(run_ratios) if run_ratios else "."))
    return "\n".join(lines) + "\n"


def render(profile: str, root: Path | None = None) -> str:
    """The markdown of the results section for ``profile``."""
    paths = ProfilePaths(profile) if root is None else ProfilePaths(profile, root)
    root = paths.root
    tta, ratios = equal_budget_tables(paths)
    eb_text, summary = equal_budget_section(paths, tta)
    cost_text, cost_ratios = cost_section(root)
    run_ratios = paper_run_ratios(_read(root / "results" / "costs.csv"))
    parts = [f"## Results (`{profile}` profile, generated by `snakemake`)", "", "Every number below is read from "
             "`results/` by `dkolib/study/readme_results.py`.", "",
             dag_section(paths), optics_section(root), scaling_section(root), scaling_section(root, "scaling_paper.csv"), e2e_measured_section(root),
             e2e_scaling_section(root), stage1_section(paths),
             dko_section(paths), synthesis_section(paths),
             operating_point_section(paths), optics_aware_section(paths), physical_section(paths), sensor_section(paths), tolerance_section(paths),
             layout_section(paths), as_fabricated_section(paths), cell_pitch_section(paths),
             _figure(paths, "crop_vs_physical", "crop vs physical evaluation", root),
             eb_text,
             _figure(paths, "accuracy_vs_wall", "accuracy vs wall-clock budget", root),
             _figure(paths, "accuracy_vs_flops", "accuracy vs FLOP budget", root),
             cost_text, verdicts(summary, cost_ratios, run_ratios,
                                 _read(paths.results / "equal_budget_summary_catchup.csv"), tta, ratios)]
    return "\n".join(p for p in parts if p is not None)


def splice(readme_text: str, section: str) -> str:
    """Replace what lies between the README's result markers with ``section``."""
    return splice_between(readme_text, section, START, END)
