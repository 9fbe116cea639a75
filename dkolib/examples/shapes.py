"""A small image-classification set made on the fly: one coloured shape per image, class = shape.

Each ``size x size`` RGB image is a background (a random colour, a linear shading ramp in a random
direction and pixel noise) with one shape of a random colour, size, position and rotation on it;
the label is the shape (:data:`CLASSES`). Edges are anti-aliased (``supersample``\\ :sup:`2`
samples per pixel). Telling the classes apart needs the shapes' outlines, not their colours, so a
network has to use its spatial filters, the first layer's above all.

Images are linear intensities in ``[0, 1]`` (what an optical first layer sees), float32
``[N, 3, size, size]``; labels int64 ``[N]``, balanced (``N // n_classes`` or one more per class).
The same ``seed`` gives the same set on every machine (numpy's PCG64 generator).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import InputError

CLASSES = ("disk", "square", "triangle", "cross")
"""Shape names; a label is an index into this tuple."""


def _shape_mask(name: str, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """Inside-mask of shape ``name`` of circumradius-like size ``r`` on rotated, centred coordinates ``u, v``."""
    if name == "disk":
        return u * u + v * v <= r * r
    if name == "square":
        half = r / math.sqrt(2.0)
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    if name == "triangle":  # equilateral, circumradius r: three half-planes at distance r / 2 from the centre
        inside = np.ones_like(u, dtype=bool)
        for k in range(3):
            a = math.pi / 2 + 2 * math.pi * k / 3
            inside &= u * math.cos(a) + v * math.sin(a) <= r / 2
        return inside
    if name == "cross":
        arm = r / 3.0
        return ((np.abs(u) <= arm) & (np.abs(v) <= r)) | ((np.abs(v) <= arm) & (np.abs(u) <= r))
    raise InputError(f"unknown shape {name!r}; choose from {CLASSES}")


def make_shapes(n: int, size: int = 32, seed: int = 0, classes: tuple[str, ...] = CLASSES,
                supersample: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images ``[n, 3, size, size]`` (float32 intensities in ``[0, 1]``) and their labels ``[n]`` (int64).

    Args:
        n: number of images (``>= 1``).
        size: image side in pixels (``>= 8``).
        seed: seed of the draw (images, labels and their order).
        classes: shape names, a subset of :data:`CLASSES`; label ``c`` is ``classes[c]``.
        supersample: samples per pixel per axis for the anti-aliased edges.
    """
    if n < 1 or size < 8 or supersample < 1:
        raise InputError(f"need n >= 1, size >= 8 and supersample >= 1, got {n}, {size}, {supersample}")
    unknown = [c for c in classes if c not in CLASSES]
    if unknown or not classes:
        raise InputError(f"classes must be a non-empty subset of {CLASSES}, got {classes!r}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(classes))
    s = size * supersample
    grid = (np.arange(s) + 0.5) / supersample                      # pixel units, sample centres
    y, x = np.meshgrid(grid, grid, indexing="ij")
    px = (np.arange(size) + 0.5) / size - 0.5
    py_, px_ = np.meshgrid(px, px, indexing="ij")
    images = np.empty((n, 3, size, size), dtype=np.float32)
    for j in range(n):
        base = rng.uniform(0.1, 0.9, 3)
        ramp_dir = rng.uniform(0, 2 * math.pi)
        ramp = rng.uniform(0.0, 0.25) * (px_ * math.cos(ramp_dir) + py_ * math.sin(ramp_dir))
        background = base[:, None, None] + ramp[None] + rng.normal(0.0, 0.03, (3, size, size))
        fg = rng.uniform(0.0, 1.0, 3)
        while np.abs(fg - base).mean() < 0.3:                     # keep the shape visible
            fg = rng.uniform(0.0, 1.0, 3)
        r = rng.uniform(0.28, 0.4) * size
        cx, cy = rng.uniform(0.4, 0.6, 2) * size
        theta = rng.uniform(0, 2 * math.pi)
        u = (x - cx) * math.cos(theta) + (y - cy) * math.sin(theta)
        v = -(x - cx) * math.sin(theta) + (y - cy) * math.cos(theta)
        mask = _shape_mask(classes[labels[j]], u, v, r).astype(np.float32)
        alpha = mask.reshape(size, supersample, size, supersample).mean((1, 3))
        images[j] = np.clip(background * (1 - alpha) + fg[:, None, None] * alpha, 0.0, 1.0)
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


__all__ = ["CLASSES", "make_shapes"]
