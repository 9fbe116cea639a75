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


def test_lr_is_selected_on_the_first_seed_and_reused():
    """budget.lr_search=first_seed: later seeds and the reference engine take --lr-from the search job;
    stage 1 always trains at the main chain's rate."""
    exe = shutil.which("snakemake") or "snakemake"
    eb = "results/default/equal_budget"
    result = subprocess.run([exe, f"{eb}/dko_reference_1.csv", f"{eb}/e2e_scratch_fast_2.csv", "-n", "-p",
                             "--forceall", "--cores", "4", "--config", "profile=default"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    commands = {}
    for line in result.stdout.splitlines():
        if "run_equal_budget.py" in line:
            out = line.split("--out ")[1].split()[0]
            commands[Path(out).name] = line
    assert "--lr-from" not in commands["stage1_0.csv"] and "--lr-from" not in commands["stage1_1.csv"]
    assert "--lr-from" not in commands["dko_fast_0.csv"] and "--lr-from" not in commands["e2e_scratch_fast_0.csv"]
    # the budget unit is calibrated per seed; E2E from scratch needs only that, not seed 2's stage 1
    assert "calibration_2.csv" in commands and "stage1_2.csv" not in commands
    assert f"--lr-from {eb}/dko_fast_0.csv" in commands["dko_reference_1.csv"]
    assert f"--lr-from {eb}/e2e_scratch_fast_0.csv" in commands["e2e_scratch_fast_2.csv"]


def test_main_chain_target_leaves_out_the_equal_budget_study():
    exe = shutil.which("snakemake") or "snakemake"
    result = subprocess.run([exe, "main_chain", "-n", "--forceall", "--cores", "4", "--config", "profile=default"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rules = {line.split()[-1].rstrip(":") for line in result.stdout.splitlines() if line.startswith(("rule ", "localrule "))}
    assert {"stage1", "dko", "e2e", "physical_eval", "tolerances"} <= rules
    assert not {r for r in rules if r.startswith("eb_") or r.startswith("notebook")}


def test_main_chain_recomputes_on_a_fresh_clone(tmp_path):
    """The committed results look up to date to Snakemake (their files exist), but a fresh clone has
    no dataset cache and no networks: `snakemake -n main_chain` there must list the chain's jobs."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: nothing to clone")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=300)
    assert not (clone / "cache").exists() and (clone / "results" / "default" / "physical_eval.csv").exists()
    exe = shutil.which("snakemake") or "snakemake"
    result = subprocess.run([exe, "main_chain", "-n", "--cores", "4", "--config", "profile=default"],
                            cwd=clone, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Nothing to be done" not in result.stdout
    rules = {line.split()[-1].rstrip(":") for line in result.stdout.splitlines() if line.startswith(("rule ", "localrule "))}
    assert {"data", "stage1", "dko", "e2e", "physical_eval", "tolerances", "operating_point"} <= rules


def test_sharded_jobs_run_under_torchrun_with_their_processes_declared():
    """``--config processes=4``: stage 2 and E2E launch 4 processes with torchrun, declare their cores
    (and, on a CUDA profile, their GPUs); with the profile's one process they run plain python."""
    exe = shutil.which("snakemake") or "snakemake"

    def commands(*config):
        result = subprocess.run([exe, "results/paper/dko/model.pt", "results/paper/e2e/model.pt", "-n", "-p",
                                 "--forceall", "--cores", "64", "--config", "profile=paper", *config],
                                cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        return result.stdout

    out = commands("processes=4")
    assert "torchrun --standalone --nproc_per_node 4 scripts/run_dko.py --profile paper" in out
    assert "torchrun --standalone --nproc_per_node 4 scripts/train_e2e.py --profile paper" in out
    assert "gpu=4" in out.replace(" ", "")
    plain = commands()
    assert "torchrun" not in plain and "python scripts/run_dko.py --profile paper" in plain
