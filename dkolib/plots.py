"""Figures used by the notebooks (each returns a matplotlib Figure).

:func:`save_figure` writes PNG and PDF side by side, atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .io import atomic_path  # noqa: E402


def save_figure(fig, path_stem: str | Path, dpi: int = 110) -> list[Path]:
    """Save ``fig`` as ``<path_stem>.png`` and ``.pdf``; return both paths."""
    stem = Path(path_stem)
    out = []
    for ext in (".png", ".pdf"):
        target = stem.with_suffix(ext)
        with atomic_path(target) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=ext[1:])
        out.append(target)
    return out


def plot_metaatom_library(library, wavelengths_m: Sequence[float] = (400e-9, 550e-9, 700e-9)):
    """Amplitude and phase of the meta-atom library versus radius, one line per wavelength."""
    import torch

    fig, (ax_a, ax_p) = plt.subplots(1, 2, figsize=(9, 3.2))
    radii = np.linspace(library.r_min_m, library.r_max_m, 400)
    colours = {400e-9: "tab:blue", 550e-9: "tab:green", 700e-9: "tab:red"}
    for wl in wavelengths_m:
        t = library.transmission_at(torch.tensor(radii), float(wl)).detach().numpy()
        c = colours.get(wl)
        ax_a.plot(radii * 1e9, np.abs(t), color=c, label=f"{wl * 1e9:.0f} nm")
        ax_p.plot(radii * 1e9, np.unwrap(np.angle(t)) / (2 * np.pi), color=c)
    ax_a.set(xlabel="radius (nm)", ylabel="|t|", ylim=(0, 1.05), title="transmitted amplitude")
    ax_p.set(xlabel="radius (nm)", ylabel="phase / 2π (unwrapped)", title="transmitted phase")
    ax_a.legend(frameon=False)
    fig.tight_layout()
    return fig


def plot_psf_grid(images: Sequence[np.ndarray], titles: Sequence[str], cmap: str = "magma",
                  symmetric: bool = False, ncols: int | None = None, size: float = 2.2):
    """A row/grid of 2-D arrays with shared styling (``symmetric`` for signed kernels)."""
    n = len(images)
    ncols = ncols or n
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, title in zip(axes.flat, images, titles):
        img = np.asarray(img)
        if symmetric:
            v = float(np.abs(img).max()) or 1.0
            ax.imshow(img, cmap="RdBu_r", vmin=-v, vmax=v)
        else:
            ax.imshow(img, cmap=cmap)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_profile_with_zero(x_um: np.ndarray, profile: Sequence[np.ndarray], labels: Sequence[str],
                           predicted_zero_um: float):
    """Normalised 1-D PSF cuts with a vertical line at the predicted first zero."""
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for prof, label in zip(profile, labels):
        prof = np.asarray(prof)
        ax.plot(x_um, prof / prof.max(), label=label)
    ax.axvline(predicted_zero_um, color="k", ls="--", lw=1, label="predicted first zero")
    ax.axvline(-predicted_zero_um, color="k", ls="--", lw=1)
    ax.set(xlabel="sensor position (µm)", ylabel="intensity (normalised)", yscale="log", ylim=(1e-4, 1.5))
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def plot_benchmark(frame: pd.DataFrame):
    """Seconds per PSF versus grid size, one line per engine (log-log)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for engine, group in frame.groupby("engine"):
        group = group.sort_values("n_cells")
        ax.plot(group["n_cells"], group["seconds_per_psf"], marker="o", label=engine)
    ax.set(xscale="log", yscale="log", xlabel="cells per side", ylabel="seconds per PSF")
    ax.set_xticks(sorted(frame["n_cells"].unique()))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def plot_training_curves(log: pd.DataFrame, x: str = "step", ys: Sequence[str] = ("loss",), logy: bool = True):
    """Columns ``ys`` of a training log against ``x`` (NaN rows skipped per column)."""
    fig, axes = plt.subplots(1, len(ys), figsize=(4.2 * len(ys), 3.0), squeeze=False)
    for ax, y in zip(axes.flat, ys):
        rows = log[[x, y]].dropna()
        ax.plot(rows[x], rows[y], marker="." if len(rows) < 40 else None)
        ax.set(xlabel=x, ylabel=y)
        if logy and (rows[y] > 0).all():
            ax.set_yscale("log")
    fig.tight_layout()
    return fig


def plot_depth_maps(rgb: np.ndarray, depths: Sequence[np.ndarray], titles: Sequence[str],
                    max_depth_m: float = 80.0):
    """An RGB image ([H,W,3] in [0,1]) and depth maps ([H,W] metres), shown as inverse depth."""
    n = 1 + len(depths)
    fig, axes = plt.subplots(n, 1, figsize=(6, 1.9 * n))
    axes[0].imshow(np.clip(rgb, 0, 1))
    axes[0].set_title("input", fontsize=9)
    for ax, depth, title in zip(axes[1:], depths, titles):
        depth = np.asarray(depth, dtype=float)
        inv = np.where(depth > 0, 1.0 / np.clip(depth, 1e-3, max_depth_m), np.nan)
        ax.imshow(inv, cmap="magma")
        ax.set_title(title, fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    return fig
