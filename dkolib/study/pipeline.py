"""The pipeline's steps as functions: what the scripts run and what notebooks call.

Each ``ensure_*`` function returns an artefact of a profile, computing it (with
the same code the Snakemake rules run) only when it is missing, so a notebook
runs on its own on a fresh clone (the ``smoke`` profile takes seconds) and reads
the pipeline's results when Snakemake has produced them.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd

from ..dko.budget import BudgetMeter
from ..config import Config
from ..dko.evaluation import hybrid_from_dko, load_design
from ..io import load_torch, save_torch, seed_everything, set_threads, write_csv
from .paths import ProfilePaths
from ..dko.fidelity import summarize_fidelity
from ..dko.synthesis import save_array
from ..distributed import synthesize_launched
from ..dko.train import load_depthnet, resolve_device, run_e2e, run_finetune, save_model


def run_dko_stage2(cfg: Config, stage1_path: Path, out_dir: Path, engine: str | None = None,
                   progress: bool = True) -> pd.DataFrame:
    """DKO stage 2 for the stage-1 network at ``stage1_path``; returns the one-row summary.

    Writes into ``out_dir`` (atomically): ``array.pt``, ``gain.pt``, ``model.pt``
    (hybrid, budget = stage 1 + stage 2), ``history.csv``, ``fidelity.csv``,
    ``summary.csv`` and the resumable ``ckpt.pt``.

    Under ``torchrun --nproc_per_node N`` (``WORLD_SIZE > 1``) the output channels are shared
    out over the processes (:func:`dkolib.distributed.synthesize_sharded`; resumable per-rank
    ``ckpt_rank{r}of{N}.pt``): rank 0 writes the outputs and returns the summary, the other
    ranks write nothing and return an empty frame.
    """
    set_threads(cfg.threads)
    engine = engine or cfg.optics.engine
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stored = load_torch(stage1_path, map_location="cpu")
    model = load_depthnet(stage1_path, cfg)
    weight = model.conv1_weight().detach().clone()
    budget = BudgetMeter()
    if stored.get("budget"):
        budget.load_state_dict(stored["budget"])
    before = budget.snapshot()
    gen = seed_everything(cfg.seed)
    device = resolve_device(cfg)
    # under torchrun the output channels are shared out over the processes; rank 0 writes the outputs
    res = synthesize_launched(weight, cfg.optics, cfg.dko, device, engine=engine, generator=gen, progress=progress,
                              ckpt_dir=out_dir, log_csv=out_dir / "history.csv", budget=budget)
    if res is None:
        return pd.DataFrame()
    after = budget.snapshot()
    save_array(res.array, out_dir / "array.pt", cfg.optics, loss=cfg.dko.loss, engine=engine)
    gain = res.front_end_gain(cfg.optics.gain)
    save_torch(gain, out_dir / "gain.pt")
    hybrid = hybrid_from_dko(model, res.array, gain, cfg.optics, "crop", engine)
    save_model(hybrid, out_dir / "model.pt", cfg, budget, kind="hybrid_dko",
               extra={"stage2": {"loss": cfg.dko.loss, "lr": cfg.dko.lr, "steps": res.steps}})
    write_csv(res.history, out_dir / "history.csv")
    write_csv(res.fidelity, out_dir / "fidelity.csv")
    hist = res.history
    summary = {
        "profile": cfg.profile, "loss": cfg.dko.loss, "leakage_weight": cfg.dko.leakage_weight,
        "lr": cfg.dko.lr, "init": cfg.dko.init, "engine": engine, "steps": res.steps,
        "stopped_early": res.stopped_early, "gain_model": cfg.optics.gain,
        "n_elements": int(res.array.latent.shape[0]), "n_cells": cfg.optics.n_cells,
        "meta_atom": cfg.optics.meta_atom, "seconds": res.seconds,
        "stage2_wall_s": after["wall_s"] - before["wall_s"], "stage2_flops": after["flops"] - before["flops"],
        "total_wall_s": after["wall_s"], "total_flops": after["flops"],
        "loss_first": float(hist["loss_mean"].iloc[0]) if len(hist) else float("nan"),
        "loss_last": float(hist["loss_mean"].iloc[-1]) if len(hist) else float("nan"),
        **summarize_fidelity(res.fidelity),
    }
    frame = pd.DataFrame([summary])
    write_csv(frame, out_dir / "summary.csv")
    return frame


def finetune_dko(cfg: Config, dko_model_path: Path, out_dir: Path, progress: bool = True, mode: str = "crop",
                 sensor: tuple | None = None, steps: int | None = None):
    """Fine-tune the DKO hybrid's back end (optics frozen); the budget continues stage 1 + 2.

    ``mode`` is the front end the back end learns to read: ``'crop'`` (the paper's idealised
    k x k kernel), ``'full_psf'`` / ``'full_psf_noise'`` (the sensor image rendered with
    the whole PSF window, with noise) or ``'sensor'`` / ``'sensor_noise'`` (the whole sensor,
    :mod:`dkolib.dko.sensor_eval`; ``sensor = (psfs, geometry)``). The saved model is the same
    kind of hybrid in every case; evaluation picks the mode. ``steps``: default ``dko.finetune_steps``.
    """
    from ..dko.evaluation import EVAL_MODES, front_end_mode
    from ..dko.sensor_eval import SENSOR_MODES, sensor_front_end_mode

    if mode not in EVAL_MODES + SENSOR_MODES:
        raise ValueError(f"fine-tune mode must be one of {EVAL_MODES + SENSOR_MODES}, got {mode!r}")
    if (mode in SENSOR_MODES) != (sensor is not None):
        raise ValueError("the whole-sensor modes need sensor=(psfs, geometry), and only they take it")
    hybrid = load_design(dko_model_path, cfg)
    budget = BudgetMeter()
    stored = load_torch(dko_model_path, map_location="cpu").get("budget")
    if stored:
        budget.load_state_dict(stored)

    def tune(model):
        return run_finetune(model, cfg, out_dir, ProfilePaths(cfg.profile).data_cache, budget=budget,
                            steps=steps, progress=progress)

    if mode == "crop":
        return tune(hybrid)
    if sensor is not None:
        with sensor_front_end_mode(hybrid, *sensor, mode=mode):
            tune(hybrid)
        return hybrid
    with front_end_mode(hybrid, mode):  # the back end is shared, so it keeps what it learns
        tune(hybrid)
    return hybrid


def ensure_dko(cfg: Config, paths: ProfilePaths | None = None, progress: bool = True) -> Path:
    """The DKO output folder of the profile (stage 1 and stage 2 run if missing)."""
    from .reports import ensure_stage1

    paths = paths or ProfilePaths(cfg.profile)
    if not (paths.dko / "model.pt").exists():
        ensure_stage1(cfg, paths, progress=progress)
        run_dko_stage2(cfg, paths.stage1 / "model.pt", paths.dko, progress=progress)
    return paths.dko


def ensure_e2e(cfg: Config, paths: ProfilePaths | None = None, progress: bool = True) -> Path:
    """The joint E2E baseline's folder (trained if missing)."""
    paths = paths or ProfilePaths(cfg.profile)
    if not (paths.e2e / "model.pt").exists():
        run_e2e(cfg, paths.e2e, paths.data_cache, variant="joint", progress=progress)
    return paths.e2e


def ensure_dko_finetune(cfg: Config, paths: ProfilePaths | None = None, progress: bool = True) -> Path:
    """The fine-tuned DKO hybrid's folder (DKO and the fine-tune run if missing)."""
    paths = paths or ProfilePaths(cfg.profile)
    if not (paths.dko_finetune / "model.pt").exists():
        ensure_dko(cfg, paths, progress=progress)
        finetune_dko(cfg, paths.dko / "model.pt", paths.dko_finetune, progress=progress)
    return paths.dko_finetune


def ensure_dko_finetune_psf(cfg: Config, paths: ProfilePaths | None = None, progress: bool = True) -> Path:
    """The DKO hybrid fine-tuned on full-PSF sensor images (DKO and the fine-tune run if missing)."""
    paths = paths or ProfilePaths(cfg.profile)
    if not (paths.dko_finetune_psf / "model.pt").exists():
        ensure_dko(cfg, paths, progress=progress)
        finetune_dko(cfg, paths.dko / "model.pt", paths.dko_finetune_psf, progress=progress, mode="full_psf")
    return paths.dko_finetune_psf


def ensure_dko_finetune_noise(cfg: Config, paths: ProfilePaths | None = None, progress: bool = True) -> Path:
    """The DKO hybrid fine-tuned on noisy full-PSF sensor images (DKO and the fine-tune run if missing)."""
    paths = paths or ProfilePaths(cfg.profile)
    if not (paths.dko_finetune_noise / "model.pt").exists():
        ensure_dko(cfg, paths, progress=progress)
        finetune_dko(cfg, paths.dko / "model.pt", paths.dko_finetune_noise, progress=progress,
                     mode="full_psf_noise")
    return paths.dko_finetune_noise


def design_paths(paths: ProfilePaths) -> dict[str, Path]:
    """The designs the physical evaluation compares, name -> checkpoint."""
    return {"electronic": paths.stage1 / "model.pt", "dko": paths.dko / "model.pt",
            "dko_finetune": paths.dko_finetune / "model.pt",
            "dko_finetune_psf": paths.dko_finetune_psf / "model.pt",
            "dko_finetune_noise": paths.dko_finetune_noise / "model.pt", "e2e": paths.e2e / "model.pt"}


def ensure_designs(cfg: Config, names, paths: ProfilePaths | None = None, progress: bool = True) -> dict[str, Path]:
    """Build each named design that is missing (those of :func:`design_paths` and the E2E budget runs
    ``e2e_1x`` / ``e2e_4x``); return ``{name: checkpoint}``."""
    from .reports import ensure_stage1

    paths = paths or ProfilePaths(cfg.profile)
    builders = {"electronic": ensure_stage1, "dko": ensure_dko, "dko_finetune": ensure_dko_finetune,
                "dko_finetune_psf": ensure_dko_finetune_psf, "dko_finetune_noise": ensure_dko_finetune_noise,
                "e2e": ensure_e2e,
                "e2e_1x": lambda c, p, progress: ensure_e2e_budget(c, p, 1, progress=progress),
                "e2e_4x": lambda c, p, progress: ensure_e2e_budget(c, p, 4, progress=progress)}
    unknown = [n for n in names if n not in builders]
    if unknown:
        raise ValueError(f"no design named {unknown}: choose among {sorted(builders)}")
    for name in names:
        builders[name](cfg, paths, progress=progress)
    where = {**design_paths(paths), **{f"e2e_{f}x": paths.results / f"e2e_{f}x" / "model.pt" for f in (1, 4)}}
    return {name: where[name] for name in names}


def ensure_e2e_budget(cfg: Config, paths: ProfilePaths | None = None, fraction: int = 1,
                      progress: bool = True) -> Path:
    """``results/<profile>/e2e_<fraction>x``: E2E trained to ``fraction`` x the FLOPs of the main chain's
    DKO run, as the Snakemake rule ``e2e_budget`` trains it (``scripts/train_e2e.py --budget-of``; the
    4x run continues the 1x run). Trained if missing (DKO first)."""
    import subprocess
    import sys

    paths = paths or ProfilePaths(cfg.profile)
    out = paths.results / f"e2e_{fraction:g}x"
    if not (out / "model.pt").exists():
        ensure_dko(cfg, paths, progress=progress)
        start = []
        if fraction != 1:
            start = ["--start-from", str(ensure_e2e_budget(cfg, paths, 1, progress=progress) / "ckpt.pt")]
        cmd = [sys.executable, str(paths.root / "scripts" / "train_e2e.py"), "--profile", cfg.profile,
               "--variant", "joint", "--out", str(out), "--budget-of", str(paths.dko / "model.pt"),
               "--budget-fraction", f"{fraction:g}", *start, *([] if progress else ["--quiet"])]
        subprocess.run(cmd, check=True, cwd=paths.root)
    return out


def evaluate_designs(cfg: Config, designs: dict[str, Path], split: str = "test", seed: int = 0,
                     evals=("crop", "full_psf", "full_psf_noise"), engine: str | None = None,
                     max_items: int | None = None, stage1: Path | None = None,
                     cache_dir: Path | None = None, ideal_optics: Path | None = None,
                     sensor_cache: Path | None = None, progress: bool = False) -> pd.DataFrame:
    """Rows ``design, eval, <metrics>`` for every design in every evaluation mode.

    ``designs`` maps names to checkpoints or DKO folders (see
    :func:`dkolib.dko.evaluation.load_design`; ``stage1`` is the back end of a DKO folder).
    ``ideal_optics``: an electronic checkpoint whose network is also evaluated through ideal
    optics (:func:`dkolib.dko.evaluation.ideal_optics_model`), as design ``'ideal_optics'``: the
    bound that sensor noise sets on every design at the profile's photon level.
    ``evals`` may include the whole-sensor modes ``sensor`` / ``sensor_noise``
    (:mod:`dkolib.dko.sensor_eval`): every optical design is then read from the whole sensor at the
    profile's ``sensor.gap_m`` and ``sensor.baffle_wall_m``, its PSFs computed once (minutes for the
    default array) and cached under ``sensor_cache`` (default ``cache/sensor/<profile>``, shared
    with the sensor study); ideal optics there has no halo and no crosstalk.
    """
    from ..depth.data import get_dataset
    from ..dko.evaluation import evaluate_design, find_frontend, ideal_optics_model
    from ..dko.sensor_eval import SENSOR_MODES, baffle_sin_of, geometry_for, ideal_optics_sensor_model
    from .sensor_study import cached_sensor_psfs

    paths = ProfilePaths(cfg.profile)
    dataset = get_dataset(cfg, split, cache_dir or paths.data_cache)
    image_hw = tuple(dataset[0]["rgb"].shape[-2:])
    sensor_cache = Path(sensor_cache) if sensor_cache is not None else paths.root / "cache" / "sensor" / cfg.profile
    wants_sensor = any(e in SENSOR_MODES for e in evals)
    frames = []
    for name, path in designs.items():
        model = load_design(path, cfg, stage1=stage1, engine=engine)
        sensor = None
        if wants_sensor and find_frontend(model) is not None:
            geometry = geometry_for(model, cfg.sensor, cfg.optics, image_hw)
            psfs, _ = cached_sensor_psfs(model, cfg, geometry, baffle_sin_of(cfg.sensor, cfg.optics), sensor_cache,
                                         progress=progress)
            sensor = (psfs, geometry)
        frames.append(evaluate_design(model, dataset, cfg, evals=evals, seed=seed, design=name,
                                      max_items=max_items, engine=engine, sensor=sensor))
    if ideal_optics is not None:
        base = load_design(ideal_optics, cfg)

        def ideal(mode):
            if mode in SENSOR_MODES:
                return ideal_optics_sensor_model(base, cfg.optics, cfg.sensor, image_hw, mode)
            return ideal_optics_model(base, cfg.optics, mode)

        frames.append(evaluate_design(ideal, dataset, cfg, evals=evals, seed=seed, design="ideal_optics",
                                      max_items=max_items))
    return pd.concat(frames, ignore_index=True)


#: the physical evaluation's modes: the paper's crop, the whole PSF in one window (with noise), the
#: whole sensor (with noise)
PHYSICAL_EVAL_MODES = ("crop", "full_psf", "full_psf_noise", "sensor", "sensor_noise")


def ensure_physical_eval(cfg: Config, paths: ProfilePaths | None = None, progress: bool = True) -> pd.DataFrame:
    """``results/<profile>/physical_eval.csv`` (every design built and evaluated if missing)."""
    paths = paths or ProfilePaths(cfg.profile)
    out = paths.results / "physical_eval.csv"
    if not out.exists():
        names = ("electronic", "dko", "dko_finetune", "dko_finetune_psf", "dko_finetune_noise", "e2e")
        designs = ensure_designs(cfg, names, paths, progress=progress)
        write_csv(evaluate_designs(cfg, designs, evals=PHYSICAL_EVAL_MODES, ideal_optics=designs["electronic"]), out)
    return pd.read_csv(out)


def ensure_costs(path: Path | None = None) -> pd.DataFrame:
    """``results/costs.csv`` (committed; regenerate with ``snakemake --cores 2 costs --forcerun costs``)."""
    path = Path(path) if path is not None else ProfilePaths("default").root / "results" / "costs.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `python scripts/measure_costs.py --out {path}` "
                                "(about 2 minutes) or `snakemake --cores 2 costs`")
    return pd.read_csv(path)


def equal_budget_jobs(cfg: Config) -> list[tuple[str, str]]:
    """The (method, engine) jobs of the equal-budget experiment, run for every seed.

    Every method of ``budget.methods`` runs with the fast engine; where ``budget.engines``
    lists the reference engine (the paper's kind of simulator), the pair the claim is about
    (DKO and E2E from scratch) and the electronic bound run with it as well.
    """
    from .protocol import METHODS

    methods = tuple(getattr(cfg.budget, "methods", METHODS))
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not {"electronic", "dko", "e2e_scratch"} <= set(methods):
        raise ValueError(f"budget.methods must be a subset of {METHODS} that holds electronic, dko and e2e_scratch "
                         f"(the bound and the pair the claim is about), got {list(methods)}")
    jobs = [(m, "fast") for m in METHODS if m in methods]
    if "reference" in cfg.budget.engines:
        jobs += [("electronic", "reference"), ("dko", "reference"), ("e2e_scratch", "reference")]
    return jobs


def ensure_equal_budget(cfg: Config, paths: ProfilePaths | None = None,
                        progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(equal_budget.csv, equal_budget_summary.csv)`` of the profile, every job run in-process if missing.

    Snakemake runs the same jobs as separate single-threaded processes
    (``workflow/equal_budget.smk``); this path is for a notebook on a fresh clone.
    """
    from .jobs import JobContext, run_job
    from .protocol import (check_study_spend, chosen_lr_mult, lr_source, resolve_reference_run,
                           settings_from_config, violation_lines)
    from .snapshots import cleanup_snapshots
    from .stats import combine, summarize

    paths = paths or ProfilePaths(cfg.profile)
    runs_path, summary_path = paths.results / "equal_budget.csv", paths.results / "equal_budget_summary.csv"
    if not (runs_path.exists() and summary_path.exists()):
        ensure_designs(cfg, ("electronic", "dko"), paths, progress=progress)  # the budget unit: the main chain's DKO run
        settings = resolve_reference_run(settings_from_config(cfg), paths.results)
        frames, selected = [], {}  # selected: method -> lr multiplier chosen on the search seed
        for seed in settings.seeds:  # the search seed (the first) runs first
            seed_cfg = cfg.replace({"seed": seed, "threads": 1})
            stage1_dir = paths.equal_budget / f"stage1_{seed}"

            def run(method: str, engine: str | None, work: Path) -> pd.DataFrame:
                reuse = lr_source(settings, method, engine, seed) is not None
                ctx = JobContext(cfg=seed_cfg, settings=settings, seed=seed, cache_dir=paths.data_cache,
                                    stage1_dir=stage1_dir, work=work, progress=progress,
                                    lr_mult=selected.get(method) if reuse else None)
                out = run_job(method, ctx, engine)
                if not reuse and method != "electronic" and not out.empty:
                    selected[method] = chosen_lr_mult(out)
                return out

            run("stage1", None, stage1_dir)
            for method, engine in equal_budget_jobs(cfg):
                work = paths.equal_budget / f"{method}_{engine}_{seed}.work"
                frames.append(run(method, engine, work))
                cleanup_snapshots(work)
        runs = combine(frames)
        seeds_runs = [json.loads((paths.equal_budget / f"stage1_{s}" / "budgets.json").read_text())
                      for s in settings.seeds]
        wall = check_study_spend(runs, seeds_runs, stage2_stops_early=int(cfg.dko.stop_window) > 0)
        for line in violation_lines(wall):
            warnings.warn(f"{line.strip()} (wall clock depends on the machine's load)", stacklevel=2)
        write_csv(runs, runs_path)
        write_csv(summarize(runs), summary_path)
    return pd.read_csv(runs_path), pd.read_csv(summary_path)


TOLERANCE_DESIGNS = ("dko", "dko_finetune", "dko_finetune_noise", "e2e")
"""The designs the tolerance study compares (the Snakefile's ``tolerances`` rule passes the same)."""


def ensure_tolerances(cfg: Config, paths: ProfilePaths | None = None, progress: bool = True) -> pd.DataFrame:
    """``results/<profile>/tolerances.csv``: DKO, its fine-tunes and E2E under fabrication and sensor errors.

    The study of :mod:`dkolib.fab.tolerances` (``cfg.tolerances``), with the electronic network
    and the constant predictor as reference rows; the designs are built first if missing.
    """
    from ..fab.tolerances import study_from_files

    paths = paths or ProfilePaths(cfg.profile)
    out = paths.results / "tolerances.csv"
    if not out.exists():
        designs = ensure_designs(cfg, ("electronic", *TOLERANCE_DESIGNS), paths, progress=progress)
        stage1 = designs.pop("electronic")
        write_csv(study_from_files(cfg, designs, stage1, paths.data_cache, progress=progress), out)
    return pd.read_csv(out)
