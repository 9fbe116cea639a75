"""Griffe extension for the API reference: the docstrings' Sphinx roles as Markdown code.

The docstrings are written for both ``help()`` and the site, in Google style with Sphinx
cross-reference roles (``:class:`~dkolib.config.OpticsConfig```, ``:func:`realisability```).
Markdown has no such roles; this extension rewrites each as inline code of its target (``~``:
the last component only, as Sphinx shows it) before mkdocstrings parses the docstring, e.g.
``:class:`~dkolib.config.OpticsConfig``` -> ```OpticsConfig```. No link is made, so a target
outside the reference never breaks ``mkdocs build --strict``.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const|ref|term):`(~?)([^`<]*?)(?:\s*<([^>]+)>)?`")
"""``:role:`target``` or ``:role:`title <target>```, with an optional ``~`` before the target."""


def _code(match: re.Match) -> str:
    tilde, text, target = match.groups()
    if target:  # :role:`title <target>` shows the title
        return f"`{text.strip()}`"
    name = text.strip().lstrip(".")
    return f"`{name.rsplit('.', 1)[-1] if tilde else name}`"


def rewrite_roles(text: str) -> str:
    """``text`` with every Sphinx role replaced by Markdown inline code (see the module docstring)."""
    return ROLE.sub(_code, text)


class SphinxRolesAsCode(griffe.Extension):
    """Rewrite the Sphinx roles of every docstring (:func:`rewrite_roles`)."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rewrite_roles(obj.docstring.value)
