"""Is the electronic reference a ceiling? Stage 1 trained on under other schedules, chosen on validation.

The main chain's stage 1 runs at a constant learning rate and stops on a validation plateau, so
that the equal-budget study's snapshots of it are that run truncated. A network that stops there
may not be the best the electronic network can do: the convergence study trains the same network
(same seed, data and batch) from scratch under other schedules, without the plateau stop:

* ``constant:N``: the constant rate for ``N`` steps (does longer training alone help?);
* ``decay<f>:N``: the rate multiplied by 0.1 from step ``f x N`` on (the usual step decay).

Each schedule is judged on the validation split (AbsRel at its last evaluation); the one with the
lowest is ``chosen``, and its test AbsRel is the best figure of the electronic network the study
reached, set beside the main chain's (``test_vs_main``); where the longest schedule is the one
chosen, the network has not converged and the ceiling lies at or below it. Selection never reads
the test split.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

from ..errors import InputError

TEST_METRICS = ("abs_rel", "a1", "rmse")
"""Test-split metrics the study reports (``test_<metric>`` columns)."""
COLUMNS = ["schedule", "steps", "lr_decay_at", "lr_decay_factor", "flops", "val_abs_rel",
           *[f"test_{m}" for m in TEST_METRICS], "test_vs_main", "chosen"]


@dataclass(frozen=True)
class Schedule:
    """A stage-1 schedule: ``steps`` AdamW steps, the rate x ``lr_decay_factor`` from
    ``lr_decay_at x steps`` on (None: constant)."""

    name: str
    steps: int
    lr_decay_at: float | None
    lr_decay_factor: float = 0.1


def parse_schedule(text: str) -> Schedule:
    """``'constant:4000'`` or ``'decay0.75:8000'`` -> :class:`Schedule`; a clear error otherwise."""
    m = re.fullmatch(r"(constant|decay(0?\.\d+)):(\d+)", text.strip())
    if m is None:
        raise InputError(f"schedule {text!r} is not 'constant:STEPS' or 'decayF:STEPS' (F in (0, 1), "
                         "e.g. decay0.75:8000)")
    steps = int(m.group(3))
    decay = None if m.group(2) is None else float(m.group(2))
    if steps < 1 or (decay is not None and not 0.0 < decay < 1.0):
        raise InputError(f"schedule {text!r}: steps must be >= 1 and the decay fraction in (0, 1)")
    return Schedule(name=text.strip(), steps=steps, lr_decay_at=decay)


def last_validation(log: pd.DataFrame, metric: str = "val_abs_rel") -> float:
    """The metric at a training log's last evaluation (rows without one are NaN)."""
    values = log[metric].dropna()
    if values.empty:
        raise InputError(f"the training log has no {metric} value: was the run evaluated at all?")
    return float(values.iloc[-1])


def schedule_row(schedule: Schedule, log: pd.DataFrame, test: dict) -> dict:
    """One row of the study from a schedule's training log and its network's test metrics
    (``test``: at least :data:`TEST_METRICS`, e.g. a row of ``stage1/metrics.csv``)."""
    return {"schedule": schedule.name, "steps": int(log["step"].iloc[-1]), "lr_decay_at": schedule.lr_decay_at,
            "lr_decay_factor": schedule.lr_decay_factor if schedule.lr_decay_at is not None else None,
            "flops": float(log["flops"].iloc[-1]), "val_abs_rel": last_validation(log),
            **{f"test_{m}": float(test[m]) for m in TEST_METRICS}}


def convergence_table(main: dict, rows: list[dict]) -> pd.DataFrame:
    """The main chain's stage 1 (``main``, a :func:`schedule_row`-like dict) and the schedules' rows,
    with ``test_vs_main`` (test AbsRel over the main chain's) and ``chosen`` (lowest validation AbsRel of all rows,
    the main chain's included: if no schedule beats it on validation, the main chain stays)."""
    table = pd.DataFrame([main, *rows])
    table["test_vs_main"] = table["test_abs_rel"] / float(main["test_abs_rel"])
    table["chosen"] = False
    table.loc[table["val_abs_rel"].idxmin(), "chosen"] = True
    return table[COLUMNS]


def chosen_row(table: pd.DataFrame) -> pd.Series:
    """The row of a :func:`convergence_table` (or ``stage1/convergence.csv``) chosen on validation."""
    return table[table["chosen"].astype(bool)].iloc[0]


DKO_MODES = ("crop", "full_psf_noise")
"""Evaluation modes of the DKO design built on the chosen schedule (``dko_<mode>_abs_rel`` columns)."""


def with_dko_design(table: pd.DataFrame, c_ref_flops: float, dko_flops: float, abs_rel: dict) -> pd.DataFrame:
    """``table`` with the DKO design built on its chosen schedule's network: ``dko_budget_fraction``
    (its stage 1 + stage 2 FLOPs ``dko_flops`` over ``c_ref_flops``, the main chain's DKO run) and
    ``dko_<mode>_abs_rel`` for each mode of ``abs_rel`` (mode -> test AbsRel), on the chosen row only."""
    if c_ref_flops <= 0:
        raise InputError(f"C_ref must be > 0 FLOPs, got {c_ref_flops}")
    out = table.copy()
    chosen = chosen_row(out).name
    out["dko_budget_fraction"] = float("nan")
    out.loc[chosen, "dko_budget_fraction"] = float(dko_flops) / float(c_ref_flops)
    for mode in DKO_MODES:
        out[f"dko_{mode}_abs_rel"] = float("nan")
        if mode in abs_rel:
            out.loc[chosen, f"dko_{mode}_abs_rel"] = float(abs_rel[mode])
    return out


def dko_sentence(table: pd.DataFrame, physical: pd.DataFrame | None) -> str:
    """The DKO design on the chosen schedule beside the main chain's DKO and E2E at 4x C_ref
    (``physical``: ``physical_eval.csv``, same test split and noise seed), or ``''``."""
    from .markdown import _fmt

    if "dko_budget_fraction" not in table or not table["dko_budget_fraction"].notna().any():
        return ""
    row = table[table["dko_budget_fraction"].notna()].iloc[0]
    got = {m: row.get(f"dko_{m}_abs_rel") for m in DKO_MODES}
    text = (f" DKO built on that network (the profile's stage 2, {_fmt(row['dko_budget_fraction'])}x C_ref in all) "
            "reads AbsRel " + " / ".join(f"{_fmt(v)} ({m})" for m, v in got.items() if pd.notna(v)))
    if physical is not None:
        ref = physical.pivot_table(index="design", columns="eval", values="abs_rel")
        others = [(d, label) for d, label in (("dko", "the main chain's DKO (1x)"), ("e2e_4x", "E2E at 4x"))
                  if d in ref.index]
        if others:
            text += ", against " + "; ".join(
                f"{label} " + " / ".join(_fmt(ref.loc[d, m]) for m in got if m in ref.columns) for d, label in others)
    return text + "."


def convergence_section(paths, figure_markdown: str = "") -> str:
    """The README's part on the study (``paths``: a :class:`~dkolib.study.paths.ProfilePaths`): the
    table, :func:`convergence_sentence` and the figure's markdown; empty without the table."""
    from .markdown import _read, _table

    table = _read(paths.stage1 / "convergence.csv")
    if table is None:
        return ""
    return ("\nStage 1 under other schedules (`stage1/convergence.csv`, `scripts/stage1_convergence.py`):\n\n"
            + _table(table) + "\n\n" + convergence_sentence(table, _read(paths.results / "physical_eval.csv"))
            + "\n\n" + figure_markdown)


def plot_convergence(logs: dict[str, pd.DataFrame], table: pd.DataFrame, path=None):
    """Validation AbsRel against training FLOPs, one line per schedule (``logs``: name -> training log,
    the main chain's first), the chosen schedule's test AbsRel as a dotted line; saved as PNG + PDF
    at ``path`` (a stem) when given. Returns the figure (the caller closes it)."""
    import matplotlib.pyplot as plt

    from ..plots import save_figure

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for i, (name, log) in enumerate(logs.items()):
        v = log.dropna(subset=["val_abs_rel"])
        colour = "k" if i == 0 else f"C{i}"
        # the schedules share their start (same seed, same rate until they decay): each line is drawn
        # over the earlier ones, and a marker shows where each run ends
        ax.plot(v["flops"], v["val_abs_rel"], lw=2.4 if i == 0 else 1.3, color=colour, label=name,
                zorder=3 if i == 0 else 2)
        ax.plot(v["flops"].iloc[-1], v["val_abs_rel"].iloc[-1], "o", color=colour, ms=6, zorder=4)
    chosen = chosen_row(table)
    ax.axhline(float(chosen["test_abs_rel"]), color="0.4", ls=":", lw=1.2,
               label=f"chosen ({chosen['schedule']}), test AbsRel")
    ax.set_xlabel("training FLOPs")
    ax.set_ylabel("validation AbsRel")
    ax.set_title("Stage 1 under other schedules")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    if path is not None:
        save_figure(fig, path)
    return fig


def convergence_sentence(table: pd.DataFrame, physical: pd.DataFrame | None = None) -> str:
    """What the study says about the electronic reference, from ``stage1/convergence.csv`` (``table``)
    and, when given, ``physical_eval.csv`` (its best hybrid design in the ``crop`` mode set beside
    the chosen schedule: a hybrid below the converged electronic network would be a finding to
    explain, a hybrid below the main chain's only a sign that stage 1 stopped early)."""
    from .markdown import _fmt

    main, chosen = table.iloc[0], chosen_row(table)
    text = (f"Is the electronic network a ceiling? Trained from scratch under other schedules without the plateau "
            f"stop ({', '.join(f'`{s}`' for s in table['schedule'].iloc[1:])}) and chosen on validation, ")
    if chosen["schedule"] == main["schedule"]:
        text += (f"no schedule beats the main chain's stage 1 on validation (test AbsRel {_fmt(main['test_abs_rel'])})"
                 "; its figure stands as the electronic reference.")
    else:
        text += (f"`{chosen['schedule']}` reads test AbsRel {_fmt(chosen['test_abs_rel'])}, "
                 f"{_fmt(chosen['test_vs_main'])}x the main chain's {_fmt(main['test_abs_rel'])}, at "
                 f"{_fmt(chosen['flops'] / main['flops'])}x its FLOPs. The main chain keeps its stage 1 ("
                 "constant rate, stopped on its plateau; the equal-budget study trains the same schedule on to "
                 "each budget), so its figure is not a ceiling. ")
        if int(chosen["steps"]) == int(table["steps"].max()):
            text += ("The longest schedule tried is the best on validation: the network has not converged there, "
                     "and the ceiling of an electronic network of this size lies at or below this figure.")
        else:
            text += ("A longer schedule did not read better on validation: this figure is the ceiling of the "
                     "schedules tried.")
    text += dko_sentence(table, physical)
    if physical is not None and not physical.empty:
        crop = physical[(physical["eval"] == "crop") & ~physical["design"].isin(["electronic", "ideal_optics"])]
        if not crop.empty:
            best = crop.loc[crop["abs_rel"].idxmin()]
            ceiling = float(chosen["test_abs_rel"])
            verdict = "below" if best["abs_rel"] < ceiling else "not below"
            text += (f" The main chain's best hybrid design on the idealised crop, `{best['design']}` at "
                     f"{_fmt(best['abs_rel'])}, is {verdict} that ceiling ({_fmt(best['abs_rel'] / ceiling)}x).")
    return text


__all__ = ["COLUMNS", "DKO_MODES", "Schedule", "TEST_METRICS", "chosen_row", "convergence_section",
           "convergence_sentence", "convergence_table", "dko_sentence", "last_validation", "parse_schedule",
           "plot_convergence", "schedule_row", "with_dko_design"]
