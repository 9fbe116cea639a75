"""Evaluation of designs: crop / full-PSF / noisy modes, gain handling, loading from disk."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dkolib.dko import frontend
from dkolib.config import load_config
from dkolib.dko.evaluation import EVAL_COLUMNS, evaluate_design, find_frontend, hybrid_from_dko, load_design
from dkolib.depth.network import DepthNet
from dkolib.dko.kernels import pad_to_window, split_kernel

torch.set_num_threads(1)
SCALE = 25.0  # optical kernels are the electronic ones / SCALE, the gain restores them


def _cfg():
    return load_config("smoke", {"optics.n_cells": 33, "optics.meta_atom": "ideal"})


def _dataset(model, n=3, h=32, w=64, seed=0):
    """Random images whose "ground truth" is ``model``'s own prediction: its metrics are
    perfect (abs_rel 0), so any change of the first layer shows in the metrics."""
    from dkolib.depth.predict import predict_depth

    g = torch.Generator().manual_seed(seed)
    rgb = torch.rand(n, 3, h, w, generator=g)
    depth = predict_depth(model.eval(), rgb).clamp(0.01, 79.0)
    return [{"rgb": rgb[i], "depth_m": depth[i]} for i in range(n)]


def _stage1(cfg, seed=0):
    torch.manual_seed(seed)
    model = DepthNet(cfg.model, kernel_size=cfg.optics.kernel_size).eval()
    with torch.no_grad():  # a first layer with clearly signed kernels
        model.first_layer.weight.normal_(0.0, 0.2)
    return model


def _array(cfg, n_out):
    from dkolib.optics.metaatoms import IdealPhaseAtom
    from dkolib.optics.metasurface import MetasurfaceArray

    return MetasurfaceArray(n_out, 3, cfg.optics, IdealPhaseAtom(), init="lens")


@pytest.fixture
def exact_optics(monkeypatch):
    """PSFs that are exactly the split electronic kernels / SCALE (all light inside the crop).

    The sensor rendering is ``dkolib.optics.render.optical_conv`` when that module exists (then this
    also checks its orientation convention against ``nn.Conv2d``), else a stand-in.
    """
    state = {}

    def fake_psf(array, optics_cfg, window_px, engine):
        return pad_to_window(split_kernel(state["weight"]) / SCALE, window_px)

    monkeypatch.setattr(frontend, "_compute_psf", fake_psf)
    try:
        import dkolib.optics.render  # noqa: F401
    except ImportError:
        def fake_conv(images, pos, neg, gain, noise, generator):
            k = pos.shape[-1]
            out = F.conv2d(images, (pos - neg) * gain.view(-1, 1, 1, 1), stride=2, padding=k // 2)
            if noise is not None:
                out = out + 0.05 * torch.randn(out.shape, generator=generator)
            return out

        monkeypatch.setattr(frontend, "_optical_conv", fake_conv)
    return state


def test_crop_and_full_psf_reproduce_electronic_metrics(exact_optics):
    cfg = _cfg()
    stage1 = _stage1(cfg)
    data = _dataset(stage1)
    w = stage1.conv1_weight().detach().clone()
    exact_optics["weight"] = w
    elec = evaluate_design(stage1, data, cfg, design="electronic")
    assert list(elec.columns) == list(EVAL_COLUMNS)
    assert list(elec["eval"]) == ["crop", "full_psf", "full_psf_noise"]
    # the electronic design has no optics: one evaluation repeated per mode
    assert (elec.iloc[:, 2:].nunique() == 1).all()

    hybrid = hybrid_from_dko(stage1, _array(cfg, w.shape[0]), torch.full((w.shape[0],), SCALE), cfg.optics)
    assert torch.allclose(hybrid.first_layer.kernels(), w, atol=1e-6)
    assert isinstance(stage1.first_layer, torch.nn.Conv2d)  # stage-1 model untouched
    opt = evaluate_design(hybrid, data, cfg, evals=("crop", "full_psf"), design="dko")
    for mode in ("crop", "full_psf"):
        a = opt[opt["eval"] == mode].iloc[0, 2:].astype(float)
        b = elec[elec["eval"] == mode].iloc[0, 2:].astype(float)
        assert a.values == pytest.approx(b.values, rel=1e-4, abs=1e-5), mode  # FFT vs direct conv
    # the hybrid's own front end is restored after the mode switches
    assert hybrid.first_layer.mode == "crop"


def test_wrong_gain_changes_metrics(exact_optics):
    cfg = _cfg()
    stage1 = _stage1(cfg)
    data = _dataset(stage1)
    w = stage1.conv1_weight().detach().clone()
    exact_optics["weight"] = w
    elec = evaluate_design(stage1, data, cfg, evals=("crop",))
    hybrid = hybrid_from_dko(stage1, _array(cfg, w.shape[0]), None, cfg.optics)  # gain lost: ones
    bad = evaluate_design(hybrid, data, cfg, evals=("crop",))
    assert elec["abs_rel"].iloc[0] < 1e-6
    assert bad["abs_rel"].iloc[0] > 1e-3


def _hybrid(exact_optics, n: int, exact_gain: bool = True):
    """``(cfg, data, hybrid)``: n images labelled by a stage-1 network, read through exact optics
    (with the right gain, or none: then every image's depth is off by its own amount)."""
    cfg = _cfg()
    stage1 = _stage1(cfg)
    data = _dataset(stage1, n=n)
    w = stage1.conv1_weight().detach().clone()
    exact_optics["weight"] = w
    gain = torch.full((w.shape[0],), SCALE) if exact_gain else None
    return cfg, data, hybrid_from_dko(stage1, _array(cfg, w.shape[0]), gain, cfg.optics)


def test_noisy_evaluation_is_seeded(exact_optics):
    cfg, data, hybrid = _hybrid(exact_optics, n=2)
    a = evaluate_design(hybrid, data, cfg, evals=("full_psf_noise",), seed=3)
    b = evaluate_design(hybrid, data, cfg, evals=("full_psf_noise",), seed=3)
    c = evaluate_design(hybrid, data, cfg, evals=("full_psf_noise",), seed=4)
    clean = evaluate_design(hybrid, data, cfg, evals=("full_psf",), seed=3)
    assert a.equals(b)
    assert not a.iloc[:, 2:].equals(c.iloc[:, 2:])
    assert not a.iloc[:, 2:].equals(clean.iloc[:, 2:])


def test_factory_and_bad_modes(exact_optics):
    cfg = _cfg()
    stage1 = _stage1(cfg)
    data = _dataset(stage1, n=1)
    seen = []

    def factory(mode):
        seen.append(mode)
        return stage1

    out = evaluate_design(factory, data, cfg, evals=("crop", "full_psf"), design="f")
    assert seen == ["crop", "full_psf"] and list(out["design"]) == ["f", "f"]
    with pytest.raises(ValueError, match="evals"):
        evaluate_design(stage1, data, cfg, evals=("blurred",))


@pytest.mark.parametrize("per_element", [False, True])
def test_load_design_roundtrip(tmp_path, per_element):
    from dkolib.io import save_torch
    from dkolib.dko.synthesis import save_array
    from dkolib.dko.train import save_model

    cfg = _cfg()
    stage1 = _stage1(cfg)
    c1 = stage1.conv1_channels
    save_model(stage1, tmp_path / "stage1.pt", cfg, kind="electronic")
    array = _array(cfg, c1)
    with torch.no_grad():
        array.latent.add_(0.1 * torch.randn(array.latent.shape, generator=torch.Generator().manual_seed(1)))
    gain = torch.linspace(1.0, 2.0, c1 * 6).reshape(c1, 3, 2) if per_element else torch.linspace(1.0, 2.0, c1)
    dko_dir = tmp_path / "dko"
    save_array(array, dko_dir / "array.pt", cfg.optics)
    save_torch(gain, dko_dir / "gain.pt")
    hybrid = hybrid_from_dko(stage1, array, gain, cfg.optics)
    save_model(hybrid, tmp_path / "hybrid.pt", cfg, kind="hybrid_dko")

    elec = load_design(tmp_path / "stage1.pt", cfg)
    assert find_frontend(elec) is None
    assert torch.equal(elec.conv1_weight(), stage1.conv1_weight())
    for loaded in (load_design(dko_dir, cfg, stage1=tmp_path / "stage1.pt"), load_design(tmp_path / "hybrid.pt", cfg)):
        fe = find_frontend(loaded)
        assert fe is not None and not any(p.requires_grad for p in fe.array.parameters())
        assert torch.equal(fe.array.latent, array.latent)
        assert torch.equal(fe.gain, gain)
    with pytest.raises(ValueError, match="stage-1"):
        load_design(dko_dir, cfg)


def test_per_image_metrics_are_each_image_read_alone(exact_optics):
    """Per-image metrics (for paired comparisons) in dataset order: entry i equals evaluating image i alone."""
    cfg, data, hybrid = _hybrid(exact_optics, n=3, exact_gain=False)
    images = {}
    table = evaluate_design(hybrid, data, cfg, evals=("crop", "full_psf_noise"), seed=1, per_image=images)
    assert sorted(images) == ["crop", "full_psf_noise"] and all(len(v) == 3 for v in images.values())
    crop = [m["abs_rel"] for m in images["crop"]]
    assert sum(crop) / 3 == pytest.approx(float(table.loc[table["eval"] == "crop", "abs_rel"].iloc[0]))
    for i in range(3):
        alone = evaluate_design(hybrid, [data[i]], cfg, evals=("crop",))
        assert crop[i] == pytest.approx(float(alone["abs_rel"].iloc[0]), rel=1e-6)
    assert len(set(round(v, 9) for v in crop)) > 1  # the images do differ
