"""The project root: where ``config/``, ``results/``, ``figures/`` and ``cache/`` live.

It is taken from the working directory, never from where the package is
installed, so that two checkouts (or a non-editable install) each write into
their own tree:

1. ``$DKOLIB_ROOT`` if set (it must be an existing directory);
2. otherwise the nearest of the working directory and its parents that holds a
   ``config/`` folder with at least one ``*.yaml`` profile (so notebooks run
   from ``notebooks/`` find the repository above them);
3. otherwise the working directory itself.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT_ENV_VAR = "DKOLIB_ROOT"


def project_root(start: str | os.PathLike | None = None) -> Path:
    """Absolute project root (see the module docstring); ``start`` defaults to the cwd."""
    env = os.environ.get(ROOT_ENV_VAR)
    if env:
        root = Path(env).expanduser().resolve()
        if not root.is_dir():
            from .config import ConfigError

            raise ConfigError(f"{ROOT_ENV_VAR}={env!r} is not a directory: point it at the project root "
                              "(the folder that holds config/) or unset it")
        return root
    here = Path(start if start is not None else Path.cwd()).resolve()
    for folder in (here, *here.parents):
        config = folder / "config"
        if config.is_dir() and any(config.glob("*.yaml")):
            return folder
    return here
