"""E2E with the metasurfaces sharded over two processes (dkolib.distributed.e2e), Gloo on CPU.

The reference is the single-process ``run_e2e`` of the same problem. The network is
replicated (every process runs it on the same batch), so the only arithmetic that differs is
the PSF of a shard's block against the whole array's: the forward pass is the same to the bit
(the first step's loss is compared exactly), the backward of a shard's last cells can round
differently by one ulp (dkolib.distributed.stage2 explains the SIMD tail), and Adam carries
that on. Tolerances: 1e-4 relative on the loss history, 1e-3 rad on latents, 1e-3 relative on
the network's parameters after a few steps.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import torch

from dkolib.config import load_config
from dkolib.distributed import ShardPlan, launch_local
from dkolib.distributed.e2e import psf_bytes_per_step
from dkolib.io import load_torch

torch.set_num_threads(1)

# a 33-cell ideal-phase array, one thread per process, 4 steps, checkpoints every 2, no evaluation before the end
OVER = {"optics.n_cells": 33, "optics.meta_atom": "ideal", "optics.subpixel": 1, "optics.render_window_px": 15,
        "optics.sensor_distance_m": 1e-3, "threads": 1, "e2e.steps": 4, "stage1.checkpoint_every": 2,
        "stage1.eval_every": 100}
LAUNCH = {"timeout_s": 180.0, "start_method": "forkserver",
          "preload": ["torch._dynamo", "dkolib.distributed", "dkolib.dko.train", "test_distributed_e2e"]}


class _FailingPsf:
    """The front end's PSF call, except that on rank 1 its call number ``at`` raises."""

    def __init__(self, at: int):
        from dkolib.dko import frontend

        self.at, self.calls, self.inner = at, 0, frontend._compute_psf

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if int(os.environ["RANK"]) == 1 and self.calls == self.at:
            raise RuntimeError("injected failure on rank 1")
        return self.inner(*args, **kwargs)


def _result(model, out: Path) -> dict:
    res = {"latent": model.first_layer.array.latent.detach().clone(),
           "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
    if os.environ["RANK"] == "0":  # the process group is gone once run_e2e returns
        res["log"] = pd.read_csv(out / "log.csv")
        res["budget"] = load_torch(out / "model.pt")["budget"]
    return res


def _worker(out: str, cache: str, fail_at: int | None = None) -> dict:
    from dkolib.dko import frontend
    from dkolib.dko.train import run_e2e

    torch.set_num_threads(1)
    if fail_at is not None:
        frontend._compute_psf = _FailingPsf(fail_at)
    model = run_e2e(load_config("smoke", OVER), Path(out), Path(cache), progress=False)
    return _result(model, Path(out))


def _values(outcomes):
    bad = [f"rank {o.rank}: {o.error}\n{o.traceback or ''}" for o in outcomes if not o.ok]
    assert not bad, "\n".join(bad)
    return [o.value for o in outcomes]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The single-process run, an uninterrupted two-process run, one in which rank 1 raises in
    step 3 (after the checkpoint at step 2), and that run started again."""
    from dkolib.depth.data import get_dataset
    from dkolib.dko.train import run_e2e

    tmp = tmp_path_factory.mktemp("e2e")
    cfg = load_config("smoke", OVER)
    cache = tmp / "cache"
    for split in ("train", "val"):  # made once here, read by every process
        get_dataset(cfg, split, cache)
    from dkolib.dko.train import _build_array
    from dkolib.io import seed_everything

    start = _build_array(cfg, 8, cfg.e2e.init, seed_everything(cfg.seed)).latent.detach().clone()
    single = run_e2e(cfg, tmp / "single", cache, progress=False)
    one = {"latent": single.first_layer.array.latent.detach().clone(), "state": single.state_dict(),
           "log": pd.read_csv(tmp / "single" / "log.csv"), "budget": load_torch(tmp / "single" / "model.pt")["budget"]}
    two = _values(launch_local(_worker, 2, args=(str(tmp / "two"), str(cache)), **LAUNCH))
    # PSF calls on rank 1: the gain match (whole array), the FLOP count's dry run, steps 1, 2, 3
    failed = launch_local(_worker, 2, args=(str(tmp / "resumed"), str(cache), 5), **LAUNCH)
    ckpt_steps = [load_torch(tmp / "resumed" / f"ckpt_rank{r}of2.pt")["step"] for r in range(2)]
    resumed = _values(launch_local(_worker, 2, args=(str(tmp / "resumed"), str(cache)), **LAUNCH))
    return {"tmp": tmp, "start": start, "one": one, "two": two, "failed": failed, "ckpt_steps": ckpt_steps, "resumed": resumed}


def test_two_processes_train_the_single_process_model(runs):
    one, (r0, r1) = runs["one"], runs["two"]
    assert ShardPlan(8, 3, 2).element_counts == [24, 24]  # smoke conv1: 8 channels, 4 per process
    # every process ends with the whole array and the same network (replicated, to the bit)
    assert torch.equal(r0["latent"], r1["latent"])
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    log, ref = r0["log"], one["log"]
    assert len(log) == len(ref) == OVER["e2e.steps"]
    assert log["loss"].iloc[0] == ref["loss"].iloc[0]  # the first step's PSFs and network: the same to the bit
    pd.testing.assert_series_equal(log["loss"], ref["loss"], check_exact=False, rtol=1e-4)
    assert (r0["latent"] - one["latent"]).abs().max().item() < 1e-3
    for k, v in one["state"].items():
        if v.is_floating_point() and not k.endswith("array.latent"):
            assert torch.allclose(r0["state"][k], v, rtol=1e-3, atol=1e-6), k
    # the optics did train (so the agreement above is not that of two untouched starts): the latents
    # moved from the start by far more than the tolerance, on both processes' blocks
    moved = (one["latent"] - runs["start"]).abs().amax((-2, -1))
    assert moved.min().item() > 0.05, moved


def test_the_meter_charges_every_process_for_the_network_and_each_psf_once(runs):
    one, two = runs["one"]["budget"], runs["two"][0]["budget"]
    assert two["flops_by"]["network"] == pytest.approx(2 * one["flops_by"]["network"], rel=1e-12)
    assert two["flops_by"]["optics"] == pytest.approx(one["flops_by"]["optics"], rel=1e-12)
    assert two["flops"] == pytest.approx(one["flops"] + one["flops_by"]["network"], rel=1e-12)
    assert two["cpu_s"] > 0 and two["wall_s"] > 0


def test_only_rank_0_writes_the_model_and_each_process_its_checkpoint(runs):
    out = runs["tmp"] / "two"
    names = sorted(p.name for p in out.iterdir())
    assert names == ["ckpt_rank0of2.pt", "ckpt_rank1of2.pt", "log.csv", "log_rank1of2.csv", "model.pt"]
    for r in range(2):  # each checkpoint holds the whole array and its own process's optimiser state
        state = load_torch(out / f"ckpt_rank{r}of2.pt")
        assert state["model"]["first_layer.array.latent"].shape[0] == 48
        optics_state = state["optimizer"]["state"][0]["exp_avg"]
        assert optics_state.shape[0] == 24


def test_a_failing_rank_fails_the_other_and_the_run_resumes_to_the_uninterrupted_result(runs):
    peer, failing = runs["failed"]
    assert not failing.ok and failing.error == "RuntimeError: injected failure on rank 1"
    assert not peer.ok and peer.error_type == "RankFailureError"
    assert "the all-gather of the PSFs failed" in peer.error
    assert runs["ckpt_steps"] == [2, 2]
    resumed, full = runs["resumed"][0], runs["two"][0]
    assert torch.equal(resumed["latent"], full["latent"])
    for k in full["state"]:
        assert torch.equal(resumed["state"][k], full["state"][k]), k
    assert resumed["log"]["loss"].tolist() == full["log"]["loss"].tolist()


def test_psf_bytes_per_step_by_hand():
    # 2 channels x 3 inputs x 2 signs over 2 processes: blocks of 6 PSFs of 7 x 7 float32 = 1176 bytes
    b = psf_bytes_per_step(ShardPlan(2, 3, 2), 7)
    assert b == {"block_bytes": 6 * 49 * 4, "sent_per_rank": 1176, "sent_total": 2352}
    # the paper: 64 channels (384 metasurfaces) over 8 GPUs: 48 PSFs per block, 7 blocks sent by each
    p = psf_bytes_per_step(ShardPlan(64, 3, 8), 7)
    assert p["block_bytes"] == 48 * 49 * 4 and p["sent_per_rank"] == 7 * 48 * 49 * 4
    assert psf_bytes_per_step(ShardPlan(64, 3, 1), 7)["sent_total"] == 0


def test_torchrun_train_e2e_script_gives_the_single_process_model(runs, tmp_path):
    """``scripts/train_e2e.py`` unchanged under torchrun: the same log and model as one process."""
    import subprocess
    import sys

    from dkolib.distributed import find_free_port

    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "torchrun"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(find_free_port()), str(root / "scripts" / "train_e2e.py"), "--profile", "smoke",
           "--out", str(out), "--cache-dir", str(runs["tmp"] / "cache"), "--quiet",
           *[a for k, v in OVER.items() for a in ("--set", f"{k}={v}")]]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=LAUNCH["timeout_s"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("wrote") == 1  # only rank 0 wrote the model
    log = pd.read_csv(out / "log.csv")
    pd.testing.assert_series_equal(log["loss"], runs["one"]["log"]["loss"], check_exact=False, rtol=1e-4)
    latent = load_torch(out / "model.pt")["state_dict"]["first_layer.array.latent"]
    assert (latent - runs["one"]["latent"]).abs().max().item() < 1e-3
