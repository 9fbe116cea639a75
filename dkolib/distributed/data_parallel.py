"""The network of a distributed E2E run, data-parallel over the batch, with synchronised BatchNorm.

With the metasurfaces sharded (:mod:`.e2e`) the network is the part of a step that does not
shrink with the process count when every process runs it on the whole batch (replicated).
Data-parallel, every process runs it on a slice of the batch, and three things make the
``W``-process step the single-process step on the whole batch (to float rounding):

* **BatchNorm over the whole batch.** :class:`SyncBatchNorm2d` all-reduces each channel's sum
  and count, then the sum of squared deviations from the whole batch's mean, so the normalising
  statistics and the running statistics are the whole batch's. PyTorch's own
  ``SyncBatchNorm`` runs on GPUs only; this one runs wherever the collectives do (Gloo on CPU,
  NCCL on GPU). Its backward is the adjoint of the all-reduce (an all-reduce of the gradients),
  so the gradient flows across processes as it would through one batch.
* **The loss of the whole batch.** The depth loss is a mean over the batch's valid pixels, so
  process ``r``'s loss ``L_r`` (a mean over its slice's ``n_r`` valid pixels) enters with
  weight ``n_r / sum(n)`` (:func:`batch_weight`): ``sum_r n_r L_r / sum(n)`` is the whole
  batch's loss, also for unequal slices.
* **One gradient.** Each process back-propagates its weighted loss; the network's gradients and
  the gradient with respect to the gathered PSFs are then summed over processes
  (:func:`all_reduce_sum_`), and every process applies the same AdamW step to the same
  parameters.

Every process draws the whole batch (the same sampler, the same random flips) and keeps its
contiguous slice (:func:`batch_slice`), so the data are those of the single-process run.
Differences from it are float rounding: sums over a batch taken in two parts and added, and
BatchNorm's variance from a sum of squares rather than PyTorch's kernel. Collectives per step:
two small all-reduces per BatchNorm layer forward (``C + 1`` and ``C`` floats) and one each in
backward, one of every network gradient (``P`` floats: :func:`network_bytes_per_step`) and one
of the PSF gradients (``E W^2`` floats).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn

from ..errors import InputError
from .comm import collective


class _AllReduceSum(torch.autograd.Function):
    """``sum_r x_r`` on every process; backward: ``sum_r dL/dy_r`` (the adjoint of the sum)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, what: str) -> torch.Tensor:
        ctx.what = what
        return all_reduce_sum_(x.detach().clone(), what)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return all_reduce_sum_(grad.detach().clone().contiguous(), f"{ctx.what} (backward)"), None


def all_reduce_sum_(x: torch.Tensor, what: str = "all-reduce") -> torch.Tensor:
    """Sum ``x`` over the processes of the default group, in place; returns ``x``."""
    import torch.distributed as dist

    from .comm import comm_device

    dev = comm_device()
    if x.device == dev:
        collective(what, lambda: dist.all_reduce(x))
        return x
    moved = x.to(dev)
    collective(what, lambda: dist.all_reduce(moved))
    return x.copy_(moved)


def differentiable_all_reduce(x: torch.Tensor, what: str = "all-reduce") -> torch.Tensor:
    """:func:`all_reduce_sum_` that autograd differentiates (through every process)."""
    return _AllReduceSum.apply(x, what)


class SyncBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` whose training-mode statistics are those of the whole batch over all processes.

    Same parameters, buffers and state-dict keys as ``nn.BatchNorm2d`` (so checkpoints move
    between the two); in eval mode, or without a process group, it is ``nn.BatchNorm2d``.
    Input ``[B_r, C, H, W]``; the whole batch is the concatenation of every process's.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        if self.momentum is None:
            raise InputError("SyncBatchNorm2d needs a momentum (a cumulative average is not supported)")
        c = x.shape[1]
        count = x.new_full((1,), float(x.numel() // c))
        sums = differentiable_all_reduce(torch.cat([x.sum(dim=(0, 2, 3)), count]), "the BatchNorm sums")
        n = sums[c]
        mean = sums[:c] / n
        centred = x - mean.view(1, c, 1, 1)
        var = differentiable_all_reduce(centred.pow(2).sum(dim=(0, 2, 3)), "the BatchNorm variances") / n
        y = centred * torch.rsqrt(var + self.eps).view(1, c, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        if self.track_running_stats:
            with torch.no_grad():
                nf = float(n)
                self.running_mean.mul_(1 - self.momentum).add_(mean.detach(), alpha=self.momentum)
                unbiased = var.detach() * (nf / max(nf - 1.0, 1.0))
                self.running_var.mul_(1 - self.momentum).add_(unbiased, alpha=self.momentum)
                self.num_batches_tracked.add_(1)
        return y


def _swap_batchnorm(module: nn.Module, to_sync: bool) -> nn.Module:
    src, dst = (nn.BatchNorm2d, SyncBatchNorm2d) if to_sync else (SyncBatchNorm2d, nn.BatchNorm2d)
    for name, child in module.named_children():
        if type(child) is src:
            new = dst(child.num_features, eps=child.eps, momentum=child.momentum, affine=child.affine,
                      track_running_stats=child.track_running_stats)
            # the same Parameter and buffer objects: optimiser state and references stay valid
            new._parameters = child._parameters
            new._buffers = child._buffers
            new.training = child.training
            setattr(module, name, new)
        else:
            _swap_batchnorm(child, to_sync)
    return module


def convert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` of ``model`` by :class:`SyncBatchNorm2d` (in place; the
    parameters and buffers are the same objects). Returns ``model``."""
    return _swap_batchnorm(model, True)


def revert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """Undo :func:`convert_sync_batchnorm` (in place). Returns ``model``."""
    return _swap_batchnorm(model, False)


def slice_bounds(batch_size: int, world_size: int) -> list[tuple[int, int]]:
    """``[(start, stop)]`` of each process's contiguous slice of a batch (sizes differ by at most one).

    Raises :class:`InputError` when there are more processes than samples.
    """
    if world_size > batch_size:
        raise InputError(f"a data-parallel network needs at least one sample per process: batch size "
                         f"{batch_size} < {world_size} processes. Raise e2e.batch_size, use fewer processes, "
                         "or set e2e.network_parallel=replicated")
    base, extra = divmod(int(batch_size), int(world_size))
    bounds, start = [], 0
    for r in range(world_size):
        stop = start + base + (1 if r < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def batch_slice(batch: dict, rank: int, world_size: int) -> dict:
    """Process ``rank``'s slice of every batched tensor of ``batch`` (dim 0); other entries as they are."""
    n = int(batch["rgb"].shape[0])
    start, stop = slice_bounds(n, world_size)[rank]
    return {k: (v[start:stop] if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == n else v)
            for k, v in batch.items()}


def batch_weight(loss_fn: Callable, batch: dict) -> float:
    """What this slice's loss averages over: ``loss_fn.normaliser(batch)`` when the loss defines
    one (the depth loss: its valid pixels), else the slice's number of samples."""
    normaliser = getattr(loss_fn, "normaliser", None)
    if normaliser is not None:
        return float(normaliser(batch))
    return float(batch["rgb"].shape[0])


def all_reduce_grads_(params: Sequence[torch.Tensor], what: str = "the all-reduce of the network's gradients") -> None:
    """Sum the gradients of ``params`` over the processes, in place, in one flat all-reduce.

    A parameter without a gradient contributes zeros (and gets the sum if another process has one).
    """
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    all_reduce_sum_(flat, what)
    offset = 0
    for p in params:
        n = p.numel()
        g = flat[offset:offset + n].view_as(p)
        if p.grad is None:
            p.grad = g.clone()
        else:
            p.grad.copy_(g)
        offset += n


def network_bytes_per_step(n_params: int, n_psf_floats: int, bn_channels: Sequence[int], world_size: int,
                           itemsize: int = 4) -> dict[str, int]:
    """Bytes a data-parallel step's all-reduces hand to the collectives, and what a ring sends.

    ``payload_bytes``: the tensors passed to ``all_reduce`` per process per step (the network's
    ``n_params`` gradients, the ``n_psf_floats`` PSF gradients, and per BatchNorm layer of ``C``
    channels ``C + 1`` + ``C`` floats forward and the same backward). ``ring_sent_per_rank``: a
    ring all-reduce sends ``2 (W - 1) / W`` of its payload per process (0 with one process).
    """
    bn = sum(2 * (2 * int(c) + 1) for c in bn_channels)
    payload = (int(n_params) + int(n_psf_floats) + bn) * int(itemsize)
    w = int(world_size)
    sent = 0 if w < 2 else int(round(2 * (w - 1) / w * payload))
    return {"payload_bytes": payload, "ring_sent_per_rank": sent, "ring_sent_total": w * sent}


def check_mode(mode: str) -> str:
    """Validate ``e2e.network_parallel``."""
    if mode not in ("replicated", "data"):
        raise InputError(f"e2e.network_parallel must be 'replicated' or 'data', got {mode!r}")
    return mode


__all__ = ["SyncBatchNorm2d", "all_reduce_grads_", "all_reduce_sum_", "batch_slice", "batch_weight", "check_mode",
           "convert_sync_batchnorm", "differentiable_all_reduce", "network_bytes_per_step", "revert_sync_batchnorm",
           "slice_bounds"]
