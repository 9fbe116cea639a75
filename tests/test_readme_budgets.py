"""The README states the E2E baseline's budget in units of the main chain's DKO run (hand-made logs)."""

from __future__ import annotations

import pandas as pd

from dkolib.study import ProfilePaths
from dkolib.study.readme_budgets import e2e_budget, e2e_budget_sentence


def test_e2e_budget_is_its_last_logged_step_over_the_dko_run(tmp_path):
    paths = ProfilePaths("default", tmp_path)
    assert e2e_budget(paths) is None and e2e_budget_sentence(paths) == ""  # nothing to read: no sentence
    paths.e2e.mkdir(parents=True)
    paths.dko.mkdir(parents=True)
    # 300 steps of 2e10 FLOPs and 3 s each; DKO's run: 1.2e13 FLOPs in 1800 s -> 0.5x and 0.5x
    pd.DataFrame({"step": [1, 150, 300], "flops": [2e10, 3e12, 6e12], "wall_s": [3.0, 450.0, 900.0]}).to_csv(
        paths.e2e / "log.csv", index=False)
    pd.DataFrame([{"total_flops": 1.2e13, "total_wall_s": 1800.0}]).to_csv(paths.dko / "summary.csv", index=False)
    b = e2e_budget(paths)
    assert b["steps"] == 300 and b["flops_fraction"] == 0.5 and b["wall_fraction"] == 0.5
    text = e2e_budget_sentence(paths)
    assert "300 steps" in text and "0.5x the FLOPs" in text and "0.5x its wall time" in text


def test_budget_designs_are_stated_beside_the_main_e2e(tmp_path):
    paths = ProfilePaths("default", tmp_path)
    for d in ("e2e", "e2e_1x", "e2e_4x"):
        (paths.results / d).mkdir(parents=True)
    paths.dko.mkdir(parents=True)
    pd.DataFrame([{"total_flops": 1.0e13, "total_wall_s": 1000.0}]).to_csv(paths.dko / "summary.csv", index=False)
    # 1x: 500 steps, 1.01e13 FLOPs (one step past the budget), 1200 s; 4x: 2000 steps, 4.0e13, 4800 s
    for d, steps, flops, wall in (("e2e", 300, 6e12, 700.0), ("e2e_1x", 500, 1.01e13, 1200.0),
                                  ("e2e_4x", 2000, 4.0e13, 4800.0)):
        pd.DataFrame({"step": [steps], "flops": [flops], "wall_s": [wall]}).to_csv(paths.results / d / "log.csv",
                                                                                    index=False)
    text = e2e_budget_sentence(paths)
    assert "`e2e_1x` 500 steps, 1.01x (1.2x its wall time)" in text
    assert "`e2e_4x` 2000 steps, 4x (4.8x its wall time)" in text
