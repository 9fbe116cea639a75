"""Depth metrics exactly as Monodepth2 evaluates them (``evaluate_depth.py``).

Per image:

1. valid pixels: ``min_depth_m < gt < max_depth_m`` (strict), optionally
   intersected with the Garg/Eigen crop (rows ``0.40810811 H .. 0.99189189 H``,
   columns ``0.03594771 W .. 0.96405229 W``, bounds truncated to integers);
2. optional median scaling: ``pred *= median(gt) / median(pred)`` on those pixels;
3. ``pred`` clamped to ``[min_depth_m, max_depth_m]``;
4. with ``t = max(gt / pred, pred / gt)``:
   ``a1, a2, a3 = mean(t < 1.25), mean(t < 1.25**2), mean(t < 1.25**3)``,
   ``rmse = sqrt(mean((gt - pred)**2))``,
   ``rmse_log = sqrt(mean((log gt - log pred)**2))``,
   ``abs_rel = mean(|gt - pred| / gt)``, ``sq_rel = mean((gt - pred)**2 / gt)``.

For a batch, each image's metrics are computed on its own and then averaged
over images (Monodepth2 averages per image, it does not pool pixels).
"""

from __future__ import annotations

import numpy as np
import torch

METRIC_COLUMNS = ["abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3"]
"""Metric names in Monodepth2's table order (lower is better for the first four)."""

GARG_CROP = (0.40810811, 0.99189189, 0.03594771, 0.96405229)
"""Garg/Eigen crop as fractions: row start, row stop, column start, column stop."""


def _as_numpy(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _as_images(x: np.ndarray, name: str) -> np.ndarray:
    """[H, W] | [N, H, W] | [N, 1, H, W] -> [N, H, W]."""
    if x.ndim == 2:
        return x[None]
    if x.ndim == 3:
        return x
    if x.ndim == 4 and x.shape[1] == 1:
        return x[:, 0]
    raise ValueError(f"{name} must be [H, W], [N, H, W] or [N, 1, H, W] depth in metres, got shape {list(x.shape)}")


def garg_crop_mask(height: int, width: int) -> np.ndarray:
    """Boolean [height, width] mask of the Garg/Eigen crop (Monodepth2's integer bounds)."""
    r0, r1, c0, c1 = (np.array(GARG_CROP) * [height, height, width, width]).astype(np.int32)
    mask = np.zeros((height, width), dtype=bool)
    mask[r0:r1, c0:c1] = True
    return mask


def _errors(gt: np.ndarray, pred: np.ndarray) -> dict:
    thresh = np.maximum(gt / pred, pred / gt)
    return {
        "abs_rel": float(np.mean(np.abs(gt - pred) / gt)),
        "sq_rel": float(np.mean((gt - pred) ** 2 / gt)),
        "rmse": float(np.sqrt(np.mean((gt - pred) ** 2))),
        "rmse_log": float(np.sqrt(np.mean((np.log(gt) - np.log(pred)) ** 2))),
        "a1": float(np.mean(thresh < 1.25)),
        "a2": float(np.mean(thresh < 1.25 ** 2)),
        "a3": float(np.mean(thresh < 1.25 ** 3)),
    }


def compute_depth_metrics(pred_m, gt_m, min_depth_m: float = 1e-3, max_depth_m: float = 80.0,
                          median_scaling: bool = False, garg_crop: bool = False) -> dict:
    """Monodepth2's seven depth metrics of predicted vs ground-truth depth (metres).

    Args:
        pred_m, gt_m: numpy arrays or tensors of the same shape, [H, W],
            [N, H, W] or [N, 1, H, W], depth in metres. Resize the prediction
            to the ground truth's size first (Monodepth2 does so).
        min_depth_m, max_depth_m: ground truth counts where ``min < gt < max``;
            predictions are clamped to ``[min, max]``.
        median_scaling: per image, multiply the prediction by
            ``median(gt) / median(pred)`` over the valid pixels (for scale-ambiguous
            predictors: monocular self-supervision, another camera).
        garg_crop: evaluate only inside the Garg/Eigen crop (KITTI's Eigen split).

    Returns:
        ``{name: float}`` for every name in :data:`METRIC_COLUMNS`, averaged over
        the images that have at least one valid pixel.
    """
    if not 0 <= min_depth_m < max_depth_m:
        raise ValueError(f"need 0 <= min_depth_m < max_depth_m, got {min_depth_m} and {max_depth_m}")
    pred = _as_images(_as_numpy(pred_m, "pred_m"), "pred_m")
    gt = _as_images(_as_numpy(gt_m, "gt_m"), "gt_m")
    if pred.shape != gt.shape:
        raise ValueError(f"pred_m {list(pred.shape)} and gt_m {list(gt.shape)} differ in shape: resize the "
                         f"prediction to the ground truth's size before computing metrics")
    valid = (gt > min_depth_m) & (gt < max_depth_m)
    if garg_crop:
        valid &= garg_crop_mask(*gt.shape[1:])[None]
    if not np.all(np.isfinite(pred[valid])):
        raise ValueError("pred_m has NaN or infinite values where the ground truth is valid")
    per_image = []
    for k in range(gt.shape[0]):
        g, p = gt[k][valid[k]], pred[k][valid[k]]
        if g.size == 0:
            continue
        if median_scaling:
            med = np.median(p)
            if med <= 0:
                raise ValueError(f"image {k}: median prediction is {med}; median scaling needs positive depths")
            p = p * (np.median(g) / med)
        p = np.clip(p, min_depth_m, max_depth_m)
        if min_depth_m == 0:
            p = np.maximum(p, np.finfo(np.float64).tiny)
        per_image.append(_errors(g, p))
    if not per_image:
        raise ValueError(f"no ground-truth pixel lies in ({min_depth_m}, {max_depth_m}) m"
                         + (" inside the Garg crop" if garg_crop else "")
                         + ": check the units (metres) and the depth range")
    return {name: float(np.mean([m[name] for m in per_image])) for name in METRIC_COLUMNS}


def disp_to_depth(disp, min_depth_m: float = 0.1, max_depth_m: float = 100.0):
    """Monodepth2's decoding of a sigmoid output ``disp`` in [0, 1].

    ``scaled = 1/max_depth_m + (1/min_depth_m - 1/max_depth_m) * disp`` (1/m) and
    ``depth = 1 / scaled`` (m). Returns ``(scaled_disp, depth_m)`` like Monodepth2;
    works on numpy arrays and tensors alike.
    """
    if not 0 < min_depth_m < max_depth_m:
        raise ValueError(f"need 0 < min_depth_m < max_depth_m, got {min_depth_m} and {max_depth_m}")
    min_disp, max_disp = 1.0 / max_depth_m, 1.0 / min_depth_m
    scaled = min_disp + (max_disp - min_disp) * disp
    return scaled, 1.0 / scaled


def depth_to_disp(depth_m, min_depth_m: float = 0.1, max_depth_m: float = 100.0):
    """Inverse of :func:`disp_to_depth`: the sigmoid output that decodes to ``depth_m`` (metres)."""
    if not 0 < min_depth_m < max_depth_m:
        raise ValueError(f"need 0 < min_depth_m < max_depth_m, got {min_depth_m} and {max_depth_m}")
    min_disp, max_disp = 1.0 / max_depth_m, 1.0 / min_depth_m
    return (1.0 / depth_m - min_disp) / (max_disp - min_disp)
