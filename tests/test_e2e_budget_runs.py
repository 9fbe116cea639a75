"""E2E trained to a budget in units of another run (``scripts/train_e2e.py --budget-of``): it stops
at the first step past the budget, and a longer budget continued from a shorter one's checkpoint
is the uninterrupted run (smoke problem, one thread)."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pandas as pd
import pytest
import torch

from dkolib.errors import InputError
from dkolib.io import load_torch, save_torch

ROOT = Path(__file__).resolve().parent.parent
OVER = {"optics.n_cells": 33, "optics.meta_atom": "ideal", "optics.subpixel": 1, "optics.render_window_px": 15,
        "optics.sensor_distance_m": 1e-3, "threads": 1, "stage1.checkpoint_every": 1000, "stage1.eval_every": 1000}


def _script():
    spec = importlib.util.spec_from_file_location("train_e2e_script", ROOT / "scripts" / "train_e2e.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _args(**kw):
    base = {"budget_of": None, "budget_fraction": None, "steps_cap": 100_000, "start_from": None, "out": None}
    return argparse.Namespace(**{**base, **kw})


def test_budget_arguments_are_checked(tmp_path):
    limits = _script().budget_limits
    assert limits(_args()) == (None, None)
    with pytest.raises(InputError, match="go together"):
        limits(_args(budget_fraction=1.0))
    with pytest.raises(InputError, match="continues a budget run"):
        limits(_args(start_from=tmp_path / "ckpt.pt"))
    save_torch({"budget": None}, tmp_path / "plain.pt")
    with pytest.raises(InputError, match="holds no budget meter"):
        limits(_args(budget_of=tmp_path / "plain.pt", budget_fraction=1.0))
    save_torch({"budget": {"flops": 2.0e9}}, tmp_path / "ref.pt")
    assert limits(_args(budget_of=tmp_path / "ref.pt", budget_fraction=4.0)) == (8.0e9, 100_000)
    with pytest.raises(InputError, match="does not exist"):
        limits(_args(budget_of=tmp_path / "ref.pt", budget_fraction=4.0, start_from=tmp_path / "none.pt",
                     out=tmp_path / "out"))


def _run(main, out: Path, ref: Path, fraction: float, cache: Path, start: Path | None = None) -> pd.DataFrame:
    argv = ["--profile", "smoke", "--out", str(out), "--cache-dir", str(cache), "--quiet", "--budget-of", str(ref),
            "--budget-fraction", str(fraction), *[a for k, v in OVER.items() for a in ("--set", f"{k}={v}")]]
    if start is not None:
        argv += ["--start-from", str(start)]
    main(argv)
    return pd.read_csv(out / "log.csv")


def test_a_budget_run_stops_past_its_budget_and_a_longer_one_continues_it(tmp_path):
    torch.set_num_threads(1)
    main = _script().main
    cache = tmp_path / "cache"
    # C_ref = 3 E2E steps of this problem (one step's FLOPs measured by a 1-step run)
    probe = _run(main, tmp_path / "probe", _ref(tmp_path, 1.0), 1e-12, cache)
    step_flops = float(probe["flops"].iloc[0])
    ref = _ref(tmp_path, 3 * step_flops)
    one = _run(main, tmp_path / "e2e_1x", ref, 1.0, cache)
    assert len(one) == 3 and one["flops"].iloc[-1] >= 3 * step_flops > one["flops"].iloc[-2]
    two = _run(main, tmp_path / "e2e_2x", ref, 2.0, cache, start=tmp_path / "e2e_1x" / "ckpt.pt")
    straight = _run(main, tmp_path / "straight", ref, 2.0, cache)
    assert len(two) == len(straight) == 6
    assert two["loss"].tolist() == straight["loss"].tolist()  # continued = uninterrupted, to the bit
    a = load_torch(tmp_path / "e2e_2x" / "model.pt")["state_dict"]
    b = load_torch(tmp_path / "straight" / "model.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert pd.read_csv(tmp_path / "e2e_1x" / "log.csv")["step"].tolist() == [1, 2, 3]  # the source left as it was


def _ref(tmp_path: Path, flops: float) -> Path:
    path = tmp_path / f"ref_{flops:g}.pt"
    save_torch({"budget": {"flops": flops}}, path)
    return path
