"""The core install: the optical layer needs pyproject's core ``dependencies`` only.

A fresh interpreter, run outside the checkout (so that the layer's defaults come from the packaged
copy, as for an installed package), blocks every module of the ``pipeline`` extra's distributions,
then imports ``dkolib.dko.conv``, designs an ``OpticalConv2d`` with ``from_conv`` (defaults) and runs
it. Every import that dkolib's own code starts is recorded: none may be blocked (not even one a
``try`` would survive), and each must belong to a core dependency.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0]).lower()


def _import_names(dists: set[str]) -> set[str]:
    """Top-level import names of the installed distributions ``dists`` (normalised names)."""
    out = set()
    for top, owners in md.packages_distributions().items():
        if any(_name(o) in dists for o in owners):
            out.add(top)
    return out


PROBE = textwrap.dedent('''
    import importlib.abc, json, sys, traceback
    import importlib.util

    BLOCKED = set(json.loads(sys.argv[1]))
    PKG = str(__import__("pathlib").Path(importlib.util.find_spec("dkolib").origin).parent)
    attempted, direct = set(), set()

    class Probe(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            top = name.split(".")[0]
            frames = [f for f in traceback.extract_stack()[:-1] if not f.filename.startswith("<frozen")]
            if frames and frames[-1].filename.startswith(PKG):
                direct.add(top)          # an import statement in dkolib's own code
            if top in BLOCKED:
                attempted.add(name)
                raise ModuleNotFoundError(f"No module named {name!r} (blocked: not a core dependency)")
            return None

    sys.meta_path.insert(0, Probe())
    import torch
    from torch import nn

    from dkolib.dko.conv import OpticalConv2d, layer_defaults

    conv = nn.Conv2d(3, 1, 7, padding=3)
    layer = OpticalConv2d.from_conv(conv, steps=1, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = layer(torch.rand(1, 3, 12, 12))
    print(json.dumps({"attempted": sorted(attempted), "direct": sorted(direct), "shape": list(y.shape),
                      "source": str(layer_defaults().source)}))
''')


def test_the_optical_layer_runs_on_the_core_dependencies(tmp_path):
    core = {_name(r) for r in PYPROJECT["dependencies"]}
    pipeline = {_name(r) for r in PYPROJECT["optional-dependencies"]["pipeline"]}
    assert not core & pipeline
    assert {"snakemake", "papermill", "meent", "dflat-opt", "gdstk", "matplotlib"} <= pipeline
    blocked = _import_names(pipeline) - _import_names(core)
    assert {"snakemake", "papermill", "meent", "dflat", "gdstk", "matplotlib"} <= blocked
    env = {k: v for k, v in os.environ.items() if k != "DKOLIB_ROOT"}
    result = subprocess.run([sys.executable, "-c", PROBE, json.dumps(sorted(blocked))], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["attempted"] == [], f"dkolib.dko.conv / from_conv imported pipeline modules: {report['attempted']}"
    assert report["shape"] == [1, 1, 12, 12]
    assert Path(report["source"]).name == "layer_defaults.yaml"   # outside a checkout: the packaged copy
    third_party = {m for m in report["direct"] if m not in sys.stdlib_module_names and m != "dkolib"
                   and not m.startswith("_")}
    assert third_party, "the probe recorded no import by dkolib at all"
    assert third_party <= _import_names(core), f"imported by dkolib but not a core dependency: " \
                                               f"{third_party - _import_names(core)}"
