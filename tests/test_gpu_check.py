"""scripts/gpu_check.py, the paper's sizes on one GPU, exercised on a CPU at a tiny size."""

import importlib
from pathlib import Path

import pandas as pd
import pytest
import torch

from dkolib.study.cli import run_cli

ROOT = Path(__file__).resolve().parent.parent


def tiny(out: Path, *extra: str, metasurfaces: int = 2, steps: int = 1) -> list[str]:
    """Arguments of a run of the paper profile cut down to seconds on a CPU (48 metasurfaces of 33 cells)."""
    return ["--profile", "paper", "--device", "cpu", "--metasurfaces", str(metasurfaces), "--steps", str(steps),
            "--warmup", "0", "--threads", "1", "--set", "optics.n_cells=33", "data.height=32", "data.width=64",
            "e2e.batch_size=1", "model.width_factor=0.125", "--out", str(out), *extra]


@pytest.fixture
def gpu_check(monkeypatch):
    """``scripts/gpu_check.py`` as a module (imported once; ``sys.path`` restored after each test)."""
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    return importlib.import_module("gpu_check")


def test_tiny_cpu_run_writes_one_row_per_measurement(gpu_check, tmp_path):
    out = tmp_path / "gpu_check.csv"
    assert gpu_check.main(tiny(out)) == 0
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table.columns) == gpu_check.COLUMNS
    assert list(table["measurement"]) == ["psf_forward", "psf_forward_backward", "dko_stage2_step", "e2e_step"]
    assert (table[["device", "profile", "engine", "memory_kind"]].drop_duplicates().values.tolist()
            == [["cpu", "paper", "fast", "process_peak_rss"]])
    assert (table["n_cells"] == 33).all() and (table["steps_timed"] == 1).all()
    # paper's array: 2 x 3 x conv1 channels (64 x 0.125 = 8)
    assert (table["metasurfaces_timed"] == 2).all() and (table["metasurfaces_total"] == 48).all()
    assert (table["seconds_per_step"] > 0).all() and (table["peak_memory_mb"] > 0).all()
    assert table["psfs_per_second"].to_numpy() == pytest.approx(2 / table["seconds_per_step"].to_numpy())
    linear = table["scaling_rule"] == gpu_check.LINEAR_RULE
    assert list(linear) == [True, True, True, False]
    assert table.loc[linear, "scaled_to_all_seconds_per_step"].to_numpy() == pytest.approx(
        table.loc[linear, "seconds_per_step"].to_numpy() * 48 / 2)
    e2e = table.set_index("measurement").loc["e2e_step"]
    assert e2e["scaling_rule"] == gpu_check.E2E_RULE and "2 of 48 metasurfaces simulated" in e2e["note"]
    assert (e2e["batch_size"], e2e["height"], e2e["width"], e2e["window_px"]) == (1, 32, 64, 7)
    assert 0 < e2e["seconds_optics_per_step"] < e2e["seconds_per_step"]
    assert e2e["scaled_to_all_seconds_per_step"] == pytest.approx(
        e2e["seconds_per_step"] + e2e["seconds_optics_per_step"] * (48 / 2 - 1))


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has a CUDA GPU")
def test_cuda_without_a_gpu_exits_2_naming_device_cpu(gpu_check, tmp_path, capsys):
    out = tmp_path / "gpu_check.csv"
    out.write_text("earlier,results\n1,2\n")
    assert run_cli(gpu_check.main, ["--out", str(out)]) == 2
    assert "--device cpu" in capsys.readouterr().err
    assert out.read_text() == "earlier,results\n1,2\n"


def test_a_run_that_measures_nothing_leaves_the_csv_alone(gpu_check, tmp_path, capsys):
    out = tmp_path / "gpu_check.csv"
    out.write_text("earlier,results\n1,2\n")
    # fails on the configuration (even n_cells), before building anything
    assert run_cli(gpu_check.main, tiny(out, "--set", "optics.n_cells=34")) == 2
    assert "n_cells" in capsys.readouterr().err
    # the time limit passes before the first measurement: nothing to write
    assert gpu_check.main(tiny(out, "--time-limit-s", "1e-9")) == 1
    assert out.read_text() == "earlier,results\n1,2\n"
    assert [p.name for p in tmp_path.iterdir()] == ["gpu_check.csv"]  # no temporary file left behind


def test_odd_or_too_many_metasurfaces_are_refused(gpu_check, tmp_path, capsys):
    for k in (3, 50):
        assert run_cli(gpu_check.main, tiny(tmp_path / "x.csv", metasurfaces=k)) == 2
        assert "--metasurfaces must be even" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


def test_the_time_limit_stops_a_measurement_and_keeps_its_steps(gpu_check, tmp_path):
    out = tmp_path / "gpu_check.csv"
    assert gpu_check.main(tiny(out, "--time-limit-s", "0.5", steps=1000)) == 0
    table = pd.read_csv(out)
    assert table["measurement"].iloc[0] == "psf_forward" and len(table) < 4
    assert (table["steps_timed"] >= 1).all() and (table["steps_timed"] < 1000).all()
