"""The Snakemake DAG resolves for every profile (dry runs, nothing executed)."""

import shutil
import subprocess
from pathlib import Path

import pytest

from dkolib.config import PROFILES

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("profile", PROFILES)
def test_dry_run(profile, tmp_path):
    exe = shutil.which("snakemake")
    if exe is None:
        pytest.fail("snakemake is not installed: pip install -e '.[test]'")
    result = subprocess.run(
        [exe, "-n", "--cores", "4", "--config", f"profile={profile}", "--quiet", "rules"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def test_dry_run_rejects_unknown_profile():
    result = subprocess.run([shutil.which("snakemake") or "snakemake", "-n", "--cores", "1", "--config",
                             "profile=nonsense"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "unknown profile 'nonsense'" in result.stdout + result.stderr
