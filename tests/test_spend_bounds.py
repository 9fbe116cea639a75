"""The equal-budget protocol's spend bounds (:func:`dkolib.study.protocol.spend_violations`)
on hand-made job tables: DKO underspending (also at the stage-1 plateau), wall-axis runs spending
outside their bounds, and, with ``budget.stage1_stop: budget``, a design that stops at the plateau
instead of spending its budget are flagged; the summary script checks a whole study seed by seed
before it writes anything (FLOP rows outside their bounds stop it, wall rows are reported).

Hand-made calibration: a stage-1 step costs 10 FLOPs / 1 s, a stage-2 step 30 FLOPs / 3 s;
N1 = 10 stage-1 steps and 2 stage-2 steps make C_ref = 100 + 60 = 160 FLOPs = 10 + 6 = 16 s.
"""

from __future__ import annotations

import pytest

from dkolib.study import protocol
from dkolib.study.protocol import SPEND_WALL_RTOL, check_spend, spend_violations

N1 = 10
CALIB = {"stage1_step": {"wall_s": 1.0, "cpu_s": 1.0, "flops": 10.0},
         "stage2_step": {"fast": {"wall_s": 3.0, "cpu_s": 3.0, "flops": 30.0}}}
BUDGETS = {"stage1": {"wall_s": 10.0, "cpu_s": 10.0, "flops": 100.0},
           "engines": {"fast": {"c_ref": {"wall_s": 16.0, "cpu_s": 16.0, "flops": 160.0},
                                "stage2": {"wall_s": 6.0, "cpu_s": 6.0, "flops": 60.0},
                                "finetune": {"wall_s": 0.0, "cpu_s": 0.0, "flops": 0.0}}}}
C_REF = {"wall": 16.0, "flops": 160.0}
S1 = {"wall": 1.0, "flops": 10.0}
S2 = {"wall": 3.0, "flops": 30.0}


def _row(method, axis, frac, spent, steps, other_spent=None):
    """One table row at ``frac x C_ref``; ``spent`` on ``axis``, ``other_spent`` on the other axis
    (default: absurd, 1000x the budget, to show that only the row's own axis is checked)."""
    other = "flops" if axis == "wall" else "wall"
    spend = {axis: spent, other: 1000.0 * frac * C_REF[other] if other_spent is None else other_spent}
    r = {c: 0.0 for c in protocol.COLUMNS}
    r.update(method=method, engine="fast", seed=0, eval="crop", budget_axis=axis, budget_fraction=frac,
             budget_s=frac * C_REF["wall"], budget_flops=frac * C_REF["flops"], lr=0.1, lr_mult=1.0,
             spent_s=spend["wall"], cpu_s=spend["wall"], spent_flops=spend["flops"], steps=steps)
    return r


def _flag(rows, **kw):
    """Flagged rows; the hand tables below are for a stage 1 that stops at its plateau unless
    ``stage1_stop='budget'`` is passed (the tests at the end)."""
    kw.setdefault("stage1_stop", "plateau")
    return spend_violations(protocol.to_frame(rows), BUDGETS, CALIB, N1, **kw)


def _dko_spend(frac):
    """What a DKO design at ``frac x C_ref`` spends by the protocol (FLOPs, worked by hand):
    stage 1 to B - S2 (first crossing, whole steps) or N1 steps, stage 2 in the whole steps
    the budget has left (capped at 2, the budget's stage-2 steps), plus the gain fit (a third of a step)."""
    b = frac * 160.0
    s1_steps = min(N1, -(-max(b - 60.0, 0.0) // 10.0))
    s2_steps = min(2, (b - 10.0 * s1_steps) // 30.0)
    return 10.0 * s1_steps + 30.0 * s2_steps + 10.0, int(s1_steps)


def test_protocol_spend_of_dko_is_inside_its_bounds():
    # 0.5: 2 stage-1 steps (20), 2 stage-2 steps (60), gain fit 10 -> 90
    # 1.0: 10 steps (100) + 60 + 10 -> 170; 2.0: the plateau, 100 + 60 + 10 -> 170
    assert [_dko_spend(f) for f in (0.5, 1.0, 2.0)] == [(90.0, 2), (170.0, 10), (170.0, 10)]
    rows = [_row("dko", "flops", f, *_dko_spend(f)) for f in (0.5, 1.0, 2.0)]
    assert _flag(rows).empty
    check_spend(protocol.to_frame(rows), BUDGETS, CALIB, N1, stage1_stop="plateau")  # does not raise


def test_dko_underspend_is_flagged_below_and_at_the_plateau():
    # lower bound: min(B, C_ref) - one stage-2 step: 0.5 -> 80 - 30 = 50; 2.0 -> 160 - 30 = 130
    ok = [_row("dko", "flops", 0.5, 50.5, 2), _row("dko", "flops", 2.0, 130.5, N1)]
    assert _flag(ok).empty
    below = _row("dko", "flops", 0.5, 49.5, 2)  # stage 1 short of its crossing
    plateau = _row("dko", "flops", 2.0, 100.0, N1)  # stage 1 at its plateau, stage 2 not charged
    bad = _flag([below, plateau] + ok)
    assert len(bad) == 2
    assert bad["steps"].tolist() == [2, N1]  # the plateau row (steps == N1) is checked too
    assert bad["spend_lo"].tolist() == [50.0, 130.0]
    assert all(v.startswith("underspent: spent_flops=") for v in bad["violation"])
    with pytest.raises(protocol.BudgetProtocolError, match=r"dko fast seed 0 flops x2 \(crop\): underspent"):
        check_spend(protocol.to_frame([plateau]), BUDGETS, CALIB, N1, stage1_stop="plateau")
    # with the stopping rule active stage 2 may legitimately end sooner: no lower bound ...
    assert _flag([below, plateau], stage2_stops_early=True).empty
    # ... but an overspend (above B + max(s1, s2) + s2/3 = 160 + 30 + 10 = 200) still is one
    over = _flag([_row("dko", "flops", 1.0, 200.5, N1)], stage2_stops_early=True)
    assert over["violation"].str.startswith("overspent").tolist() == [True]
    assert _flag([_row("dko", "flops", 1.0, 199.5, N1)]).empty


def test_stage1_past_its_plateau_is_flagged():
    bad = _flag([_row("dko", "flops", 2.0, 170.0, N1 + 1), _row("electronic", "flops", 2.0, 110.0, N1 + 1)])
    assert len(bad) == 2 and bad["violation"].str.contains("past its plateau").all()


@pytest.mark.parametrize("method,frac,steps,lo,hi", [
    # wall bounds = the FLOP bounds in seconds, widened by SPEND_WALL_RTOL (0.25) x B:
    # dko at 1.0 (B = 16 s): [16 - 3, 16 + 3 + 1] -/+ 4 s = [9, 24]
    ("dko", 1.0, N1, 16.0 - 3.0 - 4.0, 16.0 + 3.0 + 1.0 + 4.0),
    # electronic at 0.5 (B = 8 s), below its plateau: [8, 8 + 1] -/+ 2 s = [6, 11]
    ("electronic", 0.5, 7, 8.0 - 2.0, 8.0 + 1.0 + 2.0),
    # e2e at 1.0 (B = 16 s), 8 steps: [16, 16 + spent / 8] -/+ 4 s
    ("e2e_scratch", 1.0, 8, 16.0 - 4.0, None),
])
def test_wall_axis_spend_outside_its_bounds_is_flagged(method, frac, steps, lo, hi):
    assert SPEND_WALL_RTOL == 0.25  # the slack the bounds above are worked out with
    eps = 0.01
    if hi is None:  # e2e: the upper bound depends on the spend itself, hi = 20 + spent / 8
        hi = (16.0 + 4.0) / (1.0 - 1.0 / 8)
    for spent, flagged in ((lo - eps, "underspent"), (lo + eps, None), (hi - eps, None), (hi + eps, "overspent")):
        bad = _flag([_row(method, "wall", frac, spent, steps)])
        if flagged is None:
            assert bad.empty, (method, spent, bad["violation"].tolist())
        else:
            assert bad["violation"].str.startswith(f"{flagged}: spent_s=").tolist() == [True], (method, spent)
    # a wall row is judged by its seconds, not by its FLOPs (and a FLOP row not by its seconds)
    assert _flag([_row(method, "wall", frac, (lo + hi) / 2, steps, other_spent=0.0)]).empty
    assert _flag([_row(method, "flops", frac, 10.0 * (lo + hi) / 2, steps, other_spent=0.0)]).empty


def test_wall_slack_is_the_stated_fraction_of_the_budget():
    # without slack the wall bounds are exactly the FLOP ones in seconds: dko at 1.0 -> [13, 20]
    assert _flag([_row("dko", "wall", 1.0, 13.01, N1), _row("dko", "wall", 1.0, 19.99, N1)], wall_rtol=0.0).empty
    assert len(_flag([_row("dko", "wall", 1.0, 12.99, N1), _row("dko", "wall", 1.0, 20.01, N1)], wall_rtol=0.0)) == 2
    # a wall run that spends twice its budget, or a tenth of it, is out of bounds with the default slack
    for spent in (2 * 16.0, 0.1 * 16.0):
        for method in ("dko", "e2e_scratch", "electronic"):
            assert len(_flag([_row(method, "wall", 1.0, spent, 5)])) == 1, (method, spent)
    with pytest.raises(ValueError, match="wall_rtol"):
        _flag([], wall_rtol=-0.1)


def test_unknown_method_or_axis_is_an_error():
    with pytest.raises(ValueError, match="no spend bounds"):
        _flag([_row("stage1", "flops", 1.0, 1.0, 1)])
    row = _row("dko", "flops", 1.0, 170.0, N1)
    row["budget_axis"] = "cpu"
    with pytest.raises(ValueError, match="budget_axis"):
        _flag([row])


def _dko_spend_to_budget(frac):
    """What a DKO design at ``frac x C_ref`` spends when stage 1 trains on to its share of the
    budget (``stage1_stop='budget'``, FLOPs, by hand): no N1 cap on stage 1."""
    b = frac * 160.0
    s1_steps = -(-max(b - 60.0, 0.0) // 10.0)
    s2_steps = min(2, (b - 10.0 * s1_steps) // 30.0)
    return 10.0 * s1_steps + 30.0 * s2_steps + 10.0, int(s1_steps)


def test_stage1_to_budget_spends_the_budget_above_c_ref():
    # 2.0: B = 320, stage 1 to 320 - 60 = 260 (26 steps), stage 2 2 steps (60), gain fit 10 -> 330
    # 4.0: B = 640, 58 steps (580) + 60 + 10 -> 650
    assert [_dko_spend_to_budget(f) for f in (1.0, 2.0, 4.0)] == [(170.0, 10), (330.0, 26), (650.0, 58)]
    rows = [_row("dko", "flops", f, *_dko_spend_to_budget(f)) for f in (1.0, 2.0, 4.0)]
    rows += [_row("electronic", "flops", f, 10.0 * -(-f * 160.0 // 10.0), int(-(-f * 160.0 // 10.0)))
             for f in (2.0, 4.0)]  # 320 (32 steps), 640 (64 steps)
    assert _flag(rows, stage1_stop="budget").empty
    check_spend(protocol.to_frame(rows), BUDGETS, CALIB, N1, stage1_stop="budget")  # does not raise
    # the same rows break the plateau protocol: stage 1 trained past N1
    assert _flag(rows, stage1_stop="plateau")["violation"].str.contains("past its plateau").sum() == 4


def test_stage1_that_stops_at_the_plateau_underspends_when_it_should_spend_its_budget():
    # a design that stopped at N1 although its budget pays for more: fine under 'plateau', an
    # underspend under 'budget' (dko lower bound B - s2 = 320 - 30 = 290; electronic B = 320)
    stuck = [_row("dko", "flops", 2.0, 170.0, N1), _row("electronic", "flops", 2.0, 100.0, N1)]
    assert _flag(stuck, stage1_stop="plateau").empty
    bad = _flag(stuck, stage1_stop="budget")
    assert bad["spend_lo"].tolist() == [290.0, 320.0]
    assert bad["violation"].str.startswith("underspent").all()
    with pytest.raises(ValueError, match="stage1_stop"):
        _flag(stuck, stage1_stop="never")


def _run(seed=0, **settings):
    """One seed's budgets.json content with the hand calibration above."""
    return {"seed": seed, "budgets": BUDGETS, "calibration": CALIB,
            "settings": {"stage1_steps": N1, **settings}}


def test_study_check_raises_on_flops_and_reports_wall_rows():
    stuck = _row("dko", "flops", 2.0, 170.0, N1)  # stopped at N1 under 'budget': underspent
    late = _row("dko", "wall", 2.0, 2 * 32.0, N1)  # twice its wall budget
    table = protocol.to_frame([stuck, late])
    with pytest.raises(protocol.BudgetProtocolError, match=r"FLOP bounds:\n  dko fast seed 0 flops x2"):
        protocol.check_study_spend(table, [_run(stage1_stop="budget")])
    wall = protocol.check_study_spend(protocol.to_frame([late]), [_run(stage1_stop="budget")])
    assert wall["violation"].str.startswith("overspent: spent_s=").tolist() == [True]
    # a budgets.json from before the option existed is read as the plateau protocol: the stuck row passes
    assert protocol.check_study_spend(protocol.to_frame([stuck]), [_run()]).empty
    # each seed is judged by its own file, and a seed without one is an error
    other = dict(stuck, seed=1)
    with pytest.raises(protocol.BudgetProtocolError, match=r"seed\(s\) \[1\]"):
        protocol.check_study_spend(protocol.to_frame([other]), [_run(stage1_stop="budget")])
    assert protocol.check_study_spend(protocol.to_frame([other]),
                                      [_run(stage1_stop="budget"), _run(1, stage1_stop="plateau")]).empty


def test_summary_script_refuses_an_overspent_table_before_writing(tmp_path):
    import json
    import runpy

    from pathlib import Path
    script = Path(__file__).resolve().parent.parent / "scripts" / "summarize_equal_budget.py"
    main = runpy.run_path(str(script))["main"]
    rows = [_row("dko", "flops", f, *_dko_spend_to_budget(f)) for f in (1.0, 2.0)]
    job = tmp_path / "dko_fast_0.csv"
    budgets = tmp_path / "budgets.json"
    budgets.write_text(json.dumps(_run(stage1_stop="budget")))
    out = tmp_path / "equal_budget.csv"
    args = ["--inputs", str(job), "--out", str(out), "--summary", str(tmp_path / "summary.csv"),
            "--n-boot", "10", "--budgets", str(budgets)]
    protocol.to_frame(rows).to_csv(job, index=False)
    main(args)  # inside the bounds: written
    written = out.read_bytes()
    rows[1]["spent_flops"] = 330.0 + 40.0  # overshoots 2x: B + s2 + s2 / 3 = 360
    protocol.to_frame(rows).to_csv(job, index=False)
    with pytest.raises(protocol.BudgetProtocolError, match="overspent: spent_flops=370"):
        main(args)
    assert out.read_bytes() == written  # the earlier result is untouched
