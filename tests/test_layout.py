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
SCIENCE = ["optics", "depth", "dko", "fab"]
TOP_LEVEL = ["config.py", "errors.py", "io.py", "root.py", "plots.py", "__init__.py"]


def _science_files():
    files = [PKG / name for name in TOP_LEVEL]
    for sub in SCIENCE:
        files += sorted((PKG / sub).glob("*.py"))
    return files


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


def test_no_unsafe_torch_load_in_package_or_scripts():
    hits = [str(f.relative_to(ROOT)) for d in (PKG, ROOT / "scripts") for f in d.rglob("*.py")
            if "weights_only=False" in f.read_text()]
    assert not hits


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
