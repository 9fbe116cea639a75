"""The stage-1 convergence study: schedules parsed with clear errors, the decayed rate applied from
the stated step on, and the schedule chosen on validation only (hand-made tables)."""

from __future__ import annotations

import pandas as pd
import pytest

from dkolib.config import load_config
from dkolib.dko import train
from dkolib.errors import InputError
from dkolib.study.stage1_convergence import Schedule, convergence_table, parse_schedule, schedule_row

from test_train import _toy_dataset


def test_schedules_parse_and_bad_ones_say_what_is_expected():
    assert parse_schedule("constant:4000") == Schedule("constant:4000", 4000, None)
    assert parse_schedule("decay0.75:8000") == Schedule("decay0.75:8000", 8000, 0.75)
    for bad in ("decay:100", "decay1.5:100", "cosine:100", "constant:0", "constant"):
        with pytest.raises(InputError, match="constant:STEPS|steps must be"):
            parse_schedule(bad)


def test_a_decayed_stage1_runs_at_a_tenth_of_the_rate_from_the_stated_step_on(tmp_path, monkeypatch):
    data = _toy_dataset(6)
    monkeypatch.setattr(train, "_get_dataset", lambda cfg, split, cache_dir, flip=False: data)
    cfg = load_config("smoke", {"stage1.steps": 4, "stage1.eval_every": 2, "stage1.checkpoint_every": 2,
                                "stage1.plateau_patience": 0})
    train.run_stage1(cfg, tmp_path / "decay", tmp_path / "cache", progress=False, lr_decay_at=0.5)
    train.run_stage1(cfg, tmp_path / "constant", tmp_path / "cache", progress=False)
    lr = cfg.stage1.lr
    decayed = pd.read_csv(tmp_path / "decay" / "log.csv")
    constant = pd.read_csv(tmp_path / "constant" / "log.csv")
    # decay from step 0.5 x 4 = 2 on: the optimiser's steps 1 and 2 at the rate, 3 and 4 at a tenth
    assert decayed["lr"].tolist() == pytest.approx([lr, lr, 0.1 * lr, 0.1 * lr], rel=1e-12)
    assert constant["lr"].tolist() == pytest.approx([lr] * 4, rel=1e-12)
    # the same start: the first two steps are the constant run's, to the bit
    assert decayed["loss"].tolist()[:2] == constant["loss"].tolist()[:2]


def _row(name, val, test, steps=100, flops=1.0):
    return {"schedule": name, "steps": steps, "lr_decay_at": None, "lr_decay_factor": None, "flops": flops,
            "val_abs_rel": val, "test_abs_rel": test, "test_a1": 0.8, "test_rmse": 6.0}


def test_the_schedule_is_chosen_on_validation_not_on_test():
    main = _row("main", 0.20, 0.18)
    # b has the best test AbsRel, a the best validation: a is chosen
    table = convergence_table(main, [_row("a", 0.17, 0.16), _row("b", 0.19, 0.12)])
    assert table.loc[table["chosen"], "schedule"].tolist() == ["a"]
    assert table["test_vs_main"].tolist() == pytest.approx([1.0, 0.16 / 0.18, 0.12 / 0.18])
    # nothing beats the main chain on validation: the main chain stays
    table = convergence_table(main, [_row("a", 0.21, 0.10)])
    assert table.loc[table["chosen"], "schedule"].tolist() == ["main"]


def test_a_schedule_row_reads_the_last_evaluation_and_the_last_step():
    log = pd.DataFrame({"step": [1, 2, 3, 4], "flops": [1.0, 2.0, 3.0, 4.0],
                        "val_abs_rel": [None, 0.3, None, 0.25]})
    test = {"abs_rel": 0.2, "a1": 0.8, "rmse": 6.0, "model": "electronic"}
    row = schedule_row(Schedule("decay0.5:4", 4, 0.5), log, test)
    assert row["steps"] == 4 and row["flops"] == 4.0 and row["val_abs_rel"] == 0.25 and row["lr_decay_factor"] == 0.1
    assert (row["test_abs_rel"], row["test_a1"], row["test_rmse"]) == (0.2, 0.8, 6.0)
    with pytest.raises(InputError, match="no val_abs_rel"):
        schedule_row(Schedule("constant:4", 4, None), log.assign(val_abs_rel=None), test)


def test_the_sentence_names_the_chosen_schedule_and_sets_the_best_hybrid_beside_it():
    from dkolib.study.stage1_convergence import convergence_sentence

    main = _row("main chain", 0.20, 0.184, flops=1.0)
    table = convergence_table(main, [_row("decay0.75:8000", 0.16, 0.138, flops=3.2)])
    phys = pd.DataFrame({"design": ["electronic", "dko_finetune", "e2e", "dko_finetune"],
                         "eval": ["crop", "crop", "crop", "full_psf_noise"], "abs_rel": [0.184, 0.150, 0.36, 0.10]})
    text = convergence_sentence(table, phys)
    assert "`decay0.75:8000` reads test AbsRel 0.138, 0.75x the main chain's 0.184, at 3.2x its FLOPs" in text
    assert "has not converged there" in text  # the longest schedule is the best: no ceiling claimed
    longer = convergence_table(main, [_row("decay0.75:8000", 0.16, 0.138, steps=8000),
                                      _row("decay0.75:16000", 0.17, 0.14, steps=16000)])
    assert "A longer schedule did not read better on validation" in convergence_sentence(longer)
    # the noisy row (0.10) is not the crop mode: the best crop hybrid is dko_finetune at 0.150 > 0.138
    assert "The main chain's best hybrid design on the idealised crop, `dko_finetune` at 0.15, is not below that ceiling (1.09x)" in text
    table = convergence_table(main, [_row("constant:4000", 0.21, 0.19)])
    assert "no schedule beats the main chain's stage 1" in convergence_sentence(table)


def test_the_converged_network_joins_the_references_only_when_a_schedule_beats_the_main_chain():
    from dkolib.study.equal_budget_text import references_table

    metrics = pd.DataFrame({"model": ["constant", "electronic"], "split": ["synthetic_test"] * 2,
                            "abs_rel": [0.52, 0.184], "a1": [0.24, 0.83], "rmse": [14.6, 6.4]})
    main = _row("main chain", 0.20, 0.184)
    refs = references_table(metrics, None, convergence=convergence_table(main, [_row("decay0.75:8000", 0.12, 0.126)]))
    assert len(refs) == 3 and "`decay0.75:8000` chosen on validation" in refs["reference"].iloc[2]
    assert refs.iloc[2, 1:].tolist() == [0.126, 0.8, 6.0]
    refs = references_table(metrics, None, convergence=convergence_table(main, [_row("constant:4000", 0.21, 0.10)]))
    assert len(refs) == 2  # the main chain's stage 1 stays the reference, already listed


def test_the_readme_part_is_empty_without_the_study_and_holds_its_table_and_verdict_with_it(tmp_path):
    from dkolib.study.paths import ProfilePaths
    from dkolib.study.stage1_convergence import convergence_section

    paths = ProfilePaths("default", tmp_path)
    assert convergence_section(paths, "![fig](x.png)") == ""
    paths.stage1.mkdir(parents=True)
    convergence_table(_row("main chain", 0.20, 0.184), [_row("decay0.75:8000", 0.12, 0.126)]).to_csv(
        paths.stage1 / "convergence.csv", index=False)
    text = convergence_section(paths, "![fig](x.png)")
    assert "| decay0.75:8000 |" in text and "`decay0.75:8000` reads test AbsRel 0.126" in text
    assert text.endswith("![fig](x.png)")


def test_the_dko_design_on_the_chosen_network_is_set_beside_the_main_chain_dko_and_e2e_at_4x():
    from dkolib.study.stage1_convergence import convergence_sentence, with_dko_design

    table = convergence_table(_row("main chain", 0.20, 0.184), [_row("decay0.75:16000", 0.11, 0.11)])
    # C_ref 1e13 FLOPs, the design 4e13: 4x; on the chosen row only
    table = with_dko_design(table, 1.0e13, 4.0e13, {"crop": 0.111, "full_psf_noise": 0.306})
    assert table["dko_budget_fraction"].tolist()[1] == 4.0 and pd.isna(table["dko_budget_fraction"].iloc[0])
    phys = pd.DataFrame({"design": ["dko", "dko", "e2e_4x", "e2e_4x"], "eval": ["crop", "full_psf_noise"] * 2,
                         "abs_rel": [0.175, 0.384, 0.249, 0.358]})
    text = convergence_sentence(table, phys)
    assert ("DKO built on that network (the profile's stage 2, 4x C_ref in all) reads AbsRel 0.111 (crop) / "
            "0.306 (full_psf_noise), against the main chain's DKO (1x) 0.175 / 0.384; E2E at 4x 0.249 / 0.358.") in text
    with pytest.raises(InputError, match="C_ref must be > 0"):
        with_dko_design(table, 0.0, 4.0e13, {})
