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


def e2e_scaling_section(root: Path) -> str:
    """The paper's E2E run modelled over 1, 8, 64 devices (``results/benchmarks/e2e_scaling_model.csv``)."""
    table = _read(root / "results" / "benchmarks" / "e2e_scaling_model.csv")
    if table is None:
        return ""
    cols = {"strategy": "network", "devices": "devices", "psf_s": "PSFs s / step", "net_s": "network s / step",
            "comm_s": "communication s / step", "step_s": "s / step", "speedup": "speed-up",
            "run_hours": "hours for the run"}
    r0 = table.iloc[0]
    rep = table[table["strategy"] == "replicated"].set_index("devices")["speedup"]
    cap = (r0["one_device_psf_s"] + r0["one_device_net_s"]) / r0["one_device_net_s"]
    text = ("### E2E at the paper's size over several devices, modelled "
            "(`results/benchmarks/e2e_scaling_model.csv`)\n\n"
            f"From one device's costs of an E2E step ({r0['device']}, `results/costs.csv`: "
            f"{_fmt(r0['one_device_psf_s'])} s of PSFs for {int(r0['n_elements'])} metasurfaces and "
            f"{_fmt(r0['one_device_net_s'])} s of network on a batch of {int(r0['batch'])}) and the bytes each "
            f"collective sends ({_fmt(r0['bandwidth_Bps'] / 1e9)} GB/s and {_fmt(r0['latency_s'] * 1e6)} us per hop "
            f"assumed), for the paper's {int(r0['steps']):,} steps (`scripts/e2e_scaling_model.py`). The network "
            f"replicated on every device (what `dkolib.distributed.e2e` runs) caps the speed-up at {_fmt(cap)}x "
            f"(Amdahl: the network's time does not shrink): {_fmt(float(rep.iloc[-1]))}x on {int(rep.index[-1])} "
            "devices; a batch split over the devices (modelled, not implemented) would also shrink the network's "
            "share.")
    return text + "\n\n" + _table(_renamed(table, cols)) + "\n"
