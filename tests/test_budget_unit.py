"""The budget unit of the equal-budget study: the main chain's DKO run, stopped by its own rules.

Stage 1 stops at a validation plateau (checked on hand-made traces and on a real run that must
stay stopped when resumed); the equal-budget jobs read the main chain's step counts; a learning-
rate tie keeps the base rate; stage 2 is capped by what a budget has left.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from dkolib.dko.stopping import plateau_reached
from dkolib.dko.train import train_loop
from dkolib.study import protocol
from dkolib.study.jobs import stage2_step_cap


def test_plateau_rule_on_hand_made_traces():
    # best of the last 2 (0.30) vs best before (0.31): 3.2 % better -> not a plateau at tol 1 %
    assert not plateau_reached([0.5, 0.31, 0.30, 0.305], patience=2, tol=0.01)
    # best of the last 2 (0.309) vs 0.31: 0.3 % better -> plateau
    assert plateau_reached([0.5, 0.31, 0.309, 0.32], patience=2, tol=0.01)
    # getting worse is a plateau too
    assert plateau_reached([0.5, 0.3, 0.4, 0.35], patience=2, tol=0.0)
    # too few evaluations, or the rule switched off
    assert not plateau_reached([0.5, 0.5], patience=2, tol=0.01)
    assert not plateau_reached([0.5] * 10, patience=0, tol=0.01)
    with pytest.raises(ValueError, match="patience"):
        plateau_reached([1, 2, 3], patience=-1, tol=0.0)


class _Toy(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return {"rgb": torch.rand(3, 4, 4, generator=g), "depth_m": torch.rand(1, 4, 4, generator=g) + 1}


def _loss(model, batch):
    return ((model(batch["rgb"]) - batch["depth_m"]) ** 2).mean()


def test_train_loop_stops_at_plateau_and_stays_stopped(tmp_path):
    # a scripted validation trace: improving, then flat from the 3rd evaluation on
    trace = iter([1.0, 0.5, 0.499, 0.4985, 0.1, 0.05])
    calls = []

    def eval_fn(model):
        calls.append(1)
        return {"abs_rel": next(trace)}

    def run():
        model = torch.nn.Conv2d(3, 1, 1)
        return train_loop(model, [{"params": list(model.parameters()), "lr": 1e-2}], _Toy(), steps=100,
                          batch_size=2, seed=0, log_csv=tmp_path / "log.csv", ckpt=tmp_path / "ckpt.pt",
                          loss_fn=_loss, eval_fn=eval_fn, eval_every=5, plateau_patience=2, plateau_tol=0.01,
                          progress=False, lr_decay_at=None)

    hist = run()
    # evaluations at 5, 10, 15, 20: after the 4th, the best of the last two (0.4985) beats 0.5 by 0.3 %
    assert hist.attrs["stop_reason"] == "plateau"
    assert int(hist["step"].max()) == 20 and len(calls) == 4
    again = run()  # resumed from the final checkpoint: no further step, no further evaluation
    assert again.attrs["stop_reason"] == "plateau" and int(again["step"].max()) == 20 and len(calls) == 4


def test_lr_tie_keeps_the_base_multiplier():
    search = [{"lr_mult": 0.5, "val_abs_rel": 0.4116}, {"lr_mult": 1.0, "val_abs_rel": 0.4122},
              {"lr_mult": 2.0, "val_abs_rel": 0.4128}]
    assert protocol.pick_lr_mult(search, tie_rel=0.0) == 0.5  # no tolerance: the numerically best
    assert protocol.pick_lr_mult(search, tie_rel=0.02) == 1.0  # 0.15 % apart: a tie keeps the base
    clear = [{"lr_mult": 0.5, "val_abs_rel": 0.30}, {"lr_mult": 1.0, "val_abs_rel": 0.40}]
    assert protocol.pick_lr_mult(clear, tie_rel=0.05) == 0.5  # 25 % better: a real difference
    no_base = [{"lr_mult": 0.5, "val_abs_rel": 0.4}, {"lr_mult": 2.0, "val_abs_rel": 0.3}]
    assert protocol.pick_lr_mult(no_base, tie_rel=0.5) == 2.0


def test_budget_unit_is_read_from_the_main_chain(tmp_path):
    (tmp_path / "stage1").mkdir()
    (tmp_path / "dko").mkdir()
    pd.DataFrame({"step": range(1, 1251), "loss": 0.0}).to_csv(tmp_path / "stage1" / "log.csv", index=False)
    pd.DataFrame({"profile": ["x"], "steps": [87]}).to_csv(tmp_path / "dko" / "summary.csv", index=False)
    st = protocol.Settings(fractions=(1.0,), seeds=(0,), engines=("fast",), lr_grid=(1.0,), axes=("flops",),
                           stage1_steps=0, dko_steps=0, finetune_steps=2, eval_items=None, noise_eval=False,
                           calib_steps=2)
    assert protocol.main_chain_steps(tmp_path) == (1250, 87)
    r = protocol.resolve_reference_run(st, tmp_path)
    assert (r.stage1_steps, r.dko_steps) == (1250, 87)
    fixed = protocol.resolve_reference_run(protocol.Settings(**{**r.__dict__, "stage1_steps": 5, "dko_steps": 2}),
                                           tmp_path / "nowhere")
    assert (fixed.stage1_steps, fixed.dko_steps) == (5, 2)  # explicit counts need no main chain
    with pytest.raises(protocol.BudgetProtocolError, match="run it first"):
        protocol.resolve_reference_run(st, tmp_path / "nowhere")


def test_stage2_cap_spends_what_the_budget_has_left():
    budgets = {"engines": {"fast": {"c_ref": {"wall_s": 100.0, "flops": 1000.0}}}}
    calib = {"stage2_step": {"fast": {"wall_s": 2.0, "flops": 30.0}}}
    entry = {"wall_s": 61.0, "flops": 700.0}
    # flops: 2 x 1000 - 700 = 1300 left -> 43 steps of 30 (1290), capped by dko.steps = 120
    assert stage2_step_cap(budgets, calib, 120, "fast", "flops", 2.0, entry) == 43
    assert stage2_step_cap(budgets, calib, 10, "fast", "flops", 2.0, entry) == 10
    # wall: 100 - 61 = 39 s left, minus a 5 s fine-tune -> 34 s -> 17 steps of 2 s
    assert stage2_step_cap(budgets, calib, 120, "fast", "wall", 1.0, entry, {"wall_s": 5.0, "flops": 0.0}) == 17
    # nothing left: one step (the design exists only where stage 1's target was feasible)
    assert stage2_step_cap(budgets, calib, 120, "fast", "flops", 0.5, entry) == 1


def test_constant_rate_run_resumes_with_another_step_cap(tmp_path):
    """At a constant rate the step count only caps the run: 6 steps then resumed to 10 equal 10 in one go."""
    def run(folder, steps, decay=None):
        torch.manual_seed(0)
        model = torch.nn.Conv2d(3, 1, 1)
        train_loop(model, [{"params": list(model.parameters()), "lr": 1e-2}], _Toy(), steps=steps, batch_size=2,
                   seed=0, log_csv=folder / "log.csv", ckpt=folder / "ckpt.pt", loss_fn=_loss, progress=False,
                   lr_decay_at=decay)
        return model

    whole = run(tmp_path / "a", 10)
    run(tmp_path / "b", 6)
    resumed = run(tmp_path / "b", 10)
    for p, q in zip(whole.parameters(), resumed.parameters()):
        assert torch.equal(p, q)
    run(tmp_path / "c", 6, decay=0.5)  # a decay step depends on the length: another length is another run
    with pytest.raises(ValueError, match="was written for steps=6"):
        run(tmp_path / "c", 10, decay=0.5)


def test_checkpoint_refuses_another_schedule_or_a_shorter_run(tmp_path):
    def run(folder, steps, decay=None, **kw):
        torch.manual_seed(0)
        model = torch.nn.Conv2d(3, 1, 1)
        return train_loop(model, [{"params": list(model.parameters()), "lr": 1e-2}], _Toy(), steps=steps,
                          batch_size=2, seed=0, log_csv=folder / "log.csv", ckpt=folder / "ckpt.pt", loss_fn=_loss,
                          progress=False, lr_decay_at=decay, **kw)

    run(tmp_path / "a", 8, decay=0.5)  # decays at step 4
    with pytest.raises(ValueError, match="lr decay at step 4"):
        run(tmp_path / "a", 8)  # same length, constant rate: another schedule
    run(tmp_path / "b", 8)
    with pytest.raises(ValueError, match="at step 8"):
        run(tmp_path / "b", 6)  # the checkpoint lies past this run's end
    with pytest.raises(ValueError, match="plateau rule"):
        run(tmp_path / "b", 10, eval_fn=lambda m: {"abs_rel": 1.0}, eval_every=2, plateau_patience=2)
    # a checkpoint from before the schedule was recorded: only the same length resumes
    state = torch.load(tmp_path / "b" / "ckpt.pt", weights_only=False)
    del state["decay_step"], state["plateau"]
    torch.save(state, tmp_path / "b" / "ckpt.pt")
    with pytest.raises(ValueError, match="was written for steps=8"):
        run(tmp_path / "b", 10)
    assert int(run(tmp_path / "b", 8)["step"].max()) == 8


def test_plateau_decision_ignores_an_evaluation_made_at_a_budget_stop(tmp_path):
    """A run stopped by its budget between two scheduled evaluations evaluates once more at its end;
    resumed, it must decide on the scheduled evaluations only, as an uninterrupted run does."""
    from dkolib.dko.budget import BudgetMeter

    def run(folder, steps=20, max_flops=None, values=None):
        torch.manual_seed(0)
        model = torch.nn.Conv2d(3, 1, 1)
        meter = BudgetMeter()

        def eval_fn(m):  # the validation value scripted per step (the step read off the FLOP meter)
            return {"abs_rel": values[round(meter.flops / per_step)]}

        return train_loop(model, [{"params": list(model.parameters()), "lr": 1e-2}], _Toy(), steps=steps,
                          batch_size=2, seed=0, log_csv=folder / "log.csv", ckpt=folder / "ckpt.pt", loss_fn=_loss,
                          progress=False, lr_decay_at=None, eval_fn=eval_fn if values else None, eval_every=5,
                          plateau_patience=1, plateau_tol=0.01, max_flops=max_flops, budget=meter)

    per_step = float(run(tmp_path / "probe", steps=1)["flops"].iloc[-1])
    # scheduled evaluations at 5, 10, 15, 20; the budget stop at 7 evaluates too, with a value that
    # would make 10 look like no improvement (a plateau) if it counted
    values = {5: 1.0, 7: 0.5, 10: 0.5, 15: 0.2, 20: 0.199}
    whole = run(tmp_path / "a", values=values)
    assert whole.attrs["stop_reason"] == "plateau" and int(whole["step"].max()) == 20
    first = run(tmp_path / "b", max_flops=6.5 * per_step, values=values)
    assert int(first["step"].max()) == 7 and first["val_abs_rel"].iloc[-1] == 0.5
    resumed = run(tmp_path / "b", values=values)
    assert resumed.attrs["stop_reason"] == "plateau" and int(resumed["step"].max()) == 20
