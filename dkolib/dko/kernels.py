"""Signed kernels <-> non-negative metasurface targets, and the sensor windows they sit in.

* A signed kernel bank ``weight [C_out, C_in, k, k]`` is split into
  ``E = 2 * C_out * C_in`` non-negative targets ordered like
  :class:`dkolib.optics.metasurface.MetasurfaceArray`: element ``e = (o * C_in + i) * 2 + s``
  holds ``K+ = max(K[o, i], 0)`` for ``s = 0`` and ``K- = max(-K[o, i], 0)`` for ``s = 1``
  (:func:`split_kernel`; :func:`merge_signed` is its inverse on PSFs).
* The ``k x k`` kernel sits inside a ``W x W`` window exactly where
  ``dkolib.optics.render.crop_center(window, k)`` takes it from (:func:`pad_to_window`
  is built from ``crop_center`` itself, so the two can never disagree).
* An element whose target is all zero (e.g. ``K-`` of an all-positive kernel)
  is *dark*: its target is "no light in the window".
"""

from __future__ import annotations

import torch

from ..optics.render import crop_center


def _crop_indices(window_px: int, k: int) -> torch.Tensor:
    """Flat indices (into a ``W*W`` window) of the ``k x k`` crop, row-major ``[k*k]``."""
    idx = torch.arange(window_px * window_px, dtype=torch.float64).reshape(1, window_px, window_px)
    flat = crop_center(idx, k).reshape(-1)
    out = flat.round().long()
    if out.numel() != k * k or len(set(out.tolist())) != k * k:
        raise RuntimeError("crop_center did not return a k x k block of distinct pixels")
    return out


def pad_to_window(target: torch.Tensor, window_px: int) -> torch.Tensor:
    """Zero-pad ``target [E, k, k]`` into ``[E, W, W]`` so that ``crop_center(out, k) == target``."""
    if target.dim() != 3 or target.shape[-1] != target.shape[-2]:
        raise ValueError(f"target must have shape [E, k, k], got {tuple(target.shape)}")
    e, k = target.shape[0], target.shape[-1]
    if window_px < k:
        raise ValueError(f"window_px ({window_px}) must be at least the kernel size ({k})")
    idx = _crop_indices(window_px, k).to(target.device)
    out = target.new_zeros(e, window_px * window_px)
    out[:, idx] = target.reshape(e, k * k)
    return out.reshape(e, window_px, window_px)


def crop_mask(window_px: int, k: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """``[W, W]`` mask equal to 1 on the ``k x k`` crop, 0 elsewhere."""
    return pad_to_window(torch.ones(1, k, k, dtype=dtype, device=device), window_px)[0]


def split_kernel(weight: torch.Tensor) -> torch.Tensor:
    """Signed kernels ``[C_out, C_in, k, k]`` -> non-negative targets ``[E, k, k]``.

    ``E = 2 * C_out * C_in``; ``targets[(o * C_in + i) * 2 + 0] = max(K[o, i], 0)`` and
    ``targets[(o * C_in + i) * 2 + 1] = max(-K[o, i], 0)`` (same units as ``weight``).
    """
    if weight.dim() != 4 or weight.shape[-1] != weight.shape[-2]:
        raise ValueError(f"weight must have shape [C_out, C_in, k, k], got {tuple(weight.shape)}")
    if not torch.isfinite(weight).all():
        raise ValueError("weight contains non-finite values")
    c_out, c_in, k, _ = weight.shape
    pos = weight.clamp_min(0.0)
    neg = (-weight).clamp_min(0.0)
    return torch.stack([pos, neg], dim=2).reshape(c_out * c_in * 2, k, k)


def merge_signed(elements: torch.Tensor, n_out: int, n_in: int) -> torch.Tensor:
    """Inverse of :func:`split_kernel`: ``[E, h, w] -> [n_out, n_in, h, w]`` as ``K+ - K-``."""
    if elements.shape[0] != 2 * n_out * n_in:
        raise ValueError(f"expected {2 * n_out * n_in} elements, got {elements.shape[0]}")
    x = elements.reshape(n_out, n_in, 2, *elements.shape[1:])
    return x[:, :, 0] - x[:, :, 1]


def _dark_mask(target: torch.Tensor) -> torch.Tensor:
    return target.sum(dim=(-2, -1)) <= 0
