"""The API reference: one page per package, in the nav, built from docstrings whose Sphinx roles become code."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("optics", "dko", "depth", "fab", "examples")


def _mkdocs() -> dict:
    # mkdocs.yml may hold python tags (none today); a plain load is enough for the keys read here
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text())


def test_every_package_has_a_page_in_the_nav():
    cfg = _mkdocs()
    api = next(item["API reference"] for item in cfg["nav"] if isinstance(item, dict) and "API reference" in item)
    targets = {next(iter(entry.values())) for entry in api}
    for name in PACKAGES:
        page = ROOT / "docs" / "api" / f"{name}.md"
        assert f"api/{name}.md" in targets
        assert f"::: dkolib.{name}\n" in page.read_text()
    plugins = [next(iter(p)) if isinstance(p, dict) else p for p in cfg["plugins"]]
    assert "mkdocstrings" in plugins
    docs_extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["docs"]
    assert any(r.startswith("mkdocstrings[python]") for r in docs_extra)


def test_sphinx_roles_become_code():
    pytest.importorskip("griffe")
    spec = importlib.util.spec_from_file_location("griffe_roles", ROOT / "docs" / "hooks" / "griffe_roles.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    text = ("a :class:`~dkolib.config.OpticsConfig`, :func:`dkolib.optics.realisability.realisability`, "
            ":meth:`.frontend.OpticalFrontEnd.kernels`, :mod:`the render module <dkolib.optics.render>`, "
            ":py:data:`~x.Y` and ``literal``")
    assert mod.rewrite_roles(text) == ("a `OpticsConfig`, `dkolib.optics.realisability.realisability`, "
                                       "`frontend.OpticalFrontEnd.kernels`, `the render module`, "
                                       "`Y` and ``literal``")
