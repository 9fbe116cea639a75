"""The jobs of the equal-budget experiment: ``calibrate`` and ``stage1`` per seed, one job per (method, engine, seed).

:func:`run_job` dispatches a job given its :class:`JobContext` (configuration, settings,
seed, data cache, the shared stage-1 folder and the job's own work folder). Each method job
returns (and ``scripts/run_equal_budget.py`` writes) a table with the columns
:data:`~dkolib.study.protocol.COLUMNS`: one row per (budget axis, budget fraction, eval mode)
the method can fit, budgets in wall seconds (``budget_s``) and FLOPs (``budget_flops``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..dko.budget import BudgetMeter
from ..io import load_torch, save_torch, write_csv
from .components import (_depth_loss, _eval_rows, _new_depthnet, _val_abs_rel, build_e2e_model, calibrate,
                         e2e_param_groups, run_finetune_fixed, run_stage2)
from .protocol import (JOBS, METRICS, SEED_JOBS, BudgetProtocolError, Settings, _axis_field, e2e_targets, evals_for,
                       make_budgets, pick_lr_mult, reference_stage1_target, stage1_targets, target_key, to_frame)
from .snapshots import _write_json, claim_folder, load_snapshot, read_manifest, train_with_snapshots


def _rows(method, engine, seed, frac, axis, budgets, metrics: pd.DataFrame, lr, mult, spent, steps) -> list[dict]:
    c = budgets["engines"][engine]["c_ref"]
    out = []
    for _, r in metrics.iterrows():
        out.append({"method": method, "engine": engine, "seed": int(seed), "budget_s": frac * c["wall_s"],
                    "budget_flops": frac * c["flops"], **{m: float(r[m]) for m in METRICS}, "eval": r["eval"],
                    "lr": lr, "lr_mult": mult, "budget_fraction": frac, "budget_axis": axis,
                    "spent_s": spent["wall_s"], "cpu_s": spent["cpu_s"], "spent_flops": spent["flops"],
                    "steps": int(steps)})
    return out


@dataclass
class JobContext:
    cfg: object
    settings: Settings
    seed: int
    cache_dir: Path
    stage1_dir: Path
    work: Path
    progress: bool = True
    lr_mult: float | None = None
    """A multiplier selected by another job (see :func:`~dkolib.study.protocol.lr_source`); None = search ``lr_grid`` here."""

    @property
    def lr_grid(self) -> tuple:
        return self.settings.lr_grid if self.lr_mult is None else (float(self.lr_mult),)

    def dataset(self, split: str, flip: bool = False):
        from ..depth.data import get_dataset
        return get_dataset(self.cfg, split, self.cache_dir, flip=flip)


def _steps_cap(budgets: dict, settings: Settings, per_step_flops: float, base_flops: float = 0.0) -> int:
    """A generous step cap for a snapshot run (deterministic, so it is identical on resume)."""
    top = max(settings.fractions) * max(e["c_ref"]["flops"] for e in budgets["engines"].values())
    n = (top - base_flops) / max(per_step_flops, 1.0)
    wall_top = max(settings.fractions) * max(e["c_ref"]["wall_s"] for e in budgets["engines"].values())
    return int(max(n, 1) * 20 + 20 * max(1.0, wall_top) + 100)


def run_calibrate_job(ctx: JobContext) -> pd.DataFrame:
    """Calibrate the per-step costs and write the budget unit and ladders of this seed.

    Writes ``calibration.json`` and ``budgets.json`` (settings, calibration, reference costs,
    stage 1's learning rate: the main chain's) into ``ctx.stage1_dir``, which the ``stage1``
    job of the same seed then trains in. E2E from scratch needs nothing more, so it can start
    while stage 1 trains. Returns one row per engine: ``C_ref`` in seconds and FLOPs.
    """
    cfg, st, root = ctx.cfg, ctx.settings, Path(ctx.stage1_dir)
    root.mkdir(parents=True, exist_ok=True)
    calib = calibrate(cfg, st, ctx.dataset("train", flip=True), root, ctx.seed, progress=False)
    budgets = make_budgets(calib, st)
    _write_json({"settings": dataclasses.asdict(st), "calibration": calib, "budgets": budgets,
                 "stage1_lr_mult": 1.0, "stage1_lr": cfg.stage1.lr, "seed": ctx.seed,
                 "profile": cfg.profile}, root / "budgets.json")
    return pd.DataFrame([{"seed": ctx.seed, "engine": e, "stage1_steps": st.stage1_steps, "dko_steps": st.dko_steps,
                          "c_ref_s": b["c_ref"]["wall_s"], "c_ref_flops": b["c_ref"]["flops"]}
                         for e, b in budgets["engines"].items()])


def run_stage1_job(ctx: JobContext) -> pd.DataFrame:
    """Train stage 1 at the main chain's rate, snapshotted at every budget a method needs.

    With ``budget.stage1_stop: budget`` it trains on to the largest of those budgets, so every
    snapshot spends its budget; with ``plateau`` it stops where the main chain's did (its
    validation plateau, ``N1`` steps) and a budget above that cost gets the ``N1``-step network,
    which spends less than the budget.

    Reads ``budgets.json`` (the ``calibrate`` job's; calibrates first if it is missing) and
    writes the run into ``ctx.stage1_dir / 'lr_1'`` (snapshots + manifest) and ``lr_search.csv``
    (one row: the validation AbsRel of the reference stage 1, ``N1`` steps). Returns that table.
    """
    cfg, st, root = ctx.cfg, ctx.settings, Path(ctx.stage1_dir)
    if not (root / "budgets.json").exists():
        run_calibrate_job(ctx)
    info = json.loads((root / "budgets.json").read_text())
    budgets, calib = info["budgets"], info["calibration"]
    train_set = ctx.dataset("train", flip=True)
    ref = reference_stage1_target(budgets, st)
    targets = stage1_targets(budgets, st) + [ref]
    model = _new_depthnet(cfg, ctx.seed)
    lr = cfg.stage1.lr
    to_budget = st.stage1_stop == "budget"
    cap = _steps_cap(budgets, st, calib["stage1_step"]["flops"]) if to_budget else st.stage1_steps
    man = train_with_snapshots(model, lambda: [{"params": list(model.parameters()), "lr": lr}], train_set,
                               targets=targets, work=root / "lr_1", seed=ctx.seed,
                               batch_size=cfg.stage1.batch_size, steps_cap=cap, final_at_cap=not to_budget,
                               loss_fn=_depth_loss(cfg), weight_decay=cfg.stage1.weight_decay,
                               checkpoint_every=cfg.stage1.checkpoint_every, progress=ctx.progress, desc="stage1")
    model.load_state_dict(load_snapshot(root / "lr_1", man[ref.key])["state_dict"])
    table = pd.DataFrame([{"seed": ctx.seed, "lr_mult": 1.0, "lr": lr,
                           "val_abs_rel": _val_abs_rel(model, ctx.dataset("val"), cfg, st),
                           "ref_step": man[ref.key]["step"], "chosen": True}])
    write_csv(table, root / "lr_search.csv")
    return table


def load_stage1(stage1_dir: Path, settings: Settings, seed: int, engine: str) -> dict:
    """``budgets.json`` of a finished stage-1 job, checked against this job's settings."""
    p = Path(stage1_dir) / "budgets.json"
    if not p.exists():
        raise BudgetProtocolError(f"{p} is missing: run the stage-1 job first "
                                  f"(scripts/run_equal_budget.py --method stage1 --seed {seed} --stage1-dir {stage1_dir})")
    info = json.loads(p.read_text())
    if int(info["seed"]) != int(seed):
        raise BudgetProtocolError(f"{p} was written for seed {info['seed']}, this job is seed {seed}")
    mine = dataclasses.asdict(settings)
    theirs = info["settings"]
    # a budgets.json from before budget.stage1_stop existed was made with the plateau stop
    theirs = {"stage1_stop": "plateau", **theirs}
    diff = {k: (theirs.get(k), mine[k])
            for k in ("fractions", "axes", "stage1_steps", "dko_steps", "finetune_steps", "stage1_stop")
            if list(np.atleast_1d(theirs.get(k))) != list(np.atleast_1d(mine[k]))}
    if diff:
        raise BudgetProtocolError(f"{p} was made with other budget settings {diff}; rerun the stage-1 job")
    if engine not in info["budgets"]["engines"]:
        raise BudgetProtocolError(f"{p} has no reference cost for engine '{engine}' "
                                  f"(calibrated: {sorted(info['budgets']['engines'])}); add it to budget.engines")
    info["run_dir"] = Path(stage1_dir) / f"lr_{info['stage1_lr_mult']:g}"
    info["manifest"] = read_manifest(info["run_dir"])
    return info


def _stage1_model(ctx: JobContext, info: dict, key: str):
    entry = info["manifest"].get(key)
    if entry is None:
        return None, None
    net = _new_depthnet(ctx.cfg, ctx.seed)
    net.load_state_dict(load_snapshot(info["run_dir"], entry)["state_dict"])
    return net, entry


def _electronic_or_ideal(net, optics_cfg):
    """``mode -> model``: the stage-1 network itself, except under sensor noise, where it is read
    through ideal optics (:func:`~dkolib.dko.evaluation.ideal_optics_model`: its exact kernels,
    all the light in the kernel window) with the same noise as every hybrid. A noiseless network
    is not a reference a noisy camera can reach; ideal optics under the same noise is."""
    from ..dko.evaluation import ideal_optics_model

    def build(mode: str):
        return ideal_optics_model(net, optics_cfg, mode) if mode == "full_psf_noise" else net
    return build


def run_electronic_job(ctx: JobContext, engine: str) -> pd.DataFrame:
    """The stage-1 network at every budget: one evaluation for the noiseless modes (no optics, the
    row repeated), and through ideal optics under the same sensor noise for ``full_psf_noise``."""
    st = ctx.settings
    info = load_stage1(ctx.stage1_dir, st, ctx.seed, engine)
    test = ctx.dataset("test")
    rows = []
    for axis in st.axes:
        for frac in st.fractions:
            net, entry = _stage1_model(ctx, info, target_key("electronic", engine, axis, frac))
            if net is None:
                continue
            m = _eval_rows(_electronic_or_ideal(net, ctx.cfg.optics), test, ctx.cfg, evals_for(frac, st),
                           st.eval_items)
            rows += _rows("electronic", engine, ctx.seed, frac, axis, info["budgets"], m, info["stage1_lr"],
                          info["stage1_lr_mult"], entry, entry["step"])
    return to_frame(rows)


def _add(a: dict, b: dict) -> dict:
    return {k: float(a[k]) + float(b[k]) for k in ("wall_s", "cpu_s", "flops")}


def run_dko_job(ctx: JobContext, engine: str, finetune: bool = False) -> pd.DataFrame:
    """``dko`` (or ``dko_ft``): stage 2 (+ fine-tune) on the stage-1 snapshot at B - S2 (- FT)."""
    from ..dko.evaluation import hybrid_from_dko

    cfg, st = ctx.cfg, ctx.settings
    method = "dko_ft" if finetune else "dko"
    info = load_stage1(ctx.stage1_dir, st, ctx.seed, engine)
    budgets = info["budgets"]
    work = Path(ctx.work)
    test, val = ctx.dataset("test"), ctx.dataset("val")
    train_set = ctx.dataset("train", flip=True) if finetune else None

    def design(frac, axis, mult):
        """Hybrid model + total cost for the design at (frac, axis) with lr multiplier ``mult``."""
        net, entry = _stage1_model(ctx, info, target_key(method, engine, axis, frac))
        if net is None:
            return None, None, None
        tag = f"m{mult:g}_s{entry['step']}"
        steps = stage2_step_cap(budgets, info["calibration"], cfg.dko.steps, engine, axis, frac, entry,
                                budgets["engines"][engine]["finetune"] if finetune else None)
        array, gain, c2 = run_stage2(cfg, net.conv1_weight().detach().clone(), engine, cfg.dko.lr * mult,
                                     steps, ctx.seed, work / f"stage2_{tag}_n{steps}", ctx.progress)
        model = hybrid_from_dko(net, array, gain, cfg.optics, "crop", engine)
        cost = _add(entry, c2)
        if finetune:
            ft_dir = work / f"ft_{tag}_n{steps}"  # one fine-tune per stage-2 design
            done = ft_dir / "model.pt"
            if done.exists():
                obj = load_torch(done, map_location="cpu")
                model.load_state_dict(obj["state_dict"])
                cft = obj["cost"]
            else:
                cft = run_finetune_fixed(cfg, model, engine, cfg.dko.finetune_lr * mult, st.finetune_steps,
                                         ctx.seed, train_set, ft_dir, ctx.progress)
                save_torch({"state_dict": model.state_dict(), "cost": cft}, done)
            model.eval()
            cost = _add(cost, cft)
        return model, cost, entry["step"]

    ref_frac, ref_axis = st.ref_fraction, st.ref_axis
    search = []
    for mult in ctx.lr_grid:
        model, _, _ = design(ref_frac, ref_axis, mult)
        if model is None:
            raise BudgetProtocolError(f"{method} cannot fit the reference budget (fraction {ref_frac}) for "
                                      f"engine {engine} on the {ref_axis} axis: stage 2 (+ fine-tune) alone exceeds it, so no learning "
                                      f"rate can be selected; raise budget.stage1_steps or lower budget.dko_steps / "
                                      f"budget.finetune_steps")
        search.append({"lr_mult": mult, "val_abs_rel": _val_abs_rel(model, val, cfg, st)})
    best = pick_lr_mult(search, st.lr_tie_rel)
    _write_search(search, best, work)
    rows = []
    for axis in st.axes:
        for frac in st.fractions:
            model, cost, step = design(frac, axis, best)
            if model is None:
                continue  # the budget cannot hold stage 2 (+ fine-tune): no point
            m = _eval_rows(model, test, cfg, evals_for(frac, st), st.eval_items)
            rows += _rows(method, engine, ctx.seed, frac, axis, budgets, m, cfg.dko.lr * best, best, cost, step)
    return to_frame(rows)


def stage2_step_cap(budgets: dict, calib: dict, cap: int, engine: str, axis: str, frac: float, entry: dict,
                    finetune: dict | None = None) -> int:
    """Stage-2 steps a DKO design at ``frac x C_ref`` may run: what its budget has left after its
    stage-1 snapshot (``entry``) and fine-tune, at the calibrated cost per step, capped by ``cap``
    (``dko.steps``; the stopping rule may end it earlier). At least 1."""
    field = _axis_field(axis)
    left = frac * budgets["engines"][engine]["c_ref"][field] - float(entry[field])
    if finetune is not None:
        left -= float(finetune[field])
    per = float(calib["stage2_step"][engine][field])
    return int(max(1, min(int(cap), math.floor(left / per + 1e-9))))


def _write_search(search: list[dict], best: float, work: Path) -> None:
    t = pd.DataFrame(search)
    t["chosen"] = t["lr_mult"] == best
    write_csv(t, Path(work) / "lr_search.csv")


def run_e2e_job(ctx: JobContext, engine: str, warm: bool = False) -> pd.DataFrame:
    """``e2e_scratch`` / ``e2e_warm``: one snapshot run per lr multiplier, selection at the reference budget."""
    cfg, st = ctx.cfg, ctx.settings
    method = "e2e_warm" if warm else "e2e_scratch"
    info = load_stage1(ctx.stage1_dir, st, ctx.seed, engine)
    budgets = info["budgets"]
    work = Path(ctx.work)
    train_set = ctx.dataset("train", flip=True)
    test, val = ctx.dataset("test"), ctx.dataset("val")
    warm_state, start = None, None
    if warm:
        ref = reference_stage1_target(budgets, st)
        net, entry = _stage1_model(ctx, info, ref.key)
        if net is None:
            raise BudgetProtocolError(f"stage-1 folder {ctx.stage1_dir} has no reference snapshot '{ref.key}'")
        warm_state = net.state_dict()
        start = BudgetMeter()
        start.wall_s, start.cpu_s, start.flops = entry["wall_s"], entry["cpu_s"], entry["flops"]
        start.flops_by = {"stage1": entry["flops"]}
        start = start.state_dict()
    targets = e2e_targets(budgets, st, engine, start)
    if not targets:
        return to_frame([])
    ref_frac, ref_axis = st.ref_fraction, st.ref_axis
    ref_key = target_key("e2e", engine, ref_axis, ref_frac)
    if ref_key not in {t.key for t in targets}:
        raise BudgetProtocolError(f"{method} has no point at the reference budget (fraction {ref_frac}): "
                                  f"its warm start already costs more; no learning rate can be selected")
    _, extra = build_e2e_model(cfg, engine, ctx.seed, warm_state)
    base_flops = start["flops"] if start else 0.0
    cap = _steps_cap(budgets, st, budgets["stage1"]["flops"] / max(1, st.stage1_steps) + extra, base_flops)

    def run(mult, stop_after):
        model, extra_ = build_e2e_model(cfg, engine, ctx.seed, warm_state)
        man = train_with_snapshots(model, e2e_param_groups(model, cfg, mult), train_set, targets=targets,
                                   work=work / f"lr_{mult:g}", seed=ctx.seed, batch_size=cfg.e2e.batch_size,
                                   steps_cap=cap, loss_fn=_depth_loss(cfg), weight_decay=cfg.stage1.weight_decay,
                                   extra_step_flops=extra_, initial=start, stop_after=stop_after,
                                   checkpoint_every=cfg.stage1.checkpoint_every, progress=ctx.progress,
                                   desc=f"{method} {engine} lr x{mult:g}")
        return model, man

    def snapshot_model(model, mult, man, key):
        model.load_state_dict(load_snapshot(work / f"lr_{mult:g}", man[key])["state_dict"])
        model.first_layer.freeze_optics(True)
        return model.eval()

    search = []
    for mult in ctx.lr_grid:
        model, man = run(mult, ref_key)
        search.append({"lr_mult": mult, "val_abs_rel": _val_abs_rel(snapshot_model(model, mult, man, ref_key),
                                                                    val, cfg, st)})
    best = pick_lr_mult(search, st.lr_tie_rel)
    _write_search(search, best, work)
    model, man = run(best, None)
    rows = []
    lr = cfg.e2e.lr_net * best
    for t in sorted(targets, key=lambda t: (t.axis, t.value)):
        axis, frac = t.key.split("|")[2], float(t.key.split("|")[3])
        m = snapshot_model(model, best, man, t.key)
        metrics = _eval_rows(m, test, cfg, evals_for(frac, st), st.eval_items)
        rows += _rows(method, engine, ctx.seed, frac, axis, budgets, metrics, lr, best, man[t.key],
                      man[t.key]["step"])
    return to_frame(rows)


SEARCH_KEYS = ("lr_grid", "lr_search", "lr_tie_rel")
"""Budget settings that decide which learning-rate multipliers are tried and which one is chosen.
No run's state depends on them (each multiplier's run has its own subfolder, named after it), so
they are not part of a job's stamp: widening the grid keeps the runs of an unfinished job (a
finished job has deleted its snapshots, so a rerun retrains them)."""


def _without_search_keys(stamp: dict) -> dict:
    out = copy.deepcopy(stamp)
    for section in (out.get("settings"), (out.get("config") or {}).get("budget")):
        for key in SEARCH_KEYS:
            if isinstance(section, dict):
                section.pop(key, None)
    return out


def job_stamp(method: str, ctx: JobContext, engine: str | None) -> dict:
    """What a job's resumable state depends on (see :func:`~dkolib.study.snapshots.claim_folder`)."""
    return _without_search_keys({"method": method, "engine": engine, "seed": int(ctx.seed), "lr_mult": ctx.lr_mult,
                                 "settings": dataclasses.asdict(ctx.settings), "config": ctx.cfg.to_dict()})


def run_job(method: str, ctx: JobContext, engine: str | None = None) -> pd.DataFrame:
    """Dispatch one job of the experiment (``calibrate``, ``stage1`` or one of :data:`~dkolib.study.protocol.METHODS`)."""
    if method not in JOBS:
        raise ValueError(f"method must be one of {JOBS}, got {method!r}")
    if method not in SEED_JOBS and engine not in ("fast", "reference"):
        raise ValueError(f"engine must be 'fast' or 'reference', got {engine!r}")
    if method in SEED_JOBS:  # one folder per seed, shared by the two
        claim_folder(ctx.stage1_dir, job_stamp("stage1", ctx, None), normalize=_without_search_keys)
        return run_calibrate_job(ctx) if method == "calibrate" else run_stage1_job(ctx)
    claim_folder(ctx.work, job_stamp(method, ctx, engine), normalize=_without_search_keys)
    if method == "electronic":
        return run_electronic_job(ctx, engine)
    if method in ("dko", "dko_ft"):
        return run_dko_job(ctx, engine, finetune=method == "dko_ft")
    return run_e2e_job(ctx, engine, warm=method == "e2e_warm")
