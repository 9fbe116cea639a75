"""Figures of the equal-budget experiment: accuracy versus budget, crop versus full-PSF evaluation.

Both take the merged runs table (columns :data:`~dkolib.study.protocol.COLUMNS`; budgets in
wall seconds or FLOPs) and save PNG + PDF at ``path`` (a stem) when given.

Neither selects a matplotlib backend: in a notebook the figure they return displays inline,
and a script without a display gets matplotlib's own headless choice (Agg). The caller owns
the returned figure (``plt.close(fig)`` in loops).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .protocol import METHODS
from .stats import check_columns

METHOD_ORDER = list(METHODS)
METHOD_COLOURS = {"electronic": "0.35", "dko": "tab:blue", "dko_ft": "tab:cyan", "e2e_scratch": "tab:red",
                  "e2e_warm": "tab:orange"}


def _save(fig, path) -> None:
    if path is not None:
        from ..plots import save_figure
        save_figure(fig, Path(path).with_suffix(""))


def plot_accuracy_vs_budget(df: pd.DataFrame, x: str = "budget_s", metric: str = "abs_rel", path=None):
    """Mean +/- std over seeds of ``metric`` versus budget, one line per method, one panel per
    (engine, eval). ``x='budget_s'`` uses the rows snapshotted on the wall-clock axis,
    ``x='budget_flops'`` those on the FLOP axis. Saves PNG + PDF at ``path`` (stem) if given.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    if x not in ("budget_s", "budget_flops"):
        raise ValueError(f"x must be 'budget_s' or 'budget_flops', got {x!r}")
    check_columns(df)
    axis = "wall" if x == "budget_s" else "flops"
    d = df[df["budget_axis"] == axis] if "budget_axis" in df else df
    if not len(d):
        raise ValueError(f"no rows snapshotted on the '{axis}' axis to plot")
    engines = sorted(d["engine"].unique())
    evals = [e for e in ("crop", "full_psf", "full_psf_noise") if e in set(d["eval"])]
    with sns.axes_style("whitegrid"):
        fig, axes = plt.subplots(len(engines), len(evals), figsize=(4.2 * len(evals), 3.3 * len(engines)),
                                 squeeze=False, sharey=True)
    for i, eng in enumerate(engines):
        for j, ev in enumerate(evals):
            ax = axes[i][j]
            sub = d[(d["engine"] == eng) & (d["eval"] == ev)]
            for method in [m for m in METHOD_ORDER if m in set(sub["method"])]:
                g = sub[sub["method"] == method].groupby("budget_fraction")
                xs = g[x].mean().to_numpy()
                mu = g[metric].mean().to_numpy()
                sd = g[metric].std(ddof=1).fillna(0.0).to_numpy()
                order = np.argsort(xs)
                xs, mu, sd = xs[order], mu[order], sd[order]
                colour = METHOD_COLOURS.get(method)
                ax.plot(xs, mu, marker="o", color=colour, label=method)
                ax.fill_between(xs, mu - sd, mu + sd, color=colour, alpha=0.2, linewidth=0)
            ax.set_xscale("log")
            ax.set_title(f"{eng} engine, eval={ev}")
            ax.set_xlabel("budget (wall s)" if x == "budget_s" else "budget (FLOPs)")
            if j == 0:
                ax.set_ylabel(metric)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False,
                   bbox_to_anchor=(0.5, 0.0))
    fig.tight_layout(rect=(0, 0.08 if len(engines) == 1 else 0.04, 1, 1))
    _save(fig, path)
    return fig


def plot_crop_vs_physical(df: pd.DataFrame, metric: str = "abs_rel", axis: str | None = None, path=None):
    """Each design's ``metric`` under the idealised crop (x) versus the full-PSF render (y),
    one marker per method, one panel per engine; the diagonal is 'no crop gap'.
    """
    import matplotlib.pyplot as plt

    check_columns(df)
    d = df
    if "budget_axis" in d and axis is not None:
        d = d[d["budget_axis"] == axis]
    keys = ["method", "engine", "seed", "budget_fraction"] + (["budget_axis"] if "budget_axis" in d else [])
    wide = d[d["eval"].isin(["crop", "full_psf"])].pivot_table(index=keys, columns="eval", values=metric)
    if "crop" not in wide or "full_psf" not in wide:
        raise ValueError("need both 'crop' and 'full_psf' rows to plot crop vs physical")
    wide = wide.dropna().reset_index()
    engines = sorted(wide["engine"].unique())
    fig, axes = plt.subplots(1, len(engines), figsize=(4.2 * len(engines), 4.0), squeeze=False)
    for j, eng in enumerate(engines):
        ax = axes[0][j]
        sub = wide[wide["engine"] == eng]
        for method in [m for m in METHOD_ORDER if m in set(sub["method"])]:
            s = sub[sub["method"] == method]
            ax.scatter(s["crop"], s["full_psf"], s=14 + 14 * s["budget_fraction"], alpha=0.75,
                       color=METHOD_COLOURS.get(method), label=method)
        lo = float(np.nanmin(sub[["crop", "full_psf"]].to_numpy()))
        hi = float(np.nanmax(sub[["crop", "full_psf"]].to_numpy()))
        ax.plot([lo, hi], [lo, hi], color="0.5", lw=1, ls="--")
        ax.set(xlabel=f"{metric} (crop kernel)", ylabel=f"{metric} (full PSF)", title=f"{eng} engine")
        ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    return fig
