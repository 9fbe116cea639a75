"""Atomic file writes, safe tensor files, seeding and thread control shared by every stage.

A reader never sees a half-written result: each writer goes to a temporary
file in the same folder and is renamed over the target only when complete.

Tensor files (checkpoints, designs such as ``array.pt`` and ``model.pt``) hold
tensors and plain data only (dict, list, tuple, str, int, float, bool, None):
:func:`save_torch` refuses anything else, and :func:`load_torch` opens files
with ``torch.load(..., weights_only=True)``, so opening a shared design never
runs code stored in it.
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .errors import InputError


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp creates 0600; give results ordinary permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_csv(frame, path: str | os.PathLike) -> Path:
    """Write a pandas DataFrame to CSV atomically (no index column)."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return Path(path)


class UnsafeFileError(InputError):
    """A tensor file holds pickled Python objects, which could run code when loaded."""


_PLAIN = (str, int, float, bool, type(None), torch.Tensor, torch.Size)


def plain_data(obj, where: str = "obj"):
    """``obj`` with numpy scalars/arrays turned into Python numbers/tensors; TypeError for other types.

    Containers (dict with str/int keys, list, tuple) are rebuilt recursively; ``where``
    names the position in error messages (e.g. ``obj['meta']['shape']``).
    """
    if isinstance(obj, np.generic):  # before _PLAIN: np.float64 is also a float
        return obj.item()
    if isinstance(obj, _PLAIN):
        return obj
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where} has a key of type {type(key).__name__}; tensor files take str/int keys")
            out[key] = plain_data(value, f"{where}[{key!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        items = [plain_data(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    raise TypeError(f"{where} is a {type(obj).__name__}; tensor files hold tensors and plain data only "
                    "(dict, list, tuple, str, int, float, bool, None): convert it first")


def save_torch(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` of :func:`plain_data` ``(obj)``, atomically."""
    payload = plain_data(obj)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_torch(path: str | os.PathLike, map_location="cpu"):
    """Load a tensor file written by :func:`save_torch` without running code stored in it.

    Raises :class:`UnsafeFileError` when the file holds pickled Python objects (it may come
    from an untrusted source, or from an old version of dkolib); FileNotFoundError if absent.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeFileError(
            f"{path} holds Python objects beyond tensors and plain data, so loading it could run code: "
            f"refused. dkolib writes plain tensor files; regenerate this file with the current pipeline, "
            f"or, only if you trust its source, open it yourself with torch.load and weights_only off. "
            f"({_unpickler_reason(exc)})") from None


def _unpickler_reason(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return next((ln for ln in lines if "Unsupported global" in ln), lines[0] if lines else type(exc).__name__)


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a torch generator seeded the same."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def set_threads(n: int) -> None:
    """Pin torch's intra-op threads (timed runs must not oversubscribe the CPU)."""
    torch.set_num_threads(int(n))
