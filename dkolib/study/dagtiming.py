"""Wall time of a Snakemake run, job by job, from the workflow's ``benchmark:`` files.

Every rule that does work declares ``benchmark: results/<profile>/benchmarks/<rule>[.<wildcards>].tsv``
(wildcard values joined by ``_``, e.g. ``eb_method.dko_fast_0.tsv``). Snakemake writes one such
TSV when the job ends: a header line and one row with ``s`` (the job's wall seconds), ``cpu_time``
(CPU seconds of the job's processes), ``max_rss`` (peak resident memory, MB), ... (``NA`` where
Snakemake could not sample the process). The Snakefile's ``onstart``/``onsuccess``/``onerror``
handlers call :func:`record_run`, which keeps the run's segments (start and end, Unix seconds)
in ``run.json`` beside them (:data:`RUN_RECORD`).

A long run may be stopped (killed, or ended by a failed job) and started again: Snakemake
then keeps every finished job and the equal-budget jobs resume from their checkpoints. Such a
run is one run in several *segments*: a start after an unfinished one (status ``running`` or
``error``) opens a new segment instead of a new record, and the run's wall time is the sum of
the segments, the time between them left out. A killed segment wrote no end; it is taken as
the last time the run's own state under the profile's results folder was written
(:func:`last_write`; work lost after the last checkpoint is redone, and counted, in the next
segment). A resumed job's benchmark file
times only its last segment, so per-job sums undercount such jobs; the total does not.

:func:`read_benchmarks` gathers the jobs of the recorded run: the TSVs written between its start
and end (a job not rerun keeps the TSV of an earlier run, older than the start, and is left out).
:func:`summarize` gives per rule ``n_jobs, job_s_sum, job_s_max, cpu_s_sum, max_rss_mb`` and a
``TOTAL`` row whose ``wall_s`` is the run's wall time (its segments' summed length).
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from ..errors import DataError
from ..io import atomic_path

RUN_RECORD = "run.json"
"""File in the benchmarks folder holding the last run's ``start``, ``end`` (Unix seconds) and ``status``."""
COLUMNS = ("rule", "wildcards", "job_s", "cpu_s", "max_rss_mb", "start_s", "end_s")
"""Columns of ``dag_jobs.csv``: one row per job; ``start_s``/``end_s`` are seconds since the run's
start (``end_s`` from the TSV's modification time, ``start_s = end_s - job_s``)."""
SLACK_S = 1.0
"""Tolerance on file times when deciding whether a benchmark file belongs to the recorded run."""


def record_run(folder: str | Path, event: str, now: float | None = None) -> dict:
    """Record a Snakemake run's ``event`` (``start``, ``success`` or ``error``) in ``folder/run.json``.

    ``start`` begins a new record, or a new segment of the recorded run when that one did not
    finish (see the module docstring); ``success``/``error`` end the current segment and set
    ``end`` and ``status``. The record holds ``start`` (of the first segment), ``end``,
    ``status``, ``segments`` (``[{"start", "end"}]``) and ``wall_s`` (their summed length).
    Returns the record.
    """
    if event not in ("start", "success", "error"):
        raise ValueError(f"event must be 'start', 'success' or 'error', got {event!r}")
    now = time.time() if now is None else float(now)
    path = Path(folder) / RUN_RECORD
    old = json.loads(path.read_text()) if path.exists() else None
    if event == "start":
        if old is not None and old.get("status") in ("running", "error") and old.get("start") is not None:
            segments = old.get("segments") or [{"start": old["start"], "end": old.get("end")}]
            if segments[-1].get("end") is None:  # killed: it ended when it last wrote something
                segments[-1]["end"] = last_write(Path(folder).parent, segments[-1]["start"], now)
            record = {"start": segments[0]["start"], "status": "running", "segments": segments + [{"start": now}]}
        else:
            record = {"start": now, "status": "running", "segments": [{"start": now}]}
    else:
        record = old if old is not None else {"start": None, "segments": []}
        record.setdefault("segments", [{"start": record.get("start"), "end": None}])
        if record["segments"]:
            record["segments"][-1]["end"] = now
        record.update(end=now, status=event)
    record["wall_s"] = sum(float(g["end"]) - float(g["start"]) for g in record["segments"]
                           if g.get("start") is not None and g.get("end") is not None)
    for key in ("start", "end"):
        if record.get(key) is not None:
            record[f"{key}_utc"] = datetime.fromtimestamp(record[key], timezone.utc).isoformat(timespec="seconds")
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    return record


def _run_state(path: Path) -> bool:
    """Whether ``path`` is a running pipeline's own state, which git never touches: benchmark
    files, checkpoints and snapshots (``*.pt``), job work folders (``*.work``) and the stage-1
    snapshot runs of the equal-budget study (``stage1_<seed>/lr_*``)."""
    parts = path.parts
    return (path.suffix in (".pt", ".tsv") or any(p.endswith(".work") for p in parts)
            or any(p.startswith("lr_") for p in parts[:-1]))


def last_write(root: str | Path, since: float, until: float) -> float:
    """Latest modification time in ``[since, until]`` of the run state under ``root`` (see
    :func:`_run_state`; ``since`` if none). Committed files are left out: a checkout or merge
    between two segments would otherwise stretch the first one."""
    latest = float(since)
    for f in Path(root).rglob("*"):
        if f.name == RUN_RECORD or not f.is_file() or not _run_state(f.relative_to(root)):
            continue
        m = f.stat().st_mtime
        if since <= m <= until and m > latest:
            latest = m
    return latest


def read_run(folder: str | Path) -> dict:
    """The record of the last run (see :func:`record_run`); it must have finished successfully."""
    path = Path(folder) / RUN_RECORD
    if not path.exists():
        raise DataError(f"{path} is missing: no Snakemake run of this profile has been recorded "
                        f"(run snakemake first; dry runs record nothing)")
    record = json.loads(path.read_text())
    if record.get("status") != "success" or record.get("start") is None or record.get("end") is None:
        raise DataError(f"{path}: the last recorded run did not finish successfully "
                        f"(status {record.get('status')!r}); rerun snakemake to completion")
    return record


def parse_name(path: str | Path) -> tuple[str, str]:
    """``(rule, wildcards)`` of a benchmark file named ``<rule>[.<wildcard values>].tsv``."""
    rule, _, wildcards = Path(path).name.removesuffix(".tsv").partition(".")
    return rule, wildcards


def read_benchmark(path: str | Path) -> dict:
    """One job's benchmark TSV as ``{"job_s", "cpu_s", "max_rss_mb"}`` (NaN where Snakemake wrote NA).

    A rule benchmarked with ``repeat(...)`` has one row per repetition: their mean is taken.
    """
    table = pd.read_csv(path, sep="\t", na_values=["NA", "-"])
    if "s" not in table.columns or table.empty:
        raise DataError(f"{path} is not a Snakemake benchmark file (no 's' column or no row)")
    mean = lambda col: float(table[col].mean()) if col in table else float("nan")  # noqa: E731
    return {"job_s": mean("s"), "cpu_s": mean("cpu_time"), "max_rss_mb": mean("max_rss")}


def read_benchmarks(folder: str | Path, run: dict | None = None) -> pd.DataFrame:
    """One row per job of the recorded run (columns :data:`COLUMNS`), in the order they ended.

    ``run`` defaults to ``folder/run.json`` (:func:`read_run`). Raises :class:`~dkolib.errors.DataError`
    when no benchmark file was written during the run.
    """
    folder = Path(folder)
    run = read_run(folder) if run is None else run
    start, end = float(run["start"]), float(run["end"])
    rows = []
    for path in sorted(folder.glob("*.tsv")):
        mtime = path.stat().st_mtime
        if not start - SLACK_S <= mtime <= end + SLACK_S:
            continue  # written by an earlier run (the job was up to date in this one)
        rule, wildcards = parse_name(path)
        job = read_benchmark(path)
        end_s = mtime - start
        rows.append({"rule": rule, "wildcards": wildcards, **job, "start_s": end_s - job["job_s"], "end_s": end_s})
    if not rows:
        raise DataError(f"no benchmark file in {folder} was written during the recorded run "
                        f"({run.get('start_utc', start)} to {run.get('end_utc', end)})")
    return pd.DataFrame(rows, columns=list(COLUMNS)).sort_values(["end_s", "rule", "wildcards"]).reset_index(drop=True)


def summarize(jobs: pd.DataFrame, wall_s: float) -> pd.DataFrame:
    """Per rule: jobs, summed and longest job seconds, summed CPU seconds, peak RSS (MB); plus a
    ``TOTAL`` row over all jobs whose ``wall_s`` is the run's wall time (:func:`run_wall_s`).

    Values Snakemake could not sample (NaN) are left out of the sums and maxima.
    """
    per = jobs.groupby("rule").agg(n_jobs=("job_s", "size"), job_s_sum=("job_s", "sum"),
                                   job_s_max=("job_s", "max"), cpu_s_sum=("cpu_s", "sum"),
                                   max_rss_mb=("max_rss_mb", "max")).reset_index()
    per = per.sort_values(["job_s_sum", "rule"], ascending=[False, True])
    total = pd.DataFrame([{"rule": "TOTAL", "n_jobs": len(jobs), "job_s_sum": float(jobs["job_s"].sum()),
                           "job_s_max": float(jobs["job_s"].max()), "cpu_s_sum": float(jobs["cpu_s"].sum()),
                           "max_rss_mb": float(jobs["max_rss_mb"].max()), "wall_s": float(wall_s)}])
    return pd.concat([per, total], ignore_index=True)


def run_wall_s(run: dict) -> float:
    """A recorded run's wall seconds: its segments' summed length (end - start for older records)."""
    if run.get("segments"):
        return float(run["wall_s"])
    return float(run["end"]) - float(run["start"])


def dag_timing(folder: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(jobs, summary)`` of the run recorded in the benchmarks ``folder`` (``dag_jobs.csv``, ``dag_timing.csv``).

    The summary's ``TOTAL`` row also gives ``segments``: how many starts the run took.
    """
    run = read_run(folder)
    jobs = read_benchmarks(folder, run)
    summary = summarize(jobs, run_wall_s(run))
    summary.loc[summary["rule"] == "TOTAL", "segments"] = len(run.get("segments") or [run])
    return jobs, summary
