"""Executed notebooks without their run times, so that a rerun which changes nothing changes no file.

papermill stamps every executed notebook with the time it ran: the notebook's and each cell's
``metadata.papermill`` ``start_time`` / ``end_time`` / ``duration``, and each cell's
``metadata.execution`` (kernel message timestamps); and the cell it injects with the
parameters gets a new random ``id`` every time. :func:`strip_run_times` removes the times,
gives that cell a fixed id and keeps everything else (outputs, tags, each cell's ``status``
and ``exception``).

    python -m dkolib.study.nbclean results/default/notebooks/05_equal_budget.ipynb
"""

from __future__ import annotations

import sys
from pathlib import Path

VOLATILE_KEYS = ("start_time", "end_time", "duration")
"""Keys of ``metadata.papermill`` (notebook and cells) that hold when the notebook ran."""
INJECTED_TAG = "injected-parameters"
"""papermill's tag (and here the id) of the cell it adds with the run's parameters."""


def strip_run_times(path: str | Path) -> bool:
    """Remove the run times from the notebook at ``path`` (in place). Returns whether it changed."""
    import nbformat

    path = Path(path)
    nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    changed = False
    for meta in [nb.metadata] + [cell.metadata for cell in nb.cells]:
        papermill = meta.get("papermill", {})
        for key in VOLATILE_KEYS:
            if key in papermill:
                del papermill[key]
                changed = True
        if "execution" in meta and meta is not nb.metadata:
            del meta["execution"]
            changed = True
    for cell in nb.cells:
        if INJECTED_TAG in cell.metadata.get("tags", []) and cell.get("id") != INJECTED_TAG:
            cell["id"] = INJECTED_TAG
            changed = True
    if changed:
        nbformat.write(nb, path)
    return changed


def main(argv: list[str] | None = None) -> int:
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print("usage: python -m dkolib.study.nbclean NOTEBOOK.ipynb ...", file=sys.stderr)
        return 2
    for p in paths:
        if not Path(p).is_file():
            print(f"{p}: no such notebook", file=sys.stderr)
            return 1
        strip_run_times(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
