"""DKO stage 2 sharded over processes (dkolib.distributed): Gloo on CPU, 2 local processes.

The reference for every sharded run is the single-process ``synthesize`` of the same problem.

Agreement tolerance: the reduction order is not what differs -- each step all-gathers the
per-element statistics and sums them in element order, exactly as one process does, so the
first step's history row (the forward pass of the common start) is compared bit for bit. What can
differ is the gradient: PyTorch's element-wise CPU kernels process a tensor in SIMD blocks and its
last few entries (fewer than two vectors) in a scalar loop, whose complex arithmetic (here the
backward of ``exp(i phase)``) can round differently by one ulp; the last cells of a shard's last
metasurface are that scalar tail in the shard's ``[E_r, N, N]`` latent but not in the whole array's,
and Adam carries the difference on. On an AVX2 machine the smooth-design problem below comes out
bit-identical (Adam's normalised update hides the ulp), the lens start does not: its latents differ
by ~4e-6 rad after 8 steps and its correlations and gains by ~2e-6 relative. Tolerances: 1e-3 rad
on latents, 1e-4 relative on history columns, 1e-3 on gains and fidelity.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from dkolib.config import load_config
from dkolib.distributed import (RankFailureError, ShardPlan, TorchrunEnv, backend_for, find_free_port, launch_local,
                                process_group, shard_channels, stage2_bytes_per_step, synthesize_on_ranks,
                                synthesize_sharded)
from dkolib.dko.budget import BudgetMeter
from dkolib.dko.synthesis import synthesize
from dkolib.errors import InputError
from dkolib.io import load_torch
from dkolib.optics.metaatoms import IdealPhaseAtom

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent

# the 33-cell problem of tests/test_synthesis.py::_tiny_problem, with a random start drawn from the
# generator (so the ranks must draw it alike) and the smooth-design settings that stage 2 passes on
TINY = {"optics.n_cells": 33, "optics.meta_atom": "ideal", "optics.subpixel": 1, "optics.render_window_px": 15,
        "optics.sensor_distance_m": 1e-3, "dko.init": "smooth_random", "dko.init_corr_cells": 2.0,
        "dko.smoothness_weight": 0.05, "dko.phase_block_cells": 3}
# stopping rule: the summed loss of this trace improves by 4.5 % over 3 steps at step 13 and by more
# than 5 % before (checked below against the single-process trace), so the rule fires well before the cap
STOP = {"steps": 30, "lr": 0.1, "stop_window": 3, "stop_tol": 0.048}
# a noisy lens start on the full phase grid, no smoothness term
LENS_START = {"dko.init": "lens_random", "dko.smoothness_weight": 0.0, "dko.phase_block_cells": 1}
LAUNCH_TIMEOUT_S = 90.0
# the ranks fork from one server process that imported these once (torch's optimiser import alone
# takes seconds), not from a fresh interpreter per launch
LAUNCH = {"timeout_s": LAUNCH_TIMEOUT_S, "start_method": "forkserver",
          "preload": ["torch._dynamo", "dkolib.distributed", "dkolib.dko.synthesis", "dkolib.study.pipeline",
                      "test_distributed"]}


def _problem(c_out: int = 3, over: dict | None = None):
    cfg = load_config("smoke", {**TINY, **(over or {})})
    w = torch.randn(c_out, 3, 7, 7, generator=torch.Generator().manual_seed(3))
    return cfg, w


def _reference(c_out: int = 3, over: dict | None = None, **run):
    cfg, w = _problem(c_out, over)
    return synthesize(w, cfg.optics, cfg.dko, atom=IdealPhaseAtom(), generator=torch.Generator().manual_seed(0),
                      progress=False, **run)


def _plain(res) -> dict:
    return {"latent": res.array.latent.detach().clone(), "history": res.history, "fidelity": res.fidelity,
            "gain": res.gain, "element_gain": res.element_gain, "steps": res.steps, "stopped": res.stopped_early}


class _FailingPsf:
    """The PSF engine, except that on ``rank`` its call number ``at`` raises (after ``hang_s``
    seconds of not answering, when given)."""

    def __init__(self, rank: int, at: int, hang_s: float = 0.0):
        self.rank, self.at, self.hang_s, self.calls = rank, at, hang_s, 0

    def __call__(self, *args, **kwargs):
        from dkolib.optics.propagation import psf

        self.calls += 1
        if int(os.environ["RANK"]) == self.rank and self.calls == self.at:
            time.sleep(self.hang_s)
            raise RuntimeError(f"injected failure on rank {self.rank}")
        return psf(*args, **kwargs)


def _sharded(c_out: int, ckpt_dir=None, psf_fn=None, over: dict | None = None, **run):
    cfg, w = _problem(c_out, over)
    res = synthesize_sharded(w, cfg.optics, cfg.dko, atom=IdealPhaseAtom(), generator=torch.Generator().manual_seed(0),
                             progress=False, ckpt_dir=ckpt_dir, psf_fn=psf_fn, **run)
    return None if res is None else _plain(res)


# ----------------------------------------------------------- rank workers (module level: spawned by name)


def _worker_compare() -> dict:
    torch.set_num_threads(1)
    with process_group("cpu", timeout_s=60):
        return {"unequal": _sharded(3, **STOP), "idle_rank": _sharded(1, steps=4, lr=0.1),
                "lens_start": _sharded(3, over=LENS_START, steps=8, lr=0.1)}


def _worker_interrupted(ckpt_dir: str) -> dict:
    torch.set_num_threads(1)
    with process_group("cpu", timeout_s=20):
        return _sharded(3, ckpt_dir=ckpt_dir, psf_fn=_FailingPsf(rank=1, at=5), steps=6, lr=0.1, ckpt_every=2)


def _worker_resume(ckpt_dir: str, fresh_dir: str) -> dict:
    torch.set_num_threads(1)
    with process_group("cpu", timeout_s=60):
        return {"resumed": _sharded(3, ckpt_dir=ckpt_dir, steps=6, lr=0.1, ckpt_every=2),
                "uninterrupted": _sharded(3, ckpt_dir=fresh_dir, steps=6, lr=0.1, ckpt_every=2)}


def _worker_failing(hang_s: float, timeout_s: float):
    torch.set_num_threads(1)
    cfg, w = _problem(3)
    return synthesize_on_ranks(w, cfg.optics, cfg.dko, atom=IdealPhaseAtom(), generator=torch.Generator().manual_seed(0),
                               progress=False, steps=6, lr=0.1, timeout_s=timeout_s,
                               psf_fn=_FailingPsf(rank=1, at=2, hang_s=hang_s))


def _values(outcomes):
    bad = [f"rank {o.rank}: {o.error}\n{o.traceback or ''}" for o in outcomes if not o.ok]
    assert not bad, "\n".join(bad)
    return [o.value for o in outcomes]


def _assert_close_to_reference(got: dict, ref, lat_atol=1e-3, hist_rtol=1e-4):
    """Sharded result vs the single-process one (tolerance: module docstring)."""
    assert got["steps"] == ref.steps and got["stopped"] == ref.stopped_early
    hist, ref_hist = got["history"].drop(columns="seconds"), ref.history.drop(columns="seconds")
    assert list(hist.columns) == list(ref_hist.columns) and len(hist) == len(ref_hist)
    # step 1 (the PSFs of the common start) is the same to the bit: same latents, same sums in the same order
    assert hist.iloc[0].tolist() == ref_hist.iloc[0].tolist()
    pd.testing.assert_frame_equal(hist, ref_hist, check_exact=False, rtol=hist_rtol, atol=1e-9)
    lat_ref = ref.array.latent.detach()
    assert got["latent"].shape == lat_ref.shape
    assert (got["latent"] - lat_ref).abs().max().item() < lat_atol
    assert torch.allclose(got["gain"], ref.gain, rtol=1e-3, atol=1e-6)
    assert torch.allclose(got["element_gain"], ref.element_gain, rtol=1e-3, atol=1e-6)
    fid, ref_fid = got["fidelity"], ref.fidelity
    keys = ["level", "index", "out_channel", "in_channel", "sign", "dark"]
    assert fid[keys].equals(ref_fid[keys])  # every element and channel, in element order
    num = ref_fid.select_dtypes("number").columns
    pd.testing.assert_frame_equal(fid[num], ref_fid[num], check_exact=False, rtol=1e-3, atol=1e-5)


# ------------------------------------------------------------------------------------------- tests


def test_two_processes_match_one_process_and_stop_at_the_same_step():
    ref = _reference(3, **STOP)
    # the trace fires the rule well before the cap and not on a knife's edge (so rounding cannot move it)
    loss = ref.history["loss"].tolist()
    n, tol = STOP["stop_window"], STOP["stop_tol"]
    rel = [(loss[t - n] - loss[t]) / abs(loss[t - n]) for t in range(n, len(loss))]
    assert ref.stopped_early and ref.steps < STOP["steps"] - 5
    assert rel[-1] < tol - 1e-3 and min(rel[:-1]) > tol + 1e-3

    out = _values(launch_local(_worker_compare, 2, **LAUNCH))
    assert out[1] == {"unequal": None, "idle_rank": None, "lens_start": None}  # only rank 0 returns the result
    got = out[0]["unequal"]
    assert ShardPlan(3, 3, 2).element_counts == [12, 6]  # unequal shards: channels [0, 1] and [2]
    _assert_close_to_reference(got, ref)
    # one output channel over two processes: rank 1 has nothing to do and the result is unchanged
    _assert_close_to_reference(out[0]["idle_rank"], _reference(1, steps=4, lr=0.1))
    # a lens start without the block projection: here the SIMD-tail rounding (module docstring) shows
    _assert_close_to_reference(out[0]["lens_start"], _reference(3, over=LENS_START, steps=8, lr=0.1))


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory):
    """A 2-process run (steps=6, checkpoints every 2 steps) in which rank 1 raises in step 5."""
    ckpt = tmp_path_factory.mktemp("interrupted")
    return ckpt, launch_local(_worker_interrupted, 2, args=(str(ckpt),), **LAUNCH)


def test_a_rank_that_raises_fails_the_others_at_once_with_a_clear_error(interrupted_run):
    _, (peer, failing) = interrupted_run
    assert not failing.ok and failing.error == "RuntimeError: injected failure on rank 1"
    assert not peer.ok and peer.error_type == "RankFailureError"
    assert peer.error.startswith("RankFailureError: rank 0 of 2: the all-gather of a step's statistics failed: "
                                 "another process of the run raised an error")
    # rank 1 left the group when it raised, so rank 0 failed at once, not after the 20 s timeout
    assert peer.seconds < failing.seconds + 10.0


def test_interrupted_two_process_run_resumes_to_the_uninterrupted_result(interrupted_run, tmp_path):
    ckpt, first = interrupted_run
    assert not first[0].ok and not first[1].ok
    # both shards were checkpointed at step 4 (every 2 steps) before the failure in step 5
    files = sorted(p.name for p in ckpt.iterdir() if p.suffix == ".pt")
    assert files == ["ckpt_rank0of2.pt", "ckpt_rank1of2.pt"]
    assert [load_torch(ckpt / f)["step"] for f in files] == [4, 4]
    assert [load_torch(ckpt / f)["latent"].shape[0] for f in files] == [12, 6]

    out = _values(launch_local(_worker_resume, 2, args=(str(ckpt), str(tmp_path / "fresh")), **LAUNCH))
    resumed, full = out[0]["resumed"], out[0]["uninterrupted"]
    assert resumed["steps"] == full["steps"] == 6
    # same shards, same arithmetic: the resumed run is the uninterrupted one to the bit
    assert torch.equal(resumed["latent"], full["latent"])
    assert resumed["history"]["loss"].tolist() == full["history"]["loss"].tolist()
    assert torch.equal(resumed["element_gain"], full["element_gain"])
    # and both are the single-process run (to rounding; module docstring)
    _assert_close_to_reference(resumed, _reference(3, steps=6, lr=0.1))


def test_a_rank_that_stops_answering_fails_the_others_at_the_timeout():
    timeout_s, hang_s = 2.0, 8.0
    t0 = time.monotonic()
    peer, failing = launch_local(_worker_failing, 2, args=(hang_s, timeout_s), **LAUNCH)
    assert time.monotonic() - t0 < LAUNCH_TIMEOUT_S - 10  # nobody waited for the launcher to kill it
    assert not failing.ok and "injected failure on rank 1" in failing.error  # raised after hanging
    assert not peer.ok and peer.error_type == "RankFailureError"
    assert "rank 0 of 2" in peer.error and f"did not answer within {timeout_s:g} s" in peer.error
    # rank 0 gave up after the collective timeout, long before rank 1 woke up and raised
    assert peer.seconds < failing.seconds - (hang_s - 3 * timeout_s)


def test_torchrun_run_dko_shards_stage_2_and_only_rank_0_writes(tmp_path):
    from dkolib.depth.network import DepthNet
    from dkolib.dko.train import save_model
    from dkolib.study.pipeline import run_dko_stage2

    overrides = {k: v for k, v in TINY.items() if k.startswith("optics.")}
    cfg = load_config("smoke", {**overrides, "threads": 1, "dko.steps": 3})
    torch.manual_seed(0)
    net = DepthNet(cfg.model, kernel_size=cfg.optics.kernel_size)
    budget = BudgetMeter()
    budget.add_flops(1e9, "network")
    stage1 = save_model(net, tmp_path / "stage1.pt", cfg, budget)

    run_dko_stage2(cfg, stage1, tmp_path / "one", progress=False)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    sets = [f"{k}={v}" for k, v in overrides.items()]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(find_free_port()), str(ROOT / "scripts" / "run_dko.py"), "--profile", "smoke",
           "--stage1", str(stage1), "--out", str(tmp_path / "two"), "--steps", "3", "--threads", "1",
           "--no-progress", "--set", *sets]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("n_elements") == 1  # only rank 0 printed a summary

    written = sorted(p.name for p in (tmp_path / "two").iterdir())
    assert written == ["array.pt", "ckpt_rank0of2.pt", "ckpt_rank1of2.pt", "fidelity.csv", "gain.pt", "history.csv",
                       "model.pt", "summary.csv"]
    s1, s2 = (pd.read_csv(tmp_path / d / "summary.csv").iloc[0] for d in ("one", "two"))
    assert s2["steps"] == s1["steps"] == 3 and s2["n_elements"] == s1["n_elements"] == 2 * 3 * net.conv1_channels
    # the merged budget counts both shards' FLOPs: those of the whole array
    assert s2["stage2_flops"] == pytest.approx(s1["stage2_flops"], rel=1e-12)
    assert s2["total_flops"] == pytest.approx(s1["total_flops"], rel=1e-12)
    h1, h2 = (pd.read_csv(tmp_path / d / "history.csv").drop(columns="seconds") for d in ("one", "two"))
    pd.testing.assert_frame_equal(h2, h1, check_exact=False, rtol=1e-4)
    a1, a2 = (load_torch(tmp_path / d / "array.pt")["state_dict"]["latent"] for d in ("one", "two"))
    assert (a2 - a1).abs().max().item() < 1e-3
    g1, g2 = (load_torch(tmp_path / d / "gain.pt") for d in ("one", "two"))
    assert torch.allclose(g2, g1, rtol=1e-3, atol=1e-6)


def test_one_process_group_gives_the_single_process_result_bit_for_bit(tmp_path, monkeypatch):
    """World size 1 through the whole sharded path (hook, collectives, per-rank checkpoint, budget merge):
    the shard is the whole array, so nothing may differ."""
    _one_process_env(monkeypatch)
    cfg, w = _problem(3)
    meter_ref, meter = BudgetMeter(), BudgetMeter()
    ref = synthesize(w, cfg.optics, cfg.dko, atom=IdealPhaseAtom(), generator=torch.Generator().manual_seed(0),
                     progress=False, budget=meter_ref, **STOP)
    got = synthesize_on_ranks(w, cfg.optics, cfg.dko, atom=IdealPhaseAtom(), generator=torch.Generator().manual_seed(0),
                              progress=False, budget=meter, ckpt_dir=tmp_path, log_csv=tmp_path / "h.csv", **STOP)
    assert torch.equal(got.array.latent, ref.array.latent)
    assert got.history.drop(columns="seconds").equals(ref.history.drop(columns="seconds"))
    assert got.fidelity.equals(ref.fidelity) and torch.equal(got.element_gain, ref.element_gain)
    assert got.steps == ref.steps and got.stopped_early
    assert meter.flops == meter_ref.flops and meter.flops_by == meter_ref.flops_by
    assert load_torch(tmp_path / "ckpt_rank0of1.pt")["step"] == ref.steps
    assert len(pd.read_csv(tmp_path / "h.csv")) == ref.steps


def test_gather_hook_that_returns_its_input_changes_nothing():
    cfg, w = _problem(2)
    seen = []

    def identity(stats):
        seen.append(tuple(stats.shape))
        return stats.clone()

    run = dict(atom=IdealPhaseAtom(), progress=False, steps=5, lr=0.1, stop_window=2, stop_tol=0.5)
    ref = synthesize(w, cfg.optics, cfg.dko, generator=torch.Generator().manual_seed(0), **run)
    got = synthesize(w, cfg.optics, cfg.dko, generator=torch.Generator().manual_seed(0), gather_elements=identity, **run)
    assert seen[0] == (1, 12) and seen[1:] == [(4, 12)] * got.steps  # the lit mask once, then 4 statistics a step
    assert torch.equal(got.array.latent, ref.array.latent)
    assert got.history.drop(columns="seconds").equals(ref.history.drop(columns="seconds"))
    assert got.steps == ref.steps
    with pytest.raises(ValueError, match="gather_elements must return"):
        synthesize(w, cfg.optics, cfg.dko, gather_elements=lambda s: s[0], **run)


# ----------------------------------------------------------------------------------- shard plan, env


def test_shard_plan_by_hand():
    assert shard_channels(5, 2) == [range(0, 3), range(3, 5)]
    assert shard_channels(1, 2) == [range(0, 1), range(1, 1)]
    assert shard_channels(16, 3) == [range(0, 6), range(6, 11), range(11, 16)]
    assert shard_channels(4, 4) == [range(i, i + 1) for i in range(4)]
    plan = ShardPlan(c_out=5, c_in=3, world_size=2)
    assert [list(plan.channels(r)) for r in range(2)] == [[0, 1, 2], [3, 4]]
    # element e = (o * C_in + i) * 2 + s: channel o owns elements [6 o, 6 o + 6)
    assert plan.elements(0) == range(0, 18) and plan.elements(1) == range(18, 30)
    assert plan.element_counts == [18, 12] and plan.max_elements == 18 and plan.active_ranks == [0, 1]
    empty = ShardPlan(c_out=1, c_in=3, world_size=2)
    assert len(empty.channels(1)) == 0 and len(empty.elements(1)) == 0 and empty.active_ranks == [0]
    # one step all-gathers 4 float64 statistics per element, padded to the largest shard: rank r sends
    # the other rank its 4 x 18 x 8 bytes
    assert stage2_bytes_per_step(plan) == {"block_bytes": 576, "sent_per_rank": 576, "sent_total": 1152}
    assert stage2_bytes_per_step(empty)["sent_total"] == 0
    with pytest.raises(InputError, match="at least one output channel"):
        shard_channels(0, 2)
    with pytest.raises(InputError, match="rank must be"):
        plan.channels(2)


def test_torchrun_environment_is_read_and_checked():
    assert TorchrunEnv.from_environ({}) == TorchrunEnv(0, 1, 0) and not TorchrunEnv.from_environ({}).is_distributed
    env = TorchrunEnv.from_environ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (env.rank, env.world_size, env.local_rank, env.is_distributed) == (3, 4, 1, True)
    assert TorchrunEnv.from_environ({"RANK": "1", "WORLD_SIZE": "2"}).local_rank == 1
    with pytest.raises(InputError, match="both or neither"):
        TorchrunEnv.from_environ({"WORLD_SIZE": "2"})
    with pytest.raises(InputError, match="0 <= RANK < WORLD_SIZE"):
        TorchrunEnv.from_environ({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(InputError, match="must be an integer"):
        TorchrunEnv.from_environ({"RANK": "zero", "WORLD_SIZE": "2"})
    assert backend_for("cpu") == "gloo" and backend_for(torch.device("cuda", 1)) == "nccl"


def test_sharded_synthesis_needs_a_process_group():
    cfg, w = _problem(1)
    with pytest.raises(InputError, match="torchrun"):
        synthesize_sharded(w, cfg.optics, cfg.dko, atom=IdealPhaseAtom(), steps=1)


def test_rank_failure_error_is_raised_for_backend_errors(monkeypatch):
    from dkolib.distributed.comm import collective

    _one_process_env(monkeypatch)

    def broken():
        raise RuntimeError("Connection closed by peer")

    with process_group("cpu", timeout_s=10):
        with pytest.raises(RankFailureError, match="rank 0 of 1: the test collective failed.*within 10 s.*"
                                                   "Connection closed by peer"):
            collective("the test collective", broken)


def _one_process_env(monkeypatch) -> None:
    """torchrun's variables for a single process (rank 0 of 1) on a free port."""
    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(find_free_port()), "RANK": "0",
                       "WORLD_SIZE": "1", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, value)
