"""Figures used by the notebooks (each returns a matplotlib Figure).

:func:`save_figure` writes PNG and PDF side by side, atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .io import atomic_path


def save_figure(fig, path_stem: str | Path, dpi: int = 110) -> None:
    """Save ``fig`` as ``<path_stem>.png`` and ``.pdf`` (atomically, folders created)."""
    stem = Path(path_stem)
    for ext in (".png", ".pdf"):
        with atomic_path(stem.with_suffix(ext)) as tmp:
            # no creation date in the PDF: a rerun that draws the same figure writes the same bytes
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=ext[1:],
                        metadata={"CreationDate": None} if ext == ".pdf" else None)


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


def plot_samples(rgbs: Sequence[np.ndarray], depths: Sequence[np.ndarray], max_depth_m: float = 80.0):
    """Pairs of RGB images ([H,W,3] in [0,1]) and depth maps ([H,W] metres), one row each."""
    n = len(rgbs)
    fig, axes = plt.subplots(n, 2, figsize=(9, 1.5 * n + 0.3), squeeze=False)
    for row, (rgb, depth) in enumerate(zip(rgbs, depths)):
        axes[row, 0].imshow(np.clip(rgb, 0, 1))
        im = axes[row, 1].imshow(np.asarray(depth), cmap="magma_r", vmin=0, vmax=max_depth_m)
        for ax in axes[row]:
            ax.axis("off")
    axes[0, 0].set_title("RGB", fontsize=9)
    axes[0, 1].set_title("depth (m)", fontsize=9)
    fig.colorbar(im, ax=axes[:, 1].tolist(), shrink=0.8)
    return fig


def plot_histogram(frame: pd.DataFrame, x_lo: str = "bin_lo_m", x_hi: str = "bin_hi_m", y: str = "fraction",
                   xlabel: str = "depth (m)"):
    """A bar histogram from a table of bin edges and heights."""
    fig, ax = plt.subplots(figsize=(5.5, 3.0))
    ax.bar(frame[x_lo], frame[y], width=frame[x_hi] - frame[x_lo], align="edge", edgecolor="white")
    ax.set(xlabel=xlabel, ylabel=y)
    fig.tight_layout()
    return fig


def plot_fidelity(channels: pd.DataFrame, elements: pd.DataFrame):
    """Histograms of per-channel error / correlation and per-element optical efficiency."""
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.0))
    axes[0].hist(channels["norm_err"].dropna(), bins=20, color="tab:red")
    axes[0].set(xlabel="‖gP − K‖ / ‖K‖ (per channel)", ylabel="count")
    axes[1].hist(channels["corr"].dropna(), bins=20, color="tab:blue")
    axes[1].set(xlabel="correlation (per channel)")
    for col, colour in (("eff_crop", "tab:green"), ("eff_render", "tab:gray")):
        if col in elements:
            axes[2].hist(elements[col].dropna(), bins=20, alpha=0.7, color=colour, label=col)
    axes[2].set(xlabel="fraction of aperture energy (per metasurface)")
    axes[2].legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def plot_physical_eval(frame: pd.DataFrame, metric: str = "abs_rel"):
    """Grouped bars: ``metric`` per design, one bar per evaluation mode (crop / full PSF / + noise /
    whole sensor / + noise)."""
    import seaborn as sns

    n = frame["design"].nunique()
    fig, ax = plt.subplots(figsize=(max(6.5, 0.75 * n + 1.5), 3.4))
    sns.barplot(data=frame, x="design", y=metric, hue="eval", ax=ax)
    ax.set(xlabel="", ylabel=metric)
    ax.tick_params(axis="x", labelrotation=30)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    ax.legend(frameon=False, fontsize=8, title=None)
    fig.tight_layout()
    return fig


def plot_crosstalk(table: pd.DataFrame, profile_weight: float | None = None):
    """Kernel error against the light in the neighbours' regions, one point per leakage weight
    (:func:`dkolib.study.crosstalk.crosstalk_table`); the profile's weight ringed."""
    t = table.sort_values("leakage_weight")
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    ax.plot(t["neighbours"], t["err_elem"], marker="o")
    for _, r in t.iterrows():
        ax.annotate(f"{r['leakage_weight']:g}", (r["neighbours"], r["err_elem"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)
    if profile_weight is not None and (t["leakage_weight"] == profile_weight).any():
        r = t[t["leakage_weight"] == profile_weight].iloc[0]
        ax.plot([r["neighbours"]], [r["err_elem"]], marker="o", ms=14, mfc="none", mec="k", ls="none",
                label="the profile's weight")
        ax.legend(frameon=False, fontsize=8)
    ax.set(xlabel="light in the neighbours' read-out regions (fraction of the aperture's)",
           ylabel="kernel error (per metasurface)", title="stage 2: fidelity against crosstalk (leakage weight)")
    fig.tight_layout()
    return fig


def plot_fidelity_light_tradeoff(study: pd.DataFrame, chosen_weight: float | None = None):
    """Stage-2 Pareto: channel kernel error against the light in the crop, one point per loss setting.

    ``study``: rows of ``scripts/synthesis_study.py`` with ``grid == 'leakage'`` (columns
    ``loss``, ``leakage_weight``, ``step_cap``, ``err_elem``, ``eff_crop``); the last step cap
    of each setting is drawn, and the ``smoothness`` grid's rows (smoother phase at the profile's
    weight) as labelled triangles. ``chosen_weight`` is ringed.
    """
    rows = study[study["grid"] == "leakage"]
    rows = rows[rows["step_cap"] == rows.groupby(["loss", "leakage_weight"])["step_cap"].transform("max")]
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for loss, marker in (("leakage", "o"), ("paper", "s")):
        sel = rows[rows["loss"] == loss].sort_values("leakage_weight")
        ax.plot(sel["eff_crop"], sel["err_elem"], marker=marker, ls="-" if loss == "leakage" else "none",
                label="leakage loss (weight)" if loss == "leakage" else "paper loss")
        if loss == "leakage":
            for _, r in sel.iterrows():
                ax.annotate(f"{r['leakage_weight']:g}", (r["eff_crop"], r["err_elem"]), textcoords="offset points",
                            xytext=(4, 4), fontsize=8)
    smooth = study[study["grid"] == "smoothness"] if "phase_block_cells" in study else study.iloc[:0]
    if len(smooth):
        keys = ["init", "init_corr_cells", "smoothness_weight", "phase_block_cells"]
        smooth = smooth[smooth["step_cap"] == smooth.groupby(keys)["step_cap"].transform("max")]
        families = (("correlated start (cells)", smooth["init"] == "smooth_random", "init_corr_cells", "^"),
                    ("smoothness term (weight)", smooth["smoothness_weight"] > 0, "smoothness_weight", "v"),
                    ("coarser grid (cells per block)", smooth["phase_block_cells"] > 1, "phase_block_cells", "D"))
        for j, (label, sel, key, marker) in enumerate(families):
            part = smooth[sel]
            if part.empty:
                continue
            ax.scatter(part["eff_crop"], part["err_elem"], marker=marker, color=f"C{j + 2}", label=label)
            for _, r in part.iterrows():
                ax.annotate(f"{r[key]:g}", (r["eff_crop"], r["err_elem"]), textcoords="offset points",
                            xytext=(4, -9), fontsize=7, color=f"C{j + 2}")
    if chosen_weight is not None:
        pick = rows[(rows["loss"] == "leakage") & np.isclose(rows["leakage_weight"], chosen_weight)]
        ax.scatter(pick["eff_crop"], pick["err_elem"], s=160, facecolors="none", edgecolors="k", label="chosen")
    ax.set_xlabel("light in the 7 x 7 crop (fraction of the aperture energy)")
    ax.set_ylabel("channel kernel error ||gP - K|| / ||K||")
    ax.set_title("Stage 2: kernel fidelity against light in the crop")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_operating_point(table: pd.DataFrame, metric: str = "abs_rel"):
    """Depth error of the DKO design against stage 2's leakage weight, per evaluation mode.

    ``table``: rows of ``scripts/operating_point.py`` (columns ``design``, ``leakage_weight``,
    ``eval``, ``metric``, ``light_crop``, ``profile_weight``); the ``ideal_optics`` rows (the network
    read through ideal optics) are drawn as horizontal lines in the mode's colour.
    """
    dko = table[table["design"] == "dko"]
    ideal = table[table["design"] == "ideal_optics"]
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    for mode, sel in dko.groupby("eval", sort=False):
        sel = sel.sort_values("leakage_weight")
        (line,) = ax.plot(sel["leakage_weight"], sel[metric], marker="o", label=f"DKO, {mode}")
        bound = ideal[ideal["eval"] == mode]
        if len(bound):
            ax.axhline(float(bound[metric].iloc[0]), color=line.get_color(), ls=":", lw=1,
                       label=f"ideal optics, {mode}")
    pick = dko[dko["profile_weight"].astype(bool) & (dko["eval"] == "full_psf_noise")]
    ax.scatter(pick["leakage_weight"], pick[metric], s=160, facecolors="none", edgecolors="k",
               label="the profile's weight")
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlabel("leakage weight of stage 2")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title("Stage-2 operating point: accuracy under sensor noise")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_sensor_frame(canvas: np.ndarray, extent_mm: tuple[float, float, float, float], title: str = ""):
    """A whole-sensor image (log scale: the halo and the crosstalk are orders below the images)."""
    fig, ax = plt.subplots(figsize=(9, 4.5))
    floor = max(float(canvas.max()) * 1e-4, 1e-12)
    im = ax.imshow(np.log10(np.maximum(canvas, floor)), extent=extent_mm, cmap="magma", origin="lower")
    ax.set_xlabel("sensor x (mm)")
    ax.set_ylabel("sensor y (mm)")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="log10 signal (1 = white scene through a lossless lens)")
    fig.tight_layout()
    return fig


def plot_light_budget(light: pd.DataFrame, columns=("kernel", "render_window", "own_region", "neighbours",
                                                      "beyond_window")):
    """Mean fraction of each metasurface's incident light per destination, by design and wavelength."""
    mean = light.groupby(["design", "wavelength_nm"])[list(columns)].mean()
    fig, ax = plt.subplots(figsize=(8, 3.6))
    labels = [f"{d}\n{w:g} nm" for d, w in mean.index]
    x = np.arange(len(mean))
    width = 0.8 / len(columns)
    for j, c in enumerate(columns):
        ax.bar(x + (j - (len(columns) - 1) / 2) * width, mean[c].to_numpy(), width, label=c.replace("_", " "))
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("fraction of the light on the aperture")
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    return fig
