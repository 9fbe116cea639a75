"""The AVX2 cap that lets a run reproduce bit for bit on another x86-64 CPU (dkolib/cpupaths.py)."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from dkolib.cpupaths import PINNED_ENV, X86_64, pin_cpu_code_paths

ROOT = Path(__file__).resolve().parents[1]


def test_pin_sets_every_variable_on_x86_64_and_reports_them():
    env = {"PATH": "/bin"}
    applied = pin_cpu_code_paths(env, machine="x86_64")
    assert applied == {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}
    assert env["PATH"] == "/bin" and all(env[k] == v for k, v in applied.items())


def test_pin_leaves_a_variable_the_user_set():
    env = {"ATEN_CPU_CAPABILITY": "default"}
    applied = pin_cpu_code_paths(env, machine="AMD64")
    assert env["ATEN_CPU_CAPABILITY"] == "default" and "ATEN_CPU_CAPABILITY" not in applied
    assert env["MKL_CBWR"] == "AVX2"


def test_pin_does_nothing_off_x86_64():
    env = {}
    assert pin_cpu_code_paths(env, machine="arm64") == {} and env == {}


def _capability(env) -> str:
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.mark.skipif(platform.machine().lower() not in X86_64, reason="x86-64 only")
def test_torch_started_with_the_pin_runs_its_avx2_kernels():
    bare = {k: v for k, v in os.environ.items() if k not in PINNED_ENV}
    if _capability(bare) not in ("AVX2", "AVX512"):
        pytest.skip("this CPU has no AVX2: the cap does not apply")
    pinned = dict(bare)
    pin_cpu_code_paths(pinned)
    assert _capability(pinned) == "AVX2"


def test_snakefile_pins_before_its_first_rule():
    text = (ROOT / "Snakefile").read_text()
    assert "\npin_cpu_code_paths()\n" in text
    assert text.index("\npin_cpu_code_paths()\n") < text.index("\nrule ")
