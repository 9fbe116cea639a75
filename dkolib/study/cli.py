"""Command-line entry points: one ``error: ...`` line and exit status 2 for errors a user can fix."""

from __future__ import annotations

import sys
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
