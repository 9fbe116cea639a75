"""The package's promises about its own shape: layers, file sizes, safe files, roots, errors."""

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dkolib.io import UnsafeFileError, load_torch, save_torch

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "dkolib"
STUDY = "study"
"""The one subpackage that may import ``dkolib.study`` (itself): everything else is science."""
SCIENCE = sorted(p.parent.name for p in PKG.glob("*/__init__.py") if p.parent.name != STUDY)
"""Every other subpackage, from the file system, so that a new one cannot be left out of the check."""
TOP_LEVEL = sorted(p.name for p in PKG.glob("*.py"))
"""Every top-level module of ``dkolib``, from the file system (a hand list once missed ``cpupaths.py``)."""


def _science_files():
    files = [PKG / name for name in TOP_LEVEL]
    for sub in SCIENCE:
        files += sorted((PKG / sub).rglob("*.py"))
    return files


def test_the_layer_check_covers_every_module_on_disk():
    # the lists are globbed: guard against a glob that finds nothing (wrong root, renamed package)
    assert {"__init__.py", "config.py", "cpupaths.py", "errors.py", "io.py", "plots.py", "root.py"} <= set(TOP_LEVEL)
    assert {"depth", "dko", "fab", "optics"} <= set(SCIENCE) and STUDY not in SCIENCE
    assert (PKG / STUDY / "__init__.py").exists()
    every = set(PKG.rglob("*.py"))
    study = set((PKG / STUDY).rglob("*.py"))
    assert set(_science_files()) == every - study  # every module outside dkolib.study is checked
    # a folder of modules without an __init__.py would escape the subpackage glob
    assert not [str(f.relative_to(ROOT)) for f in every if not (f.parent / "__init__.py").exists()]


def _imported_modules(path: Path) -> set[str]:
    """Absolute dotted names of every module ``path`` imports (relative imports resolved)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    if path.name == "__init__.py":
        package = ".".join(path.relative_to(ROOT).parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            out.add(mod)
            out |= {f"{mod}.{alias.name}" for alias in node.names}
    return out


def test_science_never_imports_the_study_package():
    offenders = {str(f.relative_to(ROOT)): sorted(m for m in _imported_modules(f) if m.startswith("dkolib.study"))
                 for f in _science_files()}
    assert not {k: v for k, v in offenders.items() if v}


def test_import_resolution_sees_the_study_package():
    """The checker above resolves relative imports: it finds a known study import."""
    assert "dkolib.study.paths" in _imported_modules(PKG / "study" / "pipeline.py")


def test_no_module_over_600_lines():
    long = {str(f.relative_to(ROOT)): n for f in PKG.rglob("*.py") if (n := len(f.read_text().splitlines())) > 600}
    assert not long


def _unsafe_torch_loads(source: str, name: str = "<snippet>") -> list[str]:
    """``name:line`` of every ``torch.load`` call in ``source`` that does not pass ``weights_only=True``
    literally (a bare ``torch.load(path)``, ``weights_only=False``, a variable, ``**kwargs``).

    Found by parsing, whatever the call looks like: ``torch.load``, an alias of ``torch``
    (``import torch as th``), ``torch.serialization.load`` and a ``load`` imported from either.
    The one sanctioned caller, :func:`dkolib.io.load_torch`, passes ``weights_only=True`` itself.
    """
    tree = ast.parse(source)
    torch_names, serialization_names, load_names = {"torch"}, set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "torch":
                    torch_names.add(a.asname or "torch")
                elif a.name == "torch.serialization" and a.asname:
                    serialization_names.add(a.asname)
        elif isinstance(node, ast.ImportFrom) and node.module in ("torch", "torch.serialization"):
            for a in node.names:
                if a.name == "load":
                    load_names.add(a.asname or "load")
                elif a.name == "serialization":
                    serialization_names.add(a.asname or "serialization")

    def is_torch_load(func: ast.expr) -> bool:
        if isinstance(func, ast.Name):
            return func.id in load_names
        if not (isinstance(func, ast.Attribute) and func.attr == "load"):
            return False
        owner = func.value
        if isinstance(owner, ast.Name):
            return owner.id in torch_names or owner.id in serialization_names
        return (isinstance(owner, ast.Attribute) and owner.attr == "serialization"
                and isinstance(owner.value, ast.Name) and owner.value.id in torch_names)

    def safe(call: ast.Call) -> bool:
        return any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                   for k in call.keywords)

    return [f"{name}:{node.lineno}" for node in ast.walk(tree)
            if isinstance(node, ast.Call) and is_torch_load(node.func) and not safe(node)]


@pytest.mark.parametrize("snippet, unsafe", [
    ("import torch\nstate = torch.load(path)\n", True),  # bare: the old text scan missed it
    ("import torch\nstate = torch.load(path, map_location='cpu')\n", True),
    ("import torch\nstate = torch.load(path, weights_only=False)\n", True),
    ("import torch\nstate = torch.load(path, weights_only=flag)\n", True),
    ("import torch\nstate = torch.load(path, **options)\n", True),
    ("import torch as th\nstate = th.load(path)\n", True),
    ("from torch import load\nstate = load(path)\n", True),
    ("import torch\nstate = torch.serialization.load(path)\n", True),
    ("def f(path):\n    import torch\n    return torch.load(path)\n", True),
    ("import torch\nstate = torch.load(path, map_location='cpu', weights_only=True)\n", False),
    ("import json, numpy as np\nstate = json.load(f)\narr = np.load(path)\n", False),
])
def test_unsafe_torch_load_scan_flags_every_call_without_weights_only(snippet, unsafe):
    assert bool(_unsafe_torch_loads(snippet)) == unsafe


def test_no_unsafe_torch_load_in_package_or_scripts():
    files = [f for d in (PKG, ROOT / "scripts") for f in sorted(d.rglob("*.py"))]
    assert PKG / "io.py" in files and len(files) > 50
    hits = [h for f in files for h in _unsafe_torch_loads(f.read_text(), str(f.relative_to(ROOT)))]
    assert not hits, f"torch.load without weights_only=True (use dkolib.io.load_torch): {hits}"
    # the scan does see the package's calls: the safe wrapper's own, with its keyword taken away, is flagged
    io_text = (PKG / "io.py").read_text()
    call = "torch.load(path, map_location=map_location, weights_only=True)"
    assert io_text.count(call) == 1
    assert _unsafe_torch_loads(io_text.replace(call, "torch.load(path, map_location=map_location)"))


def _notebook_code(path: Path) -> str:
    """The code cells of a notebook as one Python source (IPython magics and shell lines dropped)."""
    import json

    cells = json.loads(path.read_text())["cells"]
    lines = [line for c in cells if c["cell_type"] == "code" for line in "".join(c["source"]).splitlines()]
    return "\n".join(line for line in lines if not line.lstrip().startswith(("%", "!")))


def test_no_unsafe_torch_load_in_notebooks():
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert len(notebooks) >= 8
    hits = [h for nb in notebooks for h in _unsafe_torch_loads(_notebook_code(nb), nb.name)]
    assert not hits, f"torch.load without weights_only=True (use dkolib.io.load_torch): {hits}"
    text = _notebook_code(ROOT / "notebooks" / "03_dko_synthesis.ipynb")
    assert "load_torch(dko_dir" in text
    assert _unsafe_torch_loads(text.replace("load_torch(dko_dir", "torch.load(dko_dir"))


class _RunsCode:
    """A pickle that would run code on load (writes a marker file)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_crafted_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "array.pt"
    torch.save({"state_dict": {"latent": torch.zeros(2)}, "payload": _RunsCode(marker)}, path)
    with pytest.raises(UnsafeFileError, match="refused"):
        load_torch(path)
    assert not marker.exists()
    # the same file opened unsafely does run the code: the test above could fail
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_plain_files_round_trip_and_other_objects_are_refused_on_save(tmp_path):
    import numpy as np

    obj = {"state_dict": {"w": torch.arange(3.0)}, "meta": {"shape": (2, 3), "lr": np.float64(0.5), "n": 3},
           "history": [{"step": 1, "loss": 0.25}], "name": None}
    back = load_torch(save_torch(obj, tmp_path / "ok.pt"))
    assert torch.equal(back["state_dict"]["w"], obj["state_dict"]["w"])
    assert back["meta"] == {"shape": (2, 3), "lr": 0.5, "n": 3} and back["history"] == obj["history"]
    with pytest.raises(TypeError, match=r"obj\['bad'\] is a object"):
        save_torch({"bad": object()}, tmp_path / "bad.pt")
    assert not (tmp_path / "bad.pt").exists()


def _second_checkout(tmp_path: Path) -> Path:
    second = tmp_path / "second"
    for name in ("dkolib", "scripts", "config"):
        shutil.copytree(ROOT / name, second / name, ignore=shutil.ignore_patterns("__pycache__"))
    return second


def _run(args, cwd, env=None):
    env = {**os.environ, **(env or {})}
    if env.get("DKOLIB_ROOT") == "":  # "" means: run without DKOLIB_ROOT
        del env["DKOLIB_ROOT"]
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_a_second_checkout_writes_into_itself(tmp_path):
    """Results land under the checkout the script runs in, not where dkolib is installed."""
    second = _second_checkout(tmp_path)
    proc = _run([str(second / "scripts" / "make_dataset.py"), "--profile", "smoke", "--splits", "val"],
                cwd=second / "scripts", env={"DKOLIB_ROOT": ""})
    assert proc.returncode == 0, proc.stderr
    assert (second / "cache" / "data" / "smoke" / "val.npz").exists()
    # an explicit root wins over the working directory
    other = tmp_path / "elsewhere"
    shutil.copytree(ROOT / "config", other / "config")
    proc = _run([str(second / "scripts" / "make_dataset.py"), "--profile", "smoke", "--splits", "val"],
                cwd=second, env={"DKOLIB_ROOT": str(other)})
    assert proc.returncode == 0, proc.stderr
    assert (other / "cache" / "data" / "smoke" / "val.npz").exists()


@pytest.mark.parametrize("args, says", [
    (["--set", "optics.n_cells=64"], "n_cells"),
    (["--set", "optics.no_such_key=1"], "optics.no_such_key"),
    (["--profile", "nonexistent"], "unknown profile"),
])
def test_scripts_report_input_errors_in_one_line(tmp_path, args, says):
    proc = _run([str(ROOT / "scripts" / "train_stage1.py"), "--out", str(tmp_path), *args], cwd=ROOT)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], proc.stderr
