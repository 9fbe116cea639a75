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


def require_existing(*flags: tuple[str, Path | None], hint: str = "") -> None:
    """Exit with ``<flag> <path> does not exist<hint>`` at the first ``(flag, path)`` whose path is
    missing; a path of None (an optional argument not given) is skipped."""
    for flag, path in flags:
        if path is not None and not Path(path).exists():
            raise SystemExit(f"{flag} {path} does not exist{hint}")


def add_validation_study_args(ap, stem: str) -> None:
    """The arguments every study that reads designs on a split shares: ``--split``, ``--max-items``,
    ``--seed`` (sensor noise), ``--threads``, ``--work``/``--out`` (defaults under
    ``results/<profile>/dko/<stem>``) and ``--set KEY=VALUE`` overrides."""
    ap.add_argument("--split", default="val")
    ap.add_argument("--max-items", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0, help="sensor-noise seed")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--work", type=Path, default=None, help=f"default: results/<profile>/dko/{stem}.work")
    ap.add_argument("--out", type=Path, default=None, help=f"default: results/<profile>/dko/{stem}.csv")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")


def load_validation_study(args):
    """``(cfg, paths)`` for :func:`add_validation_study_args`'s arguments, threads set; exits with a
    clear message when ``args.stage1`` does not exist."""
    from ..config import load_config, parse_overrides
    from ..io import set_threads
    from .paths import ProfilePaths

    cfg = load_config(args.profile, parse_overrides(args.overrides))
    set_threads(args.threads or cfg.threads)
    require_existing(("--stage1", args.stage1), hint=f" (run stage 1 first: snakemake {args.stage1})")
    return cfg, ProfilePaths(cfg.profile)
