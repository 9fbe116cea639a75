"""The network data-parallel over the batch (dkolib.distributed.data_parallel), Gloo on CPU.

References independent of the code under test: ``nn.BatchNorm2d`` on the whole batch (one
process), slice bounds and loss weights by hand, and the single-process E2E run. A batch of 5
over 2 processes (slices of 3 and 2) checks that unequal slices are weighted right. Tolerances,
and why they are not zero: a data-parallel step sums the batch in two parts and BatchNorm's
variance comes from a sum of squares rather than PyTorch's kernel, so the arithmetic differs at
float32 rounding (1e-6 relative per step), which Adam carries on over a few steps: 1e-4
relative on the loss history, 1e-3 rad on latents. A network weight whose gradient is nearly zero
moves by up to ``lr`` per step whatever its sign (Adam's step is ``lr m / sqrt(v)``), so rounding
can move it by a fraction of ``lr``: weights agree to 5 % of the most any weight can move in the
run (``0.05 lr steps``), measured 4e-5 against a bound of 2e-4.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn as nn

from dkolib.config import load_config
from dkolib.distributed import launch_local
from dkolib.distributed.data_parallel import (SyncBatchNorm2d, batch_slice, batch_weight, convert_sync_batchnorm,
                                              network_bytes_per_step, revert_sync_batchnorm, slice_bounds)
from dkolib.errors import InputError
from dkolib.io import load_torch
from test_distributed_e2e import _values  # every rank's value, or the ranks' errors

torch.set_num_threads(1)

OVER = {"optics.n_cells": 33, "optics.meta_atom": "ideal", "optics.subpixel": 1, "optics.render_window_px": 15,
        "optics.sensor_distance_m": 1e-3, "threads": 1, "e2e.steps": 4, "e2e.batch_size": 5,
        "stage1.checkpoint_every": 2, "stage1.eval_every": 100}
DATA = {**OVER, "e2e.network_parallel": "data"}
LAUNCH = {"timeout_s": 180.0, "start_method": "forkserver",
          "preload": ["torch._dynamo", "dkolib.distributed", "dkolib.dko.train", "test_data_parallel"]}


# ----------------------------------------------------------------------------- by hand, one process
def test_slices_by_hand_and_too_many_processes():
    assert slice_bounds(5, 2) == [(0, 3), (3, 5)]
    assert slice_bounds(12, 8) == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 9), (9, 10), (10, 11), (11, 12)]
    with pytest.raises(InputError, match="at least one sample per process"):
        slice_bounds(2, 3)
    batch = {"rgb": torch.arange(5.0).view(5, 1, 1, 1), "depth_m": torch.ones(5, 1, 2, 2), "name": "x"}
    part = batch_slice(batch, 1, 2)
    assert part["rgb"].flatten().tolist() == [3.0, 4.0] and part["depth_m"].shape[0] == 2 and part["name"] == "x"


def test_the_depth_loss_weighs_a_slice_by_its_valid_pixels():
    from dkolib.depth.losses import make_depth_loss

    depth = torch.full((3, 1, 2, 2), 5.0)
    depth[0, 0, 0, 0] = 0.0  # invalid
    depth[1, 0, 1, 1] = 200.0  # beyond max depth 80 m: invalid
    batch = {"rgb": torch.zeros(3, 3, 2, 2), "depth_m": depth}
    assert batch_weight(make_depth_loss(1e-3, 80.0), batch) == 10.0  # 12 pixels, 2 invalid
    assert batch_weight(lambda m, b: None, batch) == 3.0  # no normaliser: the samples


def test_bytes_per_step_by_hand():
    # 1000 parameters, 2 x 49 PSF floats, one BatchNorm of 4 channels: (4 + 1) + 4 floats forward, the same backward
    b = network_bytes_per_step(1000, 98, [4], 2)
    assert b["payload_bytes"] == (1000 + 98 + 18) * 4
    assert b["ring_sent_per_rank"] == b["payload_bytes"]  # 2 (W - 1) / W = 1 at W = 2
    assert network_bytes_per_step(1000, 98, [4], 1)["ring_sent_per_rank"] == 0


def test_conversion_keeps_parameters_and_state_dict():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm2d(4)))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    weight = net[1].weight
    convert_sync_batchnorm(net)
    assert type(net[1]) is SyncBatchNorm2d and type(net[2][0]) is SyncBatchNorm2d and net[1].weight is weight
    assert list(net.state_dict()) == list(before)
    revert_sync_batchnorm(net)
    assert type(net[1]) is nn.BatchNorm2d and net[1].weight is weight
    x = torch.randn(2, 3, 5, 5)
    ref = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm2d(4)))
    ref.load_state_dict(before)
    assert torch.equal(net(x), ref(x))  # without a process group a SyncBatchNorm2d is a BatchNorm2d


# ----------------------------------------------------------------------------- two processes
def _bn_worker(x: torch.Tensor, upstream: torch.Tensor) -> dict:
    """Process r's slice of ``x`` through SyncBatchNorm2d, and its gradients."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    from dkolib.distributed.env import process_group

    torch.manual_seed(0)
    with process_group(torch.device("cpu")):
        bn = SyncBatchNorm2d(x.shape[1], momentum=0.3)
        with torch.no_grad():
            bn.weight.copy_(torch.linspace(0.5, 2.0, x.shape[1]))
            bn.bias.copy_(torch.linspace(-1.0, 1.0, x.shape[1]))
        start, stop = slice_bounds(x.shape[0], world)[rank]
        xr = x[start:stop].clone().requires_grad_(True)
        y = bn(xr)
        (y * upstream[start:stop]).sum().backward()
        return {"y": y.detach(), "dx": xr.grad, "dw": bn.weight.grad, "db": bn.bias.grad,
                "running_mean": bn.running_mean.clone(), "running_var": bn.running_var.clone()}


def test_sync_batchnorm_is_batchnorm_on_the_whole_batch():
    gen = torch.Generator().manual_seed(3)
    x = 2.0 + 3.0 * torch.randn(5, 4, 6, 7, generator=gen)
    x[:3] += 1.5  # the two slices have different statistics, so per-slice BatchNorm is wrong
    upstream = torch.randn(5, 4, 6, 7, generator=gen)
    outcomes = launch_local(_bn_worker, 2, args=(x, upstream), timeout_s=120.0, start_method="forkserver",
                            preload=["dkolib.distributed", "test_data_parallel"])
    bad = [f"rank {o.rank}: {o.error}\n{o.traceback}" for o in outcomes if not o.ok]
    assert not bad, "\n".join(bad)
    r0, r1 = (o.value for o in outcomes)

    ref = nn.BatchNorm2d(4, momentum=0.3)
    with torch.no_grad():
        ref.weight.copy_(torch.linspace(0.5, 2.0, 4))
        ref.bias.copy_(torch.linspace(-1.0, 1.0, 4))
    xx = x.clone().requires_grad_(True)
    y = ref(xx)
    (y * upstream).sum().backward()

    tol = {"rtol": 1e-5, "atol": 1e-5}
    assert torch.allclose(torch.cat([r0["y"], r1["y"]]), y.detach(), **tol)
    assert torch.allclose(torch.cat([r0["dx"], r1["dx"]]), xx.grad, **tol)  # the gradient crosses processes
    assert torch.allclose(r0["dw"] + r1["dw"], ref.weight.grad, **tol)
    assert torch.allclose(r0["db"] + r1["db"], ref.bias.grad, **tol)
    for r in (r0, r1):
        assert torch.allclose(r["running_mean"], ref.running_mean, **tol)
        assert torch.allclose(r["running_var"], ref.running_var, **tol)  # unbiased, over all 5 x 6 x 7 values

    # the plausible wrong model, BatchNorm on each slice alone, misses the whole batch's output by far
    alone = nn.BatchNorm2d(4, momentum=0.3)
    alone.load_state_dict({k: v for k, v in nn.BatchNorm2d(4).state_dict().items()})
    with torch.no_grad():
        alone.weight.copy_(torch.linspace(0.5, 2.0, 4))
        alone.bias.copy_(torch.linspace(-1.0, 1.0, 4))
        per_slice = torch.cat([alone(x[:3]), alone(x[3:])])
    assert (per_slice - y.detach()).abs().max().item() > 0.1


def _e2e_worker(out: str, cache: str, over: dict, fail_at: int | None = None) -> dict:
    from dkolib.dko import frontend
    from dkolib.dko.train import run_e2e

    torch.set_num_threads(1)
    if fail_at is not None:
        inner, calls = frontend._compute_psf, [0]

        def failing(*args, **kwargs):
            calls[0] += 1
            if int(os.environ["RANK"]) == 1 and calls[0] == fail_at:
                raise RuntimeError("injected failure on rank 1")
            return inner(*args, **kwargs)

        frontend._compute_psf = failing
    model = run_e2e(load_config("smoke", over), Path(out), Path(cache), progress=False)
    res = {"latent": model.first_layer.array.latent.detach().clone(),
           "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
           "bn_types": sorted({type(m).__name__ for m in model.modules() if isinstance(m, nn.BatchNorm2d)})}
    if os.environ["RANK"] == "0":
        res["log"] = pd.read_csv(Path(out) / "log.csv")
        res["budget"] = load_torch(Path(out) / "model.pt")["budget"]
    return res


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from dkolib.depth.data import get_dataset
    from dkolib.dko.train import run_e2e

    tmp = tmp_path_factory.mktemp("dp")
    cfg = load_config("smoke", OVER)
    cache = tmp / "cache"
    for split in ("train", "val"):
        get_dataset(cfg, split, cache)
    single = run_e2e(cfg, tmp / "single", cache, progress=False)
    one = {"latent": single.first_layer.array.latent.detach().clone(), "state": single.state_dict(),
           "log": pd.read_csv(tmp / "single" / "log.csv"), "budget": load_torch(tmp / "single" / "model.pt")["budget"]}
    replicated = _values(launch_local(_e2e_worker, 2, args=(str(tmp / "rep"), str(cache), OVER), **LAUNCH))
    data = _values(launch_local(_e2e_worker, 2, args=(str(tmp / "data"), str(cache), DATA), **LAUNCH))
    # PSF calls on rank 1: the gain match, the FLOP count's dry run, steps 1, 2, 3: the 5th fails in step 3
    failed = launch_local(_e2e_worker, 2, args=(str(tmp / "resumed"), str(cache), DATA, 5), **LAUNCH)
    resumed = _values(launch_local(_e2e_worker, 2, args=(str(tmp / "resumed"), str(cache), DATA), **LAUNCH))
    return {"one": one, "replicated": replicated, "data": data, "failed": failed, "resumed": resumed}


def test_data_parallel_e2e_trains_the_single_process_model(runs):
    one, (r0, r1) = runs["one"], runs["data"]
    lr = load_config("smoke", OVER).e2e.lr_net
    for k in r0["state"]:  # the same AdamW step on every process: replicas equal to the bit
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    assert r0["bn_types"] == ["BatchNorm2d"]  # handed back as plain BatchNorm
    log, ref = r0["log"], one["log"]
    assert len(log) == len(ref) == OVER["e2e.steps"]
    pd.testing.assert_series_equal(log["loss"], ref["loss"], check_exact=False, rtol=1e-4)
    assert (r0["latent"] - one["latent"]).abs().max().item() < 1e-3
    for k, v in one["state"].items():
        if v.is_floating_point() and not k.endswith("array.latent"):
            assert torch.allclose(r0["state"][k], v, rtol=1e-3, atol=0.05 * lr * OVER["e2e.steps"]), k
    # BatchNorm's running statistics moved (so their agreement is not that of untouched buffers)
    key = next(k for k in one["state"] if k.endswith("running_var"))
    assert (one["state"][key] - 1.0).abs().max().item() > 1e-3


def test_data_parallel_differs_from_the_replicated_run_where_it_must_not_matter(runs):
    """Both modes are the single-process run to their tolerances; the replicated one is exact
    in its first step (same arithmetic), the data-parallel one only to rounding."""
    one, rep, data = runs["one"]["log"]["loss"], runs["replicated"][0]["log"]["loss"], runs["data"][0]["log"]["loss"]
    assert rep.iloc[0] == one.iloc[0]
    assert abs(data.iloc[0] - one.iloc[0]) <= 1e-5 * abs(one.iloc[0])


def test_the_meter_charges_the_network_once_over_the_slices(runs):
    one, data, rep = runs["one"]["budget"], runs["data"][0]["budget"], runs["replicated"][0]["budget"]
    # convolution FLOPs are linear in the batch: slices of 3 and 2 cost what a batch of 5 does
    assert data["flops_by"]["network"] == pytest.approx(one["flops_by"]["network"], rel=1e-9)
    assert rep["flops_by"]["network"] == pytest.approx(2 * one["flops_by"]["network"], rel=1e-12)
    assert data["flops_by"]["optics"] == pytest.approx(one["flops_by"]["optics"], rel=1e-12)


def test_a_data_parallel_run_resumes_to_the_uninterrupted_result(runs):
    peer, failing = runs["failed"]
    assert not failing.ok and "injected failure on rank 1" in failing.error
    assert not peer.ok and peer.error_type == "RankFailureError"
    resumed, full = runs["resumed"][0], runs["data"][0]
    for k in full["state"]:
        assert torch.equal(resumed["state"][k], full["state"][k]), k
    assert resumed["log"]["loss"].tolist() == full["log"]["loss"].tolist()


def test_bench_counts_the_bytes_the_model_predicts(tmp_path):
    """``scripts/bench_e2e_scaling.py``: the bytes handed to the collectives per step, counted in the
    processes, are those of the tensor sizes (PSF block; with the data-parallel network also the
    gradients and the synchronised BatchNorm statistics), and the loopback interface carried at
    least that much (a ring sends every byte of the model once; TCP headers add a little)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import bench_e2e_scaling

    over = [f"{k}={v}" for k, v in OVER.items() if not k.startswith("stage1.")]
    frame = bench_e2e_scaling.main(["--profile", "smoke", "--runs", "2x1:replicated", "2x1:data", "--steps", "2",
                                    "--warmup", "1", "--cache-dir", str(tmp_path / "cache"),
                                    "--out", str(tmp_path / "e2e_scaling.csv"), "--set", *over])
    rep, data = frame.iloc[0], frame.iloc[1]
    assert rep["payload_bytes_per_step"] == rep["payload_bytes_model"] == 24 * 49 * 4  # 4 channels x 3 x 2 PSFs
    assert data["payload_bytes_per_step"] == data["payload_bytes_model"] > 100 * rep["payload_bytes_model"]
    for r in (rep, data):
        if r["wire_bytes_per_step"] == r["wire_bytes_per_step"]:  # not NaN: /proc/net/dev was readable
            assert r["wire_bytes_model"] <= r["wire_bytes_per_step"] <= 1.5 * r["wire_bytes_model"] + 65536
    assert (tmp_path / "e2e_scaling.csv").exists()
