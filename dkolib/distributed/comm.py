"""Collectives of a sharded stage 2 (blocks of unequal size), their byte counts, and the error
a process raises when another one failed.

Gloo's and NCCL's ``all_gather``/``gather`` move tensors of one shape, so a rank's block
(``n_r`` elements along the element dimension) is zero-padded to the largest block
``n_max`` (:attr:`~dkolib.distributed.shard.ShardPlan.max_elements`) and the padding is cut
off again on arrival; the block sizes come from the shard plan, which every rank knows,
so no sizes are exchanged.

Every collective here turns a backend failure -- the connection to a rank that exited, or
the process group's timeout when one hangs -- into :class:`RankFailureError`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from .env import current_timeout_s
from .shard import ShardPlan


class RankFailureError(RuntimeError):
    """A collective failed because another process raised, was killed or stopped answering.

    The message names this rank, what it was doing and the timeout; the other process's own
    error (in its log; torchrun prints every rank's) says why the run failed.
    """


def _whoami() -> str:
    import torch.distributed as dist

    return f"rank {dist.get_rank()} of {dist.get_world_size()}"


def collective(what: str, fn: Callable[[], Any]) -> Any:
    """Run the collective ``fn()``; a backend error becomes :class:`RankFailureError`.

    ``what``: a few words on what the collective is for (for the message).
    """
    try:
        return fn()
    except RankFailureError:
        raise
    except RuntimeError as exc:  # torch.distributed.DistError and the backends' errors derive from it
        timeout = current_timeout_s()
        limit = f"{timeout:g} s" if timeout is not None else "the process group's timeout"
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RankFailureError(
            f"{_whoami()}: {what} failed: another process of the run raised an error, was killed "
            f"or did not answer within {limit} (collective timeout; DKO_DIST_TIMEOUT_S sets it). Its own error, "
            f"printed by that process (torchrun shows each rank's), says why. Backend error: {first_line}") from exc


def comm_device(group=None) -> torch.device:
    """Where a collective's tensors must be: the current CUDA device for NCCL, else the CPU."""
    import torch.distributed as dist

    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _pad(x: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    if x.shape[dim] == size:
        return x.contiguous()
    shape = list(x.shape)
    shape[dim] = size
    out = torch.zeros(shape, dtype=x.dtype, device=x.device)
    out.narrow(dim, 0, x.shape[dim]).copy_(x)
    return out


def all_gather_blocks(local: torch.Tensor, sizes: Sequence[int], dim: int = 0, group=None,
                      what: str = "all-gather") -> torch.Tensor:
    """Concatenate every rank's block along ``dim``, in rank order, on every rank.

    Args:
        local: this rank's block; ``local.shape[dim] == sizes[i]`` for its index ``i`` in the group.
        sizes: the block size of each rank of ``group`` (from the shard plan).
        dim: the element dimension.
    Returns ``[..., sum(sizes), ...]`` on ``local``'s device.
    """
    import torch.distributed as dist

    n_max = max(sizes)
    dev = comm_device(group)
    block = _pad(local.to(dev), dim, n_max)
    parts = [torch.empty_like(block) for _ in sizes]
    collective(what, lambda: dist.all_gather(parts, block, group=group))
    return torch.cat([p.narrow(dim, 0, n) for p, n in zip(parts, sizes)], dim).to(local.device)


def gather_blocks(local: torch.Tensor, sizes: Sequence[int], dst: int = 0, dim: int = 0, group=None,
                  what: str = "gather") -> torch.Tensor | None:
    """Concatenate every rank's block along ``dim`` on global rank ``dst`` (None elsewhere).

    Same arguments as :func:`all_gather_blocks`; only ``dst`` receives (``W`` padded blocks).
    """
    import torch.distributed as dist

    n_max = max(sizes)
    dev = comm_device(group)
    block = _pad(local.detach().to(dev), dim, n_max)
    is_dst = dist.get_rank() == dst
    parts = [torch.empty_like(block) for _ in sizes] if is_dst else None
    collective(what, lambda: dist.gather(block, parts, dst=dst, group=group))
    if not is_dst:
        return None
    return torch.cat([p.narrow(dim, 0, n) for p, n in zip(parts, sizes)], dim).to(local.device)


def all_gather_objects(obj: Any, group=None, what: str = "all-gather of metadata") -> list:
    """Every rank's picklable ``obj``, in rank order of ``group``, on every rank."""
    import torch.distributed as dist

    out: list = [None] * dist.get_world_size(group)
    collective(what, lambda: dist.all_gather_object(out, obj, group=group))
    return out


def stage2_bytes_per_step(plan: ShardPlan, n_stats: int | None = None, itemsize: int = 8) -> dict[str, int]:
    """Bytes the collectives of one sharded stage-2 step move (from the tensor sizes).

    Each step all-gathers ``n_stats`` per-element statistics (default
    ``len(dkolib.dko.synthesis.STEP_STATS)``, float64: ``itemsize = 8``) of every active rank,
    each block padded to ``n_max = plan.max_elements``. A ring all-gather (Gloo's, NCCL's) has
    every rank send the ``A - 1`` blocks of the others once (``A``: active ranks).

    Returns ``{"block_bytes", "sent_per_rank", "sent_total"}`` (0 with one active rank).
    """
    if n_stats is None:
        from ..dko.synthesis import STEP_STATS

        n_stats = len(STEP_STATS)
    active = len(plan.active_ranks)
    block = int(n_stats) * plan.max_elements * int(itemsize)
    if active < 2:
        return {"block_bytes": block, "sent_per_rank": 0, "sent_total": 0}
    return {"block_bytes": block, "sent_per_rank": (active - 1) * block, "sent_total": active * (active - 1) * block}


def final_gather_bytes(plan: ShardPlan, n_cells: int, itemsize: int = 4) -> int:
    """Bytes the end of a sharded run sends to rank 0: every other active rank's padded latents
    ``[n_max, N, N]`` (float32) once."""
    active = len(plan.active_ranks)
    return max(active - 1, 0) * plan.max_elements * int(n_cells) ** 2 * int(itemsize)
