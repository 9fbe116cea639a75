"""Training loop: loss, overfitting, bit-identical resume, budget accounting and limits."""


import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dkolib.dko import frontend, train
from dkolib.dko.budget import BudgetMeter
from dkolib.config import ModelConfig, OpticsConfig, load_config
from dkolib.io import load_torch
from dkolib.dko.frontend import make_hybrid
from dkolib.depth.network import DepthNet, depth_to_disp
from dkolib.depth.losses import depth_loss, make_depth_loss
from dkolib.depth.predict import constant_predictor, predict_depth, training_median_depth
from dkolib.dko.sampling import BatchSampler
from dkolib.dko.train import evaluate, train_loop

H, W = 32, 64


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _toy_dataset(n=6, seed=0):
    """Items whose depth is a smooth function of the image (learnable), some pixels invalid (0)."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for _ in range(n):
        rgb = F.interpolate(torch.rand(1, 3, H // 8, W // 8, generator=g), size=(H, W), mode="bilinear",
                            align_corners=False)[0]
        depth = 2.0 + 30.0 * rgb.mean(0, keepdim=True)
        depth[:, :2] = 0.0  # no ground truth in the top rows
        items.append({"rgb": rgb, "depth_m": depth})
    return items


class CrashingDataset:
    """Raises after ``limit`` item reads (a crash in the middle of training)."""

    def __init__(self, items, limit):
        self.items, self.limit, self.reads = items, limit, 0

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        if self.reads >= self.limit:
            raise RuntimeError("simulated crash")
        self.reads += 1
        return self.items[i]


def _net(seed=0):
    torch.manual_seed(seed)
    return DepthNet(ModelConfig(width_factor=0.125, scales=4))


def test_depth_loss_is_zero_for_perfect_prediction_and_ignores_invalid_pixels():
    gt = torch.tensor([[5.0, 10.0], [0.0, 40.0]]).view(1, 1, 2, 2).repeat(1, 1, 4, 4)  # [1,1,8,8]
    disp = depth_to_disp(gt.clamp(min=1.0))
    perfect = {("disp", 0): disp}
    assert float(depth_loss(perfect, gt)) < 1e-5
    garbage = disp.clone()
    garbage[gt == 0] = 0.9  # predictions where gt is invalid do not matter
    assert float(depth_loss({("disp", 0): garbage}, gt)) < 1e-5
    wrong = {("disp", 0): depth_to_disp(gt.clamp(min=1.0) * 2.0)}  # twice too far everywhere
    assert float(depth_loss(wrong, gt)) == pytest.approx(float(torch.log(torch.tensor(2.0))), rel=1e-4)
    # coarser scales are upsampled to full resolution and averaged
    coarse = F.avg_pool2d(disp, 2)
    two = depth_loss({("disp", 0): disp, ("disp", 1): coarse}, gt)
    assert 0 < float(two) < float(depth_loss({("disp", 0): disp.flip(-1)}, gt)) + 1


def test_batch_sampler_covers_each_epoch_and_restores_state():
    s = BatchSampler(7, 3, seed=1)
    first = s.next_indices() + s.next_indices()
    assert len(set(first)) == 6  # without replacement within an epoch
    state = s.state_dict()
    nxt = [s.next_indices() for _ in range(4)]
    s2 = BatchSampler(7, 3, seed=99)
    s2.load_state_dict(state)
    assert [s2.next_indices() for _ in range(4)] == nxt


def test_loss_decreases_on_tiny_overfit(tmp_path):
    data = _toy_dataset(4)
    net = _net()
    hist = train_loop(net, [{"params": net.parameters(), "lr": 2e-3}], data, steps=30, batch_size=4, seed=0,
                      log_csv=tmp_path / "log.csv", ckpt=tmp_path / "ckpt.pt", lr_decay_at=None,
                      progress=False)
    assert len(hist) == 30
    assert hist["loss"].iloc[-5:].mean() < 0.7 * hist["loss"].iloc[:5].mean()
    log = pd.read_csv(tmp_path / "log.csv")
    assert list(log["step"]) == list(range(1, 31))
    assert {"wall_s", "cpu_s", "flops", "loss", "lr"} <= set(log.columns)
    assert log["flops"].is_monotonic_increasing and log["wall_s"].is_monotonic_increasing


def test_fresh_run_does_not_depend_on_earlier_runs_on_the_same_dataset(tmp_path):
    from dkolib.depth.data import DepthDataset

    g = torch.Generator().manual_seed(0)
    rgb = (torch.rand(6, H, W, 3, generator=g) * 255).to(torch.uint8).numpy()
    depth = (2.0 + 30.0 * torch.rand(6, H, W, generator=g)).numpy()

    def run(data, tag):
        net = _net()
        train_loop(net, [{"params": net.parameters(), "lr": 1e-3}], data, steps=4, batch_size=2, seed=3,
                   log_csv=tmp_path / tag / "log.csv", ckpt=tmp_path / tag / "ckpt.pt", lr_decay_at=None,
                   progress=False)
        return net.state_dict()

    shared = DepthDataset(rgb, depth, flip=True, seed=3)
    run(shared, "first")  # advances the shared flip stream
    after = run(shared, "second")
    alone = run(DepthDataset(rgb, depth, flip=True, seed=3), "alone")
    assert all(torch.equal(after[k], alone[k]) for k in alone)


def test_resume_after_crash_is_bit_identical(tmp_path):
    data = _toy_dataset(5)
    evals = []

    def eval_fn(m):  # consumes global RNG: must not perturb training
        evals.append(float(torch.rand(())))
        with torch.no_grad():
            return {"abs_rel": float(m(torch.stack([d["rgb"] for d in data[:2]]))[("disp", 0)].mean())}

    def jitter_loss(model, batch):  # random input jitter: the global RNG must be restored on resume
        rgb = batch["rgb"] + 0.05 * torch.rand_like(batch["rgb"])
        return depth_loss(model(rgb), batch["depth_m"])

    def run(dataset, out, init_seed):
        net = _net(init_seed)
        meter = BudgetMeter()
        hist = train_loop(net, [{"params": net.parameters(), "lr": 1e-3}], dataset, steps=6, batch_size=2,
                          seed=3, log_csv=out / "log.csv", ckpt=out / "ckpt.pt", loss_fn=jitter_loss,
                          eval_fn=eval_fn, eval_every=2,
                          checkpoint_every=3, lr_decay_at=0.5, budget=meter, progress=False)
        return net, hist, meter

    ref, ref_hist, _ = run(data, tmp_path / "a", 0)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(CrashingDataset(data, limit=3 * 2 + 1), tmp_path / "b", 0)  # dies while loading step 4
    assert (tmp_path / "b" / "ckpt.pt").exists()
    assert len(pd.read_csv(tmp_path / "b" / "log.csv")) == 3
    resumed, hist, meter = run(data, tmp_path / "b", 123)  # different init: the checkpoint must win
    ref_state, state = ref.state_dict(), resumed.state_dict()
    assert ref_state.keys() == state.keys()
    for k in ref_state:
        assert torch.equal(ref_state[k], state[k]), k
    assert list(hist["loss"]) == list(ref_hist["loss"])
    assert list(hist["step"]) == list(range(1, 7))
    assert hist["val_abs_rel"].notna().sum() == 3
    assert meter.flops == pytest.approx(ref_hist["flops"].iloc[-1])  # the budget continued, not restarted
    # a rerun of a finished run does nothing more
    again, hist2, _ = run(data, tmp_path / "b", 7)
    assert torch.equal(again.state_dict()["layer1.0.conv1.weight"], state["layer1.0.conv1.weight"])
    assert len(hist2) == 6
    # resuming with a different schedule is refused
    net = _net()
    with pytest.raises(ValueError, match="steps"):
        train_loop(net, [{"params": net.parameters(), "lr": 1e-3}], data, steps=8, batch_size=2, seed=3,
                   log_csv=tmp_path / "b" / "log.csv", ckpt=tmp_path / "b" / "ckpt.pt", progress=False)


def test_budget_meter_counts_a_single_conv_by_hand():
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    x = torch.rand(2, 3, 8, 8)
    fwd = 2 * 2 * 4 * 8 * 8 * 3 * 3 * 3  # 2 FLOPs per MAC x B x C_out x H x W x C_in x k x k
    meter = BudgetMeter()

    def step():
        conv.zero_grad()
        conv(x).sum().backward()

    meter.counted(("conv", tuple(x.shape)), step)
    # forward + weight gradient (the input needs no gradient): 2x forward
    assert meter.flops == 2 * fwd
    meter.counted(("conv", tuple(x.shape)), step)
    assert meter.flops == 4 * fwd and meter.cached_flops(("conv", tuple(x.shape))) == 2 * fwd
    meter.add_flops(10, "optics")
    assert meter.flops_by == {"network": 4 * fwd, "optics": 10.0}
    with meter.timing():
        sum(i * i for i in range(10000))
    assert meter.wall_s > 0 and meter.cpu_s >= 0
    restored = BudgetMeter()
    restored.load_state_dict(meter.state_dict())
    assert restored.snapshot() == meter.snapshot() and restored.flops_by == meter.flops_by
    assert restored.cached_flops(("conv", tuple(x.shape))) == 2 * fwd
    with pytest.raises(ValueError):
        meter.add_flops(-1)


def _conv_loss(model, batch):
    return (model(batch["rgb"]) - batch["depth_m"]).square().mean()


def test_train_loop_charges_conv_flops_and_stops_at_a_flop_budget(tmp_path):
    data = [{"rgb": torch.rand(3, 8, 8), "depth_m": torch.rand(1, 8, 8)} for _ in range(4)]
    conv = nn.Conv2d(3, 1, 3, padding=1, bias=False)
    per_step = 2 * 2 * (2 * 1 * 8 * 8 * 3 * 9)  # batch 2: forward + weight grad
    hist = train_loop(conv, [{"params": conv.parameters(), "lr": 1e-2}], data, steps=10, batch_size=2, seed=0,
                      log_csv=tmp_path / "log.csv", ckpt=tmp_path / "ckpt.pt", loss_fn=_conv_loss,
                      max_flops=2.5 * per_step, extra_step_flops=100.0, progress=False)
    assert len(hist) == 3  # steps 1-3 run; 3 * per_step >= limit stops before step 4
    assert hist.attrs["stop_reason"] == "budget"
    assert list(hist["flops"]) == [k * (per_step + 100.0) for k in (1, 2, 3)]
    hist2 = train_loop(conv, [{"params": conv.parameters(), "lr": 1e-2}], data, steps=10, batch_size=2, seed=0,
                       log_csv=tmp_path / "l2.csv", ckpt=tmp_path / "c2.pt", loss_fn=_conv_loss,
                       max_seconds=0.0, progress=False)
    assert len(hist2) == 0 and hist2.attrs["stop_reason"] == "budget"


class _FakeArray(nn.Module):
    def __init__(self, psf):
        super().__init__()
        self.psf_param = nn.Parameter(psf.clone())
        self.register_buffer("wavelengths_m", torch.full((psf.shape[0],), 550e-9, dtype=torch.float64))


def test_trainable_optics_step_matches_unsplit_gradient_and_charges_psf_flops(tmp_path, monkeypatch):
    """train_loop splits the PSF simulation out of the counted graph; the update must be the same."""

    def fake_psf(array, optics_cfg, window_px, engine):  # contains a matmul, like the fast engine
        return (array.psf_param.flatten(1) @ torch.eye(49)).view(-1, 7, 7) * 0.01

    def fake_conv(images, pos, neg, gain, noise, generator):
        return F.conv2d(images, pos - neg, stride=2, padding=3) * gain.view(1, -1, 1, 1)

    monkeypatch.setattr(frontend, "_compute_psf", fake_psf)
    monkeypatch.setattr(frontend, "_optical_conv", fake_conv)
    data = _toy_dataset(2)
    torch.manual_seed(0)
    base = DepthNet(ModelConfig(width_factor=0.125, scales=1))
    n_out = base.conv1_channels
    psf0 = torch.rand(n_out * 3 * 2, 7, 7)
    a = make_hybrid(base, _FakeArray(psf0), OpticsConfig(n_cells=33), trainable_gain=True, cache_psf=False)
    b = make_hybrid(base, _FakeArray(psf0), OpticsConfig(n_cells=33), trainable_gain=True, cache_psf=False)

    def groups(m):
        return [{"params": list(m.first_layer.array.parameters()), "lr": 1e-2, "weight_decay": 0.0},
                {"params": m.backend_parameters() + [m.first_layer.gain], "lr": 1e-3}]

    meter = BudgetMeter()
    train_loop(a, groups(a), data, steps=1, batch_size=2, seed=0, log_csv=tmp_path / "l.csv",
               ckpt=tmp_path / "c.pt", extra_step_flops=1234.0, budget=meter, progress=False)
    # the same step by hand, without splitting the graph
    opt = torch.optim.AdamW(groups(b), weight_decay=1e-4)
    idx = BatchSampler(2, 2, seed=0).next_indices()
    batch = train.collate([data[i] for i in idx])
    b.train()
    make_depth_loss()(b, batch).backward()
    opt.step()
    for (k, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(va, vb, atol=1e-6, rtol=1e-5), k
    assert not torch.equal(a.first_layer.array.psf_param, psf0)  # the optics did train
    assert meter.flops_by["optics"] == 1234.0
    # the PSF engine's matmul (24 x 49 x 49) is not in the counted network FLOPs
    net_only = BudgetMeter()
    with a.first_layer.injected_psf(fake_psf(a.first_layer.array, None, 7, "fast").detach().requires_grad_()):
        net_only.counted("x", lambda: make_depth_loss()(a, batch).backward())
    assert meter.flops_by["network"] == net_only.flops


def _fake_metrics(pred, gt, min_d, max_d, median_scaling=False, garg_crop=False):
    valid = (gt > min_d) & (gt < max_d)
    p, g = pred[valid], gt[valid]
    if median_scaling:
        p = p * g.median() / p.median()
    return {"abs_rel": float(((p - g).abs() / g).mean())}


def test_constant_predictor_and_evaluate(monkeypatch):
    try:
        import dkolib.depth.metrics  # noqa: F401
    except ImportError:
        monkeypatch.setattr(train, "_compute_metrics", _fake_metrics)
    data = _toy_dataset(5)
    med = training_median_depth(data)
    all_valid = torch.cat([d["depth_m"][d["depth_m"] > 0] for d in data])
    assert med == pytest.approx(float(all_valid.median()))
    const = constant_predictor(med)
    depth = predict_depth(const, torch.rand(2, 3, H, W))
    assert depth.shape == (2, 1, H, W) and torch.allclose(depth, torch.full_like(depth, med), rtol=1e-4)
    cfg = load_config("smoke")
    m_const = evaluate(const, data, cfg, batch_size=2)
    expected = sum(float(((med - d["depth_m"][d["depth_m"] > 0]).abs() / d["depth_m"][d["depth_m"] > 0]).mean())
                   for d in data) / len(data)
    assert m_const["abs_rel"] == pytest.approx(expected, rel=1e-3)
    net = _net()
    net.train()
    net.decoder.eval()
    m = evaluate(net, data, cfg, batch_size=3)
    assert set(m_const) <= set(m)
    assert net.training and not net.decoder.training  # per-module modes restored
    # median scaling makes a constant predictor scale-free: same result for any constant
    a = evaluate(constant_predictor(3.0), data, cfg, median_scaling=True)["abs_rel"]
    b = evaluate(constant_predictor(30.0), data, cfg, median_scaling=True)["abs_rel"]
    assert a == pytest.approx(b, rel=1e-3)


def test_run_stage1_writes_model_and_log_and_is_idempotent(tmp_path, monkeypatch):
    data = _toy_dataset(6)
    monkeypatch.setattr(train, "_get_dataset", lambda cfg, split, cache_dir, flip=False: data)
    cfg = load_config("smoke", {"stage1.steps": 3, "stage1.eval_every": 2, "stage1.checkpoint_every": 2})
    model = train.run_stage1(cfg, tmp_path / "s1", tmp_path / "cache", progress=False)
    log = pd.read_csv(tmp_path / "s1" / "log.csv")
    assert list(log["step"]) == [1, 2, 3] and "val_abs_rel" in log and log["val_abs_rel"].notna().sum() == 2
    loaded = train.load_depthnet(tmp_path / "s1" / "model.pt")
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    obj = load_torch(tmp_path / "s1" / "model.pt")
    assert obj["kind"] == "electronic" and obj["budget"]["flops"] == pytest.approx(log["flops"].iloc[-1])
    again = train.run_stage1(cfg, tmp_path / "s1", tmp_path / "cache", progress=False)  # resumes: nothing to do
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())
