"""The worked example's figure: the data, the first layer's kernels (electronic and optical), the accuracies.

``matplotlib`` is imported only by :func:`plot_swap_summary` (it is part of the ``pipeline`` extra,
not of the core install).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..errors import InputError


def kernels_rgb(weight: torch.Tensor, scale: torch.Tensor | None = None) -> np.ndarray:
    """Signed RGB kernels ``[C_out, 3, k, k]`` as images ``[C_out, k, k, 3]`` in ``[0, 1]``.

    Kernel ``o`` maps to ``0.5 + K[o] / (2 s_o)`` (grey is 0), with ``s_o = max |K[o]|`` or the given
    ``scale [C_out]`` (pass the electronic kernels' to show optical ones on the same scale; values
    beyond it are clipped).
    """
    if weight.dim() != 4 or weight.shape[1] != 3:
        raise InputError(f"weight must be [C_out, 3, k, k], got {tuple(weight.shape)}")
    w = weight.detach().to(torch.float64).cpu()
    s = w.abs().amax((1, 2, 3)) if scale is None else scale.detach().to(torch.float64).cpu()
    if s.shape != (w.shape[0],):
        raise InputError(f"scale must be [C_out] = [{w.shape[0]}], got {tuple(s.shape)}")
    img = 0.5 + w / (2 * s.clamp_min(1e-30)[:, None, None, None])
    return img.clamp(0.0, 1.0).permute(0, 2, 3, 1).numpy()


def mosaic(tiles: np.ndarray, ncols: int, pad: int = 1, fill: float = 1.0) -> np.ndarray:
    """Tiles ``[N, h, w, 3]`` laid out row by row, ``ncols`` per row, ``pad`` pixels of ``fill`` between them."""
    if tiles.ndim != 4 or ncols < 1 or pad < 0:
        raise InputError(f"need tiles [N, h, w, C], ncols >= 1 and pad >= 0, got {tiles.shape}, {ncols}, {pad}")
    n, h, w, c = tiles.shape
    rows = -(-n // ncols)
    out = np.full((rows * (h + pad) - pad, ncols * (w + pad) - pad, c), fill, dtype=np.float64)
    for j in range(n):
        r, q = divmod(j, ncols)
        out[r * (h + pad):r * (h + pad) + h, q * (w + pad):q * (w + pad) + w] = tiles[j]
    return out


def plot_swap_summary(images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], electronic: torch.Tensor,
                      optical: torch.Tensor, accuracies: Mapping[str, float]):
    """One figure of the example: sample images, ``conv1`` kernels electronic / optical, test accuracies.

    Args:
        images, labels: ``[N, 3, H, W]`` intensities and ``[N]`` labels; the first image of each class is shown.
        classes: class names (``labels`` index them).
        electronic, optical: ``[C_out, 3, k, k]`` kernels, shown on the electronic ones' scale per channel.
        accuracies: stage name -> test accuracy in ``[0, 1]``, in the order to plot.
    Returns the ``matplotlib`` figure.
    """
    import matplotlib.pyplot as plt

    if electronic.shape != optical.shape:
        raise InputError(f"electronic and optical kernels differ in shape: {tuple(electronic.shape)}, "
                         f"{tuple(optical.shape)}")
    firsts = [int(torch.nonzero(labels == c)[0]) for c in range(len(classes)) if bool((labels == c).any())]
    fig, axes = plt.subplots(1, 3, figsize=(11.5, 2.6), gridspec_kw={"width_ratios": [1.0, 3.2, 1.6]})
    samples = images[firsts].permute(0, 2, 3, 1).numpy()
    axes[0].imshow(mosaic(samples, ncols=2, pad=2), interpolation="nearest")
    axes[0].set_title("one image per class", fontsize=8)
    scale = electronic.detach().abs().amax((1, 2, 3))
    tiles = np.concatenate([kernels_rgb(electronic, scale), kernels_rgb(optical, scale)])
    axes[1].imshow(mosaic(tiles, ncols=electronic.shape[0], pad=1), interpolation="nearest")
    axes[1].set_title("conv1 kernels: electronic (top), optical (bottom)", fontsize=8)
    for ax in axes[:2]:
        ax.axis("off")
    names, values = list(accuracies), [100 * float(v) for v in accuracies.values()]
    bars = axes[2].barh(range(len(names)), values, color="tab:blue")
    axes[2].bar_label(bars, fmt="%.1f", fontsize=8)
    axes[2].set_yticks(range(len(names)), names, fontsize=8)
    axes[2].invert_yaxis()
    axes[2].set_xlim(0, 115)
    axes[2].set_xticks([0, 25, 50, 75, 100])
    axes[2].axvline(100 / len(classes), color="grey", lw=0.8, ls="--")
    axes[2].set_xlabel("test accuracy (%; dashed: chance)", fontsize=8)
    fig.tight_layout()
    return fig


__all__ = ["kernels_rgb", "mosaic", "plot_swap_summary"]
