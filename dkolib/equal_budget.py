"""The equal-budget experiment: DKO versus end-to-end (E2E) design at equal compute.

Protocol (fixed in code before any result was looked at)
-------------------------------------------------------
Methods
  * ``electronic``  -- the stage-1 network alone (no optics): the upper bound.
  * ``dko``         -- stage 1, then stage 2 (metasurface synthesis, :func:`dkolib.synthesis.synthesize`)
    and the closed-form per-channel gain (``SynthesisResult.gain``).
  * ``dko_ft``      -- ``dko`` plus a fixed-length fine-tune of the electronic back end with the
    optics frozen (``budget.finetune_steps`` steps, crop front end, depth loss).
  * ``e2e_scratch`` -- metasurfaces + network trained jointly from random init, the PSF engine
    simulating every metasurface in every step, crop-kernel front end (the paper's E2E);
    the gain is a trainable parameter initialised to the reference kernel norm (as ``train.run_e2e``).
  * ``e2e_warm``    -- the same, the network warm-started from the stage-1 network (the
    reference stage 1 of the same seed, ``budget.stage1_steps`` steps); its meter starts
    at that stage 1's cost, so it has no point below it.

Budgets
  The reference cost ``C_ref(engine)`` is the cost of one full DKO run: ``N1`` stage-1
  steps + ``N2`` stage-2 steps (``budget.stage1_steps``, ``budget.dko_steps``). It is
  calibrated at the start of the per-seed ``stage1`` job by timing a few steps of each
  component on this machine with this job's thread count (median wall seconds per step;
  FLOPs are exact: network steps counted by ``FlopCounterMode`` through
  :func:`dkolib.train.train_loop`, PSF simulations analytically). The ladder is
  ``budget.ladder_fractions x C_ref`` on two axes, ``wall`` (seconds) and ``flops``;
  a design is *snapshotted on one axis* (column ``budget_axis``) and both its nominal
  budgets and what it actually spent (``spent_s``, ``cpu_s``, ``spent_flops``) are logged.
  Only training computation is charged (data loading, forward, backward, optimizer,
  optical simulation); evaluation, checkpoint I/O and learning-rate selection are not
  (they are identical for every method). Wall-clock budgets assume an unshared core per
  job: calibrating under a different load than the runs see shifts the wall ladder (the
  FLOP ladder is immune); ``cpu_s`` is logged beside ``spent_s`` to make that visible.

Truncation = snapshot
  All runs use a constant learning rate, so a run truncated at budget B is exactly the
  same run's state when its accumulated cost first reaches B (``train_loop``'s
  ``max_seconds``/``max_flops`` semantics: it stops *before* a step once the meter has
  reached the limit, so every method overshoots by less than one of its own steps).
  One run per (method, engine, seed, lr) therefore serves every budget: it is advanced by
  repeated resumed ``train_loop`` calls, each up to the next pending budget, and the
  model is saved whenever a budget is crossed (:func:`train_with_snapshots`).

DKO at budget B
  The DKO point at B uses the stage-1 snapshot at ``B - S2`` (``dko``) or
  ``B - S2 - FT`` (``dko_ft``), where ``S2`` and ``FT`` are the calibrated costs of
  stage 2 and of the fine-tune; stage 2 (and the fine-tune) is then run on it and its
  *measured* cost is added to the stage-1 snapshot's cost. A method that cannot fit a
  budget (``B <= S2`` for DKO, ``B <= S2 + FT`` for dko_ft, ``B <= S1`` for e2e_warm) has
  no point there: no row is written.

Learning rates
  Each method searches the same multipliers ``budget.lr_grid`` of its own base rates,
  one multiplier scaling all the rates the method itself trains with:
  stage 1 (``stage1.lr``, shared by electronic / dko / dko_ft / e2e_warm and selected
  at the end of the reference stage 1), DKO (``dko.lr``), DKO-FT (``dko.lr`` and
  ``dko.finetune_lr``), E2E (``e2e.lr_net`` and ``e2e.lr_optics``). The multiplier is
  chosen on the VALIDATION split (crop evaluation, AbsRel) at the reference budget
  (fraction 1.0 on the FLOP axis, whose snapshots do not depend on the machine's speed,
  so the choice is reproducible; else on the first axis); only the chosen run is continued to larger
  budgets and reported, on the TEST split. With ``budget.lr_search: first_seed`` the
  search runs once per method, on the first of ``budget.seeds`` with the fast engine, and
  every other seed and the reference engine reuse that multiplier (:func:`lr_source`):
  the search then costs the same for every method and is not repeated per seed. The
  two engines compute the same PSFs (to ~5e-4), so the rate that suits one suits the
  other; only their costs differ. With ``every_seed`` each job searches for itself.
  Selection cost is not charged to any budget.

Evaluation
  Every design at every budget: ``eval='crop'`` (idealised k x k kernel) and
  ``eval='full_psf'`` (sensor image rendered with the whole PSF window, the gain unchanged),
  plus ``'full_psf_noise'`` at the largest budget when ``budget.noise_eval`` is true,
  all on the first ``budget.eval_items`` test images (:func:`dkolib.evaluation.evaluate_design`).

Jobs (independent, single-threaded; see ``scripts/run_equal_budget.py``)
  ``stage1`` per seed writes calibration, budgets and stage-1 snapshots into a shared
  folder; ``electronic | dko | dko_ft | e2e_scratch | e2e_warm`` per (engine, seed) read
  it and write one CSV each; ``scripts/summarize_equal_budget.py`` merges them
  (:func:`summarize`).

Budget-specific configuration keys read here (with fallbacks so the code runs before
they exist): ``budget.stage1_steps`` (-> ``stage1.steps``), ``budget.dko_steps``
(-> ``dko.steps``), ``budget.finetune_steps`` (-> ``dko.finetune_steps``),
``budget.eval_items`` (-> all), ``budget.axes`` (-> ``('wall', 'flops')``),
``budget.noise_eval`` (-> False), ``budget.calib_steps`` (-> 3).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from .budget import BudgetMeter
from .io import atomic_path, save_torch, seed_everything, write_csv

METHODS = ("electronic", "dko", "dko_ft", "e2e_scratch", "e2e_warm")
JOBS = ("stage1",) + METHODS
AXES = ("wall", "flops")
METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")
REQUIRED_COLUMNS = ("method", "engine", "seed", "budget_s", "budget_flops") + METRICS + ("eval",)
EXTRA_COLUMNS = ("lr", "lr_mult", "budget_fraction", "budget_axis", "spent_s", "cpu_s", "spent_flops", "steps")
COLUMNS = REQUIRED_COLUMNS + EXTRA_COLUMNS
"""Column order of every per-job CSV and of ``equal_budget.csv``."""
REFERENCE_FRACTION = 1.0
REF_METHOD = "dko"
"""Denominator of the AbsRel ratio in the summary."""
STAGE2_CKPT_MIN_STEPS = 200
"""Stage-2 runs at least this long write a resumable checkpoint."""


class BudgetProtocolError(RuntimeError):
    """A job's inputs do not fit the protocol (missing stage 1, mismatched budgets, ...)."""


# =========================================================================== settings
@dataclass(frozen=True)
class Settings:
    """The experiment's knobs, from ``cfg.budget`` (fallbacks in the module docstring)."""

    fractions: tuple
    seeds: tuple
    engines: tuple
    lr_grid: tuple
    axes: tuple
    stage1_steps: int
    dko_steps: int
    finetune_steps: int
    eval_items: int | None
    noise_eval: bool
    calib_steps: int
    lr_search: str = "first_seed"

    @property
    def lr_search_seed(self) -> int:
        """The seed on which learning rates are selected when ``lr_search == 'first_seed'``."""
        return self.seeds[0]

    @property
    def ref_axis(self) -> str:
        """Budget axis on which learning rates are selected: FLOPs where measured, since a
        FLOP-budgeted snapshot does not depend on the machine's speed, so the choice repeats."""
        return "flops" if "flops" in self.axes else self.axes[0]

    @property
    def ref_fraction(self) -> float:
        """Budget fraction at which learning rates are selected (1.0, else the nearest one)."""
        return min(self.fractions, key=lambda f: (abs(math.log(f / REFERENCE_FRACTION)), -f))


def settings_from_config(cfg) -> Settings:
    b = cfg.budget
    axes = tuple(getattr(b, "axes", AXES))
    bad = [a for a in axes if a not in AXES]
    if bad or not axes:
        raise ValueError(f"budget.axes must be a non-empty subset of {AXES}, got {axes}")
    fractions = tuple(sorted(float(f) for f in b.ladder_fractions))
    if any(not f > 0 for f in fractions):
        raise ValueError(f"budget.ladder_fractions must be positive, got {b.ladder_fractions}")
    lr_grid = tuple(float(m) for m in b.lr_grid)
    if any(not m > 0 for m in lr_grid):
        raise ValueError(f"budget.lr_grid must be positive multipliers, got {b.lr_grid}")
    eval_items = getattr(b, "eval_items", None)
    lr_search = str(getattr(b, "lr_search", "first_seed"))
    if lr_search not in ("first_seed", "every_seed"):
        raise ValueError(f"budget.lr_search must be 'first_seed' or 'every_seed', got {lr_search!r}")
    if not b.seeds:
        raise ValueError("budget.seeds is empty: list at least one seed, e.g. [0, 1, 2]")
    return Settings(
        fractions=fractions, seeds=tuple(int(s) for s in b.seeds), engines=tuple(b.engines), lr_grid=lr_grid,
        axes=axes, stage1_steps=int(getattr(b, "stage1_steps", cfg.stage1.steps)),
        dko_steps=int(getattr(b, "dko_steps", cfg.dko.steps)),
        finetune_steps=int(getattr(b, "finetune_steps", cfg.dko.finetune_steps)),
        eval_items=None if eval_items in (None, 0) else int(eval_items),
        noise_eval=bool(getattr(b, "noise_eval", False)), calib_steps=int(getattr(b, "calib_steps", 3)),
        lr_search=lr_search)


def lr_source(settings: Settings, method: str, engine: str | None, seed: int) -> tuple | None:
    """The job whose selected lr multiplier this job reuses, as ``(method, engine, seed)``; None = search here.

    ``electronic`` trains nothing of its own (it evaluates stage-1 snapshots): always None.
    The stage-1 job of the search seed searches; the other seeds reuse it (engine None).
    """
    if method == "electronic" or settings.lr_search == "every_seed":
        return None
    first = settings.lr_search_seed
    if method == "stage1":
        return None if seed == first else ("stage1", None, first)
    if seed == first and engine == "fast":
        return None
    return (method, "fast", first)


def chosen_lr_mult(table: pd.DataFrame | str | Path) -> float:
    """The lr multiplier a finished job selected, from its output table (or CSV path).

    A stage-1 job's table is its lr search (``chosen`` column); a method job's table has
    one ``lr_mult`` throughout.
    """
    name = str(table) if isinstance(table, (str, Path)) else "the job's table"
    df = pd.read_csv(table) if isinstance(table, (str, Path)) else table
    if "lr_mult" not in df.columns or df.empty:
        raise BudgetProtocolError(f"{name} has no lr_mult rows: it is not a finished job of the experiment "
                                  f"(rerun the job it comes from)")
    if "chosen" in df.columns:
        df = df[df["chosen"].astype(bool)]
    mults = sorted(set(float(m) for m in df["lr_mult"]))
    if len(mults) != 1:
        raise BudgetProtocolError(f"{name} does not name one selected lr multiplier (found {mults})")
    return mults[0]


# =========================================================================== targets
@dataclass(frozen=True)
class Target:
    """One budget a run must be snapshotted at: ``value`` on ``axis`` (seconds or FLOPs)."""

    key: str
    axis: str
    value: float

    def crossed(self, meter: BudgetMeter) -> bool:
        return (meter.wall_s if self.axis == "wall" else meter.flops) >= self.value


def target_key(kind: str, engine: str, axis: str, fraction: float) -> str:
    return f"{kind}|{engine}|{axis}|{fraction:g}"


def _axis_field(axis: str) -> str:
    return "wall_s" if axis == "wall" else "flops"


# =========================================================================== snapshot runner
def _manifest_path(work: Path) -> Path:
    return Path(work) / "snapshots.json"


def read_manifest(work: Path) -> dict:
    p = _manifest_path(work)
    return json.loads(p.read_text()) if p.exists() else {}


def _write_json(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))


def train_with_snapshots(model: nn.Module, param_groups: Callable[[], list], dataset, *, targets: Sequence[Target],
                         work: Path, seed: int, batch_size: int, steps_cap: int, loss_fn: Callable,
                         weight_decay: float, extra_step_flops: float = 0.0, initial: dict | None = None,
                         stop_after: str | None = None, checkpoint_every: int = 0, progress: bool = True,
                         desc: str = "train") -> dict:
    """Advance one constant-lr run through ``targets``, saving the model whenever one is crossed.

    The run lives in ``work`` (``ckpt.pt``, ``log.csv``, ``snap_<step>.pt`` and the manifest
    ``snapshots.json`` mapping each target key to ``{"step", "wall_s", "cpu_s", "flops", "file"}``).
    Each :func:`dkolib.train.train_loop` call resumes the checkpoint and stops before the
    first step at which the meter has reached the nearest pending target on either axis,
    so the state saved for a target is exactly that of a fresh run with ``max_seconds`` /
    ``max_flops`` equal to it. Targets already in the manifest are skipped (job resume).

    Args:
        param_groups: zero-argument callable returning the AdamW groups (built after
            ``model`` exists; called for every ``train_loop`` call).
        initial: meter state the run starts from (e.g. the stage-1 cost of a warm start);
            ignored when resuming (the checkpoint holds the meter).
        stop_after: return as soon as this target key has been saved (later targets stay pending).
    Returns the manifest.
    """
    from .train import train_loop

    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(work)
    missing = sorted(k for k, e in manifest.items() if not (work / e["file"]).exists())
    if missing and (stop_after is None or stop_after in missing):
        # the folder's state cannot be resumed (snapshots deleted, or a manifest copied without
        # them): the checkpoint may lie past the missing points, so the run starts over
        warnings.warn(f"{work}: snapshots {missing} listed in {_manifest_path(work).name} are missing; "
                      f"restarting this run from scratch", RuntimeWarning, stacklevel=2)
        for f in [_manifest_path(work), work / "ckpt.pt", work / "log.csv", *work.glob("snap_*.pt")]:
            f.unlink(missing_ok=True)
        manifest = {}
    pending = [t for t in targets if t.key not in manifest]
    while pending:
        if stop_after is not None and stop_after in manifest:
            break
        lim = {a: min((t.value for t in pending if t.axis == a), default=None) for a in AXES}
        meter = BudgetMeter()
        if initial is not None and not (work / "ckpt.pt").exists():
            meter.load_state_dict(initial)
        hist = train_loop(model, param_groups(), dataset, steps=steps_cap, batch_size=batch_size, seed=seed,
                          log_csv=work / "log.csv", ckpt=work / "ckpt.pt", loss_fn=loss_fn,
                          weight_decay=weight_decay, lr_decay_at=None, eval_fn=None,
                          checkpoint_every=checkpoint_every, budget=meter, max_seconds=lim["wall"],
                          max_flops=lim["flops"], extra_step_flops=extra_step_flops, progress=progress, desc=desc)
        crossed = [t for t in pending if t.crossed(meter)]
        if not crossed:
            raise BudgetProtocolError(
                f"{desc}: the run hit its step cap ({steps_cap}) before reaching budget "
                f"{min(pending, key=lambda t: t.value)}; raise the cap")
        step = int(hist["step"].iloc[-1]) if len(hist) else 0
        fname = f"snap_{step:07d}.pt"
        if not (work / fname).exists():
            save_torch({"state_dict": copy.deepcopy(model.state_dict()), "step": step,
                        "meter": meter.state_dict()}, work / fname)
        for t in crossed:
            manifest[t.key] = {"step": step, "file": fname, **meter.snapshot()}
        _write_json(manifest, _manifest_path(work))
        pending = [t for t in pending if t.key not in manifest]
    return manifest


def load_snapshot(work: Path, entry: dict) -> dict:
    return torch.load(Path(work) / entry["file"], map_location="cpu", weights_only=False)


# =========================================================================== building blocks
def _depth_loss(cfg):
    from .train import make_depth_loss
    return make_depth_loss(cfg.data.min_depth_m, cfg.data.max_depth_m)


def _new_depthnet(cfg, seed: int):
    from .model import DepthNet
    seed_everything(seed)
    return DepthNet(cfg.model, kernel_size=cfg.optics.kernel_size)


def build_e2e_model(cfg, engine: str, seed: int, warm_state: dict | None = None) -> tuple[nn.Module, float]:
    """Joint E2E hybrid (crop front end, trainable gain, PSFs simulated every step) + PSF FLOPs/step.

    Mirrors ``train.run_e2e(variant='joint')``: seeded network (or ``warm_state``), metasurfaces
    from ``cfg.e2e.init``, gain matched to the reference kernels' norm.
    """
    from .frontend import make_hybrid
    from .train import _build_array, psf_step_flops

    gen = seed_everything(seed)
    from .model import DepthNet
    base = DepthNet(cfg.model, kernel_size=cfg.optics.kernel_size)
    if warm_state is not None:
        base.load_state_dict(warm_state)
    reference = base.conv1_weight().detach().clone()
    array = _build_array(cfg, base.conv1_channels, cfg.e2e.init, gen)
    model = make_hybrid(base, array, cfg.optics, mode="crop", engine=engine, trainable_gain=True, cache_psf=False)
    fe = model.first_layer
    fe.match_gain(reference, method="norm")
    extra = psf_step_flops(cfg, fe.n_out * fe.n_in * 2, fe.window_px, engine, backward=True)
    return model, float(extra)


def e2e_param_groups(model: nn.Module, cfg, mult: float) -> Callable[[], list]:
    fe = model.first_layer
    return lambda: [
        {"params": list(fe.array.parameters()), "lr": cfg.e2e.lr_optics * mult, "weight_decay": 0.0},
        {"params": model.backend_parameters() + [fe.gain], "lr": cfg.e2e.lr_net * mult}]


def run_stage2(cfg, weight: torch.Tensor, engine: str, lr: float, steps: int, seed: int, work: Path,
               progress: bool = True):
    """DKO stage 2 + closed-form gain on ``weight``; cached in ``work/result.pt``.

    Returns ``(array, gain, cost)`` with ``cost = {"wall_s", "cpu_s", "flops"}`` measured
    (the synthesis steps, plus the analytic FLOPs of the one PSF the gain fit needs).
    """
    from .synthesis import load_array, save_array, synthesize
    from .train import psf_step_flops

    work = Path(work)
    res_path = work / "result.pt"
    if res_path.exists() and (work / "array.pt").exists():
        obj = torch.load(res_path, map_location="cpu", weights_only=False)
        return load_array(work / "array.pt", cfg.optics), obj["gain"], obj["cost"]
    work.mkdir(parents=True, exist_ok=True)
    meter = BudgetMeter()
    gen = torch.Generator().manual_seed(int(seed))
    dko_cfg = dataclasses.replace(cfg.dko, steps=int(steps))
    # short runs are not worth a checkpoint (latents + Adam state: ~100 MB at the default size)
    ckpt = work / "ckpt.pt" if steps >= STAGE2_CKPT_MIN_STEPS else None
    res = synthesize(weight.detach(), cfg.optics, dko_cfg, engine=engine, generator=gen, progress=progress,
                     ckpt_path=ckpt, log_csv=work / "log.csv", budget=meter, lr=float(lr))
    n_el = int(res.array.latent.shape[0])
    meter.add_flops(psf_step_flops(cfg, n_el, cfg.optics.loss_window_px, engine, backward=False), "optics")
    cost = meter.snapshot()
    save_array(res.array, work / "array.pt", cfg.optics, engine=engine)
    save_torch({"gain": res.gain.detach().clone(), "cost": cost}, res_path)
    return res.array, res.gain.detach().clone(), cost


def run_finetune_fixed(cfg, hybrid: nn.Module, engine: str, lr: float, steps: int, seed: int, train_set,
                       work: Path, progress: bool = True) -> dict:
    """Fine-tune ``hybrid``'s back end (optics frozen, PSF simulated once and cached); returns its cost.

    Same recipe as ``train.run_finetune`` (depth loss, ``stage1.batch_size``, step decay at 75 %)
    without validation passes; resumable from ``work/ckpt.pt``.
    """
    from .train import psf_step_flops, train_loop

    work = Path(work)
    fe = hybrid.first_layer
    fe.freeze_optics(True)
    fe.cache_psf = True
    meter = BudgetMeter()
    if steps <= 0:
        return meter.snapshot()
    if not (work / "ckpt.pt").exists():
        with meter.timing():
            fe.compute_psf()
        meter.add_flops(psf_step_flops(cfg, fe.n_out * fe.n_in * 2, fe.window_px, engine, False), "optics")
    train_loop(hybrid, [{"params": hybrid.backend_parameters(), "lr": lr}], train_set, steps=int(steps),
               batch_size=cfg.stage1.batch_size, seed=seed, log_csv=work / "log.csv", ckpt=work / "ckpt.pt",
               loss_fn=_depth_loss(cfg), weight_decay=cfg.stage1.weight_decay, lr_decay_at=0.75, eval_fn=None,
               checkpoint_every=cfg.stage1.checkpoint_every, budget=meter, progress=progress, desc="dko-finetune")
    return meter.snapshot()


def _median_step(hist: pd.DataFrame, col: str) -> float:
    vals = hist[col].to_numpy(dtype=float)
    diffs = np.diff(np.concatenate([[0.0], vals]))
    diffs = diffs[1:] if len(diffs) > 1 else diffs  # the first step carries warm-up costs
    return float(np.median(diffs))


# =========================================================================== calibration
def calibrate(cfg, settings: Settings, train_set, work: Path, seed: int, progress: bool = False) -> dict:
    """Per-step costs on this machine / thread count (see module docstring). Cached in ``work``.

    Returns ``{"stage1_step": {...}, "stage2_step": {engine: {...}}, "finetune": {engine: {...}}}``
    with ``{"wall_s", "cpu_s", "flops"}`` per step (fine-tune: the whole fixed-length fine-tune).
    """
    from .evaluation import hybrid_from_dko
    from .synthesis import synthesize
    from .train import train_loop

    work = Path(work)
    out_path = work / "calibration.json"
    if out_path.exists():
        return json.loads(out_path.read_text())
    work.mkdir(parents=True, exist_ok=True)
    n = max(2, settings.calib_steps + 1)
    net = _new_depthnet(cfg, seed)
    meter = BudgetMeter()
    tmp = work / "calib_tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    hist = train_loop(net, [{"params": list(net.parameters()), "lr": cfg.stage1.lr}], train_set, steps=n,
                      batch_size=cfg.stage1.batch_size, seed=seed, log_csv=tmp / "s1.csv", ckpt=tmp / "s1.pt",
                      loss_fn=_depth_loss(cfg), weight_decay=cfg.stage1.weight_decay, lr_decay_at=None,
                      progress=progress, desc="calibrate-stage1", budget=meter)
    s1 = {"wall_s": _median_step(hist, "wall_s"), "cpu_s": _median_step(hist, "cpu_s"),
          "flops": float(hist["flops"].iloc[-1]) / len(hist)}
    out = {"stage1_step": s1, "stage2_step": {}, "finetune": {}, "calib_steps": n - 1}
    weight = net.conv1_weight().detach().clone()
    for engine in settings.engines:
        m2 = BudgetMeter()
        res = synthesize(weight, cfg.optics, dataclasses.replace(cfg.dko, steps=n), engine=engine,
                         generator=torch.Generator().manual_seed(seed), progress=progress, budget=m2)
        h2 = res.history
        out["stage2_step"][engine] = {"wall_s": _median_step(h2, "seconds"), "cpu_s": m2.cpu_s / n,
                                      "flops": m2.flops / n}
        hybrid = hybrid_from_dko(net, res.array, res.gain, cfg.optics, "crop", engine)
        ft_dir = tmp / f"ft_{engine}"
        ft_steps = settings.finetune_steps
        if ft_steps > 0:
            # time a short fine-tune and scale its per-step cost; the cached-PSF cost is added once
            k = min(ft_steps, n)
            run_finetune_fixed(cfg, hybrid, engine, cfg.dko.finetune_lr, k, seed, train_set, ft_dir, False)
            fh = pd.read_csv(ft_dir / "log.csv")
            per = {"wall_s": _median_step(fh, "wall_s"), "cpu_s": _median_step(fh, "cpu_s"),
                   "flops": float(fh["flops"].iloc[-1] - fh["flops"].iloc[0]) / max(1, len(fh) - 1)
                   if len(fh) > 1 else float(fh["flops"].iloc[-1])}
            first = {key: float(fh[key].iloc[0]) - per[key] for key in ("wall_s", "cpu_s", "flops")}
            out["finetune"][engine] = {key: max(0.0, first[key]) + ft_steps * per[key] for key in per}
        else:
            out["finetune"][engine] = {"wall_s": 0.0, "cpu_s": 0.0, "flops": 0.0}
    shutil.rmtree(tmp, ignore_errors=True)
    _write_json(out, out_path)
    return out


def make_budgets(calib: dict, settings: Settings) -> dict:
    """Reference costs per engine and the absolute ladders, from a calibration."""
    s1 = calib["stage1_step"]
    out = {"stage1": {k: settings.stage1_steps * s1[k] for k in ("wall_s", "cpu_s", "flops")}, "engines": {}}
    for engine in settings.engines:
        s2 = {k: settings.dko_steps * calib["stage2_step"][engine][k] for k in ("wall_s", "cpu_s", "flops")}
        ft = dict(calib["finetune"][engine])
        c_ref = {k: out["stage1"][k] + s2[k] for k in s2}
        out["engines"][engine] = {"stage2": s2, "finetune": ft, "c_ref": c_ref}
    return out


def stage1_targets(budgets: dict, settings: Settings, engines: Iterable[str] | None = None) -> list[Target]:
    """Stage-1 budgets: ``electronic`` at B, ``dko`` at B - S2, ``dko_ft`` at B - S2 - FT (feasible ones)."""
    out: dict[str, Target] = {}
    for engine in engines or settings.engines:
        e = budgets["engines"][engine]
        for axis in settings.axes:
            f_ = _axis_field(axis)
            for frac in settings.fractions:
                b = frac * e["c_ref"][f_]
                for kind, value in (("electronic", b), ("dko", b - e["stage2"][f_]),
                                    ("dko_ft", b - e["stage2"][f_] - e["finetune"][f_])):
                    if value > 0:
                        key = target_key(kind, engine, axis, frac)
                        out[key] = Target(key, axis, value)
    return list(out.values())


def reference_stage1_target(budgets: dict, settings: Settings) -> Target:
    """The end of the reference stage 1 (exactly ``N1`` steps: half a step short of ``N1`` step-FLOPs)."""
    per = budgets["stage1"]["flops"] / max(1, settings.stage1_steps)
    return Target("ref|stage1", "flops", (settings.stage1_steps - 0.5) * per)


# =========================================================================== evaluation
def _eval_rows(model, dataset, cfg, evals, max_items) -> pd.DataFrame:
    from .evaluation import evaluate_design
    return evaluate_design(model, dataset, cfg, evals=evals, seed=0, max_items=max_items)


def _val_abs_rel(model, val_set, cfg, settings) -> float:
    return float(_eval_rows(model, val_set, cfg, ("crop",), settings.eval_items)["abs_rel"].iloc[0])


def evals_for(fraction: float, settings: Settings) -> tuple:
    ev = ("crop", "full_psf")
    if settings.noise_eval and fraction == max(settings.fractions):
        ev = ev + ("full_psf_noise",)
    return ev


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


def to_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(COLUMNS))


# =========================================================================== jobs
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
    """A multiplier selected by another job (see :func:`lr_source`); None = search ``lr_grid`` here."""

    @property
    def lr_grid(self) -> tuple:
        return self.settings.lr_grid if self.lr_mult is None else (float(self.lr_mult),)

    def dataset(self, split: str, flip: bool = False):
        from .data import get_dataset
        return get_dataset(self.cfg, split, self.cache_dir, flip=flip)


def _steps_cap(budgets: dict, settings: Settings, per_step_flops: float, base_flops: float = 0.0) -> int:
    """A generous step cap for a snapshot run (deterministic, so it is identical on resume)."""
    top = max(settings.fractions) * max(e["c_ref"]["flops"] for e in budgets["engines"].values())
    n = (top - base_flops) / max(per_step_flops, 1.0)
    wall_top = max(settings.fractions) * max(e["c_ref"]["wall_s"] for e in budgets["engines"].values())
    return int(max(n, 1) * 20 + 20 * max(1.0, wall_top) + 100)


def run_stage1_job(ctx: JobContext) -> pd.DataFrame:
    """Calibrate, train stage 1 for every lr multiplier to the reference stage 1, select on val, continue.

    Writes into ``ctx.stage1_dir``: ``calibration.json``, ``budgets.json`` (settings, reference
    costs, the chosen multiplier), ``lr_<m>/`` runs with snapshots, ``lr_search.csv``.
    Returns the lr-search table.
    """
    cfg, st, root = ctx.cfg, ctx.settings, Path(ctx.stage1_dir)
    root.mkdir(parents=True, exist_ok=True)
    train_set = ctx.dataset("train", flip=True)
    val_set = ctx.dataset("val")
    calib = calibrate(cfg, st, train_set, root, ctx.seed, progress=False)
    budgets = make_budgets(calib, st)
    targets = stage1_targets(budgets, st)
    ref = reference_stage1_target(budgets, st)
    targets = targets + [ref]
    cap = _steps_cap(budgets, st, calib["stage1_step"]["flops"])
    runs = {}

    def run(mult, stop_after):
        model = _new_depthnet(cfg, ctx.seed)
        lr = cfg.stage1.lr * mult
        man = train_with_snapshots(model, lambda: [{"params": list(model.parameters()), "lr": lr}], train_set,
                                   targets=targets, work=root / f"lr_{mult:g}", seed=ctx.seed,
                                   batch_size=cfg.stage1.batch_size, steps_cap=cap, loss_fn=_depth_loss(cfg),
                                   weight_decay=cfg.stage1.weight_decay, stop_after=stop_after,
                                   checkpoint_every=cfg.stage1.checkpoint_every, progress=ctx.progress,
                                   desc=f"stage1 lr x{mult:g}")
        return model, man

    rows = []
    for mult in ctx.lr_grid:
        model, man = run(mult, ref.key)
        model.load_state_dict(load_snapshot(root / f"lr_{mult:g}", man[ref.key])["state_dict"])
        val = _val_abs_rel(model, val_set, cfg, st)
        rows.append({"seed": ctx.seed, "lr_mult": mult, "lr": cfg.stage1.lr * mult, "val_abs_rel": val,
                     "ref_step": man[ref.key]["step"]})
        runs[mult] = man
    table = pd.DataFrame(rows)
    best = float(table.sort_values(["val_abs_rel", "lr_mult"]).iloc[0]["lr_mult"])
    table["chosen"] = table["lr_mult"] == best
    run(best, None)  # continue the chosen run to the largest budget
    for mult in ctx.lr_grid:  # other multipliers are not needed beyond the selection: drop their snapshots
        if mult != best:  # (but keep the reference one, so that a rerun of this job can redo the selection)
            keep = runs[mult][ref.key]["file"]
            for f in (root / f"lr_{mult:g}").glob("snap_*.pt"):
                if f.name != keep:
                    f.unlink()
    write_csv(table, root / "lr_search.csv")
    _write_json({"settings": dataclasses.asdict(st), "calibration": calib, "budgets": budgets,
                 "stage1_lr_mult": best, "stage1_lr": cfg.stage1.lr * best, "seed": ctx.seed,
                 "profile": cfg.profile}, root / "budgets.json")
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
    diff = {k: (theirs.get(k), mine[k]) for k in ("fractions", "axes", "stage1_steps", "dko_steps", "finetune_steps",
                                                   "lr_grid", "lr_search") if list(np.atleast_1d(theirs.get(k))) != list(np.atleast_1d(mine[k]))}
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


def run_electronic_job(ctx: JobContext, engine: str) -> pd.DataFrame:
    """The stage-1 network at every budget (no optics: one evaluation, repeated per eval mode)."""
    st = ctx.settings
    info = load_stage1(ctx.stage1_dir, st, ctx.seed, engine)
    test = ctx.dataset("test")
    rows = []
    for axis in st.axes:
        for frac in st.fractions:
            net, entry = _stage1_model(ctx, info, target_key("electronic", engine, axis, frac))
            if net is None:
                continue
            m = _eval_rows(net, test, ctx.cfg, evals_for(frac, st), st.eval_items)
            rows += _rows("electronic", engine, ctx.seed, frac, axis, info["budgets"], m, info["stage1_lr"],
                          info["stage1_lr_mult"], entry, entry["step"])
    return to_frame(rows)


def _add(a: dict, b: dict) -> dict:
    return {k: float(a[k]) + float(b[k]) for k in ("wall_s", "cpu_s", "flops")}


def run_dko_job(ctx: JobContext, engine: str, finetune: bool = False) -> pd.DataFrame:
    """``dko`` (or ``dko_ft``): stage 2 (+ fine-tune) on the stage-1 snapshot at B - S2 (- FT)."""
    from .evaluation import hybrid_from_dko

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
        array, gain, c2 = run_stage2(cfg, net.conv1_weight().detach().clone(), engine, cfg.dko.lr * mult,
                                     st.dko_steps, ctx.seed, work / f"stage2_{tag}", ctx.progress)
        model = hybrid_from_dko(net, array, gain, cfg.optics, "crop", engine)
        cost = _add(entry, c2)
        if finetune:
            ft_dir = work / f"ft_{tag}"
            done = ft_dir / "model.pt"
            if done.exists():
                obj = torch.load(done, map_location="cpu", weights_only=False)
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
    best = _pick(search)
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


def _pick(search: list[dict]) -> float:
    t = pd.DataFrame(search).sort_values(["val_abs_rel", "lr_mult"])
    return float(t.iloc[0]["lr_mult"])


def _write_search(search: list[dict], best: float, work: Path) -> None:
    t = pd.DataFrame(search)
    t["chosen"] = t["lr_mult"] == best
    write_csv(t, Path(work) / "lr_search.csv")


def e2e_targets(budgets: dict, settings: Settings, engine: str, start: dict | None = None) -> list[Target]:
    """``f x C_ref`` on each axis; with a warm ``start`` meter only budgets above it."""
    out = []
    c = budgets["engines"][engine]["c_ref"]
    for axis in settings.axes:
        f_ = _axis_field(axis)
        for frac in settings.fractions:
            b = frac * c[f_]
            if start is not None and not b > start[f_]:
                continue
            out.append(Target(target_key("e2e", engine, axis, frac), axis, b))
    return out


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
    best = _pick(search)
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


JOB_STAMP = "job.json"
"""File in a job's folder naming the job and configuration its resumable state belongs to."""


def claim_folder(folder: Path, stamp: dict) -> None:
    """Make ``folder`` this job's: keep its state only if it was written by the same job.

    A job resumes from what its folder holds (calibration, checkpoints, snapshot manifests).
    State written under another configuration, learning rate or seed, or of unknown origin
    (no stamp, e.g. files copied from another machine), would silently mix two runs, so the
    folder is emptied first (with a warning) and the job starts over.
    """
    folder = Path(folder)
    stamp = json.loads(json.dumps(stamp))  # tuples -> lists, as read back
    path = folder / JOB_STAMP
    if folder.exists() and any(folder.iterdir()):
        old = json.loads(path.read_text()) if path.exists() else None
        if old == stamp:
            return
        why = "no job stamp" if old is None else "another job or configuration"
        warnings.warn(f"{folder} holds state of {why}: emptying it, the job starts over", RuntimeWarning,
                      stacklevel=2)
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(stamp, path)


def job_stamp(method: str, ctx: JobContext, engine: str | None) -> dict:
    """What a job's resumable state depends on (see :func:`claim_folder`)."""
    return {"method": method, "engine": engine, "seed": int(ctx.seed), "lr_mult": ctx.lr_mult,
            "settings": dataclasses.asdict(ctx.settings), "config": ctx.cfg.to_dict()}


def run_job(method: str, ctx: JobContext, engine: str | None = None) -> pd.DataFrame:
    """Dispatch one job of the experiment (``stage1`` or one of :data:`METHODS`)."""
    if method not in JOBS:
        raise ValueError(f"method must be one of {JOBS}, got {method!r}")
    if method != "stage1" and engine not in ("fast", "reference"):
        raise ValueError(f"engine must be 'fast' or 'reference', got {engine!r}")
    claim_folder(ctx.stage1_dir if method == "stage1" else ctx.work, job_stamp(method, ctx, engine))
    if method == "stage1":
        return run_stage1_job(ctx)
    if method == "electronic":
        return run_electronic_job(ctx, engine)
    if method in ("dko", "dko_ft"):
        return run_dko_job(ctx, engine, finetune=method == "dko_ft")
    return run_e2e_job(ctx, engine, warm=method == "e2e_warm")


def cleanup_snapshots(work: Path) -> None:
    """Delete a finished method job's ``.pt`` files (snapshots, checkpoints, stage-2 arrays).

    They are large (every metasurface's latent, plus Adam state) and only needed while the
    job runs or resumes; logs and the lr-search table stay. Never used on the stage-1 folder.
    """
    for f in Path(work).rglob("*.pt"):
        f.unlink()


# =========================================================================== summary
def check_columns(df: pd.DataFrame) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"equal-budget table is missing columns {missing}")


def combine(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    if not frames:
        return to_frame([])
    df = pd.concat(frames, ignore_index=True)
    check_columns(df)
    cols = list(COLUMNS) + [c for c in df.columns if c not in COLUMNS]
    return df.reindex(columns=cols).sort_values(
        ["method", "engine", "budget_axis", "budget_fraction", "eval", "seed"]).reset_index(drop=True)


def bootstrap_ratio(num: dict, den: dict, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float, int]:
    """Ratio of means ``mean(num) / mean(den)`` over the seeds present in both, and a 95 %
    percentile bootstrap interval resampling those seeds (paired, with replacement).

    ``num``/``den`` map seed -> value. Returns ``(ratio, lo, hi, n_seeds)`` (NaNs if no common seed).
    """
    common = sorted(set(num) & set(den))
    if not common:
        return float("nan"), float("nan"), float("nan"), 0
    a = np.array([num[s] for s in common], dtype=float)
    b = np.array([den[s] for s in common], dtype=float)
    point = float(a.mean() / b.mean())
    if len(common) == 1:
        return point, point, point, 1
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(common), size=(n_boot, len(common)))
    ratios = a[idx].mean(1) / b[idx].mean(1)
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return point, float(lo), float(hi), len(common)


GROUP = ["method", "engine", "eval", "budget_axis", "budget_fraction"]


def summarize(df: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per (method, engine, eval, budget_axis, budget_fraction): seeds, mean and std of each metric,
    and the AbsRel ratio to ``dko`` with its bootstrap 95 % CI (``ratio_vs_dko*``, NaN where DKO
    has no point). Std over seeds (ddof 1; 0 for one seed) is the stability measure.
    """
    check_columns(df)
    if not len(df):
        return pd.DataFrame(columns=GROUP + ["n_seeds"])
    rows = []
    ref = {k: dict(zip(g["seed"], g["abs_rel"]))
           for k, g in df[df["method"] == REF_METHOD].groupby(GROUP[1:])}
    for key, g in df.groupby(GROUP, sort=True):
        row = dict(zip(GROUP, key))
        row["n_seeds"] = int(g["seed"].nunique())
        for col in ("budget_s", "budget_flops", "spent_s", "cpu_s", "spent_flops", "lr"):
            if col in g:
                row[f"{col}_mean"] = float(g[col].mean())
        for m in METRICS:
            row[f"{m}_mean"] = float(g[m].mean())
            row[f"{m}_std"] = float(g[m].std(ddof=1)) if len(g) > 1 else 0.0
        den = ref.get(tuple(key[1:]))
        if den is not None:
            r, lo, hi, n = bootstrap_ratio(dict(zip(g["seed"], g["abs_rel"])), den, n_boot, seed)
        else:
            r, lo, hi, n = (float("nan"),) * 3 + (0,)
        row.update({"ratio_vs_dko": r, "ratio_ci_lo": lo, "ratio_ci_hi": hi, "ratio_n_seeds": n})
        rows.append(row)
    return pd.DataFrame(rows)


def catch_up(summary: pd.DataFrame, methods: Sequence[str] = ("e2e_scratch", "e2e_warm")) -> pd.DataFrame:
    """Where (if ever) each E2E method catches up with DKO, per engine / eval / axis.

    ``first_fraction_mean``: the smallest budget fraction at which the E2E mean AbsRel is at most
    DKO's (ratio <= 1); ``first_fraction_ci``: the smallest at which the ratio's CI reaches 1
    (not distinguishable from DKO). NaN = never within the ladder.
    """
    rows = []
    s = summary[summary["method"].isin(methods)]
    for key, g in s.groupby(["method", "engine", "eval", "budget_axis"], sort=True):
        g = g.dropna(subset=["ratio_vs_dko"]).sort_values("budget_fraction")
        hit = g[g["ratio_vs_dko"] <= 1.0]
        hit_ci = g[g["ratio_ci_lo"] <= 1.0]
        rows.append({**dict(zip(["method", "engine", "eval", "budget_axis"], key)),
                     "fractions_compared": ",".join(f"{f:g}" for f in g["budget_fraction"]),
                     "first_fraction_mean": float(hit["budget_fraction"].iloc[0]) if len(hit) else float("nan"),
                     "first_fraction_ci": float(hit_ci["budget_fraction"].iloc[0]) if len(hit_ci) else float("nan"),
                     "ratio_at_largest": float(g["ratio_vs_dko"].iloc[-1]) if len(g) else float("nan")})
    return pd.DataFrame(rows, columns=["method", "engine", "eval", "budget_axis", "fractions_compared",
                                       "first_fraction_mean", "first_fraction_ci", "ratio_at_largest"])


# =========================================================================== plots
METHOD_ORDER = list(METHODS)
METHOD_COLOURS = {"electronic": "0.35", "dko": "tab:blue", "dko_ft": "tab:cyan", "e2e_scratch": "tab:red",
                  "e2e_warm": "tab:orange"}


def _save(fig, path) -> None:
    if path is not None:
        from .plots import save_figure
        save_figure(fig, Path(path).with_suffix(""))


def plot_accuracy_vs_budget(df: pd.DataFrame, x: str = "budget_s", metric: str = "abs_rel", path=None):
    """Mean +/- std over seeds of ``metric`` versus budget, one line per method, one panel per
    (engine, eval). ``x='budget_s'`` uses the rows snapshotted on the wall-clock axis,
    ``x='budget_flops'`` those on the FLOP axis. Saves PNG + PDF at ``path`` (stem) if given.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import seaborn as sns

    if x not in ("budget_s", "budget_flops"):
        raise ValueError(f"x must be 'budget_s' or 'budget_flops', got {x!r}")
    check_columns(df)
    axis = "wall" if x == "budget_s" else "flops"
    d = df[df["budget_axis"] == axis] if "budget_axis" in df else df
    if not len(d):
        raise ValueError(f"no rows snapshotted on the '{axis}' axis to plot")
    engines = sorted(d["engine"].unique())
    evals = [e for e in ("crop", "full_psf", "full_psf_noise") if e in set(d["eval"])]
    with sns.axes_style("whitegrid"):
        fig, axes = plt.subplots(len(engines), len(evals), figsize=(4.2 * len(evals), 3.3 * len(engines)),
                                 squeeze=False, sharey=True)
    for i, eng in enumerate(engines):
        for j, ev in enumerate(evals):
            ax = axes[i][j]
            sub = d[(d["engine"] == eng) & (d["eval"] == ev)]
            for method in [m for m in METHOD_ORDER if m in set(sub["method"])]:
                g = sub[sub["method"] == method].groupby("budget_fraction")
                xs = g[x].mean().to_numpy()
                mu = g[metric].mean().to_numpy()
                sd = g[metric].std(ddof=1).fillna(0.0).to_numpy()
                order = np.argsort(xs)
                xs, mu, sd = xs[order], mu[order], sd[order]
                colour = METHOD_COLOURS.get(method)
                ax.plot(xs, mu, marker="o", color=colour, label=method)
                ax.fill_between(xs, mu - sd, mu + sd, color=colour, alpha=0.2, linewidth=0)
            ax.set_xscale("log")
            ax.set_title(f"{eng} engine, eval={ev}")
            ax.set_xlabel("budget (wall s)" if x == "budget_s" else "budget (FLOPs)")
            if j == 0:
                ax.set_ylabel(metric)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False,
                   bbox_to_anchor=(0.5, 0.0))
    fig.tight_layout(rect=(0, 0.08 if len(engines) == 1 else 0.04, 1, 1))
    _save(fig, path)
    return fig


def plot_crop_vs_physical(df: pd.DataFrame, metric: str = "abs_rel", axis: str | None = None, path=None):
    """Each design's ``metric`` under the idealised crop (x) versus the full-PSF render (y),
    one marker per method, one panel per engine; the diagonal is 'no crop gap'.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    check_columns(df)
    d = df
    if "budget_axis" in d and axis is not None:
        d = d[d["budget_axis"] == axis]
    keys = ["method", "engine", "seed", "budget_fraction"] + (["budget_axis"] if "budget_axis" in d else [])
    wide = d[d["eval"].isin(["crop", "full_psf"])].pivot_table(index=keys, columns="eval", values=metric)
    if "crop" not in wide or "full_psf" not in wide:
        raise ValueError("need both 'crop' and 'full_psf' rows to plot crop vs physical")
    wide = wide.dropna().reset_index()
    engines = sorted(wide["engine"].unique())
    fig, axes = plt.subplots(1, len(engines), figsize=(4.2 * len(engines), 4.0), squeeze=False)
    for j, eng in enumerate(engines):
        ax = axes[0][j]
        sub = wide[wide["engine"] == eng]
        for method in [m for m in METHOD_ORDER if m in set(sub["method"])]:
            s = sub[sub["method"] == method]
            ax.scatter(s["crop"], s["full_psf"], s=14 + 14 * s["budget_fraction"], alpha=0.75,
                       color=METHOD_COLOURS.get(method), label=method)
        lo = float(np.nanmin(sub[["crop", "full_psf"]].to_numpy()))
        hi = float(np.nanmax(sub[["crop", "full_psf"]].to_numpy()))
        ax.plot([lo, hi], [lo, hi], color="0.5", lw=1, ls="--")
        ax.set(xlabel=f"{metric} (crop kernel)", ylabel=f"{metric} (full PSF)", title=f"{eng} engine")
        ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    return fig
