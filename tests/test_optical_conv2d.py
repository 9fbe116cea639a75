"""OpticalConv2d: a drop-in nn.Conv2d whose kernels are rendered by a metasurface array.

Reference for the geometry: torch's own ``F.conv2d`` with the kernels formed by hand
from the array's PSFs (``g+ P+ - g- P-``), never the layer's own ``kernels()``.
"""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dkolib.config import load_config
from dkolib.dko.conv import NegativeIntensityWarning, OpticalConv2d, replace_conv
from dkolib.errors import InputError
from dkolib.optics import MetasurfaceArray, crop_center, psf
from dkolib.optics.metaatoms import IdealPhaseAtom

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def optics():
    return load_config("smoke", {"optics.meta_atom": "ideal"}).optics


def _layer(optics, k, stride, padding, gain_model="element", c_in=2, c_out=3, mode="crop", seed=1):
    layer = OpticalConv2d(c_in, c_out, k, stride=stride, padding=padding, optics=optics, mode=mode,
                          gain_model=gain_model, generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():  # gains of a realistic size (kernels ~ 1) and a non-zero bias
        layer.gain.copy_(50 + 100 * torch.rand(layer.gain.shape, generator=g))
        layer.bias.copy_(torch.randn(c_out, generator=g))
    return layer


def _hand_kernels(layer, window_px):
    """``g+ P+ - g- P-`` (or ``g (P+ - P-)``) ``[C_out, C_in, W, W]`` from the array's PSFs on ``window_px``."""
    with torch.no_grad():
        p = psf(layer.array, window_px=window_px).reshape(layer.n_out, layer.n_in, 2, window_px, window_px)
    g = layer.gain.detach()
    if g.dim() == 3:
        return p[:, :, 0] * g[..., 0, None, None] - p[:, :, 1] * g[..., 1, None, None]
    return (p[:, :, 0] - p[:, :, 1]) * g.view(-1, 1, 1, 1)


@pytest.mark.parametrize("k, stride, padding, gain_model", [
    (3, 1, "same", "element"),
    (5, 2, 2, "channel"),
    (3, 3, "valid", "element"),
    (7, 2, 5, "element"),   # padding wider than k // 2
    (5, 1, 0, "channel"),
])
def test_crop_mode_equals_torch_conv2d_of_the_rendered_kernels(optics, k, stride, padding, gain_model):
    layer = _layer(optics, k, stride, padding, gain_model)
    x = torch.rand(2, 2, 17, 20, generator=torch.Generator().manual_seed(2))
    kernels = _hand_kernels(layer, k)
    ref = F.conv2d(x, kernels, layer.bias.detach(), stride=stride, padding=padding)
    out = layer(x)
    assert out.shape == ref.shape == (2, 3) + layer.output_size(17, 20)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))
    torch.testing.assert_close(layer.as_conv2d()(x), ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))


@pytest.mark.parametrize("stride, padding", [(1, 1), (2, 0)])
def test_full_psf_mode_is_the_conv_with_the_whole_render_window(optics, stride, padding):
    """Every output pixel also gets the light that lands outside the k x k crop (black beyond the image)."""
    k, window = 3, optics.render_window_px
    assert window % 2 == 1 and window > k
    layer = _layer(optics, k, stride, padding).with_mode("full_psf")
    assert layer.mode == "full_psf" and layer.window_px == window
    x = torch.rand(1, 2, 15, 16, generator=torch.Generator().manual_seed(3))
    wide = _hand_kernels(layer, window)
    ref = F.conv2d(x, wide, layer.bias.detach(), stride=stride, padding=padding + (window - k) // 2)
    torch.testing.assert_close(layer(x), ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))
    crop_only = F.conv2d(x, crop_center(wide, k), layer.bias.detach(), stride=stride, padding=padding)
    assert (ref - crop_only).abs().max() > 1e-3 * ref.abs().max()  # the light outside the crop matters


def test_noise_mode_has_shot_and_read_noise_per_read_out(optics):
    """Residual / predicted std ~ 1, with the variance of SensorNoise's model summed over the 2 C_in read-outs."""
    layer = _layer(optics, 3, 1, 1, mode="full_psf_noise")
    layer.generator = torch.Generator().manual_seed(4)
    x = torch.rand(2, 2, 17, 20, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        noisy = layer(x)
    window = optics.render_window_px
    with torch.no_grad():
        p = psf(layer.array, window_px=window)                     # [E, W, W], element e = (o C_in + i) 2 + s
    pad = 1 + (window - 3) // 2                                   # padding 1, centred W x W window
    c_in = layer.n_in
    signal = torch.cat([F.conv2d(x[:, (e // 2) % c_in][:, None], p[e][None, None], padding=pad)
                        for e in range(p.shape[0])], 1)           # [B, E, H, W]: each read-out's mean
    g = layer.gain.detach().reshape(-1)                           # [E], same element order
    ppp, rn = optics.photons_per_pixel, optics.read_noise_e
    var = (g[None, :, None, None] ** 2 * (signal.clamp_min(0) / ppp + (rn / ppp) ** 2))
    var = var.reshape(2, layer.n_out, 2 * c_in, 17, 20).sum(2)
    mean = F.conv2d(x, _hand_kernels(layer, window), layer.bias.detach(), padding=pad)
    z = ((noisy - mean) / var.sqrt()).flatten()
    n = z.numel()
    assert abs(float(z.mean())) < 5 / n ** 0.5
    assert abs(float(z.std()) - 1.0) < 5 / (2 * n) ** 0.5


def test_wavelength_per_input_channel(optics):
    layer = OpticalConv2d(2, 1, 3, optics=optics, wavelengths_m=(450e-9, 650e-9))
    assert layer.array.wavelengths_m.tolist() == [450e-9, 450e-9, 650e-9, 650e-9]   # element (o, i, s)
    default = OpticalConv2d(1, 1, 3, optics=optics)
    assert default.array.wavelengths_m.tolist() == [optics.wavelengths_m[0]] * 2
    with pytest.raises(InputError, match="4 input channels need 4 wavelengths"):
        OpticalConv2d(4, 2, 3, optics=optics)


def test_bad_arguments_are_explained(optics):
    with pytest.raises(InputError, match="odd"):
        OpticalConv2d(1, 1, 4, optics=optics)
    with pytest.raises(InputError, match="stride 1"):
        OpticalConv2d(1, 1, 3, stride=2, padding="same", optics=optics)
    with pytest.raises(InputError, match="dilation"):
        OpticalConv2d.from_conv(nn.Conv2d(1, 1, 3, dilation=2), optics)
    with pytest.raises(InputError, match="groups"):
        OpticalConv2d.from_conv(nn.Conv2d(2, 2, 3, groups=2), optics)
    with pytest.raises(InputError, match="optics.kernel_sz"):
        OpticalConv2d(1, 1, 3, optics={"kernel_sz": 3})
    layer = OpticalConv2d(1, 1, 3, optics=optics)
    with pytest.raises(InputError, match=r"\[B, 1, H, W\]"):
        layer(torch.rand(1, 3, 8, 8))
    with pytest.warns(NegativeIntensityWarning):
        layer(torch.randn(1, 1, 8, 8))


def test_state_dict_round_trip(optics):
    a = _layer(optics, 3, 2, 1)
    b = OpticalConv2d(2, 3, 3, stride=2, padding=1, optics=optics)
    b.load_state_dict(a.state_dict())
    x = torch.rand(1, 2, 9, 9)
    torch.testing.assert_close(a(x), b(x))


def _realisable_conv(optics, k, wavelengths_m):
    """A conv whose kernels one element of a known array renders exactly: K[o, i] = +/- c crop(P_e)."""
    cfg = dataclasses.replace(optics, kernel_size=k)
    truth = MetasurfaceArray(1, 2, cfg, IdealPhaseAtom(), init="lens_random", init_noise_rad=1.5,
                             generator=torch.Generator().manual_seed(7), wavelengths_m=wavelengths_m)
    with torch.no_grad():
        crops = crop_center(psf(truth, window_px=optics.loss_window_px), k)      # [4, k, k]
    conv = nn.Conv2d(2, 1, k, stride=2, padding=1, bias=True)
    with torch.no_grad():
        conv.weight.copy_(torch.stack([100.0 * crops[0], -100.0 * crops[3]])[None])   # + of (0, 0), - of (0, 1)
        conv.bias.fill_(0.25)
    return conv


def test_from_conv_recovers_a_realisable_conv(optics):
    wls = (450e-9, 650e-9)
    conv = _realisable_conv(optics, 5, wls)
    dko = {"init": "random", "loss": "leakage", "leakage_weight": 0.0, "lr": 0.1, "steps": 100, "stop_window": 0}
    layer = OpticalConv2d.from_conv(conv, optics, dko, wavelengths_m=wls, gain_model="element",
                                    generator=torch.Generator().manual_seed(0), progress=False)
    s = layer.fidelity_summary
    assert s["channel_corr_elem_mean"] >= 0.99, s
    assert layer.synthesis_history["corr_mean"].iloc[0] < 0.5      # started far from the truth
    assert (layer.stride, layer.padding, layer.kernel_size) == (2, 1, 5)
    assert float(layer.bias.detach()) == 0.25
    corr = torch.corrcoef(torch.stack([layer.kernels().detach().flatten(), conv.weight.detach().flatten()]))[0, 1]
    assert float(corr) >= 0.99                                      # the same criterion, computed here
    x = torch.rand(1, 2, 16, 16, generator=torch.Generator().manual_seed(6))
    assert layer(x).shape == conv(x).shape


def test_replace_conv_swaps_a_named_layer_in_place(optics):
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 2, 3))
    with pytest.raises(InputError, match=r"Conv2d layers are \['0', '2'\]"):
        replace_conv(model, "conv1", optics)
    with pytest.raises(InputError, match="not an nn.Conv2d"):
        replace_conv(model, "1", optics)
    with torch.no_grad():
        model[0].weight.abs_()   # keep it simple to render
    layer = replace_conv(model, "0", optics, {"steps": 2, "init": "random"}, progress=False,
                         generator=torch.Generator().manual_seed(0), wavelengths_m=(550e-9,))
    assert model[0] is layer and isinstance(layer, OpticalConv2d)
    assert model(torch.rand(1, 1, 8, 8)).shape == (1, 2, 6, 6)
