"""README sections on benchmarks beyond the PSF engines: stage 2 over several processes."""

from __future__ import annotations

from pathlib import Path

from .markdown import _fmt, _read, _renamed, _table


def scaling_section(root: Path) -> str:
    """Seconds per stage-2 step against the number of processes (``results/benchmarks/scaling.csv``)."""
    table = _read(root / "results" / "benchmarks" / "scaling.csv")
    if table is None:
        return ""
    cols = {"processes": "processes", "threads_per_process": "threads each", "seconds_per_step": "s / step",
            "speedup": "speed-up", "metasurfaces_max_per_process": "metasurfaces on the busiest process",
            "collective_bytes_per_step_total": "bytes gathered per step"}
    one = table[table["processes"] == 1]
    text = ("### Stage 2 over several processes (`results/benchmarks/scaling.csv`)\n\n"
            f"{int(table['metasurfaces'].iloc[0])} metasurfaces of {int(table['cells'].iloc[0])} x "
            f"{int(table['cells'].iloc[0])} cells (`{table['profile'].iloc[0]}` profile), "
            f"{int(table['steps_timed'].iloc[0])} timed steps per row, on this CPU "
            "(`scripts/bench_scaling.py`; the processes run side by side on its cores).")
    if len(one):
        base = float(one["seconds_per_step"].iloc[0])
        parts = [f"{int(r.processes)} processes take {_fmt(r.seconds_per_step / base)}x one process's time per step"
                 for r in table[table["processes"] > 1].itertuples()]
        if parts:
            text += " " + "; ".join(parts) + "."
    return text + "\n\n" + _table(_renamed(table, cols)) + "\n"
