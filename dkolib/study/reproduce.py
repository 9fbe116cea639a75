"""Does a fresh run reproduce the committed result tables? Compare two trees of CSVs.

Which files
    Every ``*.csv`` below the expected ``results/<profile>`` tree (recursively), plus any extra
    CSV files or folders named relative to it (``../costs.csv``, ``../benchmarks``, ...). Folders
    named ``notebooks`` (executed notebooks) and scratch folders ending in ``.work`` (git-ignored
    snapshot runs, named after wall-clock-dependent steps) are skipped, and so is everything that
    is not CSV (``readme_results.md`` is regenerated text). A file is named by its path relative
    to the profile tree (``dko/summary.csv``, ``../costs.csv``); an expected file that the actual
    tree lacks fails, a file only in the actual tree is reported.

Which rows
    Rows are matched on key columns: every column that is non-float (string, integer, bool) in
    both tables, plus the float identifiers :data:`IDENTIFIER_FLOATS`, minus the integer outcomes
    :data:`NON_KEY_INTEGERS` (steps reached, seed counts, threads). Repeated keys are matched in
    order. A row present in one table only fails, unless it is load-dependent (below) or in a
    timing file, where it is reported.

Which columns, and with which tolerance
    * ``timing``: measured times, throughput, peak memory and the thread count they were taken
      with (:func:`is_timing_column`), and every column of files under ``benchmarks/`` and of the
      pipeline's own timing tables :data:`TIMING_FILES`. Reported, never failed.
    * ``load-dependent``: in a table with a ``budget_axis`` column, every other value of a row
      with ``budget_axis == 'wall'`` (where a run was cut off depends on how fast the machine
      ran); likewise the length of a training log (``step`` column) inside an ``equal_budget``
      folder, which runs until its last wall-clock target. Reported (median and max relative
      difference), never failed.
    * ``deterministic``: every other value. Fails where ``|actual - expected| > atol + rtol *
      |expected|`` (defaults :data:`DEFAULT_RTOL`, :data:`DEFAULT_ATOL`); NaN equals NaN;
      non-numeric values must be equal. These are the semantics of
      ``numpy.isclose(actual, expected, rtol, atol, equal_nan=True)`` (:meth:`Tolerance.close`),
      which does the check.

Statistical consistency of the wall axis
    For each matched ``budget_axis == 'wall'`` row of a table with ``ratio_vs_dko``,
    ``ratio_ci_lo`` and ``ratio_ci_hi`` (``equal_budget_summary.csv``), the actual E2E/DKO ratio
    is ``consistent`` if it lies inside the expected bootstrap interval or is close to one of its
    ends by the same tolerance, else ``inconsistent``. Inconsistent rows fail only when asked (``strict_wall``).

The report
    One :class:`ReportRow` per (file, column, kind) with ``kind`` one of ``deterministic``,
    ``load-dependent``, ``timing``; plus rows of kind ``missing-file`` / ``extra-file``,
    ``missing-row`` / ``extra-row`` (one per file and status, the first keys in ``detail``),
    ``missing-column`` / ``extra-column`` and ``wall-ratio``. ``status`` is ``ok`` / ``FAIL`` for
    checked values, ``report`` for report-only ones, ``consistent`` / ``inconsistent`` for ratios.
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping
from dataclasses import astuple, dataclass, field, fields
from io import StringIO
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
from pandas.api.types import is_float_dtype, is_numeric_dtype

from ..errors import InputError
from ..io import atomic_path
from ..root import project_root

DEFAULT_RTOL = 1e-5
DEFAULT_ATOL = 1e-8
SKIP_DIR_NAMES = ("notebooks",)
SKIP_DIR_SUFFIXES = (".work",)
GIT_SHARED_RESULTS = ("../costs.csv", "../benchmarks", "../metaatoms")
"""Results outside ``results/<profile>`` that ``--expected-git`` compares by default."""
IDENTIFIER_FLOATS = ("budget_fraction", "lr_mult")
NON_KEY_INTEGERS = ("steps", "ref_step", "n_seeds", "ratio_n_seeds", "threads")
"""Integer columns that are outcomes (or machine settings), compared as values, not matched on."""
TIMING_SUBSTRINGS = ("wall", "cpu_s", "seconds", "spent_s", "budget_s", "_per_s", "img_s", "throughput", "time",
                     "_ms", "mem_mb", "rss", "_s_per_", "speedup", "threads")
TIMING_TEXT_COLUMNS = ("psf_source",)
"""Text columns that say where a measured time came from (measured, cached, shared): timing too."""
TIMING_DIRS = ("benchmarks",)
TIMING_FILES = ("dag_timing.csv", "dag_jobs.csv")
"""Tables of how long the pipeline's jobs took (``scripts/dag_timing.py``): timing only."""
WALL_LENGTH_DIRS = ("equal_budget",)
RATIO_COLUMNS = ("ratio_vs_dko", "ratio_ci_lo", "ratio_ci_hi")
SUMMARY_LIST_LIMIT = 20
"""At most this many failures / inconsistent ratios are listed in the printed summary."""

DETERMINISTIC, LOAD_DEPENDENT, TIMING = "deterministic", "load-dependent", "timing"
OK, FAIL, REPORT, CONSISTENT, INCONSISTENT = "ok", "FAIL", "report", "consistent", "inconsistent"


class ResultsTreeError(InputError):
    """A tree of results cannot be compared (missing folder, no CSV, unknown git ref)."""


@dataclass(frozen=True)
class Tolerance:
    """``|actual - expected| <= atol + rtol * |expected|`` passes (``numpy.isclose``'s rule)."""

    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL

    def close(self, actual, expected, equal_nan: bool = True) -> np.ndarray:
        """Element-wise pass/fail: ``numpy.isclose`` with this tolerance (NaN equals NaN with
        ``equal_nan``; equal infinities are close); non-numeric values pass where their text is equal."""
        if isinstance(actual, pd.Series) and not (is_numeric_dtype(actual) and is_numeric_dtype(expected)):
            return actual.astype(str).to_numpy() == expected.astype(str).to_numpy()
        return np.isclose(np.asarray(actual, dtype=float), np.asarray(expected, dtype=float),
                          rtol=self.rtol, atol=self.atol, equal_nan=equal_nan)

    def __str__(self) -> str:
        return f"rtol={self.rtol:g} atol={self.atol:g}"


@dataclass
class ReportRow:
    """One line of the report: a (file, column, kind) comparison, a missing item or a wall ratio."""

    file: str
    column: str
    kind: str
    n: int
    max_abs_diff: float = float("nan")
    max_rel_diff: float = float("nan")
    median_rel_diff: float = float("nan")
    tolerance: str = ""
    status: str = OK
    detail: str = ""


REPORT_COLUMNS = [f.name for f in fields(ReportRow)]


@dataclass
class Comparison:
    """All report rows, and the number of matched rows per file."""

    rows: list[ReportRow] = field(default_factory=list)
    matched_rows: dict[str, int] = field(default_factory=dict)

    def failures(self, strict_wall: bool = False) -> list[ReportRow]:
        """Rows that make the run not reproduced (``inconsistent`` wall ratios only if ``strict_wall``)."""
        bad = {FAIL, INCONSISTENT} if strict_wall else {FAIL}
        return [r for r in self.rows if r.status in bad]

    def inconsistent(self) -> list[ReportRow]:
        return [r for r in self.rows if r.status == INCONSISTENT]

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([astuple(r) for r in self.rows], columns=REPORT_COLUMNS)


# =========================================================================== classification
def is_timing_column(name: str) -> bool:
    """Measured times, throughput, peak memory, threads: ``wall_s``, ``seconds_per_iter``, ``peak_mem_mb``, ..."""
    low = name.lower()
    return low.endswith("_s") or low in TIMING_TEXT_COLUMNS or any(s in low for s in TIMING_SUBSTRINGS)


def _in_dirs(label: str, names: Iterable[str]) -> bool:
    return any(part in names for part in PurePosixPath(label).parts[:-1])


def is_timing_file(label: str) -> bool:
    """Files under ``benchmarks/``, and :data:`TIMING_FILES`, hold speed measurements only."""
    return _in_dirs(label, TIMING_DIRS) or PurePosixPath(label).name in TIMING_FILES


def _skipped(label: str) -> bool:
    parts = PurePosixPath(label).parts[:-1]
    return any(p in SKIP_DIR_NAMES or p.endswith(SKIP_DIR_SUFFIXES) for p in parts)


def _is_wall_row(frame: pd.DataFrame) -> np.ndarray:
    if "budget_axis" not in frame.columns:
        return np.zeros(len(frame), dtype=bool)
    return (frame["budget_axis"].astype(str) == "wall").to_numpy()


def _length_is_load_dependent(label: str, frame: pd.DataFrame) -> bool:
    return "step" in frame.columns and _in_dirs(label, WALL_LENGTH_DIRS)


# =========================================================================== reading trees
def _label(path: PurePosixPath | Path, root: PurePosixPath | Path) -> str:
    """``path`` relative to ``root``, ``..`` allowed (``../costs.csv``), in POSIX form."""
    return PurePosixPath(os.path.relpath(str(path), str(root)).replace("\\", "/")).as_posix()


def list_csvs(root: Path, extras: Iterable[str] = (), required: bool = True) -> dict[str, Path]:
    """CSV files below ``root`` and below the ``extras`` (paths relative to ``root``), by label.

    With ``required``, a missing ``root``, a missing extra or a tree without any CSV is a
    :class:`ResultsTreeError` saying how to fix it.
    """
    root = Path(root)
    if not root.is_dir():
        raise ResultsTreeError(f"results folder {root} does not exist: pass the results/<profile> folder of a "
                               f"finished run (e.g. results/default), or use --expected-git REF to read the "
                               f"committed tables from git")
    out: dict[str, Path] = {}
    for start in [root] + [root / e for e in extras]:
        if start.is_file():
            candidates = [start]
        elif start.is_dir():
            candidates = sorted(start.rglob("*.csv"))
        elif required:
            raise ResultsTreeError(f"extra path {_label(start, root)} not found next to {root}; "
                                   f"name extras relative to the profile folder (e.g. ../costs.csv)")
        else:
            continue
        for p in candidates:
            label = _label(p, root)
            if p.suffix == ".csv" and not _skipped(label):
                out[label] = p
    if required and not out:
        raise ResultsTreeError(f"no CSV files under {root}: is it the results/<profile> folder of a finished run? "
                               f"(run the pipeline first, or point at the right folder)")
    return out


def read_csv_text(source: str | Path | StringIO) -> pd.DataFrame:
    """``pd.read_csv`` with an empty file read as an empty table."""
    try:
        return pd.read_csv(source)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def read_tables(files: Mapping[str, Path]) -> dict[str, pd.DataFrame]:
    return {label: read_csv_text(path) for label, path in files.items()}


def _git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ResultsTreeError(f"git {' '.join(args)} failed in {repo}: {proc.stderr.strip()} "
                               f"(is the ref spelled right, e.g. HEAD or a commit id?)")
    return proc.stdout


def read_git_tables(ref: str, profile: str, extras: Iterable[str] = GIT_SHARED_RESULTS,
                    repo: Path | None = None) -> dict[str, pd.DataFrame]:
    """The committed CSVs of ``results/<profile>`` (and the extras) at git ``ref``, by label.

    Labels are relative to ``results/<profile>``, as for :func:`list_csvs`.
    """
    base = PurePosixPath("results") / profile
    specs = [base.as_posix()] + [(base / e).as_posix() for e in extras]
    specs = [_label(PurePosixPath(s), ".") for s in specs]  # normalise results/default/../costs.csv
    repo = Path(repo) if repo is not None else project_root()
    names = _git(repo, "ls-tree", "-r", "--name-only", ref, "--", *specs).splitlines()
    out = {}
    for name in names:
        label = _label(PurePosixPath(name), base)
        if name.endswith(".csv") and not _skipped(label):
            out[label] = read_csv_text(StringIO(_git(repo, "show", f"{ref}:{name}")))
    if not out:
        raise ResultsTreeError(f"git ref {ref} holds no CSV under {base}: is the profile name right "
                               f"(--profile), and were its results committed at that ref?")
    return out


# =========================================================================== row matching
def key_columns(expected: pd.DataFrame, actual: pd.DataFrame) -> list[str]:
    """Columns that identify a row (see module docstring), in the expected table's order."""
    keys = []
    for col in expected.columns:
        if col not in actual.columns or col in NON_KEY_INTEGERS or is_timing_column(col):
            continue  # a timing column (even a text one, such as where a time came from) identifies nothing
        if col in IDENTIFIER_FLOATS or not (is_float_dtype(expected[col]) or is_float_dtype(actual[col])):
            keys.append(col)
    return keys


def _key_text(value) -> str:
    if isinstance(value, (float, np.floating)):
        return "nan" if math.isnan(value) else f"{float(value):.12g}"
    return str(value)


def _row_keys(frame: pd.DataFrame, keys: list[str]) -> list[tuple]:
    if not keys:
        return [()] * len(frame)
    return list(zip(*(frame[k].map(_key_text) for k in keys)))


def match_rows(expected_keys: list[tuple], actual_keys: list[tuple]
               ) -> tuple[list[int], list[int], list[int], list[int]]:
    """Pair rows with equal keys, repeated keys in order.

    Returns ``(expected_index, actual_index, missing, extra)``: positions of the pairs, of the
    expected rows without partner and of the actual rows without partner.
    """
    queue: dict[tuple, deque] = defaultdict(deque)
    for i, k in enumerate(actual_keys):
        queue[k].append(i)
    exp_idx, act_idx, missing = [], [], []
    for i, k in enumerate(expected_keys):
        if queue[k]:
            exp_idx.append(i)
            act_idx.append(queue[k].popleft())
        else:
            missing.append(i)
    paired = set(act_idx)
    extra = [i for i in range(len(actual_keys)) if i not in paired]
    return exp_idx, act_idx, missing, extra


# =========================================================================== value comparison
def differences(actual: pd.Series, expected: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(abs_diff, rel_diff, expected_values)`` for the report; NaN vs NaN is 0, NaN vs a number is inf.

    Non-numeric columns compare as text: 0 where equal, inf where not. Pass/fail is
    :meth:`Tolerance.close`, not these numbers.
    """
    if is_numeric_dtype(actual) and is_numeric_dtype(expected):
        a = actual.to_numpy(dtype=float)
        b = expected.to_numpy(dtype=float)
        with np.errstate(invalid="ignore"):
            diff = np.abs(a - b)
        same = (a == b) | (np.isnan(a) & np.isnan(b))
        diff = np.where(same, 0.0, np.where(np.isnan(diff), np.inf, diff))
    else:
        b = np.zeros(len(expected))
        diff = np.where(actual.astype(str).to_numpy() == expected.astype(str).to_numpy(), 0.0, np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(diff == 0, 0.0, diff / np.abs(b))
    rel = np.where(np.isnan(rel), np.inf, rel)
    return diff, rel, b


def _column_row(label: str, column: str, kind: str, actual: pd.Series, expected: pd.Series,
                tol: Tolerance) -> ReportRow:
    diff, rel, _ = differences(actual, expected)
    row = ReportRow(label, column, kind, len(diff), float(diff.max()), float(rel.max()), float(np.median(rel)))
    if kind == DETERMINISTIC:
        row.tolerance = str(tol)
        bad = ~tol.close(actual, expected)
        row.status = FAIL if bad.any() else OK
        if bad.any():
            row.detail = f"{int(bad.sum())} of {len(diff)} values out of tolerance"
    else:
        row.tolerance, row.status = "report only", REPORT
    return row


def _describe(keys: list[str], key: tuple) -> str:
    return ", ".join(f"{k}={v}" for k, v in zip(keys, key)) or "(row by position)"


def _unmatched_rows(label: str, kind: str, frame: pd.DataFrame, index: list[int], keys: list[str],
                    report_only: np.ndarray) -> list[ReportRow]:
    """One report row per status for the rows of ``frame`` at ``index`` without partner."""
    out = []
    all_keys = _row_keys(frame, keys)
    for status in (FAIL, REPORT):
        sel = [i for i in index if (status == REPORT) == bool(report_only[i])]
        if sel:
            shown = "; ".join(_describe(keys, all_keys[i]) for i in sel[:3])
            more = f"; ... {len(sel) - 3} more" if len(sel) > 3 else ""
            out.append(ReportRow(label, "<rows>", kind, len(sel), status=status, detail=shown + more,
                                 tolerance="" if status == FAIL else "report only"))
    return out


def ratio_consistency(label: str, expected: pd.DataFrame, actual: pd.DataFrame, keys: list[str],
                      exp_idx: list[int], act_idx: list[int], tol: Tolerance) -> list[ReportRow]:
    """Is each actual wall-axis ``ratio_vs_dko`` inside the expected ``[ratio_ci_lo, ratio_ci_hi]``?"""
    if not all(c in expected.columns and c in actual.columns for c in RATIO_COLUMNS + ("budget_axis",)):
        return []
    out = []
    wall = _is_wall_row(expected)
    exp_keys = _row_keys(expected, keys)
    for i, j in zip(exp_idx, act_idx):
        if not wall[i]:
            continue
        lo, hi, ref = (float(expected[c].iloc[i]) for c in ("ratio_ci_lo", "ratio_ci_hi", "ratio_vs_dko"))
        ratio = float(actual["ratio_vs_dko"].iloc[j])
        if math.isnan(lo) and math.isnan(hi) and math.isnan(ratio):
            continue  # no DKO point to compare with, in either run
        # inside the interval, or within tolerance of one of its ends; False when any of them is NaN
        inside = bool(lo <= ratio <= hi or tol.close(ratio, lo, equal_nan=False)
                      or tol.close(ratio, hi, equal_nan=False))
        diff = abs(ratio - ref) if not (math.isnan(ratio) or math.isnan(ref)) else math.inf
        rel = 0.0 if diff == 0 else (diff / abs(ref) if ref else math.inf)
        out.append(ReportRow(label, f"ratio_vs_dko[{_describe(keys, exp_keys[i])}]", "wall-ratio", 1, diff, rel, rel,
                             f"expected CI [{lo:.4g}, {hi:.4g}]", CONSISTENT if inside else INCONSISTENT,
                             f"actual ratio {ratio:.4g}, expected {ref:.4g}"))
    return out


def compare_table(label: str, expected: pd.DataFrame, actual: pd.DataFrame,
                  tol: Tolerance = Tolerance()) -> tuple[list[ReportRow], int]:
    """Report rows for one table, and the number of matched rows."""
    out: list[ReportRow] = []
    timing_file = is_timing_file(label)
    for col in expected.columns.difference(actual.columns, sort=False):
        report = timing_file or is_timing_column(col)
        out.append(ReportRow(label, col, "missing-column", len(expected), status=REPORT if report else FAIL,
                             detail="column absent from the actual table"))
    for col in actual.columns.difference(expected.columns, sort=False):
        out.append(ReportRow(label, col, "extra-column", len(actual), status=REPORT,
                             detail="column only in the actual table"))

    keys = key_columns(expected, actual)
    exp_idx, act_idx, missing, extra = match_rows(_row_keys(expected, keys), _row_keys(actual, keys))
    long_log = _length_is_load_dependent(label, expected)
    for kind, frame, index in (("missing-row", expected, missing), ("extra-row", actual, extra)):
        report_only = _is_wall_row(frame) | timing_file | long_log
        out += _unmatched_rows(label, kind, frame, index, keys, report_only)

    exp, act = expected.iloc[exp_idx].reset_index(drop=True), actual.iloc[act_idx].reset_index(drop=True)
    wall = _is_wall_row(exp)
    for col in (c for c in expected.columns if c in actual.columns and c not in keys):
        if timing_file or is_timing_column(col):
            parts = ((TIMING, np.ones(len(exp), dtype=bool)),)
        else:
            parts = ((DETERMINISTIC, ~wall), (LOAD_DEPENDENT, wall))
        for kind, mask in parts:
            if mask.any():
                out.append(_column_row(label, col, kind, act[col][mask], exp[col][mask], tol))
    out += ratio_consistency(label, expected, actual, keys, exp_idx, act_idx, tol)
    return out, len(exp_idx)


def compare_tables(expected: Mapping[str, pd.DataFrame], actual: Mapping[str, pd.DataFrame],
                   tol: Tolerance = Tolerance()) -> Comparison:
    """Compare every expected table with the actual one of the same label."""
    result = Comparison()
    for label in sorted(expected):
        if label not in actual:
            result.rows.append(ReportRow(label, "<file>", "missing-file", 0, status=FAIL,
                                         detail="file absent from the actual results"))
            result.matched_rows[label] = 0
            continue
        rows, matched = compare_table(label, expected[label], actual[label], tol)
        result.rows += rows
        result.matched_rows[label] = matched
    for label in sorted(set(actual) - set(expected)):
        result.rows.append(ReportRow(label, "<file>", "extra-file", 0, status=REPORT,
                                     detail="file only in the actual results"))
    return result


# =========================================================================== output
def write_report(comparison: Comparison, path: Path) -> Path:
    """The report CSV (columns :data:`REPORT_COLUMNS`), written atomically."""
    with atomic_path(path) as tmp:
        comparison.frame().to_csv(tmp, index=False)
    return Path(path)


def _fmt(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3g}"


def _capped(lines: list[str], limit: int = SUMMARY_LIST_LIMIT) -> list[str]:
    more = len(lines) - limit
    return lines[:limit] + ([f"  ... {more} more (see the report CSV, --out)"] if more > 0 else [])


def summary_text(comparison: Comparison, strict_wall: bool = False) -> str:
    """A short human summary: one line per file, then failures, load-dependent spread, wall ratios."""
    by_file: dict[str, list[ReportRow]] = defaultdict(list)
    for r in comparison.rows:
        by_file[r.file].append(r)
    bad = {FAIL, INCONSISTENT} if strict_wall else {FAIL}
    width = max([len("file")] + [len(f) for f in by_file])
    lines = [f"{'file':<{width}}  {'rows':>6}  {'det. max rel diff':>17}  status"]
    for label in sorted(by_file):
        rows = by_file[label]
        det = [r.max_rel_diff for r in rows if r.kind == DETERMINISTIC]
        if any(r.status in bad for r in rows):
            status = FAIL
        elif any(r.kind == "extra-file" for r in rows):
            status = "extra file (report)"
        else:
            status = OK if det else REPORT
        n = comparison.matched_rows.get(label)
        lines.append(f"{label:<{width}}  {'-' if n is None else n:>6}  {_fmt(max(det) if det else None):>17}  "
                     f"{status}")
    failures = comparison.failures(strict_wall)
    if failures:
        lines.append(f"\nfailures ({len(failures)}):")
        lines += _capped([f"  {r.file} :: {r.column} [{r.kind}] " + (f"max rel diff {_fmt(r.max_rel_diff)}, "
                                                                      if r.kind == DETERMINISTIC else "") + r.detail
                          for r in failures if r.status == FAIL])
    load = [r for r in comparison.rows if r.kind == LOAD_DEPENDENT]
    if load:
        lines.append(f"\nload-dependent (wall-axis) values, report only: {len(load)} columns, median rel diff "
                     f"{_fmt(statistics.median(r.median_rel_diff for r in load))}, max rel diff "
                     f"{_fmt(max(r.max_rel_diff for r in load))}")
    ratios = [r for r in comparison.rows if r.kind == "wall-ratio"]
    if ratios:
        incons = comparison.inconsistent()
        lines.append(f"wall-axis ratios vs DKO: {len(ratios) - len(incons)} consistent, {len(incons)} inconsistent"
                     f" with the expected bootstrap CI" + (" (fail with --strict-wall)" if incons and not strict_wall
                                                           else ""))
        lines += _capped([f"  {r.file} :: {r.column}: {r.detail}, {r.tolerance}" for r in incons])
    verdict = "REPRODUCED" if not failures else f"NOT REPRODUCED ({len(failures)} failing checks)"
    lines.append(f"\n{verdict}")
    return "\n".join(lines)
