"""Figures of the fabrication studies (each returns a matplotlib Figure; save with ``dkolib.plots.save_figure``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import pandas as pd

TITLES = {"radius_random": "random radius error (sigma)", "radius_bias": "radius bias",
          "sensor_distance": "sensor distance error", "photons": "photons per pixel",
          "read_noise": "read noise", "bandwidth": "illumination bandwidth"}
_REFERENCE_STYLE = {"electronic": ("k", "--"), "constant": ("0.5", ":")}


def plot_tolerances(table: pd.DataFrame, nominal: Mapping[str, float], metric: str = "abs_rel",
                    perturbations: Sequence[str] | None = None, ncols: int = 3):
    """``metric`` against the error level, one panel per perturbation, one line per design.

    Args:
        table: rows of :func:`dkolib.fab.tolerances.run_tolerance_study`.
        nominal: perturbation -> the level of the unperturbed design
            (:func:`dkolib.fab.tolerances.nominal_levels`), where each design's
            unperturbed row is drawn.
        metric: a metric column (lower is better for abs_rel, sq_rel, rmse, rmse_log).
        perturbations: panels to draw (default: those in the table, in :data:`TITLES` order).
    Lines are means over the random draws; the shaded band spans the draws (min to max).
    Designs with only an unperturbed row (the electronic network, the constant predictor)
    are horizontal lines.
    """
    perts = list(perturbations or [p for p in TITLES if p in set(table["perturbation"])])
    if not perts:
        raise ValueError(f"the table holds no perturbed rows (perturbations {sorted(set(table['perturbation']))})")
    counts = table.groupby("design").size()
    designs = [d for d in table["design"].unique() if counts[d] > 1]
    references = [d for d in table["design"].unique() if counts[d] == 1]
    nrows = -(-len(perts) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.9 * nrows), squeeze=False)
    for ax in axes.flat[len(perts):]:
        ax.axis("off")
    base = table[table["perturbation"] == "none"].set_index("design")[metric]
    for ax, pert in zip(axes.flat, perts):
        rows = table[table["perturbation"] == pert]
        for k, design in enumerate(designs):
            stats = rows[rows["design"] == design].groupby("level")[metric].agg(["mean", "min", "max"])
            if design in base.index:
                level = nominal[pert]
                stats.loc[level] = (base[design],) * 3
            stats = stats.sort_index()
            colour = f"C{k}"
            ax.plot(stats.index, stats["mean"], marker="o", ms=3, color=colour, label=design)
            if (stats["max"] > stats["min"]).any():
                ax.fill_between(stats.index, stats["min"], stats["max"], color=colour, alpha=0.2, lw=0)
        for ref in references:
            colour, style = _REFERENCE_STYLE.get(ref, ("0.3", "-."))
            ax.axhline(base[ref], color=colour, ls=style, lw=1, label=ref)
        unit = rows["unit"].iloc[0] if len(rows) else ""
        ax.set(title=TITLES.get(pert, pert), xlabel=f"level ({unit})" if unit else "level", ylabel=metric)
        if pert == "photons":
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False, fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


__all__ = ["TITLES", "plot_tolerances"]
