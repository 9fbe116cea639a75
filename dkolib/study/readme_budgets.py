"""What the main chain's E2E baseline was given, in units of the main chain's DKO run.

The physical evaluation, the tolerance study and notebook 04 compare DKO with the main chain's
E2E runs (``e2e.steps`` steps, and ``e2e_1x`` / ``e2e_4x`` trained to 1x and 4x the DKO run's FLOPs); a reader needs that run's budget beside its accuracy, or an E2E
that trained for less than DKO looks like a verdict on the method. ``C_ref`` here is the main
chain's DKO run as ``dko/summary.csv`` records it (stage 1 to its plateau + stage 2): FLOPs
counted by the same meter as E2E's (``e2e/log.csv``, column ``flops``), and wall seconds.
"""

from __future__ import annotations

import pandas as pd

from .markdown import _fmt
from .paths import ProfilePaths


def e2e_budget(paths: ProfilePaths, design: str = "e2e") -> dict | None:
    """``{steps, flops, wall_s, c_ref_flops, c_ref_wall_s, flops_fraction, wall_fraction}`` of an E2E
    run of the main chain (``design``: ``e2e``, or the budget runs ``e2e_1x`` / ``e2e_4x``), or None
    when its ``log.csv`` or ``dko/summary.csv`` is missing."""
    log_csv, summary_csv = paths.results / design / "log.csv", paths.dko / "summary.csv"
    if not (log_csv.exists() and summary_csv.exists()):
        return None
    log = pd.read_csv(log_csv)
    dko = pd.read_csv(summary_csv).iloc[0]
    if not len(log):
        return None
    last = log.iloc[-1]
    out = {"steps": int(last["step"]), "flops": float(last["flops"]), "wall_s": float(last["wall_s"]),
           "c_ref_flops": float(dko["total_flops"]), "c_ref_wall_s": float(dko["total_wall_s"])}
    out["flops_fraction"] = out["flops"] / out["c_ref_flops"]
    out["wall_fraction"] = out["wall_s"] / out["c_ref_wall_s"]
    return out


def e2e_budget_sentence(paths: ProfilePaths) -> str:
    """One sentence: the E2E design's steps and budget as a multiple of the main chain's DKO run."""
    b = e2e_budget(paths)
    if b is None:
        return ""
    text = (f"The `e2e` design is the main chain's E2E run: {b['steps']} steps, {_fmt(b['flops'])} FLOPs, "
            f"{_fmt(b['flops_fraction'])}x the FLOPs of the main chain's DKO run (stage 1 + stage 2, "
            f"{_fmt(b['c_ref_flops'])}) and {_fmt(b['wall_fraction'])}x its wall time; the equal-budget "
            "study below compares the two methods at matched budgets.")
    more = [(d, e2e_budget(paths, d)) for d in ("e2e_1x", "e2e_4x")]
    more = [f"`{d}` {m['steps']} steps, {_fmt(m['flops_fraction'])}x ({_fmt(m['wall_fraction'])}x its wall time)"
            for d, m in more if m is not None]
    if more:
        text += (" The designs trained to a budget in units of that DKO run, at a constant learning rate as in "
                 "the equal-budget study (`e2e_4x` continues `e2e_1x`): " + "; ".join(more) + ".")
    return text


__all__ = ["e2e_budget", "e2e_budget_sentence"]
