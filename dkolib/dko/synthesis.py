"""DKO stage 2: synthesise a metasurface array whose PSFs reproduce conv kernels.

No images are involved: the loss compares each metasurface's point-spread
function (PSF) on a small sensor window with one non-negative half of a trained
first-layer kernel.

Conventions
-----------
* Kernels are split into non-negative per-element targets by
  :func:`dkolib.dko.kernels.split_kernel` (element ``e = (o * C_in + i) * 2 + s``);
  the losses are in :mod:`dkolib.dko.losses`, gains and fidelity in :mod:`dkolib.dko.fidelity`.
* PSF windows ``[E, W, W]`` are in units of the energy incident on one
  aperture (``dkolib.optics.propagation.psf(..., normalize=True)``): their sum is the fraction
  of the light that lands in the window.

Units: energies are fractions of the aperture energy (dimensionless); kernels
carry the units of the electronic conv weights; gains convert one into the other.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
import torch.nn as nn

from ..io import load_torch, save_torch, write_csv
from ..optics.render import crop_center
from .fidelity import _batched_pearson, element_gain_shape, fidelity_table, fit_element_gains, fit_gain
from .kernels import _dark_mask, merge_signed, split_kernel
from .losses import LOSSES, smoothness_penalty, stage2_loss

# ---------------------------------------------------------------- synthesis


@dataclass
class SynthesisResult:
    """Output of :func:`synthesize`.

    Attributes:
        array: the optimised ``MetasurfaceArray`` (E = 2 C_out C_in elements).
        history: one row per step: ``step`` (1-based), ``loss`` (sum over elements),
            ``loss_mean``, ``corr_mean``/``eff_crop_mean``/``eff_window_mean`` (lit elements, of
            the PSF *before* that step's update), ``seconds`` (cumulative wall time).
        fidelity: :func:`fidelity_table` of the final array (both gain models).
        gain: ``[C_out]`` closed-form per-channel gains (:func:`fit_gain`) on the final crop.
        psf_crop_signed: ``[C_out, C_in, k, k]`` final signed crop kernels (aperture units).
        seconds: wall seconds of the optimisation (including resumed parts).
        steps: optimisation steps done (< the cap when the stopping rule fired).
        element_gain: ``[E]`` closed-form per-element gains (:func:`fit_element_gains`).
        stopped_early: the stopping rule ended the run before the step cap.
    """

    array: nn.Module
    history: pd.DataFrame
    fidelity: pd.DataFrame
    gain: torch.Tensor
    psf_crop_signed: torch.Tensor
    seconds: float
    steps: int
    element_gain: torch.Tensor | None = None
    stopped_early: bool = False

    def front_end_gain(self, model: str = "element") -> torch.Tensor:
        """The gain an :class:`~dkolib.dko.frontend.OpticalFrontEnd` takes: ``[C_out, C_in, 2]``
        per element (``'element'``) or ``[C_out]`` per channel (``'channel'``, the paper's)."""
        if model == "channel":
            return self.gain.detach().clone()
        if model != "element":
            raise ValueError(f"gain model must be 'element' or 'channel', got {model!r}")
        c_out, c_in = self.psf_crop_signed.shape[:2]
        return element_gain_shape(self.element_gain.detach().clone(), c_out, c_in)


def make_atom(optics_cfg):
    """The meta-atom model named by ``optics_cfg.meta_atom`` (:func:`dkolib.optics.metaatoms.load_atom`)."""
    from ..optics.metaatoms import load_atom

    return load_atom(optics_cfg.meta_atom)


def initial_array(n_out: int, n_in: int, optics_cfg, dko_cfg, atom=None, generator: torch.Generator | None = None,
                  **kwargs) -> nn.Module:
    """The ``MetasurfaceArray`` stage 2 starts from: ``dko_cfg.init`` (with its ``init_noise_rad`` /
    ``init_corr_cells``) drawn from ``generator``; ``atom`` defaults to ``optics_cfg.meta_atom``;
    ``kwargs`` (e.g. ``wavelengths_m``) go to the array."""
    from ..optics.metasurface import MetasurfaceArray

    return MetasurfaceArray(n_out, n_in, optics_cfg, atom if atom is not None else make_atom(optics_cfg),
                            init=dko_cfg.init, generator=generator, init_noise_rad=dko_cfg.init_noise_rad,
                            init_corr_cells=dko_cfg.init_corr_cells, **kwargs)


def _default_psf_fn():
    from ..optics.propagation import psf as psf_fn

    return psf_fn


def _flops_per_step(optics_cfg, window_px: int, n_elements: int, engine: str) -> float:
    """PSF FLOPs of one stage-2 step: one differentiated simulation of all ``n_elements``
    (forward + backward, incl. the engine's recomputed forward when it checkpoints;
    :func:`dkolib.dko.budget.psf_simulation_flops`), elements at the RGB array's wavelengths."""
    from .budget import element_wavelengths_m, psf_simulation_flops

    return psf_simulation_flops(optics_cfg, element_wavelengths_m(optics_cfg, n_elements), window_px, engine,
                                backward=True)


def _targets_digest(targets: torch.Tensor) -> str:
    return hashlib.sha1(targets.detach().to(torch.float64).cpu().numpy().tobytes()).hexdigest()


def synthesize(weight: torch.Tensor, optics_cfg, dko_cfg, atom=None, engine: str = "fast",
               generator: torch.Generator | None = None, progress: bool = True,
               ckpt_path: str | Path | None = None, log_csv: str | Path | None = None,
               budget=None, *, array: nn.Module | None = None, psf_fn: Callable | None = None,
               window_px: int | None = None, ckpt_every: int = 50, lr: float | None = None,
               loss: str | None = None, steps: int | None = None, stop_window: int | None = None,
               stop_tol: float | None = None,
               gather_elements: Callable[[torch.Tensor], torch.Tensor] | None = None) -> SynthesisResult:
    """Fit all metasurfaces of an array to the split kernels of ``weight`` (DKO stage 2).

    Args:
        weight: ``[C_out, C_in, k, k]`` trained first-layer kernels (k = optics_cfg.kernel_size).
        optics_cfg: :class:`dkolib.config.OpticsConfig`.
        dko_cfg: :class:`dkolib.config.DKOConfig` (``steps``, ``lr``, ``loss``, ``leakage_weight``,
            ``init``, ``init_noise_rad``, ``init_corr_cells``, ``smoothness_weight``,
            ``phase_block_cells``, ``stop_window``, ``stop_tol``); the keyword arguments
            ``lr``/``loss``/``steps``/``stop_window``/``stop_tol`` override it.
        atom: meta-atom model; default from ``optics_cfg.meta_atom``.
        engine: PSF engine, ``'fast'`` or ``'reference'``.
        generator: seeds the array's initialisation (random init).
        progress: show a tqdm bar.
        ckpt_path: checkpoint file, written atomically every ``ckpt_every`` steps and at the
            end; if it exists the run resumes from it (same result as an uninterrupted run).
        log_csv: history CSV, rewritten atomically at every checkpoint and at the end.
        budget: optional :class:`dkolib.dko.budget.BudgetMeter`; optimisation steps are timed
            in it and their PSF FLOPs (forward + backward, :mod:`dkolib.dko.budget`) added as ``'optics'``.
        array: an existing array to optimise (default: a new ``MetasurfaceArray``).
        psf_fn: PSF function with ``dkolib.optics.propagation.psf``'s signature (for tests).
        window_px: PSF window of the loss (default ``optics_cfg.loss_window_px``).
        stop_window, stop_tol: stopping rule. With ``stop_window = N > 0`` the run stops after
            step ``t > N`` once ``(L[t-N] - L[t]) / |L[t-N]| < stop_tol`` (``L``: the summed loss of
            the history), i.e. the loss improved by less than ``stop_tol`` (relative) over the
            last N steps; ``steps`` is the cap. ``N = 0`` runs exactly ``steps`` steps.
        gather_elements: for a run sharded over processes (:mod:`dkolib.distributed`), where
            ``array`` holds a block of the whole array's elements: takes this process's
            per-element statistics ``[K, E_local]`` (float64) and returns the whole array's
            ``[K, E_total]`` in element order, the same on every process (a collective). Each
            step's loss, efficiency and correlation per element are gathered before the
            backward pass, so the history rows, the finite-loss check and the stopping rule see
            the whole array, computed in the same order as one process computes them, and every
            process stops at the same step. ``None`` (default): ``array`` is the whole array.

    ``smoothness_weight > 0`` adds ``smoothness_weight * S_e`` to every element's loss
    (:func:`dkolib.dko.losses.smoothness_penalty`, on the transmission). ``phase_block_cells = b > 1``
    fits a coarser phase grid: after the initialisation and after every step the latents are
    averaged over ``b x b`` blocks (a projection), so every block holds one radius.

    All elements are optimised together with Adam (no weight decay: the parameters are
    latent radii, decaying them towards 0 has no physical meaning). The loss is the
    *sum* over elements, so each element follows exactly the trajectory it would
    follow alone (Adam is per-parameter).
    """
    from tqdm import tqdm

    k = int(optics_cfg.kernel_size)
    if weight.dim() != 4 or weight.shape[-1] != k or weight.shape[-2] != k:
        raise ValueError(f"weight must be [C_out, C_in, {k}, {k}] (optics.kernel_size), got {tuple(weight.shape)}")
    c_out, c_in = int(weight.shape[0]), int(weight.shape[1])
    steps = int(dko_cfg.steps if steps is None else steps)
    lr = float(dko_cfg.lr if lr is None else lr)
    loss_name = dko_cfg.loss if loss is None else loss
    if loss_name not in LOSSES:
        raise ValueError(f"unknown DKO loss {loss_name!r}: choose one of {sorted(LOSSES)}")
    window_px = int(optics_cfg.loss_window_px if window_px is None else window_px)
    if window_px < k:
        raise ValueError(f"loss window ({window_px}) must be at least kernel_size ({k})")
    if ckpt_every < 1:
        raise ValueError(f"ckpt_every must be >= 1, got {ckpt_every}")
    psf_fn = psf_fn or _default_psf_fn()
    weight = weight.detach().to(torch.float32).cpu()
    targets = split_kernel(weight)

    stop_window = int(dko_cfg.stop_window if stop_window is None else stop_window)
    stop_tol = float(dko_cfg.stop_tol if stop_tol is None else stop_tol)
    if stop_window < 0 or stop_tol < 0:
        raise ValueError(f"stop_window and stop_tol must be >= 0, got {stop_window}, {stop_tol}")
    if array is None:
        array = initial_array(c_out, c_in, optics_cfg, dko_cfg, atom, generator)
    n_el = int(array.latent.shape[0])
    if n_el != targets.shape[0]:
        raise ValueError(f"array has {n_el} elements but weight needs {targets.shape[0]}")
    targets = targets.to(array.latent.device)
    opt = torch.optim.Adam([array.latent], lr=lr)
    smooth_w = float(getattr(dko_cfg, "smoothness_weight", 0.0))
    block = int(getattr(dko_cfg, "phase_block_cells", 1))
    if smooth_w < 0 or block < 1:
        raise ValueError(f"dko.smoothness_weight must be >= 0 and dko.phase_block_cells >= 1, got {smooth_w}, {block}")
    _project_blocks(array, block)
    meta = {"n_elements": n_el, "loss": loss_name, "lr": lr, "window_px": window_px, "engine": engine,
            "leakage_weight": float(dko_cfg.leakage_weight), "targets_sha1": _targets_digest(targets),
            "latent_shape": tuple(array.latent.shape)}
    if smooth_w > 0:
        meta["smoothness_weight"] = smooth_w
    if block > 1:
        meta["phase_block_cells"] = block

    if stop_window > 0:
        meta.update(stop_window=stop_window, stop_tol=stop_tol)
    start, elapsed, rows, stopped = 0, 0.0, [], False
    ckpt_path = Path(ckpt_path) if ckpt_path is not None else None
    if ckpt_path is not None and ckpt_path.exists():
        state = load_torch(ckpt_path, map_location=array.latent.device)
        diff = {key: (state["meta"].get(key), meta.get(key)) for key in set(meta) | set(state["meta"])
                if state["meta"].get(key) != meta.get(key)}
        if diff:
            raise ValueError(f"checkpoint {ckpt_path} belongs to a different synthesis run: {diff}")
        if state["step"] > steps:
            raise ValueError(f"checkpoint {ckpt_path} is at step {state['step']} > requested steps {steps}")
        with torch.no_grad():
            array.latent.copy_(state["latent"])
        opt.load_state_dict(state["optimizer"])
        start, elapsed, rows = int(state["step"]), float(state["seconds"]), list(state["history"])
        stopped = bool(state.get("stopped", False))
        if budget is not None and state.get("budget") is not None:
            budget.load_state_dict(state["budget"])

    def save_ckpt(step: int) -> None:
        if ckpt_path is not None:
            save_torch({"step": step, "latent": array.latent.detach().clone(), "optimizer": opt.state_dict(),
                        "seconds": elapsed, "history": rows, "meta": meta, "stopped": stopped,
                        "budget": budget.state_dict() if budget is not None else None}, ckpt_path)
        if log_csv is not None:
            write_csv(pd.DataFrame(rows, columns=HISTORY_COLUMNS), log_csv)

    flops = _flops_per_step(optics_cfg, window_px, n_el, engine) if budget is not None else None
    lit = ~_dark_mask(targets)
    t_flat = targets.reshape(n_el, -1)
    if gather_elements is not None:  # the lit elements of the whole array (a collective on every process)
        lit = _gather_stats(gather_elements, (lit,))[0]
    bar = tqdm(range(start, start if stopped else steps), desc=f"DKO stage 2 ({loss_name})",
               disable=not progress, initial=start, total=steps)
    done = start
    for step in bar:
        t0 = time.perf_counter()
        ctx = budget.timing() if budget is not None else _null()
        with ctx:
            opt.zero_grad(set_to_none=True)
            p = psf_fn(array, array.wavelengths_m, optics_cfg, window_px, engine=engine, normalize=True)
            per = stage2_loss(loss_name, p, targets, dko_cfg.leakage_weight, reduction="none")
            if smooth_w > 0:
                per = per + smooth_w * smoothness_penalty(array.transmission())
            total = per.sum()
            whole = None  # per-element statistics of the whole array, when sharded
            if gather_elements is not None:  # inside the timing: the communication is part of the step
                with torch.no_grad():
                    whole = _gather_stats(gather_elements, _element_stats(p, per, t_flat, k))
                total_all = whole[0].sum()
                if not torch.isfinite(total_all):
                    raise FloatingPointError(f"DKO loss became {total_all.item()} at step {step + 1} "
                                             "(summed over the elements of every process)")
            elif not torch.isfinite(total):
                raise FloatingPointError(f"DKO loss became {total.item()} at step {step + 1}")
            total.backward()
            opt.step()
            _project_blocks(array, block)
            if p.is_cuda:  # the step's kernels are only queued: wait for them before the clocks are read
                torch.cuda.synchronize(p.device)
        if budget is not None and flops is not None:
            budget.add_flops(flops, "optics")
        elapsed += time.perf_counter() - t0
        with torch.no_grad():
            if whole is None:
                whole = _element_stats(p, per, t_flat, k)
            rows.append(_history_row(step + 1, whole, lit, elapsed))
        if progress:
            bar.set_postfix(loss=f"{rows[-1]['loss_mean']:.3e}", corr=f"{rows[-1]['corr_mean']:.3f}")
        done = step + 1
        if _should_stop(rows, stop_window, stop_tol):
            stopped = True
            break
        if (step + 1) % ckpt_every == 0 and step + 1 < steps:
            save_ckpt(step + 1)
    bar.close()
    save_ckpt(done)

    return finish_synthesis(array, weight, optics_cfg, engine, psf_fn, window_px, rows, elapsed, done, stopped)


def finish_synthesis(array: nn.Module, weight: torch.Tensor, optics_cfg, engine: str, psf_fn: Callable | None,
                     window_px: int, rows: list[dict] | pd.DataFrame, seconds: float, steps: int,
                     stopped: bool) -> SynthesisResult:
    """The :class:`SynthesisResult` of an optimised ``array`` (the end of :func:`synthesize`).

    Simulates the PSFs of every element on the loss window (``window_px``) and, when larger,
    on ``optics_cfg.render_window_px``, and fits the gains and the fidelity table to
    ``weight [C_out, C_in, k, k]`` (float32, CPU). ``rows``: the history (dicts with
    :data:`HISTORY_COLUMNS`, or their frame); ``seconds``, ``steps``, ``stopped``: the run's wall seconds, steps
    done and whether the stopping rule ended it.
    """
    psf_fn = psf_fn or _default_psf_fn()
    k = int(optics_cfg.kernel_size)
    c_out, c_in = int(weight.shape[0]), int(weight.shape[1])
    with torch.no_grad():
        p_win = psf_fn(array, array.wavelengths_m, optics_cfg, window_px, engine=engine, normalize=True)
        p_ren = None
        if optics_cfg.render_window_px > window_px:
            p_ren = psf_fn(array, array.wavelengths_m, optics_cfg, optics_cfg.render_window_px,
                           engine=engine, normalize=True)
    signed = merge_signed(crop_center(p_win.detach().cpu(), k), c_out, c_in).to(torch.float32)
    gain = fit_gain(signed, weight)
    element_gain = fit_element_gains(crop_center(p_win.detach().cpu(), k), weight)
    fid = fidelity_table(p_win, weight, gain, p_ren, element_gain=element_gain)
    history = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows, columns=HISTORY_COLUMNS)
    return SynthesisResult(array=array, history=history, fidelity=fid,
                           gain=gain, psf_crop_signed=signed, seconds=seconds, steps=steps,
                           element_gain=element_gain, stopped_early=stopped)


STEP_STATS = ("loss", "eff_crop", "eff_window", "corr")
"""The per-element statistics of one step that a sharded run gathers (:func:`_element_stats`)."""


def _element_stats(p: torch.Tensor, per: torch.Tensor, t_flat: torch.Tensor, k: int) -> tuple[torch.Tensor, ...]:
    """Per-element statistics ``[E]`` of one step, in :data:`STEP_STATS` order: the loss ``per``,
    the energy in the ``k x k`` crop and in the whole window of the PSFs ``p [E, W, W]`` (fractions
    of the aperture energy) and the Pearson correlation of the crop with the targets ``t_flat [E, k*k]``."""
    n_el = int(p.shape[0])
    crop = crop_center(p.detach(), k).reshape(n_el, -1)
    return (per.detach(), crop.sum(1), p.detach().sum((-2, -1)), _batched_pearson(crop, t_flat))


def _gather_stats(gather_elements: Callable, stats: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The whole array's ``[E_total]`` of each local ``[E_local]`` statistic, in its own dtype.

    Sent as one float64 ``[K, E_local]`` tensor (exact for float32 and bool values), so the
    whole array's tensors hold the same bits one process computes, and reductions over them
    (sum, mean over lit elements) run on the same values in the same order."""
    local = torch.stack([s.detach().to(torch.float64) for s in stats])
    whole = gather_elements(local)
    if whole.dim() != 2 or whole.shape[0] != local.shape[0]:
        raise ValueError(f"gather_elements must return [{local.shape[0]}, E_total], got {tuple(whole.shape)}")
    whole = whole.to(stats[0].device)
    return tuple(whole[j].to(s.dtype).contiguous() for j, s in enumerate(stats))


def _history_row(step: int, stats: tuple[torch.Tensor, ...], lit: torch.Tensor, seconds: float) -> dict:
    """One history row (:data:`HISTORY_COLUMNS`) from the :func:`_element_stats` ``[E]`` of the
    whole array; the means over elements run over the lit ones (``lit [E]`` bool)."""
    per, eff_crop, eff_window, corr = stats
    any_lit = bool(lit.any())
    return {"step": step, "loss": float(per.sum()), "loss_mean": float(per.mean()),
            "corr_mean": float(corr[lit].mean()) if any_lit else float("nan"),
            "eff_crop_mean": float(eff_crop[lit].mean()) if any_lit else float("nan"),
            "eff_window_mean": float(eff_window[lit].mean()) if any_lit else float("nan"),
            "seconds": seconds}


def _should_stop(rows: list[dict], stop_window: int, stop_tol: float) -> bool:
    """The stopping rule of :func:`synthesize` on the history ``rows`` so far."""
    if stop_window > 0 and len(rows) > stop_window:
        prev, now = rows[-1 - stop_window]["loss"], rows[-1]["loss"]
        return (prev - now) / max(abs(prev), 1e-30) < stop_tol
    return False


def _project_blocks(array: nn.Module, block_cells: int) -> None:
    """Project an array's latents in place onto ``block_cells`` x ``block_cells`` blocks
    (:func:`dkolib.optics.metasurface.block_average`); nothing to do for 1."""
    if block_cells > 1:
        from ..optics.metasurface import block_average

        with torch.no_grad():
            array.latent.copy_(block_average(array.latent, block_cells))


HISTORY_COLUMNS = ["step", "loss", "loss_mean", "corr_mean", "eff_crop_mean", "eff_window_mean", "seconds"]


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ------------------------------------------------------------ persistence


def save_array(array: nn.Module, path: str | Path, optics_cfg=None, **extra) -> Path:
    """Save an array's state dict and its shape atomically (see :func:`load_array`)."""
    payload = {"state_dict": {k: v.detach().cpu() for k, v in array.state_dict().items()},
               "n_out": int(getattr(array, "n_out", 0)), "n_in": int(getattr(array, "n_in", 0)),
               "optics": dataclasses.asdict(optics_cfg) if optics_cfg is not None else None}
    payload.update(extra)
    return save_torch(payload, path)


def load_array(path: str | Path, optics_cfg, atom=None) -> nn.Module:
    """Rebuild a ``MetasurfaceArray`` saved by :func:`save_array`."""
    from ..optics.metasurface import MetasurfaceArray

    payload = load_torch(path, map_location="cpu")
    for key in ("state_dict", "n_out", "n_in"):
        if key not in payload:
            raise KeyError(f"{path} is not an array file written by save_array (missing '{key}')")
    atom = atom if atom is not None else make_atom(optics_cfg)
    array = MetasurfaceArray(payload["n_out"], payload["n_in"], optics_cfg, atom, init="lens")
    array.load_state_dict(payload["state_dict"])
    return array
