"""MkDocs hook: the tutorial chapters are the pipeline's executed ``default`` notebooks.

The nav names each chapter as ``notebooks/<name>.ipynb``; the file is read from
``results/default/notebooks/`` (written by ``snakemake``), not from ``docs/``, so the site
shows the real numbers and never executes anything.

* A chapter whose executed copy is missing fails the build, naming the command that writes
  it, unless its name is in ``extra.pending_chapters`` of ``mkdocs.yml`` (chapters whose
  pipeline rule is still to come): a pending chapter is left out of the nav until the file
  appears.
* The notebooks' banner links to ``../results/default/notebooks/<name>.ipynb`` (right for a
  reader of ``notebooks/`` in the repository) are pointed at the chapter pages of the site.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File
from mkdocs.utils import get_relative_url

log = logging.getLogger("mkdocs.hooks.chapters")
CHAPTERS_DIR = Path("results/default/notebooks")
NAV_PREFIX = "notebooks/"  # the nav path of a chapter: notebooks/<name>.ipynb
BANNER_LINK = re.compile(r'href="\.\./results/default/notebooks/([\w-]+)\.ipynb"')


def _source(config) -> Path:
    return Path(config.config_file_path).resolve().parent / CHAPTERS_DIR


def _chapter(target) -> str | None:
    """``<name>.ipynb`` if the nav target is a chapter, else None."""
    if isinstance(target, str) and target.startswith(NAV_PREFIX) and target.endswith(".ipynb"):
        return target[len(NAV_PREFIX):]
    return None


def _walk(items: list, keep) -> list:
    """The nav ``items`` (nested lists of ``{title: target}`` or bare targets) where ``keep(target)``."""
    out = []
    for item in items:
        target = next(iter(item.values())) if isinstance(item, dict) else item
        if isinstance(target, list):
            out.append({next(iter(item)): _walk(target, keep)})
        elif keep(target):
            out.append(item)
    return out


def on_config(config):
    source = _source(config)
    pending = set(config.extra.get("pending_chapters", []))

    def keep(target) -> bool:
        name = _chapter(target)
        if name is None or (source / name).is_file():
            if name is not None and name.removesuffix(".ipynb") in pending:
                log.info("chapter %s is executed now: it can leave extra.pending_chapters", name)
            return True
        if name.removesuffix(".ipynb") in pending:
            log.info("chapter %s is pending (extra.pending_chapters) and not executed yet: left out", name)
            return False
        raise PluginError(f"chapter {target}: {CHAPTERS_DIR / name} is missing; the pipeline writes it "
                          f"(snakemake --cores 2 {(CHAPTERS_DIR / name).as_posix()}). A chapter whose rule is "
                          "still to come belongs in extra.pending_chapters of mkdocs.yml.")
    config.nav = _walk(config.nav or [], keep)
    return config


@event_priority(50)  # before mkdocs-jupyter turns .ipynb files into pages
def on_files(files, config):
    names = []
    _walk(config.nav or [], lambda target: names.append(_chapter(target)) or True)
    for name in filter(None, names):
        files.append(File(NAV_PREFIX + name, str(_source(config).parent), config.site_dir,
                          config.use_directory_urls))
    return files


def on_page_content(html, page, config, files):
    if _chapter(page.file.src_uri) is None:
        return html

    def to_chapter(match):
        target = files.get_file_from_path(f"{NAV_PREFIX}{match.group(1)}.ipynb")
        return f'href="{get_relative_url(target.url, page.url)}"' if target else match.group(0)
    return BANNER_LINK.sub(to_chapter, html)
