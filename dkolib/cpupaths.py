"""The same floating-point code paths on every x86-64 CPU, so that a run reproduces bit for bit.

PyTorch and the libraries below it pick their vector kernels by what the CPU offers: on a
CPU with AVX-512 a convolution or a matrix product is summed in another order than on one
with AVX2 only, and its result differs in the last bits. Training amplifies those bits: the
same stage-1 run on two machines drifts apart from its second step, so no committed result
could be checked at a tight tolerance on another machine. Capping every library at AVX2,
which every x86-64 CPU of the last decade has, removes that difference:

* ``ATEN_CPU_CAPABILITY=avx2``: PyTorch's own kernels (elementwise, reductions);
* ``ONEDNN_MAX_CPU_ISA=AVX2``: oneDNN, which computes the convolutions;
* ``MKL_CBWR=AVX2``: MKL's conditional numerical reproducibility (matrix products, FFTs).

Each variable is read when its library starts, so it must be in the environment before
``torch`` is imported: the Snakefile sets them for every job it starts. A variable already
set is left alone (``ATEN_CPU_CAPABILITY=default`` etc. override the pin), and nothing is set
on other CPU architectures, where these libraries are not the ones used.
"""

from __future__ import annotations

import os
import platform
from collections.abc import MutableMapping

PINNED_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}
"""Environment variables that cap PyTorch, oneDNN and MKL at AVX2 code paths."""
X86_64 = ("x86_64", "amd64")


def pin_cpu_code_paths(environ: MutableMapping[str, str] | None = None, machine: str | None = None) -> dict:
    """Set :data:`PINNED_ENV` in ``environ`` (default ``os.environ``) where not already set.

    ``machine`` defaults to ``platform.machine()``; on anything but x86-64 nothing is set.
    Returns the variables that were set by this call (``{}`` when none were).
    """
    environ = os.environ if environ is None else environ
    machine = platform.machine() if machine is None else machine
    if machine.lower() not in X86_64:
        return {}
    applied = {k: v for k, v in PINNED_ENV.items() if k not in environ}
    environ.update(applied)
    return applied
