"""Building blocks of the equal-budget jobs: models, DKO stage 2, fine-tune, calibration, evaluation.

Costs are ``{"wall_s", "cpu_s", "flops"}`` dicts (seconds, seconds, FLOPs) measured with a
:class:`~dkolib.dko.budget.BudgetMeter`: :func:`run_stage2` and :func:`run_finetune_fixed`
return what they spent, :func:`calibrate` the per-step costs on this machine (cached in
``calibration.json``). Evaluation goes through :func:`dkolib.dko.evaluation.evaluate_design`
(one row per eval mode, the :data:`~dkolib.study.protocol.METRICS` columns).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from ..dko.budget import BudgetMeter
from ..io import load_torch, save_torch, seed_everything
from .protocol import Settings
from .snapshots import _write_json

STAGE2_CKPT_MIN_STEPS = 200
"""Stage-2 runs at least this long write a resumable checkpoint."""


def _depth_loss(cfg):
    from ..depth.losses import make_depth_loss
    return make_depth_loss(cfg.data.min_depth_m, cfg.data.max_depth_m)


def _new_depthnet(cfg, seed: int):
    from ..depth.network import DepthNet
    seed_everything(seed)
    return DepthNet(cfg.model, kernel_size=cfg.optics.kernel_size)


def build_e2e_model(cfg, engine: str, seed: int, warm_state: dict | None = None) -> tuple[nn.Module, float]:
    """Joint E2E hybrid (crop front end, trainable gain, PSFs simulated every step) + PSF FLOPs/step.

    Mirrors ``train.run_e2e(variant='joint')``: seeded network (or ``warm_state``), metasurfaces
    from ``cfg.e2e.init``, gain matched to the reference kernels' norm.
    """
    from ..dko.frontend import make_hybrid, unit_gain
    from ..dko.train import _build_array, psf_step_flops

    gen = seed_everything(seed)
    from ..depth.network import DepthNet
    base = DepthNet(cfg.model, kernel_size=cfg.optics.kernel_size)
    if warm_state is not None:
        base.load_state_dict(warm_state)
    reference = base.conv1_weight().detach().clone()
    array = _build_array(cfg, base.conv1_channels, cfg.e2e.init, gen)
    model = make_hybrid(base, array, cfg.optics, mode="crop", engine=engine, trainable_gain=True,
                        gain=unit_gain(base.conv1_channels, 3, cfg.optics.gain), cache_psf=False)
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
    """DKO stage 2 + closed-form gain (``cfg.optics.gain``'s model) on ``weight``; cached in ``work/result.pt``.

    Returns ``(array, gain, cost)`` with ``cost = {"wall_s", "cpu_s", "flops"}`` measured
    (the synthesis steps, plus the analytic FLOPs of the one PSF the gain fit needs).
    """
    from ..dko.synthesis import load_array, save_array, synthesize
    from ..dko.train import psf_step_flops

    work = Path(work)
    res_path = work / "result.pt"
    if res_path.exists() and (work / "array.pt").exists():
        obj = load_torch(res_path, map_location="cpu")
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
    gain = res.front_end_gain(cfg.optics.gain)
    save_torch({"gain": gain, "cost": cost}, res_path)
    return res.array, gain, cost


def run_finetune_fixed(cfg, hybrid: nn.Module, engine: str, lr: float, steps: int, seed: int, train_set,
                       work: Path, progress: bool = True) -> dict:
    """Fine-tune ``hybrid``'s back end (optics frozen, PSF simulated once and cached); returns its cost.

    Same recipe as ``train.run_finetune`` (depth loss, ``stage1.batch_size``, step decay at 75 %)
    without validation passes; resumable from ``work/ckpt.pt``.
    """
    from ..dko.train import psf_step_flops, train_loop

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


def calibrate(cfg, settings: Settings, train_set, work: Path, seed: int, progress: bool = False) -> dict:
    """Per-step costs on this machine / thread count (see :mod:`dkolib.study.protocol`). Cached in ``work``.

    Returns ``{"stage1_step": {...}, "stage2_step": {engine: {...}}, "finetune": {engine: {...}}}``
    with ``{"wall_s", "cpu_s", "flops"}`` per step (fine-tune: the whole fixed-length fine-tune).
    """
    from ..dko.evaluation import hybrid_from_dko
    from ..dko.synthesis import synthesize
    from ..dko.train import train_loop

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


def _eval_rows(model, dataset, cfg, evals, max_items) -> pd.DataFrame:
    from ..dko.evaluation import evaluate_design
    return evaluate_design(model, dataset, cfg, evals=evals, seed=0, max_items=max_items)


def _val_abs_rel(model, val_set, cfg, settings) -> float:
    return float(_eval_rows(model, val_set, cfg, ("crop",), settings.eval_items)["abs_rel"].iloc[0])
