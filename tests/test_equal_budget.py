"""Equal-budget experiment: snapshots = truncated runs, feasibility, table columns, bootstrap summary.

Covers dkolib.study.protocol, snapshots, jobs, stats and figures.
"""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from dkolib.study import figures, jobs, protocol, snapshots, stats
from dkolib.dko.budget import BudgetMeter
from dkolib.config import load_config
from dkolib.depth.network import DepthNet
from dkolib.depth.losses import make_depth_loss
from dkolib.dko.train import train_loop


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _toy_dataset(n=6, h=32, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    items = []
    for _ in range(n):
        rgb = F.interpolate(torch.rand(1, 3, h // 8, w // 8, generator=g), size=(h, w), mode="bilinear",
                            align_corners=False)[0]
        items.append({"rgb": rgb, "depth_m": 2.0 + 30.0 * rgb.mean(0, keepdim=True)})
    return items


def _net(cfg, seed=0):
    torch.manual_seed(seed)
    return DepthNet(cfg.model, kernel_size=cfg.optics.kernel_size)


# ----------------------------------------------------------------------------- snapshots
def test_snapshot_at_flop_budget_equals_truncated_run(tmp_path):
    cfg = load_config("smoke")
    data = _toy_dataset()
    loss = make_depth_loss()

    def fresh_run(work, **kw):
        model = _net(cfg)
        hist = train_loop(model, [{"params": list(model.parameters()), "lr": 1e-3}], data, steps=50, batch_size=2,
                          seed=3, log_csv=work / "log.csv", ckpt=work / "ckpt.pt", loss_fn=loss, lr_decay_at=None,
                          progress=False, budget=BudgetMeter(), **kw)
        return model, hist

    _, h1 = fresh_run(tmp_path / "probe", max_flops=1.0)
    per_step = float(h1["flops"].iloc[-1])  # one step ran before the 1-FLOP limit stopped it
    assert per_step > 0
    targets = [protocol.Target("a", "flops", 1.5 * per_step), protocol.Target("b", "flops", 3.2 * per_step),
               protocol.Target("c", "flops", 3.3 * per_step)]
    model = _net(cfg)
    man = snapshots.train_with_snapshots(model, lambda: [{"params": list(model.parameters()), "lr": 1e-3}], data,
                                  targets=targets, work=tmp_path / "snap", seed=3, batch_size=2, steps_cap=50,
                                  loss_fn=loss, weight_decay=1e-4, progress=False)
    # a budget is reached at the first step whose accumulated cost is >= it
    assert man["a"]["step"] == 2 and man["b"]["step"] == 4 and man["c"]["step"] == 4
    assert man["b"]["file"] == man["c"]["file"]
    for key, t in (("a", targets[0]), ("b", targets[1])):
        truncated, hist = fresh_run(tmp_path / f"trunc_{key}", max_flops=t.value, weight_decay=1e-4)
        assert hist.attrs["stop_reason"] == "budget"
        snap = snapshots.load_snapshot(tmp_path / "snap", man[key])
        assert snap["step"] == len(hist)
        ref = truncated.state_dict()
        for name, tensor in snap["state_dict"].items():
            assert torch.equal(tensor, ref[name]), f"{key}: {name} differs from the truncated run"
        assert snap["meter"]["flops"] == pytest.approx(float(hist["flops"].iloc[-1]))
    # snapshots at different budgets differ (the equality above is not vacuous)
    snap_a = snapshots.load_snapshot(tmp_path / "snap", man["a"])["state_dict"]
    snap_b = snapshots.load_snapshot(tmp_path / "snap", man["b"])["state_dict"]
    assert any(not torch.equal(v, snap_a[k]) for k, v in snap_b.items() if v.is_floating_point())


def test_run_ending_at_its_cap_gives_unreached_budgets_its_last_state(tmp_path):
    """final_at_cap: budgets past the last step read the step-cap state, also after a kill and resume,
    and a folder whose snapshots lie past the cap (a run that went on longer) starts over."""
    cfg = load_config("smoke")
    data = _toy_dataset()
    loss = make_depth_loss()
    model = _net(cfg)
    probe = train_loop(model, [{"params": list(model.parameters()), "lr": 1e-3}], data, steps=1, batch_size=2,
                       seed=3, log_csv=tmp_path / "p" / "log.csv", ckpt=tmp_path / "p" / "ckpt.pt", loss_fn=loss,
                       lr_decay_at=None, progress=False, budget=BudgetMeter())
    per = float(probe["flops"].iloc[-1])
    targets = [protocol.Target("a", "flops", 1.5 * per), protocol.Target("far", "flops", 40 * per),
               protocol.Target("farther", "flops", 80 * per)]

    def run(work, cap, targets=targets, checkpoint_every=0):
        m = _net(cfg)
        man = snapshots.train_with_snapshots(m, lambda: [{"params": list(m.parameters()), "lr": 1e-3}], data,
                                             targets=targets, work=work, seed=3, batch_size=2, steps_cap=cap,
                                             loss_fn=loss, weight_decay=1e-4, progress=False, final_at_cap=True,
                                             checkpoint_every=checkpoint_every)
        return man, {k: snapshots.load_snapshot(work, e)["state_dict"] for k, e in man.items()}

    man, snaps = run(tmp_path / "whole", 5)
    assert (man["a"]["step"], man["far"]["step"], man["farther"]["step"]) == (2, 5, 5)
    # killed after the first snapshot (only "a" is in the manifest), resumed: the same states
    man_k, _ = run(tmp_path / "killed", 5, targets=targets[:1], checkpoint_every=1)
    man_r, snaps_r = run(tmp_path / "killed", 5)
    assert {k: e["step"] for k, e in man_r.items()} == {k: e["step"] for k, e in man.items()}
    for k in snaps:
        assert all(torch.equal(v, snaps_r[k][n]) for n, v in snaps[k].items())
    # a folder trained on to 8 steps, then asked for a run that ends at 5
    run(tmp_path / "longer", 8)
    with pytest.warns(RuntimeWarning, match="past this run's last step"):
        man_l, snaps_l = run(tmp_path / "longer", 5)
    assert man_l["far"]["step"] == 5
    assert all(torch.equal(v, snaps_l["far"][n]) for n, v in snaps["far"].items())
    with pytest.raises(protocol.BudgetProtocolError, match="step cap"):  # without final_at_cap: an error
        m = _net(cfg)
        snapshots.train_with_snapshots(m, lambda: [{"params": list(m.parameters()), "lr": 1e-3}], data,
                                       targets=targets, work=tmp_path / "strict", seed=3, batch_size=2, steps_cap=5,
                                       loss_fn=loss, weight_decay=1e-4, progress=False)


def test_snapshot_runner_resumes_without_retraining(tmp_path):
    cfg = load_config("smoke")
    data = _toy_dataset()
    model = _net(cfg)
    t = [protocol.Target("x", "flops", 1.0)]
    kw = dict(targets=t, work=tmp_path, seed=0, batch_size=2, steps_cap=10, loss_fn=make_depth_loss(),
              weight_decay=0.0, progress=False)
    man1 = snapshots.train_with_snapshots(model, lambda: [{"params": list(model.parameters()), "lr": 1e-3}], data, **kw)
    mtime = (tmp_path / man1["x"]["file"]).stat().st_mtime_ns
    man2 = snapshots.train_with_snapshots(model, lambda: [{"params": list(model.parameters()), "lr": 1e-3}], data, **kw)
    assert man1 == man2 and (tmp_path / man2["x"]["file"]).stat().st_mtime_ns == mtime


def test_snapshot_runner_restarts_when_snapshots_are_gone(tmp_path):
    """A manifest whose snapshot files are missing (deleted, or copied without them) is not trusted."""
    cfg = load_config("smoke")
    data = _toy_dataset()
    kw = dict(seed=0, batch_size=2, steps_cap=20, loss_fn=make_depth_loss(), weight_decay=0.0, progress=False)

    def run(work, targets):
        model = _net(cfg)
        man = snapshots.train_with_snapshots(model, lambda: [{"params": list(model.parameters()), "lr": 1e-3}], data,
                                      work=work, targets=targets, **kw)
        return man, {k: snapshots.load_snapshot(work, man[k])["state_dict"] for k in man}

    probe, _ = run(tmp_path / "probe", [protocol.Target("x", "flops", 1.0)])  # one step
    t = [protocol.Target("x", "flops", 1.0), protocol.Target("y", "flops", 3.5 * probe["x"]["flops"])]
    man1, snaps1 = run(tmp_path / "a", t)
    assert man1["y"]["step"] > man1["x"]["step"]
    for f in (tmp_path / "a").glob("snap_*.pt"):
        f.unlink()
    with pytest.warns(RuntimeWarning, match="missing"):
        man2, snaps2 = run(tmp_path / "a", t)
    assert {k: e["step"] for k, e in man2.items()} == {k: e["step"] for k, e in man1.items()}
    for k in snaps1:
        assert all(torch.equal(v, snaps2[k][n]) for n, v in snaps1[k].items())


def test_claim_folder_keeps_own_state_and_empties_foreign_state(tmp_path):
    folder = tmp_path / "job"
    stamp = {"method": "dko", "seed": 0, "settings": {"lr_grid": (0.5, 1.0)}}
    snapshots.claim_folder(folder, stamp)
    (folder / "ckpt.pt").write_text("state")
    snapshots.claim_folder(folder, dict(stamp))  # same job resuming: state kept
    assert (folder / "ckpt.pt").exists()
    with pytest.warns(RuntimeWarning, match="another job or configuration"):
        snapshots.claim_folder(folder, {**stamp, "seed": 1})
    assert not (folder / "ckpt.pt").exists() and (folder / snapshots.JOB_STAMP).exists()
    (folder / snapshots.JOB_STAMP).unlink()
    (folder / "calibration.json").write_text("{}")  # e.g. committed or copied without a stamp
    with pytest.warns(RuntimeWarning, match="no job stamp"):
        snapshots.claim_folder(folder, stamp)
    assert not (folder / "calibration.json").exists()


def test_widening_the_lr_grid_keeps_the_runs_already_made(tmp_path):
    """The multipliers tried are not part of a run's state: a folder stamped under a narrower grid is kept."""
    from dkolib.study.jobs import SEARCH_KEYS, _without_search_keys

    folder = tmp_path / "job"
    old = {"method": "e2e_scratch", "seed": 0, "lr_mult": None,
           "settings": {"lr_grid": [0.5, 1.0, 2.0], "lr_tie_rel": 0.05, "fractions": [1.0]},
           "config": {"budget": {"lr_grid": [0.5, 1.0, 2.0], "lr_search": "first_seed", "seeds": [0]}}}
    folder.mkdir()
    (folder / snapshots.JOB_STAMP).write_text(json.dumps(old))  # as an earlier version of the job wrote it
    (folder / "lr_0.5").mkdir()
    wider = json.loads(json.dumps(old))
    wider["settings"]["lr_grid"] = wider["config"]["budget"]["lr_grid"] = [0.25, 0.5, 1.0, 2.0]
    new = _without_search_keys(wider)
    assert not set(SEARCH_KEYS) & (set(new["settings"]) | set(new["config"]["budget"]))
    snapshots.claim_folder(folder, new, normalize=_without_search_keys)
    assert (folder / "lr_0.5").exists()
    other = json.loads(json.dumps(wider))
    other["settings"]["fractions"] = [1.0, 2.0]  # a budget is part of the state: the folder is emptied
    with pytest.warns(RuntimeWarning, match="another job"):
        snapshots.claim_folder(folder, _without_search_keys(other), normalize=_without_search_keys)
    assert not (folder / "lr_0.5").exists()


# ----------------------------------------------------------------------------- budgets / feasibility
def _budgets(s1=10.0, s2=30.0, ft=5.0):
    cost = lambda v: {"wall_s": v, "cpu_s": v, "flops": v * 1e9}  # noqa: E731
    return {"stage1": cost(s1), "engines": {"fast": {"stage2": cost(s2), "finetune": cost(ft),
                                                     "c_ref": cost(s1 + s2)}}}


def _settings(**kw):
    base = dict(fractions=(0.25, 0.5, 1.0, 2.0), seeds=(0,), engines=("fast",), lr_grid=(1.0,), axes=("wall", "flops"),
                stage1_steps=10, dko_steps=5, finetune_steps=2, eval_items=None, noise_eval=False, calib_steps=2)
    base.update(kw)
    return protocol.Settings(**base)


def test_infeasible_budgets_get_no_target():
    st = _settings()
    keys = {t.key: t for t in protocol.stage1_targets(_budgets(), st)}
    # C_ref = 40; stage 2 = 30: DKO fits 1.0 (stage 1 gets 10) and 2.0, not 0.25 (10) or 0.5 (20)
    for axis in ("wall", "flops"):
        assert protocol.target_key("dko", "fast", axis, 0.25) not in keys
        assert protocol.target_key("dko", "fast", axis, 0.5) not in keys
        assert protocol.target_key("dko", "fast", axis, 1.0) in keys
        assert protocol.target_key("dko_ft", "fast", axis, 1.0) in keys  # 40 - 30 - 5 = 5 > 0
        assert protocol.target_key("electronic", "fast", axis, 0.25) in keys
    assert keys[protocol.target_key("dko", "fast", "wall", 2.0)].value == pytest.approx(80 - 30)
    assert keys[protocol.target_key("dko_ft", "fast", "flops", 1.0)].value == pytest.approx(5e9)
    start = {"wall_s": 15.0, "cpu_s": 15.0, "flops": 15e9}
    warm = {t.key for t in protocol.e2e_targets(_budgets(), st, "fast", start)}
    assert warm == {protocol.target_key("e2e", "fast", a, f) for a in ("wall", "flops") for f in (0.5, 1.0, 2.0)}
    assert st.ref_fraction == 1.0 and _settings(fractions=(0.5, 2.5)).ref_fraction == 0.5
    assert st.ref_axis == "flops" and _settings(axes=("wall",)).ref_axis == "wall"


# ----------------------------------------------------------------------------- summary
def _fake_table(seeds, e2e_scale=2.0, noise=0.02):
    rng = np.random.default_rng(1)
    rows = []
    for s in seeds:
        for method, scale in (("dko", 1.0), ("e2e_scratch", e2e_scale)):
            for frac in (0.5, 1.0):
                r = {c: 0.0 for c in protocol.COLUMNS}
                r.update(method=method, engine="fast", seed=s, budget_s=frac * 10, budget_flops=frac * 1e9,
                         eval="crop", budget_fraction=frac, budget_axis="flops", lr=1e-3, lr_mult=1.0,
                         abs_rel=scale * (0.2 + noise * rng.standard_normal()), a1=0.7)
                rows.append(r)
    return protocol.to_frame(rows)


def test_bootstrap_ci_contains_ratio_and_collapses_with_one_seed():
    summ = stats.summarize(_fake_table(range(6)), n_boot=500)
    e2e = summ[summ["method"] == "e2e_scratch"]
    assert len(e2e) == 2 and (e2e["ratio_n_seeds"] == 6).all()
    assert ((e2e["ratio_ci_lo"] <= e2e["ratio_vs_dko"]) & (e2e["ratio_vs_dko"] <= e2e["ratio_ci_hi"])).all()
    assert (e2e["ratio_ci_hi"] > e2e["ratio_ci_lo"]).all()
    assert e2e["ratio_vs_dko"].between(1.6, 2.4).all()  # built with E2E AbsRel about 2x DKO's
    dko = summ[summ["method"] == "dko"]
    assert np.allclose(dko["ratio_vs_dko"], 1.0)
    one = stats.summarize(_fake_table([4]))
    e1 = one[one["method"] == "e2e_scratch"]
    assert (e1["ratio_ci_lo"] == e1["ratio_vs_dko"]).all() and (e1["ratio_ci_hi"] == e1["ratio_vs_dko"]).all()
    assert (one["abs_rel_std"] == 0.0).all()


def test_summary_mean_std_and_catch_up():
    df = _fake_table(range(3), e2e_scale=2.0)
    # make E2E catch up at fraction 1.0 only
    df.loc[(df["method"] == "e2e_scratch") & (df["budget_fraction"] == 1.0), "abs_rel"] = 0.1
    summ = stats.summarize(df, n_boot=200)
    g = df[(df["method"] == "dko") & (df["budget_fraction"] == 0.5)]["abs_rel"]
    row = summ[(summ["method"] == "dko") & (summ["budget_fraction"] == 0.5)].iloc[0]
    assert row["abs_rel_mean"] == pytest.approx(g.mean()) and row["abs_rel_std"] == pytest.approx(g.std(ddof=1))
    cu = stats.catch_up(summ)
    assert len(cu) == 1 and cu.iloc[0]["first_fraction_mean"] == 1.0 and cu.iloc[0]["first_fraction_ci"] == 1.0
    never = stats.catch_up(stats.summarize(_fake_table(range(3)), n_boot=200))
    assert np.isnan(never.iloc[0]["first_fraction_mean"]) and np.isnan(never.iloc[0]["first_fraction_ci"])
    # level with DKO at 0.5x only, DKO 2x better again at 1x: no catch-up, since it does not hold from 0.5x on
    early = _fake_table(range(3), e2e_scale=2.0)
    early.loc[(early["method"] == "e2e_scratch") & (early["budget_fraction"] == 0.5), "abs_rel"] = 0.1
    only_early = stats.catch_up(stats.summarize(early, n_boot=200)).iloc[0]
    assert np.isnan(only_early["first_fraction_mean"]) and np.isnan(only_early["first_fraction_ci"])


def test_ratio_missing_where_dko_has_no_point():
    df = _fake_table(range(2))
    df = df[~((df["method"] == "dko") & (df["budget_fraction"] == 0.5))]
    summ = stats.summarize(df, n_boot=100)
    r = summ[(summ["method"] == "e2e_scratch") & (summ["budget_fraction"] == 0.5)].iloc[0]
    assert np.isnan(r["ratio_vs_dko"]) and r["ratio_n_seeds"] == 0


def test_missing_column_is_an_error():
    with pytest.raises(ValueError, match="abs_rel"):
        stats.summarize(_fake_table([0]).drop(columns=["abs_rel"]))


# ----------------------------------------------------------------------------- learning-rate selection
def test_lr_source_first_seed_and_every_seed():
    st = _settings(seeds=(3, 1, 2), engines=("fast", "reference"), lr_grid=(0.5, 1.0, 2.0))
    assert st.lr_search == "first_seed" and st.lr_search_seed == 3
    assert protocol.lr_source(st, "stage1", None, 3) is None
    assert protocol.lr_source(st, "stage1", None, 1) is None  # stage 1 trains at the main chain's rate
    assert protocol.lr_source(st, "dko", "fast", 3) is None
    assert protocol.lr_source(st, "dko", "reference", 3) == ("dko", "fast", 3)
    assert protocol.lr_source(st, "e2e_warm", "fast", 2) == ("e2e_warm", "fast", 3)
    assert protocol.lr_source(st, "electronic", "reference", 2) is None  # trains nothing of its own
    every = _settings(seeds=(3, 1), lr_search="every_seed")
    assert all(protocol.lr_source(every, m, "reference", 1) is None for m in ("stage1", "dko", "e2e_scratch"))


def test_chosen_lr_mult_and_fixed_grid(tmp_path):
    search = pd.DataFrame({"lr_mult": [0.5, 1.0, 2.0], "val_abs_rel": [0.3, 0.2, 0.4],
                           "chosen": [False, True, False]})
    assert protocol.chosen_lr_mult(search) == 1.0
    path = tmp_path / "job.csv"
    pd.DataFrame({"lr_mult": [2.0, 2.0], "abs_rel": [0.1, 0.2]}).to_csv(path, index=False)
    assert protocol.chosen_lr_mult(path) == 2.0
    with pytest.raises(protocol.BudgetProtocolError, match="does not name one"):
        protocol.chosen_lr_mult(pd.DataFrame({"lr_mult": [0.5, 1.0]}))
    with pytest.raises(protocol.BudgetProtocolError, match="no lr_mult rows"):
        protocol.chosen_lr_mult(pd.DataFrame({"lr_mult": []}))
    st = _settings(lr_grid=(0.5, 1.0, 2.0))
    ctx = jobs.JobContext(cfg=None, settings=st, seed=0, cache_dir=tmp_path, stage1_dir=tmp_path, work=tmp_path)
    assert ctx.lr_grid == (0.5, 1.0, 2.0)
    assert jobs.JobContext(cfg=None, settings=st, seed=1, cache_dir=tmp_path, stage1_dir=tmp_path, work=tmp_path,
                         lr_mult=2.0).lr_grid == (2.0,)


def test_settings_reject_bad_lr_search():
    from dkolib.config import load_config

    cfg = load_config("smoke")
    assert protocol.settings_from_config(cfg).lr_search == "first_seed"
    with pytest.raises(ValueError, match="lr_search"):
        load_config("smoke", {"budget.lr_search": "sometimes"})


# ----------------------------------------------------------------------------- the smoke pipeline
def _script(name: str):
    """Import ``scripts/<name>.py`` as a module."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run_eb = _script("run_equal_budget")
    tmp = tmp_path_factory.mktemp("eb")
    common = ["--profile", "smoke", "--seed", "0", "--stage1-dir", str(tmp / "s1"), "--cache-dir", str(tmp / "cache"),
              "--no-progress", "--set", "budget.engines=[fast]", "budget.stage1_steps=8", "budget.dko_steps=3",
              "budget.stage1_stop=budget"]  # the default and paper profiles' mode (smoke stops at the plateau)
    run_eb.main(["--method", "stage1", "--out", str(tmp / "stage1_0.csv")] + common)
    outs = []
    for m in ("electronic", "dko", "e2e_scratch"):
        out = tmp / f"{m}_fast_0.csv"
        run_eb.main(["--method", m, "--engine", "fast", "--out", str(out)] + common)
        outs.append(out)
    torch.set_num_threads(1)
    return tmp, outs


def test_job_csvs_have_exactly_the_columns(smoke_run):
    tmp, outs = smoke_run
    for out in outs:
        df = pd.read_csv(out)
        assert list(df.columns) == list(protocol.COLUMNS)
        assert list(df.columns[:len(protocol.REQUIRED_COLUMNS)]) == list(protocol.REQUIRED_COLUMNS)
        assert len(df) > 0 and set(df["eval"]) == {"crop", "full_psf", "full_psf_noise"}  # smoke: noise_eval
        assert df[list(protocol.METRICS)].notna().all().all()
    assert not list((tmp / "e2e_scratch_fast_0.work").rglob("*.pt"))  # snapshots and checkpoints cleaned up


def test_electronic_rows_under_noise_are_ideal_optics_with_that_noise(smoke_run):
    """The noiseless modes repeat one evaluation of the stage-1 network; under sensor noise the
    network is read through ideal optics with the noise every hybrid gets, so its row differs
    (a copy of the noiseless row there made every noisy time-to-accuracy target unreachable)."""
    tmp, _ = smoke_run
    elec = pd.read_csv(tmp / "electronic_fast_0.csv")
    by = {ev: g.set_index(["budget_axis", "budget_fraction"]).sort_index() for ev, g in elec.groupby("eval")}
    metrics = list(protocol.METRICS)
    pd.testing.assert_frame_equal(by["crop"][metrics], by["full_psf"][metrics])
    noisy_differs = (by["full_psf_noise"]["abs_rel"] - by["crop"]["abs_rel"]).abs() > 1e-6
    assert noisy_differs.all(), by["full_psf_noise"]["abs_rel"]


def test_dko_has_no_row_where_stage2_does_not_fit(smoke_run):
    tmp, _ = smoke_run
    import json

    info = json.loads((tmp / "s1" / "budgets.json").read_text())
    e = info["budgets"]["engines"]["fast"]
    dko = pd.read_csv(tmp / "dko_fast_0.csv")
    for axis, field in (("wall", "wall_s"), ("flops", "flops")):
        for frac in info["settings"]["fractions"]:
            fits = frac * e["c_ref"][field] > e["stage2"][field]
            present = ((dko["budget_axis"] == axis) & (dko["budget_fraction"] == frac)).any()
            assert present == fits, (axis, frac)
    # smoke geometry: stage 2's FLOPs exceed half of C_ref, so the 0.5 FLOP budget has no DKO point
    assert not ((dko["budget_axis"] == "flops") & (dko["budget_fraction"] == 0.5)).any()
    # every point spends its budget, on both axes, within the protocol's bounds (stage 1 stops at
    # the first crossing; stage 2 runs what is left, in whole steps): checked on every DKO row --
    # the smoke ladder's DKO points sit at or below N1, so a check on the points below it alone
    # would check nothing
    n1 = info["settings"]["stage1_steps"]
    assert info["settings"]["stage1_stop"] == "budget"  # set above; 'plateau' is tested below
    f = dko[dko["budget_axis"] == "flops"]
    assert len(f) and (dko["budget_axis"] == "wall").any()  # the checks below run on non-empty frames
    assert (f["steps"] <= n1).all()
    smoke_stops_early = load_config("smoke").dko.stop_window > 0
    assert not smoke_stops_early  # so DKO's lower bound is checked too
    # FLOP rows only: their spend is exact, while a live wall-clock spend depends on the machine's
    # load (the wall bounds are checked on hand-made tables in tests/test_spend_bounds.py)
    for name in ("electronic", "dko", "e2e_scratch"):
        table = pd.read_csv(tmp / f"{name}_fast_0.csv")
        table = table[table["budget_axis"] == "flops"]
        assert len(table)
        protocol.check_spend(table, info["budgets"], info["calibration"], n1,
                             stage2_stops_early=smoke_stops_early, stage1_stop="budget")
    elec = pd.read_csv(tmp / "electronic_fast_0.csv")
    top = elec[(elec["budget_fraction"] >= 1.0) & (elec["budget_axis"] == "flops")]
    # C_ref = N1 stage-1 steps + stage 2: the electronic network trains on past N1 and spends it
    assert len(top) and (top["steps"] > n1).all() and (top["spent_flops"] >= top["budget_flops"]).all()
    manifest = json.loads((tmp / "s1" / "lr_1" / "snapshots.json").read_text())
    assert max(e["step"] for e in manifest.values()) > n1
    # ... and a stage 1 stopped at the plateau would be flagged as an underspend there
    stuck = top.assign(steps=n1, spent_flops=n1 * info["calibration"]["stage1_step"]["flops"])
    assert len(protocol.spend_violations(stuck, info["budgets"], info["calibration"], n1, stage1_stop="budget")) == len(top)
    e2e = pd.read_csv(tmp / "e2e_scratch_fast_0.csv")
    ef = e2e[e2e["budget_axis"] == "flops"]
    assert (ef["spent_flops"] >= ef["budget_flops"]).all()
    # ... and never more than one of its own steps over it (stage 2 is capped by what is left)
    calib = info["calibration"]
    s1_step, s2_step = calib["stage1_step"]["flops"], calib["stage2_step"]["fast"]["flops"]
    # the gain fit simulates the array once, forward only; a stage-2 step is at least that forward,
    # its backward (twice a forward) and no less, so the fit costs at most a third of a step
    gain_fit = s2_step / 3.0
    assert (f["spent_flops"] <= f["budget_flops"] + max(s1_step, s2_step) + gain_fit).all()
    e2e_step = (ef["spent_flops"] / ef["steps"]).max()
    assert (ef["spent_flops"] < ef["budget_flops"] + e2e_step).all()


def test_summarize_script_and_plots(smoke_run, tmp_path):
    import matplotlib.pyplot as plt

    tmp, outs = smoke_run
    mod = _script("summarize_equal_budget")
    df, _summary, _ = mod.main(["--inputs", *map(str, outs), str(tmp / "stage1_0.csv"), "--out", str(tmp_path / "eb.csv"),
                            "--summary", str(tmp_path / "summ.csv"), "--n-boot", "50"])
    assert list(pd.read_csv(tmp_path / "eb.csv").columns) == list(protocol.COLUMNS)
    assert len(df) == sum(len(pd.read_csv(o)) for o in outs)
    assert (tmp_path / "summ_catchup.csv").exists()
    fig = figures.plot_accuracy_vs_budget(df, x="budget_flops", path=tmp_path / "acc")
    assert (tmp_path / "acc.png").exists() and (tmp_path / "acc.pdf").exists()
    assert len(fig.axes) >= 2
    plt.close(fig)
    fig = figures.plot_crop_vs_physical(df, path=tmp_path / "cvp")
    assert (tmp_path / "cvp.png").exists()
    plt.close(fig)
    with pytest.raises(ValueError, match="budget_s"):
        figures.plot_accuracy_vs_budget(df, x="steps")


def test_reused_lr_requires_lr_from(smoke_run, tmp_path):
    tmp, _ = smoke_run
    run_eb = _script("run_equal_budget")
    common = ["--profile", "smoke", "--stage1-dir", str(tmp / "s1"), "--cache-dir", str(tmp / "cache"),
              "--no-progress", "--set", "budget.seeds=[0,1]", "budget.stage1_steps=8", "budget.dko_steps=3"]
    with pytest.raises(SystemExit):  # stage 1 trains at the main chain's rate: it reuses nothing
        run_eb.main(["--method", "stage1", "--seed", "1", "--out", str(tmp_path / "s.csv"),
                     "--lr-from", str(tmp / "stage1_0.csv")] + common)
    with pytest.raises(SystemExit):  # seed 0, fast engine: selects its own rate
        run_eb.main(["--method", "dko", "--engine", "fast", "--seed", "0", "--out", str(tmp_path / "d.csv"),
                     "--lr-from", str(tmp / "dko_fast_0.csv")] + common)
    assert not (tmp_path / "s.csv").exists() and not (tmp_path / "d.csv").exists()


def test_stage1_stop_plateau_keeps_the_n1_step_network_above_c_ref(tmp_path):
    """``budget.stage1_stop: plateau``: stage 1 ends at N1 steps, so the electronic budgets at and
    above C_ref read that network and spend less than their budget (within the plateau protocol);
    its snapshots below N1 are those of the run that trains on (same constant rate)."""
    import json

    run_eb = _script("run_equal_budget")
    common = ["--profile", "smoke", "--seed", "0", "--cache-dir", str(tmp_path / "cache"), "--no-progress",
              "--set", "budget.engines=[fast]", "budget.stage1_steps=8", "budget.dko_steps=3", "budget.axes=[flops]"]
    runs = {}
    for stop in ("plateau", "budget"):
        s1 = tmp_path / f"s1_{stop}"
        run_eb.main(["--method", "stage1", "--out", str(tmp_path / f"stage1_{stop}.csv"), "--stage1-dir", str(s1)]
                    + common + [f"budget.stage1_stop={stop}"])
        runs[stop] = json.loads((s1 / "lr_1" / "snapshots.json").read_text())
    plateau, to_budget = runs["plateau"], runs["budget"]
    assert max(e["step"] for e in plateau.values()) == 8
    assert max(e["step"] for e in to_budget.values()) > 8
    for key, e in plateau.items():  # the plateau run is the longer run truncated
        if e["step"] < 8:
            assert to_budget[key]["step"] == e["step"] and to_budget[key]["flops"] == e["flops"], key
    top = [k for k in plateau if k.startswith("electronic") and k.endswith("|1")]
    assert top and all(plateau[k]["step"] == 8 and to_budget[k]["step"] > 8 for k in top)
    # a stage-1 folder made under one setting is not read by jobs of the other
    with pytest.raises(protocol.BudgetProtocolError, match="stage1_stop"):
        run_eb.main(["--method", "electronic", "--engine", "fast", "--out", str(tmp_path / "e.csv"),
                     "--stage1-dir", str(tmp_path / "s1_plateau")] + common + ["budget.stage1_stop=budget"])
