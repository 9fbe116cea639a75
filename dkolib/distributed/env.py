"""The torchrun environment and the process group's life cycle.

``torchrun --nproc_per_node N script.py`` starts ``N`` copies of ``script.py`` and tells each
who it is through environment variables: ``RANK`` (0 .. N-1 over all nodes), ``WORLD_SIZE``
(``N`` times the node count), ``LOCAL_RANK`` (0 .. N-1 on this node: the GPU it uses) and
``MASTER_ADDR``/``MASTER_PORT`` (where rank 0 listens). A plain ``python script.py`` sets
none of them: one process, world size 1.

The process group uses Gloo for CPU tensors and NCCL for CUDA tensors
(:func:`backend_for`). Every collective waits at most ``timeout_s`` seconds for the other
processes (default :data:`DEFAULT_TIMEOUT_S`, or the ``DKO_DIST_TIMEOUT_S`` environment
variable): a process that died or hangs makes the others fail with
:class:`~dkolib.distributed.comm.RankFailureError` instead of waiting forever.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterator, Mapping

import torch

from ..errors import InputError

DEFAULT_TIMEOUT_S = 1800.0
"""Seconds a collective waits for the other processes before failing (``DKO_DIST_TIMEOUT_S``
overrides it). Long enough for a slow step, a checkpoint write or the start-up of a large
array; short enough that a crashed run does not hold its machines for hours."""

TIMEOUT_ENV = "DKO_DIST_TIMEOUT_S"

_state: dict = {"timeout_s": None}  # the timeout of the process group this module initialised


@dataclass(frozen=True)
class TorchrunEnv:
    """Who this process is in a torchrun launch.

    Attributes:
        rank: global rank, ``0 .. world_size - 1``.
        world_size: number of processes (1: not launched by torchrun).
        local_rank: rank on this node (the CUDA device index it uses).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_distributed(self) -> bool:
        """More than one process (the sharded code paths run)."""
        return self.world_size > 1

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> "TorchrunEnv":
        """Read ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (default ``os.environ``).

        None set: one process (rank 0 of 1). ``LOCAL_RANK`` defaults to ``RANK`` (one node).
        Raises :class:`~dkolib.errors.InputError` for values that are not integers, out of
        range, or a ``WORLD_SIZE`` without a ``RANK`` (a launcher other than torchrun).
        """
        environ = os.environ if environ is None else environ

        def read(name: str) -> int | None:
            raw = environ.get(name)
            if raw is None or raw.strip() == "":
                return None
            try:
                return int(raw)
            except ValueError:
                raise InputError(f"environment variable {name}={raw!r} must be an integer "
                                 "(torchrun sets it; unset it to run as one process)") from None

        world, rank, local = read("WORLD_SIZE"), read("RANK"), read("LOCAL_RANK")
        if world is None and rank is None:
            return cls()
        if world is None or rank is None:
            raise InputError(f"WORLD_SIZE={environ.get('WORLD_SIZE')!r} and RANK={environ.get('RANK')!r}: both or "
                             "neither must be set; launch with `torchrun --nproc_per_node N ...`, which sets both")
        if world < 1 or not 0 <= rank < world:
            raise InputError(f"need WORLD_SIZE >= 1 and 0 <= RANK < WORLD_SIZE, got WORLD_SIZE={world}, RANK={rank}")
        local = rank if local is None else local
        if local < 0:
            raise InputError(f"LOCAL_RANK must be >= 0, got {local}")
        return cls(rank=rank, world_size=world, local_rank=local)


def backend_for(device: torch.device | str) -> str:
    """``'nccl'`` for a CUDA device, ``'gloo'`` otherwise (CPU tensors)."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def rank_device(device: torch.device | str, local_rank: int) -> torch.device:
    """The device a process uses: ``cuda:<local_rank>`` for a CUDA ``device`` (one GPU per
    process on a node), else ``device`` itself. Raises :class:`InputError` when the node has
    fewer GPUs than processes."""
    device = torch.device(device)
    if device.type != "cuda":
        return device
    n_gpu = torch.cuda.device_count()
    if local_rank >= n_gpu:
        raise InputError(f"process with LOCAL_RANK={local_rank} needs GPU {local_rank}, but this node has {n_gpu}: "
                         f"launch at most {n_gpu} processes per node (torchrun --nproc_per_node {max(n_gpu, 1)})")
    return torch.device("cuda", local_rank)


def timeout_seconds(timeout_s: float | None = None) -> float:
    """``timeout_s``, else ``DKO_DIST_TIMEOUT_S`` from the environment, else :data:`DEFAULT_TIMEOUT_S`."""
    if timeout_s is None:
        raw = os.environ.get(TIMEOUT_ENV)
        try:
            timeout_s = float(raw) if raw else DEFAULT_TIMEOUT_S
        except ValueError:
            raise InputError(f"{TIMEOUT_ENV}={raw!r} must be a number of seconds") from None
    if not timeout_s > 0:
        raise InputError(f"the collective timeout must be > 0 seconds, got {timeout_s}")
    return float(timeout_s)


def current_timeout_s() -> float | None:
    """The timeout (s) of the process group :func:`init_process_group` made (None: another caller made it)."""
    return _state["timeout_s"]


def init_process_group(device: torch.device | str = "cpu", timeout_s: float | None = None,
                       env: TorchrunEnv | None = None) -> TorchrunEnv:
    """Join the default process group of a torchrun launch (``init_method='env://'``).

    Args:
        device: where the tensors live: CPU -> Gloo, CUDA -> NCCL (and ``cuda:LOCAL_RANK``
            becomes the current device).
        timeout_s: seconds a collective waits for the others (see :func:`timeout_seconds`).
        env: the process's identity (default :meth:`TorchrunEnv.from_environ`).
    Returns the :class:`TorchrunEnv`. A no-op (but checked) when a group already exists.
    """
    import torch.distributed as dist

    env = env or TorchrunEnv.from_environ()
    if not dist.is_available():
        raise InputError("this build of torch has no torch.distributed: install a build with it "
                         "or run without torchrun (one process)")
    if dist.is_initialized():
        if dist.get_world_size() != env.world_size or dist.get_rank() != env.rank:
            raise InputError(f"a process group of world size {dist.get_world_size()} (rank {dist.get_rank()}) exists, "
                             f"but the environment says rank {env.rank} of {env.world_size}")
        return env
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing:
        raise InputError(f"{' and '.join(missing)} not set: launch with `torchrun --nproc_per_node N ...` "
                         "(or set MASTER_ADDR/MASTER_PORT to where rank 0 listens)")
    backend = backend_for(device)
    if backend == "nccl":
        torch.cuda.set_device(rank_device(device, env.local_rank))
    elif not dist.is_gloo_available():
        raise InputError("torch.distributed has no Gloo backend here, which the CPU path needs")
    timeout = timeout_seconds(timeout_s)
    dist.init_process_group(backend=backend, init_method="env://", rank=env.rank, world_size=env.world_size,
                            timeout=timedelta(seconds=timeout))
    _state["timeout_s"] = timeout
    return env


def destroy_process_group() -> None:
    """Leave the default process group (a no-op when there is none)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _state["timeout_s"] = None


@contextmanager
def process_group(device: torch.device | str = "cpu", timeout_s: float | None = None,
                  env: TorchrunEnv | None = None) -> Iterator[TorchrunEnv]:
    """``with process_group(device) as env:`` the default group exists inside the block.

    Made (:func:`init_process_group`) on entry unless one exists, and destroyed on exit --
    also on an exception, which closes this process's connections so that the others fail
    at their next collective rather than at the timeout -- if this block made it.
    """
    import torch.distributed as dist

    made = not (dist.is_available() and dist.is_initialized())
    env = init_process_group(device, timeout_s, env)
    try:
        yield env
    finally:
        if made:
            destroy_process_group()


@contextmanager
def launched_group(device: torch.device | str = "cpu", timeout_s: float | None = None) -> Iterator[torch.device]:
    """``with launched_group(device) as dev:`` the process group of a torchrun launch, if any.

    Under torchrun (``WORLD_SIZE`` > 1) the block runs inside :func:`process_group` for this
    process's device (:func:`rank_device`: ``cuda:LOCAL_RANK`` for CUDA); launched plainly it
    runs as it is. Yields the device this process uses.
    """
    env = TorchrunEnv.from_environ()
    if not env.is_distributed:
        yield torch.device(device)
        return
    dev = rank_device(device, env.local_rank)
    with process_group(dev, timeout_s, env):
        yield dev
