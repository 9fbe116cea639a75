"""Back-end fine-tune of a DKO hybrid on the crop kernel and on full-PSF sensor images."""

import pytest
import torch

from dkolib.dko.budget import BudgetMeter
from dkolib.config import load_config
from dkolib.io import load_torch
from dkolib.dko.evaluation import hybrid_from_dko, load_design
from dkolib.dko.frontend import find_frontend
from dkolib.depth.network import DepthNet
from dkolib.dko import fit_gain, merge_signed
from dkolib.optics import psf
from dkolib.study.pipeline import finetune_dko
from dkolib.dko.train import _build_array, psf_step_flops, save_model


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def dko_checkpoint(tmp_path):
    """A DKO-like hybrid (random network, random array, least-squares gains) saved like scripts/run_dko.py does.

    Not a lens array: its + and - metasurfaces are identical, so the signed optical kernel
    is exactly zero and the network would not see its input at all.
    """
    cfg = load_config("smoke", {"dko.finetune_steps": 2, "stage1.eval_every": 1000, "stage1.checkpoint_every": 1000})
    torch.manual_seed(0)
    net = DepthNet(cfg.model, kernel_size=cfg.optics.kernel_size)
    array = _build_array(cfg, net.conv1_channels, "random", torch.Generator().manual_seed(0))
    k = cfg.optics.kernel_size
    with torch.no_grad():
        crop = psf(array, array.wavelengths_m, cfg.optics, k, engine="fast", normalize=True)
        gain = fit_gain(merge_signed(crop, net.conv1_channels, 3), net.first_layer.weight)
    assert (gain != 0).all()
    hybrid = hybrid_from_dko(net, array, gain, cfg.optics, "crop", "fast")
    path = save_model(hybrid, tmp_path / "dko" / "model.pt", cfg, BudgetMeter(), kind="hybrid_dko")
    return cfg, path


def _backend(model):
    return {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("first_layer")}


@pytest.mark.parametrize("mode", ["crop", "full_psf"])
def test_finetune_trains_back_end_only_in_the_requested_mode(dko_checkpoint, tmp_path, mode):
    cfg, path = dko_checkpoint
    before = load_design(path, cfg)
    out = tmp_path / mode
    finetune_dko(cfg, path, out, progress=False, mode=mode)
    after = load_design(out / "model.pt", cfg)
    b0, b1 = _backend(before), _backend(after)
    assert any(not torch.equal(b0[k], b1[k]) for k in b0)  # the back end learned
    arr0 = find_frontend(before).array.state_dict()
    arr1 = find_frontend(after).array.state_dict()
    assert all(torch.equal(arr0[k], arr1[k]) for k in arr0)  # the optics did not
    # the PSFs it was charged for are those of the mode's window: k x k or the render window
    window = cfg.optics.kernel_size if mode == "crop" else cfg.optics.render_window_px
    n_elem = 2 * 3 * find_frontend(after).n_out
    stored = load_torch(out / "model.pt")["budget"]
    assert stored["flops_by"]["optics"] == pytest.approx(psf_step_flops(cfg, n_elem, window, "fast", False))
    assert cfg.optics.render_window_px > cfg.optics.kernel_size


@pytest.mark.parametrize("mode", ["crop", "full_psf"])
def test_finetune_trains_on_the_images_of_its_mode(dko_checkpoint, tmp_path, monkeypatch, mode):
    """Every training step of the fine-tune reads sensor images rendered with its mode's PSF window.

    (Whether the full-PSF fine-tune then reads full-PSF images better is a result of the default
    profile, measured in physical_eval.csv; on the smoke profile's 16 images a few steps are noise.)
    """
    from dkolib.dko import frontend

    cfg, path = dko_checkpoint
    windows = []
    real = frontend._optical_conv

    def spy(images, psf_pos, psf_neg, *args, **kwargs):
        if torch.is_grad_enabled():  # training steps, not the evaluation passes
            windows.append(psf_pos.shape[-1])
        return real(images, psf_pos, psf_neg, *args, **kwargs)

    monkeypatch.setattr(frontend, "_optical_conv", spy)
    finetune_dko(cfg.replace({"dko.finetune_steps": 3}), path, tmp_path / mode, progress=False, mode=mode)
    expected = cfg.optics.kernel_size if mode == "crop" else cfg.optics.render_window_px
    assert len(windows) >= 3 and set(windows) == {expected}


def test_finetune_takes_an_explicit_step_count(dko_checkpoint, tmp_path):
    """The whole-sensor fine-tunes run ``sensor.finetune_steps``, not ``dko.finetune_steps``: the
    count passed in is the count logged (2 in the profile here, 3 asked for)."""
    import pandas as pd

    cfg, path = dko_checkpoint
    assert cfg.dko.finetune_steps == 2
    finetune_dko(cfg, path, tmp_path / "three", progress=False, mode="crop", steps=3)
    assert pd.read_csv(tmp_path / "three" / "log.csv")["step"].tolist() == [1, 2, 3]


def test_finetune_under_torchrun_is_a_clear_error_and_writes_nothing(dko_checkpoint, tmp_path, monkeypatch):
    """Two processes would write the same files side by side; the fine-tune says to run it in one."""
    from dkolib.errors import InputError

    cfg, path = dko_checkpoint
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(InputError, match="without torchrun"):
        finetune_dko(cfg, path, tmp_path / "ft", progress=False, mode="crop")
    assert not (tmp_path / "ft").exists()
