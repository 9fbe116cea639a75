"""Supervised depth losses (shared by stage 1, the E2E baselines and the fine-tunes).

:func:`depth_loss` is the mean absolute error of **log depth** over valid
ground-truth pixels (``min_depth_m <= gt <= max_depth_m``; gt 0 = invalid),
averaged over all disparity scales, each upsampled bilinearly to full
resolution (Monodepth2's multi-scale trick) and decoded to metres with
Monodepth2's :func:`~dkolib.depth.network.disp_to_depth` (0.1 m .. 100 m). Why: it is
metric (no scale ambiguity, so evaluation works without median scaling), treats
near and far errors relatively (like AbsRel, the headline metric), is robust
(L1) and needs no tuning weights -- what a short CPU schedule wants. The
optics-only E2E baseline uses the paper's loss instead
(:func:`disparity_distillation_loss`): MSE between the student's and the frozen
teacher's sigmoid disparities (all scales).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .network import disp_to_depth


def _valid_mask(gt_m: torch.Tensor, min_depth_m: float, max_depth_m: float) -> torch.Tensor:
    return (gt_m > 0) & (gt_m >= min_depth_m) & (gt_m <= max_depth_m)


def depth_loss(outputs: dict, gt_m: torch.Tensor, min_depth_m: float = 1e-3,
               max_depth_m: float = 80.0) -> torch.Tensor:
    """Multi-scale L1 of log depth on valid pixels (see module docstring).

    Args:
        outputs: ``{("disp", s): [B, 1, H/2^s, W/2^s]}`` sigmoid disparities.
        gt_m: ``[B, 1, H, W]`` ground-truth depth in metres (0 = invalid).
    Returns a scalar (dimensionless: mean |log(pred_m / gt_m)|).
    """
    keys = sorted(k for k in outputs if isinstance(k, tuple) and k[0] == "disp")
    if not keys:
        raise KeyError("outputs contain no ('disp', s) entries")
    valid = _valid_mask(gt_m, min_depth_m, max_depth_m)
    n_valid = valid.sum()
    if int(n_valid) == 0:
        return sum(outputs[k].sum() for k in keys) * 0.0
    weight = valid.to(gt_m.dtype) / n_valid  # masked mean without boolean indexing (faster on CPU)
    log_gt = torch.log(torch.where(valid, gt_m, torch.ones_like(gt_m)))
    total = 0.0
    for k in keys:
        disp = outputs[k]
        if disp.shape[-2:] != gt_m.shape[-2:]:
            disp = F.interpolate(disp, size=gt_m.shape[-2:], mode="bilinear", align_corners=False)
        scaled, _ = disp_to_depth(disp)
        log_pred = -torch.log(scaled)
        total = total + ((log_pred - log_gt).abs() * weight).sum()
    return total / len(keys)


def make_depth_loss(min_depth_m: float = 1e-3, max_depth_m: float = 80.0) -> Callable:
    """``loss_fn(model, batch) -> scalar`` applying :func:`depth_loss` to ``model(batch['rgb'])``.

    ``loss_fn.normaliser(batch)`` is what the loss averages over (the batch's valid pixels), so
    that a batch split over processes can weight each part's loss to the whole batch's
    (:mod:`dkolib.distributed.data_parallel`).
    """
    def loss_fn(model: nn.Module, batch: dict) -> torch.Tensor:
        return depth_loss(model(batch["rgb"]), batch["depth_m"], min_depth_m, max_depth_m)

    def normaliser(batch: dict) -> int:
        return int(_valid_mask(batch["depth_m"], min_depth_m, max_depth_m).sum())

    loss_fn.normaliser = normaliser
    return loss_fn


def disparity_distillation_loss(student: dict, teacher: dict) -> torch.Tensor:
    """Mean over scales of the MSE between sigmoid disparities (the paper's optics-only loss)."""
    keys = sorted(k for k in teacher if isinstance(k, tuple) and k[0] == "disp")
    return sum(F.mse_loss(student[k], teacher[k]) for k in keys) / len(keys)
