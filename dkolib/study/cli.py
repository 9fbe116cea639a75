"""Command-line entry points: one ``error: ...`` line and exit status 2 for errors a user can fix."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Sequence

from ..errors import InputError


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)``; configuration and data errors become ``error: <message>`` on stderr, status 2.

    ``InputError`` (bad config keys or values, stale or malformed data, unsafe tensor files)
    and ``FileNotFoundError`` are the user's to fix, so no traceback is shown; every other
    exception is a bug and propagates with its traceback.
    """
    try:
        status = main() if argv is None else main(argv)
        return status if isinstance(status, int) else 0  # some mains return their tables
    except (InputError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def parse_designs(items: Sequence[str], reserved: Sequence[str] = (), must_exist: bool = True) -> dict[str, Path]:
    """``["name=path", ...]`` -> ``{name: path}``: unique names, none of ``reserved``, existing paths.

    With ``must_exist=False`` missing paths are kept (the caller decides, e.g. ``--skip-missing``).
    """
    out: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not name or not path:
            raise InputError(f"design '{item}' must look like name=path (e.g. dko=results/smoke/dko/model.pt)")
        if name in out:
            raise InputError(f"design name '{name}' is given twice; names must be unique")
        if name in reserved:
            raise InputError(f"'{name}' names a reference row ({', '.join(reserved)}); choose another name")
        if must_exist and not Path(path).exists():
            raise FileNotFoundError(f"design {name}: {path} does not exist (build it first, e.g. with snakemake)")
        out[name] = Path(path)
    return out
