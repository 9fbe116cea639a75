"""README sections on benchmarks beyond the PSF engines: stage 2 over several processes."""

from __future__ import annotations

from pathlib import Path

from .markdown import _fmt, _read, _renamed, _table


def scaling_section(root: Path, name: str = "scaling.csv") -> str:
    """Seconds per stage-2 step against the number of processes (``results/benchmarks/<name>``:
    ``scaling.csv`` at the default size, ``scaling_paper.csv`` at the paper's)."""
    table = _read(root / "results" / "benchmarks" / name)
    if table is None:
        return ""
    cols = {"processes": "processes", "threads_per_process": "threads each", "seconds_per_step": "s / step",
            "speedup": "speed-up", "metasurfaces_max_per_process": "metasurfaces on the busiest process",
            "collective_bytes_per_step_total": "bytes gathered per step"}
    one = table[table["processes"] == 1]
    size = "the paper's size" if str(table["profile"].iloc[0]) == "paper" else "several processes"
    text = (f"### Stage 2 {'at ' if size.startswith('the') else 'over '}{size} (`results/benchmarks/{name}`)\n\n"
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
    text += _against_costs_table(root, table)
    return text + "\n\n" + _table(_renamed(table, cols)) + "\n"


def _against_costs_table(root: Path, table) -> str:
    """For a paper-size run: its one-process step against ``results/costs.csv``'s extrapolated one."""
    costs = _read(root / "results" / "costs.csv")
    one = table[(table["processes"] == 1) & (table["threads_per_process"] == 1)]
    if costs is None or str(table["profile"].iloc[0]) != "paper" or not len(one):
        return ""
    row = costs[(costs["method"] == "dko_stage2") & (costs["size"] == "paper")]
    if not len(row):
        return ""
    est, measured = float(row["seconds_per_iter"].iloc[0]), float(one["seconds_per_step"].iloc[0])
    how = "extrapolates" if not bool(row["measured"].iloc[0]) else "measures"
    return (f" The kernels are {table['kernels'].iloc[0]} (no paper-size stage-1 network is trained here); the "
            f"step is a whole stage-2 step (the per-metasurface statistics included). `results/costs.csv` {how} "
            f"{_fmt(est)} s per stage-2 step from {int(row['timed_elements'].iloc[0])} metasurfaces; the whole array "
            f"takes {_fmt(measured)} s ({_fmt(measured / est)}x), so the costs table's paper-size times are "
            "lower bounds on this CPU.")


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
    dp = table[table["strategy"] == "data_parallel"].set_index("devices")
    cap = (r0["one_device_psf_s"] + r0["one_device_net_s"]) / r0["one_device_net_s"]
    text = ("### E2E at the paper's size over several devices, modelled "
            "(`results/benchmarks/e2e_scaling_model.csv`)\n\n"
            f"From one device's costs of an E2E step ({r0['device']}, `results/costs.csv`: "
            f"{_fmt(r0['one_device_psf_s'])} s of PSFs for {int(r0['n_elements'])} metasurfaces and "
            f"{_fmt(r0['one_device_net_s'])} s of network on a batch of {int(r0['batch'])}) and the bytes each "
            f"collective sends ({_fmt(r0['bandwidth_Bps'] / 1e9)} GB/s and {_fmt(r0['latency_s'] * 1e6)} us per hop "
            f"assumed), for the paper's {int(r0['steps']):,} steps (`scripts/e2e_scaling_model.py`). The network "
            f"replicated on every device (`e2e.network_parallel: replicated`, the default) caps the speed-up at {_fmt(cap)}x "
            f"(Amdahl: the network's time does not shrink): {_fmt(float(rep.iloc[-1]))}x on {int(rep.index[-1])} "
            "devices. Data-parallel over the batch (`e2e.network_parallel: data`: the network's and PSFs' "
            "gradients all-reduced, BatchNorm synchronised, `dkolib.distributed.data_parallel`) the network's share "
            f"shrinks too: {_fmt(float(dp['speedup'].iloc[-1]))}x on {int(dp.index[-1])} devices "
            f"({_fmt(float(dp['run_hours'].iloc[-1]))} h).")
    return text + "\n\n" + _table(_renamed(table, cols)) + "\n"


def e2e_measured_section(root: Path) -> str:
    """E2E over processes on this machine, time and bytes measured (``results/benchmarks/e2e_scaling.csv``)."""
    table = _read(root / "results" / "benchmarks" / "e2e_scaling.csv")
    if table is None:
        return ""
    cols = {"processes": "processes", "threads_per_process": "threads each", "network_parallel": "network",
            "seconds_per_step": "s / step", "speedup": "speed-up", "payload_bytes_per_step": "bytes to collectives",
            "payload_bytes_model": "bytes, model", "wire_bytes_per_step": "loopback bytes",
            "wire_bytes_model": "loopback bytes, model"}
    r0 = table.iloc[0]
    text = ("### E2E over processes, measured (`results/benchmarks/e2e_scaling.csv`)\n\n"
            f"The `{r0['profile']}` profile's E2E step ({int(r0['metasurfaces'])} metasurfaces of {int(r0['cells'])} x "
            f"{int(r0['cells'])} cells, batch {int(r0['batch_size'])}), {int(r0['steps_timed'])} timed steps per row on "
            "this CPU (`scripts/bench_e2e_scaling.py`). Bytes per step: what each process hands to the collectives "
            "(counted) against the tensor sizes, and what the loopback interface carried against a ring's "
            "sends (TCP headers included).")
    one = table[(table["processes"] == 1) & (table["threads_per_process"] == 1)]
    if len(one):
        base = float(one["seconds_per_step"].iloc[0])
        parts = [f"{int(r.processes)} x {int(r.threads_per_process)} ({r.network_parallel}) "
                 f"{_fmt(r.seconds_per_step / base)}x"
                 for r in table.itertuples() if not (r.processes == 1 and r.threads_per_process == 1)]
        if parts:
            text += " Time per step against one process of one thread: " + "; ".join(parts) + "."
    return text + "\n\n" + _table(_renamed(table, cols)) + "\n"
