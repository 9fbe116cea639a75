"""Training loops with budget accounting: stage 1, end-to-end (E2E), fine-tuning.

Loss: :func:`dkolib.depth.losses.depth_loss` (metric log-depth L1) for stage 1,
the joint E2E baseline and the fine-tunes, so the comparison is on equal terms;
the optics-only E2E baseline distils the frozen teacher's disparities
(:func:`dkolib.depth.losses.disparity_distillation_loss`).

Loop
----
:func:`train_loop` runs AdamW, by default with a step learning-rate decay (x0.1
after 75 % of the steps, as Monodepth2 after 15 of 20 epochs; E2E and the
fine-tunes use it). Stage 1 runs at a constant rate and stops on its validation
plateau (``stage1.plateau_patience``), so its end point does not depend on a
step count fixed in advance. The loop shows tqdm progress, logs
``step, wall_s, cpu_s, flops, loss, lr`` every step plus ``val_<metric>``
columns at evaluation steps to an atomically rewritten CSV, and writes an
atomic checkpoint (model, optimizer, scheduler, sampler and RNG states, step,
history, budget meter) every ``checkpoint_every`` steps and at the end. If the
checkpoint exists it resumes from it; the result is bit-identical to an
uninterrupted run with the same seed and thread count.

Budget: only training steps are charged to the :class:`~dkolib.dko.budget.BudgetMeter`
(data loading, forward, backward, optimizer, optical simulation); evaluation and
checkpoint I/O are not (they are measurement, identical for every method).
When a front end with trainable optics is trained, the PSF simulation is split
out of the counted graph: PSFs are computed, a detached copy goes through the
network under ``FlopCounterMode``, and the PSF gradient is back-propagated
separately; the simulation is charged analytically (``extra_step_flops``: forward +
backward of ``dkolib.optics.propagation.count_psf_flops``, see :mod:`dkolib.dko.budget`), so it is
neither missed (FFTs are not counted by FlopCounterMode) nor counted twice.
The network FLOPs are counted once per input shape on an untimed dry run of
a deep copy (so FlopCounterMode's overhead is not billed as training time and
the real step's numerics and RNG stream are untouched).
"""

from __future__ import annotations

import copy
import math
import random
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from tqdm import tqdm

from .budget import BudgetMeter
from ..config import Config
from .frontend import find_frontend
from ..errors import InputError
from ..io import load_torch, save_torch, seed_everything, set_threads, write_csv
from ..depth.losses import make_depth_loss
from ..depth.network import DepthNet
from ..depth.predict import predict_depth

# analytic PSF-simulation cost: backward = BACKWARD_FACTOR x forward (+ a recomputed forward
# when the engine checkpoints); why 1 and not the usual 2: dkolib.dko.budget's docstring
from .budget import BACKWARD_FACTOR, element_wavelengths_m, psf_simulation_flops  # noqa: F401
from .sampling import BatchSampler, collate  # noqa: F401  (re-exported: the loops' batches)
from .stopping import metric_trace, plateau_reached


# --------------------------------------------------------------------------- hooks to other modules
def _get_dataset(cfg: Config, split: str, cache_dir: Path, flip: bool = False):
    from ..depth.data import get_dataset
    return get_dataset(cfg, split, cache_dir, flip=flip)


def _compute_metrics(pred_m, gt_m, min_depth_m, max_depth_m, median_scaling, garg_crop) -> dict:
    from ..depth.metrics import compute_depth_metrics
    return compute_depth_metrics(pred_m, gt_m, min_depth_m, max_depth_m,
                                 median_scaling=median_scaling, garg_crop=garg_crop)


def _build_array(cfg: Config, n_out: int, init: str, generator: torch.Generator) -> nn.Module:
    from ..optics.metasurface import MetasurfaceArray
    from ..optics.metaatoms import load_atom
    atom = load_atom(cfg.optics.meta_atom)
    return MetasurfaceArray(n_out, 3, cfg.optics, atom, init=init, generator=generator)


# --------------------------------------------------------------------------- losses


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter or buffer (CPU for a module without any)."""
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def resolve_device(cfg: Config) -> torch.device:
    """``cfg.device`` as a torch device; a clear error where CUDA is asked for but absent."""
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise InputError("config device 'cuda' but torch sees no CUDA GPU: run with --set device=cpu "
                           "(slow at paper sizes) or on a machine with a GPU and a CUDA build of torch")
    return torch.device(cfg.device)


# --------------------------------------------------------------------------- helpers
def _rng_state(dataset=None) -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    gen = getattr(dataset, "generator", None)
    if isinstance(gen, torch.Generator):  # e.g. the random-flip stream of DepthDataset
        state["dataset"] = gen.get_state()
    return state


def _set_rng_state(state: dict, dataset=None) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]  # the key array comes back from a tensor file as a tensor
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    random.setstate(state["python"])
    gen = getattr(dataset, "generator", None)
    if "dataset" in state and isinstance(gen, torch.Generator):
        gen.set_state(state["dataset"])


def _train_modes(model: nn.Module) -> dict:
    return {name: m.training for name, m in model.named_modules()}


def _restore_modes(model: nn.Module, modes: dict) -> None:
    for name, m in model.named_modules():
        if name in modes:
            m.training = modes[name]


def _forward_backward(model: nn.Module, batch: dict, loss_fn: Callable, leaf: torch.Tensor | None):
    """``loss_fn(model, batch).backward()`` with ``leaf`` (if given) injected as the front end's PSFs."""
    fe = find_frontend(model)
    ctx = fe.injected_psf(leaf) if (leaf is not None and fe is not None) else nullcontext()
    with ctx:
        loss = loss_fn(model, batch)
    loss.backward()
    return loss


def _measure_step_flops(model: nn.Module, batch: dict, loss_fn: Callable, frontend, budget: BudgetMeter,
                        key, psf: Callable[[], torch.Tensor] | None = None) -> float:
    """Dry-run one training step on a deep copy under FlopCounterMode (not timed, RNG preserved).

    The copy's PSFs (if the optics is trainable) are computed outside the counter and
    injected, so the count covers the network (incl. the optical convolution) only.
    ``psf``: where the PSFs come from instead of the copy's front end (a sharded run's gather).
    """
    shadow = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        leaf = None
        fe = find_frontend(shadow)
        if psf is not None:
            leaf = psf().detach().requires_grad_(True)
        elif fe is not None and not fe.optics_frozen():
            leaf = fe.compute_psf().detach().requires_grad_(True)
        return budget.measure_flops(key, lambda: _forward_backward(shadow, batch, loss_fn, leaf))


def _lr_factor(step: int, decay_step: int | None, factor: float) -> float:
    return factor if decay_step is not None and step >= decay_step else 1.0


# --------------------------------------------------------------------------- the loop
def train_loop(model: nn.Module, param_groups: Iterable[dict], dataset, *, steps: int, batch_size: int,
               seed: int, log_csv: Path, ckpt: Path, loss_fn: Callable | None = None,
               weight_decay: float = 1e-4, betas: tuple = (0.9, 0.999), lr_decay_at: float | None = 0.75,
               lr_decay_factor: float = 0.1, eval_fn: Callable[[nn.Module], dict] | None = None,
               eval_every: int = 0, checkpoint_every: int = 0, budget: BudgetMeter | None = None,
               max_seconds: float | None = None, max_flops: float | None = None,
               extra_step_flops: float = 0.0, set_train_mode: Callable[[nn.Module], None] | None = None,
               plateau_patience: int = 0, plateau_tol: float = 0.0, plateau_metric: str = "val_abs_rel",
               progress: bool = True, desc: str = "train", optics_shard=None) -> pd.DataFrame:
    """Train ``model`` for ``steps`` AdamW steps (or until the budget is spent); resumable.

    Args:
        model: module; its optical front end (if ``model.first_layer`` is an
            :class:`OpticalFrontEnd` with trainable optics) is split out of the
            FLOP-counted graph (module docstring).
        param_groups: AdamW parameter groups (``{"params", "lr", ...}``; a group may set
            its own ``weight_decay``).
        dataset: indexable, items ``{"rgb": [3,H,W] in [0,1], "depth_m": [1,H,W]}``.
        steps, batch_size, seed: schedule, batch size and the seed of all training randomness.
        log_csv, ckpt: paths of the CSV log and the checkpoint (resumed from if it exists).
        loss_fn: ``loss_fn(model, batch) -> scalar``; default :func:`make_depth_loss` ().
        lr_decay_at: fraction of ``steps`` after which lr is multiplied by
            ``lr_decay_factor`` (None: constant lr).
        eval_fn: ``eval_fn(model) -> {metric: value}``, run every ``eval_every`` steps and at
            the end (not charged to the budget; global RNG state is preserved).
        checkpoint_every: steps between checkpoints (0: only at the end).
        budget: meter charged for every step (a fresh one if None); restored on resume.
        max_seconds, max_flops: stop before a step once the meter reaches either.
        extra_step_flops: analytic FLOPs added per step (e.g. the PSF simulation).
        set_train_mode: puts the model in training mode (default ``model.train()``;
            e.g. keep a frozen back end's BatchNorm in eval mode).
        plateau_patience, plateau_tol, plateau_metric: stopping rule on validation
            (:func:`plateau_reached` on ``plateau_metric``, lower is better, after every
            evaluation); ``plateau_patience = 0`` never stops early. ``steps`` is then the cap.
        optics_shard: a :class:`~dkolib.distributed.e2e.OpticsShard` when the metasurfaces are
            sharded over processes (``param_groups`` then hold its latents, the front end's own
            array is frozen): each step simulates this process's PSFs, all-gathers the whole
            array's, and back-propagates its block; the network step is charged once per process.
            ``ckpt`` and ``log_csv`` must then be this process's own.

    Returns the history DataFrame (one row per step; ``attrs['stop_reason']`` is
    ``'steps'``, ``'budget'`` or ``'plateau'``).
    """
    log_csv, ckpt = Path(log_csv), Path(ckpt)
    budget = budget if budget is not None else BudgetMeter()
    loss_fn = loss_fn if loss_fn is not None else make_depth_loss()
    set_train_mode = set_train_mode if set_train_mode is not None else (lambda m: m.train())
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    groups = [dict(g) for g in param_groups]
    for g in groups:
        g["params"] = [p for p in g["params"] if p.requires_grad]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError("no trainable parameters in param_groups")
    optimizer = torch.optim.AdamW(groups, weight_decay=weight_decay, betas=betas)
    decay_step = None if lr_decay_at is None else max(1, int(round(lr_decay_at * steps)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _lr_factor(s, decay_step, lr_decay_factor))
    sampler = BatchSampler(len(dataset), batch_size, seed)
    frontend = find_frontend(model)

    history: list[dict] = []
    start = 0
    stop_reason = "steps"
    plateau = {"patience": plateau_patience, "tol": plateau_tol, "metric": plateau_metric, "eval_every": eval_every}
    if ckpt.exists():
        state = load_torch(ckpt, map_location="cpu")
        # the schedule is the decay step: at a constant rate ``steps`` only caps the run, so a
        # resumed run may change it (older checkpoints do not record it: their length must match)
        if "decay_step" in state:
            schedule_differs = state["decay_step"] != decay_step
        else:
            schedule_differs = state["steps"] != steps
        if (schedule_differs or state["batch_size"] != batch_size or state["seed"] != seed
                or int(state["step"]) > steps or state.get("plateau", plateau) != plateau):
            raise ValueError(f"checkpoint {ckpt} was written for steps={state['steps']} (at step {state['step']}, "
                             f"lr decay at step {state.get('decay_step', '?')}), batch_size={state['batch_size']}, "
                             f"seed={state['seed']}, plateau rule {state.get('plateau', '?')}; this run asks for "
                             f"steps={steps} (lr decay at step {decay_step}), batch_size={batch_size}, seed={seed}, "
                             f"plateau rule {plateau} (delete it to restart)")
        model.load_state_dict(state["model"])
        if optics_shard is not None:
            optics_shard.load_from_model()  # the checkpoint holds the whole array, gathered before the save
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        sampler.load_state_dict(state["sampler"])
        _set_rng_state(state["rng"], dataset)
        budget.load_state_dict(state["budget"])
        history = list(state["history"])
        start = int(state["step"])
        if state.get("stop_reason") == "plateau":
            stop_reason = "plateau"  # a finished run that stopped early stays stopped
    else:
        seed_everything(seed)
        gen = getattr(dataset, "generator", None)
        if isinstance(gen, torch.Generator):
            # a fresh run draws the same random flips whatever ran on this dataset object before
            # (several runs share one dataset inside an equal-budget job)
            gen.manual_seed(int(seed))

    def save_checkpoint(step: int) -> None:
        if optics_shard is not None:
            optics_shard.sync_to_model()
            optics_shard.check_replicas(model)
        save_torch({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "sampler": sampler.state_dict(),
                    "rng": _rng_state(dataset), "budget": budget.state_dict(), "history": history,
                    "step": step, "steps": steps, "decay_step": decay_step, "batch_size": batch_size,
                    "seed": seed, "stop_reason": stop_reason, "plateau": plateau}, ckpt)
        write_csv(pd.DataFrame(history), log_csv)

    def run_eval(step: int) -> None:
        if eval_fn is None:
            return
        modes = _train_modes(model)
        injected = nullcontext()
        if optics_shard is not None:  # the whole array's PSFs from the shards, not one process simulating all
            with torch.no_grad():
                injected = frontend.injected_psf(optics_shard.gather(optics_shard.compute()))
        with torch.random.fork_rng(devices=[]), injected:
            metrics = eval_fn(model)
        _restore_modes(model, modes)
        history[-1].update({f"val_{k}": float(v) for k, v in metrics.items()})

    set_train_mode(model)
    bar = tqdm(total=steps, initial=start, disable=not progress, desc=desc, leave=False)
    step = start
    try:
        while step < steps and stop_reason != "plateau":
            if budget.budget_exceeded(max_seconds, max_flops):
                stop_reason = "budget"
                break
            with budget.timing():
                batch = collate([dataset[i] for i in sampler.next_indices()], model_device(model))
                if optics_shard is not None:
                    batch = optics_shard.local_batch(batch)  # data-parallel: this process's slice
            key = ("train_step", tuple(batch["rgb"].shape))
            if budget.cached_flops(key) is None:
                gathered = (lambda: optics_shard.gather(optics_shard.compute().detach())) if optics_shard else None
                _measure_step_flops(model, batch, loss_fn, frontend, budget, key, psf=gathered)
            with budget.timing():
                optimizer.zero_grad(set_to_none=True)
                psf = leaf = None
                if optics_shard is not None:
                    psf = optics_shard.compute()
                    leaf = optics_shard.gather(psf).requires_grad_(True)
                elif frontend is not None and not frontend.optics_frozen():
                    psf = frontend.compute_psf()
                    leaf = psf.detach().requires_grad_(True)
                step_loss = optics_shard.weighted_loss(loss_fn, batch) if optics_shard is not None else loss_fn
                loss = _forward_backward(model, batch, step_loss, leaf)
                if optics_shard is not None:
                    optics_shard.charge_network(budget, key)  # the network steps of all processes
                else:
                    budget.charge(key, category="network")
                if optics_shard is not None:
                    optics_shard.reduce_gradients([p for g in groups for p in g["params"]], leaf)
                    optics_shard.backward(psf, leaf.grad)
                elif psf is not None and leaf.grad is not None and psf.requires_grad:
                    psf.backward(leaf.grad)
                if extra_step_flops:
                    budget.add_flops(extra_step_flops, category="optics")
                loss_value = float(loss.detach())
                if optics_shard is not None:
                    loss_value = optics_shard.reduce_loss(loss_value)
                if not math.isfinite(loss_value):
                    raise FloatingPointError(f"loss became {loss_value} at step {step + 1}")
                lr = optimizer.param_groups[0]["lr"]
                optimizer.step()
                scheduler.step()
            step += 1
            history.append({"step": step, **budget.snapshot(), "loss": loss_value, "lr": lr})
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}")
            if eval_every and step % eval_every == 0:
                run_eval(step)
                # only the scheduled evaluations: a run that ended between them evaluated once
                # more at its end, which a run going on past that step never did
                if plateau_patience and plateau_reached(
                        metric_trace([h for h in history if h["step"] % eval_every == 0], plateau_metric),
                        plateau_patience, plateau_tol):
                    stop_reason = "plateau"
                    break
            if checkpoint_every and step % checkpoint_every == 0 and step < steps:
                save_checkpoint(step)
    finally:
        bar.close()
    if history and eval_fn is not None and not any(k.startswith("val_") for k in history[-1]):
        run_eval(step)
    save_checkpoint(step)
    frame = pd.DataFrame(history)
    frame.attrs["stop_reason"] = stop_reason
    return frame


# --------------------------------------------------------------------------- evaluation


def evaluate(model: nn.Module, dataset, cfg: Config, median_scaling: bool = False, batch_size: int = 8,
             max_items: int | None = None, noise_seed: int = 0, per_image: list | None = None) -> dict:
    """Mean per-image depth metrics of ``model`` on ``dataset`` (batched, no grad).

    Uses ``dkolib.depth.metrics.compute_depth_metrics`` with ``cfg.data.min/max_depth_m`` (Garg
    crop for KITTI). A noisy optical front end draws its noise from a generator
    seeded with ``noise_seed`` (the same noise for every model), and the global
    RNG and the modules' train/eval modes are left as they were.
    Returns ``{metric: mean over images}``; with a list ``per_image``, each image's metrics are
    appended to it (one dict per image, in dataset order) for paired comparisons.
    """
    modes = _train_modes(model)
    model.eval()
    fe = find_frontend(model)
    old_gen = fe.generator if fe is not None else None
    if fe is not None:
        fe.generator = torch.Generator(device=model_device(model)).manual_seed(noise_seed)
    n = len(dataset) if max_items is None else min(len(dataset), max_items)
    sums: dict[str, float] = {}
    count = 0
    garg = cfg.data.dataset == "kitti"
    try:
        with torch.random.fork_rng(devices=[]):
            for s in range(0, n, batch_size):
                batch = collate([dataset[i] for i in range(s, min(n, s + batch_size))], model_device(model))
                pred = predict_depth(model, batch["rgb"]).cpu()
                gt = batch["depth_m"].cpu()
                for b in range(pred.shape[0]):
                    m = _compute_metrics(pred[b], gt[b], cfg.data.min_depth_m,
                                         cfg.data.max_depth_m, median_scaling, garg)
                    for k, v in m.items():
                        sums[k] = sums.get(k, 0.0) + float(v)
                    if per_image is not None:
                        per_image.append({k: float(v) for k, v in m.items()})
                    count += 1
    finally:
        _restore_modes(model, modes)
        if fe is not None:
            fe.generator = old_gen
    if count == 0:
        raise ValueError("evaluation dataset is empty")
    return {k: v / count for k, v in sums.items()}


# --------------------------------------------------------------------------- saving
def save_model(model: nn.Module, path: Path, cfg: Config, budget: BudgetMeter | None = None,
               kind: str = "electronic", extra: dict | None = None) -> Path:
    """Atomically save ``{"kind", "state_dict", "config", "budget", **extra}``."""
    obj = {"kind": kind, "state_dict": model.state_dict(), "config": cfg.to_dict(),
           "budget": budget.state_dict() if budget is not None else None}
    obj.update(extra or {})
    return save_torch(obj, path)


def load_depthnet(path: Path, cfg: Config | None = None) -> DepthNet:
    """Load an electronic :class:`DepthNet` written by :func:`save_model` (``kind='electronic'``)."""
    from ..config import from_dict
    obj = load_torch(path, map_location="cpu")
    if obj.get("kind") != "electronic":
        raise ValueError(f"{path} holds a '{obj.get('kind')}' model, not an electronic DepthNet")
    cfg = cfg if cfg is not None else from_dict(obj["config"])
    model = DepthNet(cfg.model, kernel_size=cfg.optics.kernel_size)
    model.load_state_dict(obj["state_dict"])
    return model


# --------------------------------------------------------------------------- runs
def _val_eval_fn(val_set, cfg: Config) -> Callable[[nn.Module], dict]:
    return lambda m: evaluate(m, val_set, cfg)


def _with_passband_penalty(loss_fn: Callable, optics_cfg, weight: float, passband: str) -> Callable:
    """``loss_fn`` plus ``weight`` x the first layer's out-of-band energy fraction (optics-aware stage 1)."""
    from ..optics.realisability import passband_penalty

    def penalised(model: nn.Module, batch: dict) -> torch.Tensor:
        return loss_fn(model, batch) + weight * passband_penalty(model.conv1_weight(), optics_cfg, passband=passband)

    return penalised


def run_stage1(cfg: Config, out_dir: Path, cache_dir: Path, budget: BudgetMeter | None = None,
               max_seconds: float | None = None, max_flops: float | None = None,
               progress: bool = True, lr_decay_at: float | None = None,
               lr_decay_factor: float = 0.1) -> DepthNet:
    """Stage 1: train the all-electronic network; writes ``out_dir/model.pt`` and ``out_dir/log.csv``.

    Constant learning rate (so that the equal-budget study's snapshots of the same run are this
    run truncated), until the validation plateau rule (``stage1.plateau_patience``) or
    ``stage1.steps``; the log's last step is the step count that defines the budget unit.
    ``lr_decay_at`` (a fraction of ``stage1.steps``; None: the constant rate) multiplies the rate by
    ``lr_decay_factor`` from that step on: the schedules of the stage-1 convergence study
    (``scripts/stage1_convergence.py``), not the main chain's stage 1. With
    ``stage1.passband_weight > 0`` the loss also penalises first-layer energy outside the aperture's
    passband (an optics-aware stage 1, :func:`dkolib.optics.realisability.passband_penalty`).

    Resumes from ``out_dir/ckpt.pt`` if present. Returns the trained model.
    """
    out_dir = Path(out_dir)
    set_threads(cfg.threads)
    seed_everything(cfg.seed)
    train_set = _get_dataset(cfg, "train", Path(cache_dir), flip=True)
    val_set = _get_dataset(cfg, "val", Path(cache_dir))
    model = DepthNet(cfg.model, kernel_size=cfg.optics.kernel_size).to(resolve_device(cfg))
    budget = budget if budget is not None else BudgetMeter()
    s1 = cfg.stage1
    loss_fn = make_depth_loss(cfg.data.min_depth_m, cfg.data.max_depth_m)
    if s1.passband_weight > 0:
        loss_fn = _with_passband_penalty(loss_fn, cfg.optics, s1.passband_weight, s1.passband)
    train_loop(model, [{"params": list(model.parameters()), "lr": s1.lr}], train_set,
               steps=s1.steps, batch_size=s1.batch_size, seed=cfg.seed, log_csv=out_dir / "log.csv",
               ckpt=out_dir / "ckpt.pt", loss_fn=loss_fn,
               weight_decay=s1.weight_decay, lr_decay_at=lr_decay_at, lr_decay_factor=lr_decay_factor,
               eval_fn=_val_eval_fn(val_set, cfg),
               eval_every=s1.eval_every, checkpoint_every=s1.checkpoint_every, budget=budget,
               max_seconds=max_seconds, max_flops=max_flops, plateau_patience=s1.plateau_patience,
               plateau_tol=s1.plateau_tol, progress=progress, desc="stage1")
    save_model(model, out_dir / "model.pt", cfg, budget, kind="electronic")
    return model


def psf_step_flops(cfg: Config, n_elements: int, window_px: int, engine: str, backward: bool,
                   wavelengths_m=None) -> float:
    """Analytic FLOPs of simulating ``n_elements`` PSFs once on a ``window_px`` window.

    Each element is counted at its own wavelength (``wavelengths_m [E]``, metres; default
    :func:`~dkolib.dko.budget.element_wavelengths_m`, the RGB front end's order); with
    ``backward`` the count is forward + backward (x(1 + BACKWARD_FACTOR), plus one forward
    when the engine recomputes it), see :func:`dkolib.dko.budget.psf_simulation_flops`.
    """
    wls = element_wavelengths_m(cfg.optics, n_elements) if wavelengths_m is None else wavelengths_m
    if len(wls) != int(n_elements):
        raise ValueError(f"wavelengths_m has {len(wls)} entries for n_elements={n_elements}")
    return psf_simulation_flops(cfg.optics, wls, window_px, engine, backward=backward)


def run_finetune(hybrid_model: DepthNet, cfg: Config, out_dir: Path, cache_dir: Path,
                 budget: BudgetMeter | None = None, steps: int | None = None, lr: float | None = None,
                 max_seconds: float | None = None, max_flops: float | None = None,
                 progress: bool = True) -> DepthNet:
    """Fine-tune the electronic back end (and a trainable gain) with the optics frozen.

    The front end's PSFs are simulated once (charged to ``budget``) and cached,
    so each step costs like the electronic network. Steps ``cfg.dko.finetune_steps``,
    lr ``cfg.dko.finetune_lr``, batch ``cfg.stage1.batch_size``, depth loss.
    Trains ``hybrid_model`` in place; writes ``out_dir/{log.csv, ckpt.pt, model.pt}``.
    """
    from ..distributed.env import TorchrunEnv

    if TorchrunEnv.from_environ().is_distributed:
        raise InputError("the fine-tune runs in one process (its optics is frozen: one PSF pass, then the network "
                         "alone, which gains nothing from more processes); launch it without torchrun")
    fe = find_frontend(hybrid_model)
    if fe is None:
        raise TypeError("run_finetune needs a model whose first_layer is an OpticalFrontEnd")
    steps = cfg.dko.finetune_steps if steps is None else steps
    budget = budget if budget is not None else BudgetMeter()
    if steps == 0:
        return hybrid_model
    out_dir = Path(out_dir)
    set_threads(cfg.threads)
    seed_everything(cfg.seed)
    train_set = _get_dataset(cfg, "train", Path(cache_dir), flip=True)
    val_set = _get_dataset(cfg, "val", Path(cache_dir))
    hybrid_model.to(resolve_device(cfg))
    fe.freeze_optics(True)
    fe.cache_psf = True
    ckpt = out_dir / "ckpt.pt"
    if not ckpt.exists():  # on resume the checkpointed meter already holds this cost
        with budget.timing():
            fe.compute_psf()
        budget.add_flops(psf_step_flops(cfg, fe.n_out * fe.n_in * 2, fe.window_px, fe.engine, False),
                         category="optics")
    params = hybrid_model.backend_parameters() + [fe.make_gain_trainable()]
    train_loop(hybrid_model, [{"params": params, "lr": lr or cfg.dko.finetune_lr}], train_set, steps=steps,
               batch_size=cfg.stage1.batch_size, seed=cfg.seed, log_csv=out_dir / "log.csv", ckpt=ckpt,
               loss_fn=make_depth_loss(cfg.data.min_depth_m, cfg.data.max_depth_m),
               weight_decay=cfg.stage1.weight_decay, eval_fn=_val_eval_fn(val_set, cfg),
               eval_every=cfg.stage1.eval_every, checkpoint_every=cfg.stage1.checkpoint_every,
               budget=budget, max_seconds=max_seconds, max_flops=max_flops, progress=progress,
               desc="finetune")
    save_model(hybrid_model, out_dir / "model.pt", cfg, budget, kind="hybrid_finetuned")
    return hybrid_model


from .e2e_train import run_e2e  # noqa: E402,F401  (re-exported: E2E's run, in its own module)
