"""Figures of the equal-budget experiment: accuracy versus budget, crop versus full-PSF evaluation,
and the budget each method needs to come within a factor of the electronic network.

:func:`plot_accuracy_vs_budget` and :func:`plot_crop_vs_physical` take the merged runs table
(columns :data:`~dkolib.study.protocol.COLUMNS`); :func:`plot_time_to_accuracy` takes the table of
:func:`~dkolib.study.stats.time_to_accuracy`. Each saves PNG + PDF at ``path`` (a stem) when given.

Budgets are drawn as multiples of ``C_ref`` (the cost of one full DKO run: 0.25x, 0.5x, 1x, ...) on
a log axis; the accuracy figure repeats them in absolute units (wall seconds or FLOPs, the mean
``C_ref`` of that engine) on a top axis. ``reference_lines`` (e.g. ``{"constant predictor": 0.525,
"electronic (stage 1)": 0.163}``, values in the plotted metric's units) are drawn as labelled
horizontal lines on every accuracy panel.

None selects a matplotlib backend: in a notebook the figure they return displays inline,
and a script without a display gets matplotlib's own headless choice (Agg). The caller owns
the returned figure (``plt.close(fig)`` in loops).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from .protocol import METHODS
from .stats import check_columns

METHOD_ORDER = list(METHODS)
METHOD_COLOURS = {"electronic": "0.35", "dko": "tab:blue", "dko_ft": "tab:cyan", "e2e_scratch": "tab:red",
                  "e2e_warm": "tab:orange"}
REFERENCE_STYLES = ({"color": "k", "ls": ":", "lw": 1.2}, {"color": "0.4", "ls": "-.", "lw": 1.2},
                    {"color": "tab:purple", "ls": "--", "lw": 1.0})
EVAL_ORDER = ("crop", "full_psf", "full_psf_noise")


def _save(fig, path) -> None:
    if path is not None:
        from ..plots import save_figure
        save_figure(fig, Path(path).with_suffix(""))


def compact(value: float) -> str:
    """A short tick label: ``4.2e11`` for large or small numbers, else 3 significant digits (``37.9``)."""
    v = float(value)
    if v != 0 and (abs(v) >= 1e4 or abs(v) < 1e-2):
        mant, exp = f"{v:.1e}".split("e")
        return f"{mant}e{int(exp)}"
    return f"{v:.3g}"


def fraction_label(f: float) -> str:
    """``0.25x``, ``1x``, ``4x``: a budget as a multiple of ``C_ref``."""
    return f"{f:g}x"


def _fraction_axis(ax, fractions, which: str = "x") -> None:
    """Log axis with one labelled tick per ladder fraction and no minor ticks."""
    import matplotlib.ticker as mticker

    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    fr = sorted({float(f) for f in fractions if f > 0})
    axis.set_major_locator(mticker.FixedLocator(fr))
    axis.set_major_formatter(mticker.FixedFormatter([fraction_label(f) for f in fr]))
    axis.set_minor_locator(mticker.NullLocator())


def _absolute_top_axis(ax, fractions, c_ref: float, unit: str) -> None:
    """A top axis at the same positions labelled in absolute units (``c_ref`` per unit fraction)."""
    import matplotlib.ticker as mticker

    if not (math.isfinite(c_ref) and c_ref > 0):
        return
    top = ax.secondary_xaxis("top", functions=(lambda f: f * c_ref, lambda b: b / c_ref))
    fr = sorted({float(f) for f in fractions if f > 0})
    top.xaxis.set_major_locator(mticker.FixedLocator([f * c_ref for f in fr]))
    top.xaxis.set_major_formatter(mticker.FixedFormatter([compact(f * c_ref) for f in fr]))
    top.xaxis.set_minor_locator(mticker.NullLocator())
    top.tick_params(labelsize=7)
    top.set_xlabel(unit, fontsize=8)


def _reference_lines(ax, reference_lines: dict | None) -> None:
    for (label, value), style in zip((reference_lines or {}).items(), REFERENCE_STYLES * 3):
        if value is not None and math.isfinite(float(value)):
            ax.axhline(float(value), label=f"{label} ({compact(value)})", **style)


def c_ref_of(rows: pd.DataFrame, axis: str) -> float:
    """The mean ``C_ref`` of ``rows`` in absolute units: mean of ``budget_flops / budget_fraction``
    (``axis='flops'``) or ``budget_s / budget_fraction`` (``'wall'``), over rows with a positive fraction."""
    col = "budget_flops" if axis == "flops" else "budget_s"
    pos = rows[rows["budget_fraction"] > 0]
    return float((pos[col] / pos["budget_fraction"]).mean()) if len(pos) else math.nan


def plot_accuracy_vs_budget(df: pd.DataFrame, x: str = "budget_s", metric: str = "abs_rel", path=None,
                            reference_lines: dict[str, float] | None = None):
    """Mean +/- std over seeds of ``metric`` versus budget, one line per method, one panel per
    (engine, eval). ``x='budget_s'`` uses the rows snapshotted on the wall-clock axis,
    ``x='budget_flops'`` those on the FLOP axis; the bottom axis is the budget in multiples of
    ``C_ref`` (log), the top axis the same budgets in seconds / FLOPs. ``reference_lines``: label ->
    value of ``metric``, drawn as horizontal lines. Saves PNG + PDF at ``path`` (stem) if given.
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
    if "budget_fraction" not in d:
        raise ValueError("plot_accuracy_vs_budget needs the 'budget_fraction' column (multiples of C_ref)")
    engines = sorted(d["engine"].unique())
    evals = [e for e in EVAL_ORDER if e in set(d["eval"])]
    ladder = sorted(d["budget_fraction"].unique())
    unit = "budget (wall s)" if axis == "wall" else "budget (FLOPs)"
    with sns.axes_style("whitegrid"):
        fig, axes = plt.subplots(len(engines), len(evals), figsize=(4.4 * len(evals), 3.6 * len(engines)),
                                 squeeze=False, sharey=True)
    for i, eng in enumerate(engines):
        for j, ev in enumerate(evals):
            ax = axes[i][j]
            sub = d[(d["engine"] == eng) & (d["eval"] == ev)]
            for method in [m for m in METHOD_ORDER if m in set(sub["method"])]:
                g = sub[sub["method"] == method].groupby("budget_fraction")[metric]
                xs = np.asarray(g.mean().index, dtype=float)
                mu = g.mean().to_numpy()
                sd = g.std(ddof=1).fillna(0.0).to_numpy()
                colour = METHOD_COLOURS.get(method)
                ax.plot(xs, mu, marker="o", color=colour, label=method)
                ax.fill_between(xs, mu - sd, mu + sd, color=colour, alpha=0.2, linewidth=0)
            _reference_lines(ax, reference_lines)
            _fraction_axis(ax, ladder)
            _absolute_top_axis(ax, ladder, c_ref_of(d[d["engine"] == eng], axis), unit)
            ax.set_title(f"{eng} engine, eval={ev}", fontsize=10)
            ax.set_xlabel("budget (multiples of C_ref = one full DKO run)", fontsize=8)
            if j == 0:
                ax.set_ylabel(metric)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        ncol = max(1, min(len(labels), int(fig.get_figwidth() / 2.2)))
        fig.legend(handles, labels, loc="lower center", ncol=ncol, frameon=False, fontsize=8,
                   bbox_to_anchor=(0.5, 0.0))
        rows = math.ceil(len(labels) / ncol)
        fig.tight_layout(rect=(0, min(0.06 * rows / len(engines), 0.3), 1, 1))
    else:
        fig.tight_layout()
    _save(fig, path)
    return fig


def plot_crop_vs_physical(df: pd.DataFrame, metric: str = "abs_rel", axis: str | None = None, path=None,
                          reference_lines: dict[str, float] | None = None):
    """Each design's ``metric`` under the idealised crop (x) versus the full-PSF render (y),
    one marker per method, one panel per engine; the diagonal is 'no crop gap'.
    ``reference_lines``: label -> value of ``metric``, drawn as horizontal lines.
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
        _reference_lines(ax, reference_lines)
        ax.set(xlabel=f"{metric} (crop kernel)", ylabel=f"{metric} (full PSF)", title=f"{eng} engine")
        ax.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    _save(fig, path)
    return fig


def plot_time_to_accuracy(tta: pd.DataFrame, metric: str = "abs_rel", axis: str = "flops", path=None):
    """Budget (multiples of ``C_ref``, log) each method needs to come within each target ratio of
    the electronic network's ``metric``: one bar per (method, target ratio), one panel per (engine,
    eval), the bootstrap 95 % CI as error bars (an open upper bound is drawn to the top with a
    caret). A method whose median seed never gets there gets a hatched bar to the top marked
    "never <= Nx" (N = the largest budget of its ladder). ``tta``: :func:`~dkolib.study.stats.time_to_accuracy`.
    """
    import matplotlib.pyplot as plt

    need = {"method", "engine", "eval", "axis", "metric", "target_ratio", "budget_needed", "ci_lo", "ci_hi",
            "max_fraction"}
    missing = sorted(need - set(tta.columns))
    if missing:
        raise ValueError(f"time-to-accuracy table is missing columns {missing}")
    d = tta[(tta["metric"] == metric) & (tta["axis"] == axis)]
    if not len(d):
        raise ValueError(f"no time-to-accuracy rows for metric {metric!r} on the {axis!r} axis")
    engines = sorted(d["engine"].unique())
    evals = [e for e in EVAL_ORDER if e in set(d["eval"])] + sorted(set(d["eval"]) - set(EVAL_ORDER))
    targets = sorted(d["target_ratio"].unique(), reverse=True)
    finite = pd.concat([d["budget_needed"], d["ci_lo"], d["ci_hi"]]).dropna()
    finite = finite[finite > 0]
    largest = float(d["max_fraction"].max())
    lowest = min(float(finite.min()) if len(finite) else largest, largest)
    top, floor = largest * 1.8, lowest / 1.8
    ticks = [2.0 ** k for k in range(math.floor(math.log2(lowest)), math.floor(math.log2(largest)) + 1)]
    shades = plt.get_cmap("viridis")(np.linspace(0.15, 0.8, len(targets)))
    fig, axes = plt.subplots(len(engines), len(evals), figsize=(4.6 * len(evals), 3.6 * len(engines)),
                             squeeze=False, sharey=True)
    width = 0.8 / len(targets)
    for i, eng in enumerate(engines):
        for j, ev in enumerate(evals):
            ax = axes[i][j]
            sub = d[(d["engine"] == eng) & (d["eval"] == ev)]
            methods = [m for m in METHOD_ORDER if m in set(sub["method"])]
            for k, (r, colour) in enumerate(zip(targets, shades)):
                for m_i, method in enumerate(methods):
                    row = sub[(sub["method"] == method) & np.isclose(sub["target_ratio"], r)]
                    if not len(row):
                        continue
                    row = row.iloc[0]
                    xpos = m_i - 0.4 + width * (k + 0.5)
                    if math.isfinite(row["budget_needed"]):
                        ax.bar(xpos, row["budget_needed"] - floor, bottom=floor, width=width * 0.9, color=colour)
                        lo = row["ci_lo"] if math.isfinite(row["ci_lo"]) else row["budget_needed"]
                        hi = row["ci_hi"] if math.isfinite(row["ci_hi"]) else top
                        ax.errorbar(xpos, row["budget_needed"], yerr=[[row["budget_needed"] - lo],
                                                                      [hi - row["budget_needed"]]],
                                    color="k", lw=0.8, capsize=2)
                        if not math.isfinite(row["ci_hi"]):
                            ax.plot(xpos, top, marker="^", color="k", ms=3)
                    else:
                        ax.bar(xpos, top - floor, bottom=floor, width=width * 0.9, color="none",
                               edgecolor=colour, hatch="///")
                        ax.text(xpos, floor * 1.15, f"never ≤{row['max_fraction']:g}x", rotation=90,
                                ha="center", va="bottom", fontsize=6,
                                bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})
            ax.axhline(float(sub["max_fraction"].max()) if len(sub) else top, color="0.5", ls="--", lw=0.8)
            _fraction_axis(ax, ticks, which="y")
            ax.set_ylim(floor, top)
            ax.set_xticks(range(len(methods)))
            ax.set_xticklabels(methods, rotation=25, ha="right", fontsize=8)
            ax.set_xlim(-0.6, len(methods) - 0.4)
            ax.set_title(f"{eng} engine, eval={ev}, {axis} budget", fontsize=9)
            if j == 0:
                ax.set_ylabel(f"budget needed for {metric}\n(multiples of C_ref)", fontsize=8)
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(color=c, label=f"within {r:g}x of electronic") for r, c in zip(targets, shades)]
    handles += [Patch(facecolor="none", edgecolor="0.3", hatch="///", label="never within the ladder"),
                Line2D([], [], color="k", lw=0.8, marker="_", label="95 % CI over seeds (^ = open)"),
                Line2D([], [], color="0.5", ls="--", lw=0.8, label="largest budget")]
    ncol = max(1, min(len(handles), int(fig.get_figwidth() / 2.2)))
    fig.legend(handles=handles, loc="lower center", ncol=ncol, frameon=False, fontsize=8, bbox_to_anchor=(0.5, 0.0))
    fig.tight_layout(rect=(0, min(0.05 * math.ceil(len(handles) / ncol) / len(engines), 0.3), 1, 1))
    _save(fig, path)
    return fig
