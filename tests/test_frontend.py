"""OpticalFrontEnd: an optical first layer whose PSFs equal the electronic kernel reproduces it.

The PSF engine is replaced by a fake array whose "PSFs" are its parameter (so
these tests check the front end's bookkeeping, not the optics). If
``dkolib.optics.render`` is not importable, a stand-in with the documented contract
(``conv2d(x, pos - neg, stride 2, padding w//2) * gain``) is used.
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dkolib.dko import frontend
from dkolib.config import ModelConfig, OpticsConfig
from dkolib.dko.frontend import OpticalFrontEnd, crop_center, make_hybrid
from dkolib.depth.network import DepthNet

try:  # the real renderer, when it exists
    from dkolib.optics import render as _render  # noqa: F401
    HAVE_RENDER = hasattr(_render, "optical_conv")
except ImportError:
    HAVE_RENDER = False


class FakeArray(nn.Module):
    """Array whose PSFs on any window are a parameter ``[E, W0, W0]`` (zero-padded to the window)."""

    def __init__(self, psf: torch.Tensor):
        super().__init__()
        self.psf_param = nn.Parameter(psf.clone())
        self.register_buffer("wavelengths_m", torch.full((psf.shape[0],), 550e-9, dtype=torch.float64))
        self.calls = 0


def _fake_psf(array, optics_cfg, window_px, engine):
    array.calls += 1
    p = array.psf_param
    pad = (window_px - p.shape[-1]) // 2
    return F.pad(p, (pad, pad, pad, pad)) if pad > 0 else crop_center(p, window_px)


def _fake_optical_conv(images, pos, neg, gain, noise, generator):
    w = pos.shape[-1]
    out = F.conv2d(images, pos - neg, stride=2, padding=w // 2)
    return out if gain is None else out * gain.view(1, -1, 1, 1)


@pytest.fixture(autouse=True)
def _patch(monkeypatch):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    monkeypatch.setattr(frontend, "_compute_psf", _fake_psf)
    if not HAVE_RENDER:
        monkeypatch.setattr(frontend, "_optical_conv", _fake_optical_conv)


def _split_kernels(weight: torch.Tensor):
    """Signed kernels -> PSFs [E, k, k] (element (o*n_in+i)*2+s) with per-channel gain."""
    gain = weight.abs().flatten(1).sum(1) * 1.7  # PSF energy per element < 1, like a real PSF
    scaled = weight / gain.view(-1, 1, 1, 1)
    psf = torch.stack([scaled.clamp(min=0), (-scaled).clamp(min=0)], dim=2)  # [o, i, 2, k, k]
    return psf.reshape(-1, weight.shape[-2], weight.shape[-1]), gain


def test_crop_front_end_reproduces_electronic_conv1():
    net = DepthNet(ModelConfig(width_factor=0.125)).eval()
    w = net.conv1_weight().detach()
    psf, gain = _split_kernels(w)
    assert torch.all(psf >= 0) and float(psf.sum((1, 2)).max()) < 1.0
    optics = OpticsConfig(n_cells=33, kernel_size=7, render_window_px=15)
    hybrid = make_hybrid(net, FakeArray(psf), optics, mode="crop", gain=gain).eval()
    assert isinstance(hybrid.first_layer, OpticalFrontEnd)
    assert net.first_layer is not hybrid.first_layer and isinstance(net.first_layer, nn.Conv2d)
    assert torch.allclose(hybrid.first_layer.kernels(), w, atol=1e-7)
    x = torch.rand(2, 3, 32, 64)
    conv_out = net.first_layer(x)
    opt_out = hybrid.first_layer(x)
    assert opt_out.shape == conv_out.shape
    assert torch.allclose(opt_out, conv_out, atol=1e-5)
    a, b = net(x), hybrid(x)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-4)
    # without the gain the output is wrong: the gain is really applied
    hybrid.first_layer.gain.fill_(1.0)
    assert not torch.allclose(hybrid.first_layer(x), conv_out, atol=1e-3)


def test_full_psf_mode_uses_the_render_window_and_matches_when_light_stays_in_the_crop():
    net = DepthNet(ModelConfig(width_factor=0.125)).eval()
    psf, gain = _split_kernels(net.conv1_weight().detach())
    optics = OpticsConfig(n_cells=33, kernel_size=7, render_window_px=15)
    arr = FakeArray(psf)
    crop = OpticalFrontEnd(arr, optics, n_out=net.conv1_channels, mode="crop", gain=gain)
    full = OpticalFrontEnd(arr, optics, n_out=net.conv1_channels, mode="full_psf", gain=gain)
    assert full.window_px == 15 and crop.window_px == 7
    assert full.compute_psf().shape[-1] == 15
    x = torch.rand(1, 3, 32, 64)
    assert torch.allclose(full(x), crop(x), atol=1e-5)
    assert torch.allclose(full.kernels(), crop.kernels())
    # light outside the 7x7 crop changes the full-PSF rendering but not the crop kernel
    halo = F.pad(psf, (2, 2, 2, 2)).view(-1, 2, 11, 11).clone()  # 11 x 11 PSFs
    ring = F.pad(torch.zeros(7, 7), (2, 2, 2, 2), value=0.01)
    halo[:, 0] += ring  # a dim ring around the + PSFs only (it would cancel if on both)
    halo = halo.view(-1, 11, 11)
    arr2 = FakeArray(halo)
    crop2 = OpticalFrontEnd(arr2, optics, n_out=net.conv1_channels, mode="crop", gain=gain)
    full2 = OpticalFrontEnd(arr2, optics, n_out=net.conv1_channels, mode="full_psf", gain=gain)
    assert torch.allclose(crop2(x), crop(x), atol=1e-6)
    assert torch.allclose(full2.kernels(), crop.kernels())
    assert not torch.allclose(full2(x), crop(x), atol=1e-3)


def test_match_gain_recovers_a_per_channel_scale():
    net = DepthNet(ModelConfig(width_factor=0.125))
    w = net.conv1_weight().detach()
    psf, gain = _split_kernels(w)
    optics = OpticsConfig(n_cells=33)
    fe = OpticalFrontEnd(FakeArray(psf), optics, n_out=net.conv1_channels)
    assert torch.allclose(fe.gain, torch.ones_like(gain))
    g = fe.match_gain(w, method="lstsq")
    assert torch.allclose(g, gain, rtol=1e-5)
    assert torch.allclose(fe.kernels(), w, atol=1e-6)
    g2 = fe.match_gain(2.0 * w, method="norm")
    assert torch.allclose(g2, 2.0 * gain, rtol=1e-5)
    with pytest.raises(ValueError):
        fe.match_gain(w[:, :2])


def test_psf_cache_only_while_frozen_and_unchanged():
    psf = torch.rand(4 * 3 * 2, 7, 7) * 0.01
    arr = FakeArray(psf)
    optics = OpticsConfig(n_cells=33)
    fe = OpticalFrontEnd(arr, optics, n_out=4, cache_psf=True)
    x = torch.rand(1, 3, 32, 32)
    fe(x), fe(x)
    assert arr.calls == 2  # optics trainable: recomputed every time, never cached
    fe.freeze_optics()
    fe(x), fe(x), fe.kernels()
    assert arr.calls == 3 and fe.psf_is_cached()
    with torch.no_grad():
        arr.psf_param.mul_(2.0)  # an in-place change invalidates the cache
    assert not fe.psf_is_cached()
    out = fe(x)
    assert arr.calls == 4
    assert torch.allclose(fe.split_psf()[0], (arr.psf_param.detach()).view(4, 3, 2, 7, 7)[:, :, 0])
    assert out.shape == (1, 4, 16, 16)


def test_gradients_reach_the_optics_and_trainable_gain():
    psf = torch.rand(4 * 3 * 2, 7, 7) * 0.01
    arr = FakeArray(psf)
    fe = OpticalFrontEnd(arr, OpticsConfig(n_cells=33), n_out=4, trainable_gain=True)
    assert isinstance(fe.gain, nn.Parameter)
    fe(torch.rand(2, 3, 32, 32)).square().sum().backward()
    assert arr.psf_param.grad is not None and float(arr.psf_param.grad.abs().sum()) > 0
    assert fe.gain.grad is not None and float(fe.gain.grad.abs().sum()) > 0


def test_injected_psf_overrides_simulation():
    arr = FakeArray(torch.rand(24, 7, 7) * 0.01)
    fe = OpticalFrontEnd(arr, OpticsConfig(n_cells=33), n_out=4)
    other = torch.zeros(24, 7, 7)
    with fe.injected_psf(other):
        assert torch.equal(fe.compute_psf(), other)
        assert torch.count_nonzero(fe(torch.rand(1, 3, 32, 32))) == 0
    assert not torch.equal(fe.compute_psf(), other)


def test_constructor_validates():
    arr = FakeArray(torch.rand(24, 7, 7))
    optics = OpticsConfig(n_cells=33)
    with pytest.raises(ValueError, match="mode"):
        OpticalFrontEnd(arr, optics, n_out=4, mode="blur")
    with pytest.raises(ValueError, match="engine"):
        OpticalFrontEnd(arr, optics, n_out=4, engine="magic")
    with pytest.raises(ValueError, match="elements"):
        OpticalFrontEnd(arr, optics, n_out=5)
    with pytest.raises(ValueError, match="gain"):
        OpticalFrontEnd(arr, optics, n_out=4, gain=torch.ones(3))
    fe = OpticalFrontEnd(arr, optics, n_out=4)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        fe(torch.rand(1, 1, 32, 32))


def test_real_metasurface_array_end_to_end(monkeypatch):
    """With the real optics (small ideal-phase array): shapes, gradients to the latents, caching."""
    monkeypatch.undo()  # the real PSF engine and renderer
    torch.set_num_threads(1)
    pytest.importorskip("dkolib.optics.metasurface")
    from dkolib.optics.metaatoms import IdealPhaseAtom
    from dkolib.optics.metasurface import MetasurfaceArray

    optics = OpticsConfig(n_cells=33, meta_atom="ideal", render_window_px=11, subpixel=1)
    arr = MetasurfaceArray(4, 3, optics, IdealPhaseAtom(), init="random",
                           generator=torch.Generator().manual_seed(0))
    fe = OpticalFrontEnd(arr, optics, n_out=4, mode="crop", trainable_gain=True, cache_psf=True)
    x = torch.rand(2, 3, 32, 32)
    out = fe(x)
    assert out.shape == (2, 4, 16, 16) and torch.isfinite(out).all()
    pos, neg = (t.detach() for t in fe.split_psf())
    assert torch.all(pos >= 0) and torch.all(neg >= 0) and float(pos.sum((-1, -2)).max()) <= 1.0 + 1e-4
    out.square().sum().backward()
    assert arr.latent.grad is not None and float(arr.latent.grad.abs().sum()) > 0
    fe.freeze_optics()
    fe(x)
    assert fe.psf_is_cached()
    full = OpticalFrontEnd(arr, optics, n_out=4, mode="full_psf")
    assert full.compute_psf().shape == (24, 11, 11)
    assert torch.allclose(full.kernels(), OpticalFrontEnd(arr, optics, n_out=4).kernels(), atol=1e-6)
