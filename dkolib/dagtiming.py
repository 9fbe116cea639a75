"""Wall time of a Snakemake run, job by job, read from its log (``.snakemake/log/*.snakemake.log``).

Snakemake logs a timestamp line ``[Sat Nov 28 03:13:51 2026]`` before each event, then
``rule NAME:`` (or ``localrule``) with ``jobid: N`` and ``wildcards: ...`` when a job starts,
and ``Finished jobid: N (Rule: NAME)`` when it ends. Timestamps have one-second resolution.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import pandas as pd

_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
_RULE = re.compile(r"^(?:local)?rule (\S+):$")
_JOBID = re.compile(r"^\s+jobid: (\d+)$")
_WILDCARDS = re.compile(r"^\s+wildcards: (.*)$")
_THREADS = re.compile(r"^\s+threads: (\d+)$")
_FINISHED = re.compile(r"^Finished jobid: (\d+)")
COLUMNS = ("rule", "wildcards", "threads", "start_s", "end_s", "job_s")


def _time(stamp: str) -> datetime:
    return datetime.strptime(" ".join(stamp.split()), "%a %b %d %H:%M:%S %Y")


def parse_log(path: str | Path) -> pd.DataFrame:
    """One row per finished job: ``rule, wildcards, threads, start_s, end_s, job_s``.

    ``start_s`` and ``end_s`` are seconds since the first timestamp of the log. Raises
    ValueError when the file holds no finished job (not a Snakemake log, or a dry run).
    """
    lines = Path(path).read_text().splitlines()
    t0 = now = None
    rule = current = None
    started: dict[str, dict] = {}
    rows = []
    for line in lines:
        if m := _STAMP.match(line):
            now = _time(m.group(1))
            t0 = t0 or now
        elif m := _RULE.match(line):
            rule, current = m.group(1), None
        elif (m := _JOBID.match(line)) and rule is not None:
            current = m.group(1)
            started[current] = {"rule": rule, "wildcards": "", "threads": 1,
                                "start_s": (now - t0).total_seconds() if now else float("nan")}
            rule = None
        elif (m := _WILDCARDS.match(line)) and current is not None:
            started[current]["wildcards"] = m.group(1)
        elif (m := _THREADS.match(line)) and current is not None:
            started[current]["threads"] = int(m.group(1))
        elif (m := _FINISHED.match(line)) and m.group(1) in started:
            job = started.pop(m.group(1))
            job["end_s"] = (now - t0).total_seconds()
            job["job_s"] = job["end_s"] - job["start_s"]
            rows.append(job)
            current = None
    if not rows:
        raise ValueError(f"{path} records no finished job: pass the log of a real (not dry) snakemake run")
    return pd.DataFrame(rows, columns=list(COLUMNS))


def summarize(jobs: pd.DataFrame) -> pd.DataFrame:
    """Per rule: jobs, summed job seconds, longest job; plus a ``TOTAL`` row whose ``wall_s``
    is the run's span (first start to last end)."""
    per = jobs.groupby("rule").agg(n_jobs=("job_s", "size"), job_s_sum=("job_s", "sum"),
                                   job_s_max=("job_s", "max")).reset_index()
    per = per.sort_values("job_s_sum", ascending=False)
    span = float(jobs["end_s"].max() - jobs["start_s"].min())
    total = pd.DataFrame([{"rule": "TOTAL", "n_jobs": len(jobs), "job_s_sum": float(jobs["job_s"].sum()),
                           "job_s_max": float(jobs["job_s"].max()), "wall_s": span}])
    return pd.concat([per, total], ignore_index=True)


def latest_log(workdir: str | Path = ".") -> Path:
    """The newest ``.snakemake/log/*.snakemake.log`` under ``workdir`` that ran jobs (dry runs log too)."""
    folder = Path(workdir) / ".snakemake" / "log"
    for log in sorted(folder.glob("*.snakemake.log"), reverse=True):
        if "Finished jobid:" in log.read_text():
            return log
    raise FileNotFoundError(f"no Snakemake log of a run that executed jobs under {folder}: run snakemake first")
