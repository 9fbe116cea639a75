"""Start ``N`` local processes with torchrun's environment and collect what each returns.

For tests and benchmarks: :func:`launch_local` starts ``world_size`` fresh Python processes
(``spawn`` or ``forkserver``, not ``fork``: no inherited threads or process group), sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in each as ``torchrun
--nproc_per_node N`` would, calls ``fn(*args, **kwargs)`` in each and returns one
:class:`RankOutcome` per rank: the value, or the error a rank raised, or that it was still
running at the deadline (it is then terminated). ``fn`` must be importable by name (a
module-level function), and its arguments and return value picklable.

In production, launch with ``torchrun`` instead; the code under test reads the same variables.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import socket
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any, Callable, Mapping, Sequence


@dataclass
class RankOutcome:
    """What one process of :func:`launch_local` did.

    Attributes:
        rank: its rank; ok: ``fn`` returned (``value``: what it returned).
        error: ``'<ExceptionType>: <message>'`` when it raised, or why it has no result
            (killed, timed out); error_type: the exception's class name (None otherwise).
        traceback: the formatted traceback of the exception (None otherwise).
        exitcode: the process's exit status (None if unknown).
        seconds: wall seconds from the launch until its result (or its end) arrived.
    """

    rank: int
    ok: bool
    value: Any = None
    error: str | None = None
    error_type: str | None = None
    traceback: str | None = None
    exitcode: int | None = None
    seconds: float = 0.0


def find_free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _child(conn, fn: Callable, rank: int, world_size: int, host: str, port: int, args: Sequence,
           kwargs: Mapping, env: Mapping[str, str]) -> None:
    os.environ.update({str(k): str(v) for k, v in env.items()})
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size),
                       "LOCAL_WORLD_SIZE": str(world_size), "MASTER_ADDR": host, "MASTER_PORT": str(port)})
    failed = False
    try:
        message = ("ok", pickle.dumps(fn(*args, **kwargs)))
    except BaseException as exc:  # report everything, including SystemExit / KeyboardInterrupt
        failed = True
        message = ("error", type(exc).__name__, f"{type(exc).__name__}: {exc}", traceback.format_exc())
    try:
        conn.send(message)
    finally:
        conn.close()
    if failed:
        raise SystemExit(1)


def launch_local(fn: Callable, world_size: int, args: Sequence = (), kwargs: Mapping | None = None, *,
                 timeout_s: float = 600.0, port: int | None = None, env: Mapping[str, str] | None = None,
                 host: str = "127.0.0.1", start_method: str = "spawn",
                 preload: Sequence[str] = ()) -> list[RankOutcome]:
    """Run ``fn(*args, **kwargs)`` in ``world_size`` local processes (see the module docstring).

    Args:
        fn: a module-level function; world_size: processes (>= 1).
        timeout_s: wall seconds for the whole launch; processes still running then are
            terminated and reported as timed out.
        port: ``MASTER_PORT`` (default: a free one); env: extra environment variables.
        start_method: ``'spawn'`` (a fresh interpreter per process) or ``'forkserver'``
            (processes forked from one clean server process that imported ``preload``, a list
            of module names, once: for many short launches, e.g. tests, that would otherwise
            spend seconds each importing torch; the preload list counts only before the
            server's first start).
    Returns one :class:`RankOutcome` per rank, in rank order. Never raises for a rank's error.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if start_method not in ("spawn", "forkserver"):
        raise ValueError(f"start_method must be 'spawn' or 'forkserver', got {start_method!r}")
    ctx = mp.get_context(start_method)
    if start_method == "forkserver" and preload:
        ctx.set_forkserver_preload(list(preload))
    port = int(port) if port is not None else find_free_port(host)
    t0 = time.monotonic()
    procs, conns = [], []
    for rank in range(world_size):
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child, name=f"dko-rank{rank}",
                           args=(send, fn, rank, world_size, host, port, tuple(args), dict(kwargs or {}),
                                 dict(env or {})))
        proc.start()
        send.close()  # the child holds the only write end: its exit makes recv() see EOF
        procs.append(proc)
        conns.append(recv)
    outcomes: dict[int, RankOutcome] = {}
    pending = dict(enumerate(conns))
    deadline = t0 + float(timeout_s)
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        for conn in wait(list(pending.values()), timeout=left):
            rank = next(r for r, c in pending.items() if c is conn)
            del pending[rank]
            outcomes[rank] = _read_outcome(rank, conn, procs[rank], time.monotonic() - t0)
    for rank in list(pending):
        proc = procs[rank]
        proc.terminate()
        proc.join(5.0)
        if proc.is_alive():
            proc.kill()
            proc.join(5.0)
        outcomes[rank] = RankOutcome(rank, False, error=f"TimeoutError: rank {rank} still running after "
                                     f"{timeout_s:.0f} s: terminated", error_type="TimeoutError",
                                     exitcode=proc.exitcode, seconds=time.monotonic() - t0)
        conns[rank].close()
    return [outcomes[r] for r in range(world_size)]


def _read_outcome(rank: int, conn, proc, seconds: float) -> RankOutcome:
    try:
        message = conn.recv()
    except (EOFError, OSError):
        message = None
    finally:
        conn.close()
    proc.join(30.0)
    if proc.is_alive():  # sent its result but does not exit: do not leave it behind
        proc.kill()
        proc.join(5.0)
    if message is None:
        return RankOutcome(rank, False, error=f"ProcessExited: rank {rank} ended (exit code {proc.exitcode}) "
                           "without a result (killed, or crashed in native code)", error_type="ProcessExited",
                           exitcode=proc.exitcode, seconds=seconds)
    if message[0] == "ok":
        return RankOutcome(rank, True, value=pickle.loads(message[1]), exitcode=proc.exitcode, seconds=seconds)
    _, kind, text, tb = message
    return RankOutcome(rank, False, error=text, error_type=kind, traceback=tb, exitcode=proc.exitcode,
                       seconds=seconds)


def run_local(fn: Callable, world_size: int, args: Sequence = (), kwargs: Mapping | None = None,
              **launch_kwargs) -> list[Any]:
    """:func:`launch_local`, returning every rank's value; raises ``RuntimeError`` naming each
    failed rank's error (with the first failure's traceback) if any rank failed."""
    outcomes = launch_local(fn, world_size, args, kwargs, **launch_kwargs)
    failed = [o for o in outcomes if not o.ok]
    if failed:
        lines = "\n".join(f"  rank {o.rank}: {o.error}" for o in failed)
        first = next((o.traceback for o in sorted(failed, key=lambda o: o.seconds) if o.traceback), "")
        raise RuntimeError(f"{len(failed)} of {world_size} processes failed:\n{lines}\n{first}")
    return [o.value for o in outcomes]
