"""A model of an E2E step over ``W`` devices, from measured one-device costs and the bytes moved.

An E2E step is the PSFs of all ``E`` metasurfaces (forward and backward) plus one network step
on a batch of ``B``. Over ``W`` devices (:mod:`dkolib.distributed.e2e`):

* PSFs: each device simulates ``ceil(E / W)`` metasurfaces at most, so the PSF time is
  ``psf_s * ceil(E / W) / E``; the PSFs on the kernel window are all-gathered: in a ring,
  each device sends ``(W - 1)`` blocks of ``ceil(E / W) * window^2`` float32 values
  (:func:`~dkolib.distributed.e2e.psf_bytes_per_step`).
* network, ``'replicated'`` (what :mod:`dkolib.distributed.e2e` runs): every device runs
  the whole batch, ``net_s``, and nothing else moves;
* network, ``'data_parallel'`` (``e2e.network_parallel: data``,
  :mod:`dkolib.distributed.data_parallel`): each device runs ``ceil(B / W)`` samples,
  ``net_s * ceil(B / W) / B``; the gradients of the ``P`` parameters and of the ``E W^2`` PSF
  values are all-reduced (a ring all-reduce sends ``2 (W - 1) / W`` of its payload per device),
  and each synchronised BatchNorm layer of ``C`` channels all-reduces ``C + 1`` and ``C``
  floats forward and again backward: four small collectives per layer, which cost latency
  more than bandwidth.

A collective of ``n`` bytes per device over ``W`` devices costs ``n / bandwidth + 2 (W - 1)
latency`` (ring). Compute is assumed to divide perfectly (no load imbalance beyond the
ceilings, no overlap of communication with compute). Every input is a column of the output,
so a reader can redo the sums.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

STRATEGIES = ("replicated", "data_parallel")


@dataclass(frozen=True)
class StepCosts:
    """One device's measured costs of one E2E step.

    Attributes:
        psf_s: seconds for the PSFs of all ``n_elements`` metasurfaces (forward + backward).
        net_s: seconds for the network step on ``batch`` samples (forward, backward, update).
        n_elements: metasurfaces ``E``; batch: ``B``; n_params: network parameters ``P``;
        window_px: side of the PSF window the network reads (the kernel, 7).
        bn_channels: channels of each BatchNorm layer (synchronised when data-parallel).
    """

    psf_s: float
    net_s: float
    n_elements: int
    batch: int
    n_params: int
    window_px: int = 7
    bn_channels: tuple = ()


def _ring(bytes_per_device: float, world: int, bandwidth_Bps: float, latency_s: float) -> float:
    if world < 2:
        return 0.0
    return bytes_per_device / bandwidth_Bps + 2 * (world - 1) * latency_s


def step_model(costs: StepCosts, world: int, strategy: str = "replicated", bandwidth_Bps: float = 1e10,
               latency_s: float = 1e-5) -> dict:
    """Seconds of one E2E step on ``world`` devices, split into its parts.

    Returns ``{"psf_s", "net_s", "psf_gather_bytes", "grad_allreduce_bytes", "bn_allreduce_bytes",
    "collectives", "comm_s", "step_s", "speedup"}``: bytes are those each device sends per step
    (``grad_allreduce_bytes``: network and PSF gradients); ``collectives``: how many per step;
    ``speedup`` is the one-device step (``psf_s + net_s``) over ``step_s``.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if world < 1:
        raise ValueError(f"world must be >= 1, got {world}")
    per_device = math.ceil(costs.n_elements / world)
    psf_s = costs.psf_s * per_device / costs.n_elements
    gather = (world - 1) * per_device * costs.window_px ** 2 * 4
    comm = _ring(gather, world, bandwidth_Bps, latency_s)
    allreduce = bn_bytes = 0.0
    collectives = 1 if world > 1 else 0
    if strategy == "replicated":
        net_s = costs.net_s
    else:
        net_s = costs.net_s * math.ceil(costs.batch / world) / costs.batch
        share = 2 * (world - 1) / world
        allreduce = share * (costs.n_params + costs.n_elements * costs.window_px ** 2) * 4
        comm += _ring(allreduce, world, bandwidth_Bps, latency_s)
        for c in costs.bn_channels:  # (C + 1) and C floats, forward and backward
            for n in (c + 1, c, c + 1, c):
                bn_bytes += share * n * 4
                comm += _ring(share * n * 4, world, bandwidth_Bps, latency_s)
        collectives += (1 + 4 * len(costs.bn_channels)) if world > 1 else 0
    step = psf_s + net_s + comm
    return {"psf_s": psf_s, "net_s": net_s, "psf_gather_bytes": gather, "grad_allreduce_bytes": allreduce,
            "bn_allreduce_bytes": bn_bytes, "collectives": collectives, "comm_s": comm, "step_s": step,
            "speedup": (costs.psf_s + costs.net_s) / step}


PAPER_E2E_STEPS = 50_000
"""The paper's E2E run: 50,000 steps (about a day on one A100)."""


def costs_from_table(costs, size: str = "paper", bn_channels: tuple = ()) -> StepCosts:
    """:class:`StepCosts` of ``size`` from ``results/costs.csv`` (``scripts/measure_costs.py``).

    ``psf_s`` / ``net_s``: the ``e2e_step`` row's ``seconds_psf`` / ``seconds_net``; the
    network's parameters: the ``stage1_step`` row's ``n_params`` (the electronic network);
    ``bn_channels``: the network's BatchNorm layers (not in the table; the caller counts them).
    """
    rows = costs.set_index(["method", "size"])
    for key in (("e2e_step", size), ("stage1_step", size)):
        if key not in rows.index:
            raise KeyError(f"the costs table has no {key[0]} row for size '{size}': run scripts/measure_costs.py "
                           f"--sizes {size}")
    e2e, net = rows.loc[("e2e_step", size)], rows.loc[("stage1_step", size)]
    return StepCosts(psf_s=float(e2e["seconds_psf"]), net_s=float(e2e["seconds_net"]),
                     n_elements=int(e2e["n_elements"]), batch=int(e2e["batch"]), n_params=int(net["n_params"]),
                     bn_channels=tuple(int(c) for c in bn_channels))


def scaling_table(costs: StepCosts, worlds=(1, 8, 64), steps: int = PAPER_E2E_STEPS, bandwidth_Bps: float = 1e10,
                  latency_s: float = 1e-5, device: str = "cpu"):
    """One row per (strategy, world): :func:`step_model` plus the run's hours for ``steps`` steps and
    every input (so the table can be checked by hand)."""
    import pandas as pd

    rows = []
    for strategy in STRATEGIES:
        for w in worlds:
            m = step_model(costs, int(w), strategy, bandwidth_Bps, latency_s)
            rows.append({"strategy": strategy, "devices": int(w), **m, "run_hours": m["step_s"] * steps / 3600.0,
                         "steps": int(steps), "one_device_psf_s": costs.psf_s, "one_device_net_s": costs.net_s,
                         "n_elements": costs.n_elements, "batch": costs.batch, "n_params": costs.n_params,
                         "window_px": costs.window_px, "bn_layers": len(costs.bn_channels),
                         "bn_channels_total": int(sum(costs.bn_channels)), "bandwidth_Bps": bandwidth_Bps,
                         "latency_s": latency_s,
                         "device": device})
    return pd.DataFrame(rows)


def plot_scaling(table, path=None):
    """Run hours (log) against devices (log), one line per strategy, the ideal 1/W line dashed."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.0, 3.6))
    for strategy, g in table.groupby("strategy", sort=False):
        ax.plot(g["devices"], g["run_hours"], marker="o", label=strategy.replace("_", "-") + " network")
    one = table[table["devices"] == 1]["run_hours"].iloc[0]
    w = sorted(table["devices"].unique())
    ax.plot(w, [one / x for x in w], ls="--", c="grey", label="ideal (1/W)")
    ax.set(xscale="log", yscale="log", xlabel="devices W", ylabel=f"hours for {int(table['steps'].iloc[0]):,} steps",
           title="E2E at the paper's size: modelled from one-device costs")
    ax.legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=150)
    return fig
