"""Depth from a network's outputs, and the constant-depth baseline every result is compared with.

* :func:`predict_depth`: metres ``[B, 1, H, W]`` from the finest sigmoid disparity;
* :class:`ConstantDepth` / :func:`constant_predictor`: one depth everywhere;
* :func:`training_median_depth`: the median of the evaluated ground-truth pixels
  (the best constant for AbsRel-like metrics on those pixels).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from .network import depth_to_disp, disp_to_depth


class ConstantDepth(nn.Module):
    """Baseline predicting one depth everywhere: ``forward(rgb) -> {("disp", 0): [B,1,H,W]}``."""

    def __init__(self, depth_m: float):
        super().__init__()
        if not depth_m > 0:
            raise ValueError(f"depth_m must be positive, got {depth_m}")
        self.depth_m = float(depth_m)
        self.register_buffer("disp", depth_to_disp(self.depth_m).reshape(()))

    def forward(self, rgb: torch.Tensor) -> dict:
        b, _, h, w = rgb.shape
        return {("disp", 0): self.disp.expand(b, 1, h, w).clone()}


def constant_predictor(depth_m: float) -> ConstantDepth:
    """The constant-depth baseline (use the training median, :func:`training_median_depth`)."""
    return ConstantDepth(depth_m)


def training_median_depth(dataset, min_depth_m: float = 1e-3, max_depth_m: float = 80.0,
                          max_items: int = 256) -> float:
    """Median (m) of the evaluated ground-truth depths over up to ``max_items`` evenly spaced items.

    The pixels are those the metrics score (Monodepth2's mask ``min < gt < max``):
    sky stored at the cap is left out, so the constant baseline is the best
    constant for the evaluated pixels rather than one pulled towards the sky.
    """
    n = len(dataset)
    idx = np.unique(np.linspace(0, n - 1, min(n, max_items)).round().astype(int))
    vals = []
    for i in idx:
        d = torch.as_tensor(dataset[int(i)]["depth_m"])
        vals.append(d[(d > min_depth_m) & (d < max_depth_m)])
    allv = torch.cat(vals)
    if allv.numel() == 0:
        raise ValueError("no valid ground-truth depth in the dataset")
    return float(allv.median())


@torch.no_grad()
def predict_depth(model: nn.Module, rgb: torch.Tensor) -> torch.Tensor:
    """Depth in metres ``[B, 1, H, W]`` from the finest disparity of ``model(rgb)``."""
    _, depth = disp_to_depth(model(rgb)[("disp", 0)])
    return depth
