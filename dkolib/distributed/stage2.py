"""DKO stage 2 sharded over the processes of a ``torch.distributed`` group.

Every process builds the whole array's initial latents ``[E, N, N]`` from the shared
generator exactly as one process would (the same draws, in the same order), keeps the
metasurfaces of its output channels (:class:`~dkolib.distributed.shard.ShardPlan`), and runs
:func:`~dkolib.dko.synthesis.synthesize` on them with a ``gather_elements`` hook: each step
all-gathers the per-element loss, efficiencies and correlation (4 float64 numbers per
metasurface, :func:`~dkolib.distributed.comm.stage2_bytes_per_step`), so every process writes
the same history rows and takes the same stopping decision at the same step. Each process
checkpoints its own shard (``ckpt_rank{r}of{W}.pt``) and resumes from it; at the end rank 0
gathers the latents into the whole array, in element order, and computes the gains and the
fidelity table as :func:`~dkolib.dko.synthesis.synthesize` does.

Agreement with one process: the forward pass of every metasurface, hence the first step's
history row, is bit-identical. The later steps agree to float32 rounding, not to the bit:
PyTorch's CPU element-wise kernels process a tensor in SIMD blocks and its last few entries
(fewer than two vectors) in a scalar loop whose complex arithmetic can round differently by
one ulp. The last cells of each shard's last metasurface are such a tail in the shard's
``[E_r, N, N]`` latent but not in the whole array's, so their gradients (e.g. the backward
of ``exp(i phase)``) may differ in the last bit, and the optimisation carries that on
(``tests/test_distributed.py`` states the tolerance).
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Callable

import torch

from ..dko.budget import BudgetMeter
from ..dko.synthesis import SynthesisResult, finish_synthesis, initial_array, make_atom, synthesize
from ..errors import InputError
from .comm import all_gather_blocks, all_gather_objects, gather_blocks
from .env import TorchrunEnv, process_group, rank_device
from .shard import ShardPlan


def shard_ckpt_path(ckpt_dir: str | Path, rank: int, world_size: int) -> Path:
    """The checkpoint of ``rank``'s shard in a run of ``world_size`` processes."""
    return Path(ckpt_dir) / f"ckpt_rank{rank}of{world_size}.pt"


def _digest(*tensors: torch.Tensor) -> str:
    h = hashlib.sha1()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _ckpt_progress(path: Path | None) -> tuple[int, bool] | None:
    """``(step, stopped)`` of a shard checkpoint, None when there is none."""
    from ..io import load_torch

    if path is None or not path.exists():
        return None
    state = load_torch(path, map_location="cpu")
    return int(state["step"]), bool(state.get("stopped", False))


def _check_start(infos: list[dict], plan: ShardPlan, ckpt_dir) -> None:
    """Raise the same :class:`InputError` on every rank when the ranks cannot run together."""
    digests = {i["inputs"] for i in infos}
    if len(digests) > 1:
        seen = ", ".join(f"rank {i['rank']}: {i['inputs'][:10]}" for i in infos)
        raise InputError("the processes disagree on the stage-1 weight or the initial latents (" + seen + "): "
                         "every process must load the same stage-1 network with the same config and seed")
    progress = {i["rank"]: i["progress"] for i in infos if i["rank"] in plan.active_ranks}
    if len(set(progress.values())) > 1:
        seen = ", ".join(f"rank {r}: " + ("no checkpoint" if p is None else f"step {p[0]}" + (" (stopped)" if p[1] else ""))
                         for r, p in sorted(progress.items()))
        raise InputError(f"the shard checkpoints in {ckpt_dir} are at different steps ({seen}): the run was stopped "
                         f"while they were being written. Delete {Path(ckpt_dir) / f'ckpt_rank*of{plan.world_size}.pt'} "
                         "to start stage 2 over")


def _warn_foreign_checkpoints(ckpt_dir: Path, world_size: int) -> None:
    others = [p.name for p in sorted(ckpt_dir.glob("ckpt*.pt"))
              if not (p.name.startswith("ckpt_rank") and p.name.endswith(f"of{world_size}.pt"))]
    if others:
        warnings.warn(f"{ckpt_dir} holds checkpoints of runs with another process count ({', '.join(others)}); "
                      f"a run of {world_size} processes resumes only from ckpt_rank*of{world_size}.pt", stacklevel=3)


def _budget_delta(meter: BudgetMeter, start: dict) -> dict:
    by0 = start.get("flops_by", {})
    return {"wall_s": meter.wall_s - float(start["wall_s"]), "cpu_s": meter.cpu_s - float(start["cpu_s"]),
            "flops": meter.flops - float(start["flops"]),
            "flops_by": {c: v - float(by0.get(c, 0.0)) for c, v in meter.flops_by.items()}}


def _merge_budget(budget: BudgetMeter, start: dict, deltas: list[dict]) -> None:
    """``budget`` = ``start`` + the run of every rank: the longest rank's wall seconds (they ran
    at the same time), the sum of their CPU seconds and FLOPs."""
    state = dict(start)
    state["wall_s"] = float(start["wall_s"]) + max(d["wall_s"] for d in deltas)
    state["cpu_s"] = float(start["cpu_s"]) + sum(d["cpu_s"] for d in deltas)
    state["flops"] = float(start["flops"]) + sum(d["flops"] for d in deltas)
    by = dict(start.get("flops_by", {}))
    for d in deltas:
        for c, v in d["flops_by"].items():
            by[c] = by.get(c, 0.0) + v
    state["flops_by"] = by
    budget.load_state_dict(state)


def synthesize_sharded(weight: torch.Tensor, optics_cfg, dko_cfg, atom=None, engine: str = "fast",
                       generator: torch.Generator | None = None, progress: bool = True,
                       ckpt_dir: str | Path | None = None, log_csv: str | Path | None = None,
                       budget: BudgetMeter | None = None, *, device: torch.device | str | None = None,
                       psf_fn: Callable | None = None, window_px: int | None = None, ckpt_every: int = 50,
                       lr: float | None = None, loss: str | None = None, steps: int | None = None,
                       stop_window: int | None = None, stop_tol: float | None = None) -> SynthesisResult | None:
    """:func:`~dkolib.dko.synthesis.synthesize` with the output channels shared out over the
    processes of the default ``torch.distributed`` group (which must exist: see
    :func:`synthesize_on_ranks`). Every process calls it with the same arguments.

    Args:
        weight: ``[C_out, C_in, k, k]`` stage-1 kernels (the same on every process).
        optics_cfg, dko_cfg, atom, engine, progress, psf_fn, window_px, ckpt_every, lr, loss,
            steps, stop_window, stop_tol: as :func:`~dkolib.dko.synthesis.synthesize` (all
            ``dko_cfg`` settings -- ``init``, ``init_noise_rad``, ``init_corr_cells``,
            ``smoothness_weight``, ``phase_block_cells``, the stopping rule -- act as there);
            the progress bar shows on rank 0 only.
        generator: seeds the whole array's initialisation; it must be in the same state on
            every process (checked: the ranks compare the digests of weight and initial latents).
        ckpt_dir: folder of the per-rank checkpoints ``ckpt_rank{r}of{W}.pt`` (written every
            ``ckpt_every`` steps and at the end, resumed from when present; the ranks check
            that theirs are at the same step). None: no checkpoints.
        log_csv: the history CSV, written by rank 0.
        budget: the run's :class:`~dkolib.dko.budget.BudgetMeter` (e.g. holding stage 1); each
            rank meters its shard, and on return every rank's ``budget`` holds the start plus
            the longest rank's wall seconds and the sum of all ranks' CPU seconds and FLOPs.
        device: where this process optimises (e.g. ``cuda:<local rank>``; default CPU).
    Returns on rank 0 the :class:`SynthesisResult` of the whole array (``seconds``: rank 0's wall
    seconds of the optimisation, communication included); None on the other ranks. Ranks
    without channels (``C_out`` < world size) return at once.
    """
    import torch.distributed as dist

    from ..optics.metasurface import MetasurfaceArray

    if not (dist.is_available() and dist.is_initialized()):
        raise InputError("synthesize_sharded needs a torch.distributed process group: launch under "
                         "`torchrun --nproc_per_node N` and use synthesize_on_ranks (or call "
                         "dkolib.distributed.init_process_group first); for one process call synthesize")
    rank, world = dist.get_rank(), dist.get_world_size()
    k = int(optics_cfg.kernel_size)
    if weight.dim() != 4 or weight.shape[-1] != k or weight.shape[-2] != k:
        raise ValueError(f"weight must be [C_out, C_in, {k}, {k}] (optics.kernel_size), got {tuple(weight.shape)}")
    weight = weight.detach().to(torch.float32).cpu()
    c_out, c_in = int(weight.shape[0]), int(weight.shape[1])
    plan = ShardPlan(c_out, c_in, world)
    device = torch.device("cpu") if device is None else torch.device(device)
    atom = atom if atom is not None else make_atom(optics_cfg)

    # the whole array's start, drawn as synthesize() draws it (cheap next to the optimisation)
    whole = initial_array(c_out, c_in, optics_cfg, dko_cfg, atom, generator)
    channels, elements = plan.channels(rank), plan.elements(rank)
    ckpt = shard_ckpt_path(ckpt_dir, rank, world) if ckpt_dir is not None and len(channels) else None
    if ckpt_dir is not None and rank == 0 and Path(ckpt_dir).is_dir():
        _warn_foreign_checkpoints(Path(ckpt_dir), world)
    infos = all_gather_objects({"rank": rank, "inputs": _digest(weight, whole.latent), "progress": _ckpt_progress(ckpt)},
                               what="the start-up check of the sharded DKO stage 2")
    _check_start(infos, plan, ckpt_dir)
    active = plan.active_ranks
    group = None if len(active) == world else dist.new_group(active)  # every rank takes part in new_group
    if not len(channels):
        return None
    sizes = [plan.element_counts[r] for r in active]

    # the shard: a MetasurfaceArray of this rank's channels holding the whole array's start
    shard = MetasurfaceArray(len(channels), c_in, optics_cfg, atom, init="random",  # latents replaced below
                             generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        shard.latent.copy_(whole.latent[elements.start:elements.stop])
    shard = shard.to(device)
    if rank != 0:
        del whole

    start = budget.state_dict() if budget is not None else None
    meter = None
    if budget is not None:
        meter = BudgetMeter()
        meter.load_state_dict(start)

    def gather_elements(stats: torch.Tensor) -> torch.Tensor:
        return all_gather_blocks(stats, sizes, dim=1, group=group, what="the all-gather of a step's statistics")

    res = synthesize(weight[channels.start:channels.stop], optics_cfg, dko_cfg, atom=atom, engine=engine,
                     progress=progress and rank == 0, ckpt_path=ckpt, log_csv=log_csv if rank == 0 else None,
                     budget=meter, array=shard, psf_fn=psf_fn, window_px=window_px, ckpt_every=ckpt_every, lr=lr,
                     loss=loss, steps=steps, stop_window=stop_window, stop_tol=stop_tol,
                     gather_elements=gather_elements)
    if budget is not None:
        deltas = all_gather_objects(_budget_delta(meter, start), group=group, what="the all-gather of the budgets")
        _merge_budget(budget, start, deltas)
    latents = gather_blocks(res.array.latent.detach(), sizes, dst=0, dim=0, group=group,
                            what="the gather of the optimised latents on rank 0")
    if rank != 0:
        return None
    with torch.no_grad():
        whole.latent.copy_(latents.to(whole.latent.device))
    whole = whole.to(device)
    window = int(optics_cfg.loss_window_px if window_px is None else window_px)
    return finish_synthesis(whole, weight, optics_cfg, engine, psf_fn, window, res.history, res.seconds,
                            res.steps, res.stopped_early)


def synthesize_on_ranks(weight: torch.Tensor, optics_cfg, dko_cfg, device: torch.device | str = "cpu",
                        timeout_s: float | None = None, **kwargs) -> SynthesisResult | None:
    """:func:`synthesize_sharded` in a torchrun launch: joins the process group for ``device``
    (Gloo on CPU; NCCL on CUDA, each process on ``cuda:<LOCAL_RANK>``) unless one exists,
    runs, and leaves it. ``timeout_s``: the collectives' timeout
    (:func:`~dkolib.distributed.env.timeout_seconds`); ``kwargs`` go to :func:`synthesize_sharded`.
    Returns the result on rank 0, None elsewhere."""
    env = TorchrunEnv.from_environ()
    dev = rank_device(device, env.local_rank)
    with process_group(dev, timeout_s, env):
        return synthesize_sharded(weight, optics_cfg, dko_cfg, device=dev, **kwargs)


def synthesize_launched(weight: torch.Tensor, optics_cfg, dko_cfg, device: torch.device | str = "cpu", *,
                        generator: torch.Generator | None = None, ckpt_dir: str | Path | None = None,
                        **kwargs) -> SynthesisResult | None:
    """Stage 2 as the script was launched: over the processes of a torchrun launch
    (:func:`synthesize_on_ranks`, one checkpoint per rank in ``ckpt_dir``), else in this process
    (:func:`~dkolib.dko.synthesis.synthesize`, checkpoint ``ckpt_dir / 'ckpt.pt'``), the latents on
    ``device``. ``kwargs`` go to either. Returns the result; None on ranks other than 0."""
    if TorchrunEnv.from_environ().is_distributed:
        return synthesize_on_ranks(weight, optics_cfg, dko_cfg, device, generator=generator, ckpt_dir=ckpt_dir,
                                   **kwargs)
    array = None
    if torch.device(device).type != "cpu":  # build as synthesize() would, then move the latents to the device
        array = initial_array(weight.shape[0], weight.shape[1], optics_cfg, dko_cfg,
                              generator=generator).to(device)
    ckpt_path = None if ckpt_dir is None else Path(ckpt_dir) / "ckpt.pt"
    return synthesize(weight, optics_cfg, dko_cfg, generator=generator, ckpt_path=ckpt_path, array=array, **kwargs)
