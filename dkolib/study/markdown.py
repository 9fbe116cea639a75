"""Markdown for the README's generated sections: a CSV read where it exists, numbers and tables."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd


def _read(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.exists() else None


def _fmt(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    ax = abs(float(x))
    if ax != 0 and (ax >= 1e4 or ax < 1e-3):
        return f"{float(x):.{digits - 1}e}"
    return f"{float(x):.{digits}g}"


def _table(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(str(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(v if isinstance(v, str) else _fmt(v) for v in row) + " |")
    return "\n".join(lines)


def _renamed(frame: pd.DataFrame, columns: dict) -> pd.DataFrame:
    """The columns of ``columns`` that ``frame`` has, in that order, renamed to its values."""
    return frame[[c for c in columns if c in frame]].rename(columns=columns)


def splice_between(text: str, section: str, start: str, end: str) -> str:
    """Replace what lies between the markers ``start`` and ``end`` of ``text`` with ``section``."""
    if start not in text or end not in text:
        raise ValueError(f"README has no '{start}' ... '{end}' markers to hold the section")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{section.strip()}\n{end}{tail}"
