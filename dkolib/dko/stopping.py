"""Stopping rules: when a run has stopped improving.

:func:`plateau_reached` is stage 1's rule on validation AbsRel (``stage1.plateau_patience``),
applied by :func:`dkolib.dko.train.train_loop` after every evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence


def plateau_reached(values: Sequence[float], patience: int, tol: float) -> bool:
    """Stopping rule on a lower-is-better validation metric, one value per evaluation.

    True once the best of the last ``patience`` values improved on the best before them by
    less than ``tol`` (relative): ``min(v[-p:]) > (1 - tol) * min(v[:-p])``. Needs more than
    ``patience`` values; ``patience = 0`` never stops.
    """
    if patience < 0 or not 0.0 <= tol < 1.0:
        raise ValueError(f"plateau rule needs patience >= 0 and 0 <= tol < 1, got {patience}, {tol}")
    v = [float(x) for x in values]
    if patience == 0 or len(v) <= patience:
        return False
    return min(v[-patience:]) > (1.0 - tol) * min(v[:-patience])


def metric_trace(history: list[dict], key: str) -> list[float]:
    """The values of ``key`` in a training history (one dict per step), in order, NaNs skipped."""
    return [h[key] for h in history if key in h and h[key] == h[key]]


__all__ = ["metric_trace", "plateau_reached"]
