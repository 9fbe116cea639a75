"""DKO stage 2: kernel splitting, losses, closed-form gain, fidelity, synthesis and resume."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from dkolib.config import load_config
from dkolib.dko.fidelity import fidelity_table, fit_gain
from dkolib.dko.kernels import merge_signed, pad_to_window, split_kernel
from dkolib.dko.losses import leakage_loss, paper_loss
from dkolib.dko.synthesis import synthesize
from dkolib.optics.render import crop_center

torch.set_num_threads(1)


def _weight(c_out=2, c_in=3, k=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(c_out, c_in, k, k, generator=g)


# ----------------------------------------------------------------- kernels


def test_split_kernel_order_and_roundtrip():
    w = _weight()
    t = split_kernel(w)
    assert t.shape == (2 * 2 * 3, 7, 7)
    assert (t >= 0).all()
    o, i = 1, 2
    assert torch.equal(t[(o * 3 + i) * 2 + 0], w[o, i].clamp_min(0))
    assert torch.equal(t[(o * 3 + i) * 2 + 1], (-w[o, i]).clamp_min(0))
    assert torch.equal(merge_signed(t, 2, 3), w)


@pytest.mark.parametrize("window", [7, 14, 15, 21])
def test_pad_is_inverse_of_crop_and_centred_on_axis(window):
    k = 7
    t = torch.rand(3, k, k)
    padded = pad_to_window(t, window)
    assert padded.shape == (3, window, window)
    assert torch.equal(crop_center(padded, k), t)
    assert padded.sum() == pytest.approx(t.sum().item())
    # the kernel's centre tap sits on the axis pixel, index W // 2 (dkolib.optics.propagation convention)
    delta = torch.zeros(1, k, k)
    delta[0, k // 2, k // 2] = 1.0
    pos = pad_to_window(delta, window)[0].nonzero().tolist()
    assert pos == [[window // 2, window // 2]]


# -------------------------------------------------------------------- gain


def test_fit_gain_hand_example():
    # channel 0: P = [1, 2], K = [2, 3] -> g = (2 + 6) / (1 + 4) = 1.6
    # channel 1: P = [0, 1], K = [5, -2] -> g = -2 / 1 = -2
    p = torch.tensor([[1.0, 2.0], [0.0, 1.0]]).reshape(2, 1, 1, 2)
    k = torch.tensor([[2.0, 3.0], [5.0, -2.0]]).reshape(2, 1, 1, 2)
    assert fit_gain(p, k).tolist() == pytest.approx([1.6, -2.0])


def test_fit_gain_exact_recovery_and_zero_channel():
    k = _weight(4, 3)
    p = k / 3.0
    p[2] = 0.0
    g = fit_gain(p, k)
    assert g[[0, 1, 3]].tolist() == pytest.approx([3.0, 3.0, 3.0], rel=1e-5)
    assert g[2].item() == 0.0
    # least squares: no other scalar does better on a noisy channel
    noisy = k / 2.0 + 0.3 * _weight(4, 3, seed=1)
    g = fit_gain(noisy, k)
    for o in range(4):
        best = ((g[o] * noisy[o] - k[o]) ** 2).sum()
        for d in (-0.05, 0.05):
            assert best < (((g[o] + d) * noisy[o] - k[o]) ** 2).sum()


def test_fit_gain_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="C_out"):
        fit_gain(torch.ones(2, 3, 7, 7), torch.ones(2, 3, 5, 5))


# ------------------------------------------------------------------ losses


def test_paper_loss_zero_for_scaled_padded_kernel_and_positive_otherwise():
    t = split_kernel(_weight(1, 3))  # 6 targets, all lit for a random normal kernel
    assert (t.sum((1, 2)) > 0).all()
    psf = 0.37 * pad_to_window(t, 14)
    assert paper_loss(psf, t).item() == pytest.approx(0.0, abs=1e-12)
    shifted = torch.roll(psf, 1, dims=-1)
    assert paper_loss(shifted, t).item() > 1e-6
    # scale-free: a dimmer PSF of the same shape has the same loss
    assert paper_loss(0.1 * shifted, t).item() == pytest.approx(paper_loss(shifted, t).item(), rel=1e-5)


def test_dark_targets_are_handled_explicitly():
    t = torch.zeros(2, 7, 7)
    t[0, 3, 3] = 1.0  # element 1 is dark (e.g. K- of an all-positive kernel)
    lit = pad_to_window(t[:1], 14)[0]
    spot = torch.zeros(14, 14)
    spot[7, 7] = 0.5
    for loss_fn in (paper_loss, leakage_loss):
        dark_empty = torch.stack([lit, torch.zeros(14, 14)])
        dark_lit = torch.stack([lit, spot]).requires_grad_(True)
        per_empty = loss_fn(dark_empty, t, reduction="none")
        per_lit = loss_fn(dark_lit, t, reduction="none")
        assert torch.isfinite(per_lit).all() and torch.isfinite(per_empty).all()
        assert per_empty[1].item() == 0.0
        assert per_lit[1].item() > 0.0
        per_lit.sum().backward()
        assert torch.isfinite(dark_lit.grad).all()
        assert dark_lit.grad[1, 7, 7] > 0  # more light on a dark element costs more


def test_leakage_loss_grows_when_light_moves_outside_crop():
    t = split_kernel(_weight(1, 1))
    psf = 0.05 * pad_to_window(t, 14)
    base = leakage_loss(psf, t, reduction="none")
    moved = psf.clone()
    moved[:, 0, :] += 0.01  # light added in the window but outside the 7x7 crop
    assert torch.equal(crop_center(moved, 7), crop_center(psf, 7))
    assert (leakage_loss(moved, t, reduction="none") > base).all()
    # the paper loss also changes (window normalisation), but the leakage loss sees it
    # even with lambda = 0 through the window-wide shape term
    assert (leakage_loss(moved, t, leakage_weight=0.0, reduction="none")
            > leakage_loss(psf, t, leakage_weight=0.0, reduction="none")).all()
    # perfect shape: only the efficiency term 1 - E_crop remains
    assert base.tolist() == pytest.approx((1 - psf.sum((1, 2))).tolist(), abs=1e-5)
    # a dimmer PSF of the same shape is worse (less light in the crop)
    assert (leakage_loss(0.5 * psf, t, reduction="none") > base).all()


def test_losses_reject_negative_targets_and_bad_shapes():
    with pytest.raises(ValueError, match="non-negative"):
        paper_loss(torch.rand(2, 14, 14), -torch.rand(2, 7, 7))
    with pytest.raises(ValueError, match="elements"):
        leakage_loss(torch.rand(3, 14, 14), torch.rand(2, 7, 7))


# ---------------------------------------------------------------- fidelity


def test_fidelity_table_perfect_bank():
    w = _weight(2, 3)
    t = split_kernel(w)
    psf = pad_to_window(t, 14) / 40.0
    fid = fidelity_table(psf, w)
    ch = fid[fid.level == "channel"]
    el = fid[fid.level == "element"]
    assert len(ch) == 2 and len(el) == 12
    assert ch["gain"].tolist() == pytest.approx([40.0, 40.0], rel=1e-6)
    assert ch["norm_err"].max() < 1e-6 and ch["corr"].min() > 1 - 1e-9
    assert el["eff_crop"].tolist() == pytest.approx(el["eff_window"].tolist())
    # light outside the crop lowers crop efficiency relative to the window, not the crop fidelity
    psf2 = psf.clone()
    psf2[:, 0, 0] += 0.1
    el2 = fidelity_table(psf2, w).query("level == 'element'")
    assert (el2["eff_window"].values > el2["eff_crop"].values).all()
    assert el2["norm_err"].max() < 1e-6


# -------------------------------------------------------------- synthesis


def _tiny_problem():
    from dkolib.optics.metaatoms import IdealPhaseAtom
    from dkolib.optics.metasurface import MetasurfaceArray

    # a 33-cell aperture focused 1 mm away: a spot of ~2 pixels, small enough to shape 7x7 kernels
    cfg = load_config("smoke", {"optics.n_cells": 33, "optics.meta_atom": "ideal", "optics.subpixel": 1,
                                "optics.render_window_px": 15, "optics.sensor_distance_m": 1e-3})
    w = _weight(1, 3, seed=3)

    def make_array():
        return MetasurfaceArray(1, 3, cfg.optics, IdealPhaseAtom(), init="lens")

    return cfg, w, make_array


@pytest.mark.parametrize("loss", ["paper", "leakage"])
def test_synthesis_reduces_loss_on_tiny_problem(loss):
    cfg, w, make_array = _tiny_problem()
    res = synthesize(w, cfg.optics, cfg.dko, array=make_array(), steps=25, lr=0.1, loss=loss, progress=False)
    h = res.history
    assert list(h["step"]) == list(range(1, 26))
    assert h["loss"].iloc[-1] < 0.95 * h["loss"].iloc[0]
    assert h["corr_mean"].iloc[-1] > h["corr_mean"].iloc[0]
    assert res.gain.shape == (1,) and torch.isfinite(res.gain).all()
    assert set(res.fidelity["level"]) == {"element", "channel"}
    assert isinstance(res.fidelity, pd.DataFrame)


def test_resume_gives_identical_latents(tmp_path):
    cfg, w, make_array = _tiny_problem()
    full = synthesize(w, cfg.optics, cfg.dko, array=make_array(), steps=6, lr=0.1, progress=False,
                      ckpt_path=tmp_path / "a.pt", ckpt_every=3)
    ckpt = tmp_path / "b.pt"
    part = synthesize(w, cfg.optics, cfg.dko, array=make_array(), steps=3, lr=0.1, progress=False,
                      ckpt_path=ckpt, ckpt_every=3, log_csv=tmp_path / "b.csv")
    assert not torch.equal(part.array.latent, full.array.latent)
    assert len(pd.read_csv(tmp_path / "b.csv")) == 3
    resumed = synthesize(w, cfg.optics, cfg.dko, array=make_array(), steps=6, lr=0.1, progress=False,
                         ckpt_path=ckpt, ckpt_every=3)
    assert torch.equal(resumed.array.latent, full.array.latent)
    assert resumed.history["loss"].tolist() == full.history["loss"].tolist()
    # a checkpoint of another problem is refused, not silently reused
    with pytest.raises(ValueError, match="different synthesis run"):
        synthesize(2 * w, cfg.optics, cfg.dko, array=make_array(), steps=6, lr=0.1, progress=False,
                   ckpt_path=ckpt)


def test_synthesis_charges_budget():
    from dkolib.dko.budget import BudgetMeter

    cfg, w, make_array = _tiny_problem()
    meter = BudgetMeter()
    synthesize(w, cfg.optics, cfg.dko, array=make_array(), steps=2, lr=0.1, progress=False, budget=meter)
    assert meter.wall_s > 0 and meter.flops_by.get("optics", 0) > 0
    assert not math.isnan(meter.flops)
