"""Reuse out of the box: ``OpticalConv2d.from_conv(conv)`` with no settings renders held-out kernels.

The layer's defaults are the ``default`` profile's ``optics`` and ``dko`` sections
(``dkolib.dko.conv.layer_defaults``). The check reads every design back independently of the
stage-2 bookkeeping: a delta image on input channel ``i`` through the returned layer gives the
layer's effective kernels ``[:, i]`` (flipped: ``nn.Conv2d`` is a cross-correlation), compared with
``conv.weight`` per output channel. The same call with the dataclass defaults the layer used to
take (1 cm sensor distance, lens start) must fail the bound, so that the test can fail.
"""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from dkolib.config import ConfigError, DKOConfig, OpticsConfig, from_dict, load_config
from dkolib.dko.conv import PACKAGED_DEFAULTS, OpticalConv2d, layer_defaults, layer_optics, replace_conv
from dkolib.optics.realisability import RealisabilityWarning

torch.set_num_threads(1)

TARGET_CORR = 0.99
"""The issue's target: kernel correlation per output channel with one gain per metasurface."""
STEPS = 30
"""Stage-2 step cap of these checks (the profile's is 120; 30 steps already reach 0.999 on
these kernels, at a quarter of the run time)."""


# ---------------------------------------------------------------- where the defaults come from


def test_packaged_copy_equals_the_default_profile():
    """The copy used outside a checkout must be the profile's sections, key for key."""
    profile = load_config("default")
    with open(PACKAGED_DEFAULTS) as fh:
        packaged = from_dict(yaml.safe_load(fh))
    assert packaged.optics == profile.optics, (
        f"{PACKAGED_DEFAULTS} differs from config/default.yaml's optics section: copy it again")
    assert packaged.dko == profile.dko, f"{PACKAGED_DEFAULTS} differs from config/default.yaml's dko section"


def test_defaults_are_the_default_profile_in_and_outside_a_checkout(tmp_path, monkeypatch):
    profile = load_config("default")
    inside = layer_defaults()
    assert inside.source.name == "default.yaml" and inside.source.parent.name == "config"
    assert (inside.optics, inside.dko) == (profile.optics, profile.dko)
    monkeypatch.delenv("DKOLIB_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)  # no config/ here or above: an installed package's view
    outside = layer_defaults()
    assert outside.source == PACKAGED_DEFAULTS
    assert (outside.optics, outside.dko) == (profile.optics, profile.dko)
    # the recipe, spelled out: the paper's numerical aperture at 257 cells, random start, leakage loss
    assert (outside.optics.n_cells, outside.optics.cell_pitch_m) == (257, 2.5e-6)
    assert outside.optics.sensor_distance_m == pytest.approx(2.5073e-3)
    assert (outside.dko.init, outside.dko.loss, outside.optics.gain) == ("random", "leakage", "element")
    layer = OpticalConv2d(3, 2, 5)
    assert layer.optics_cfg == layer_optics(None, 5) == dataclasses.replace(
        profile.optics, kernel_size=5, loss_window_px=profile.optics.loss_window_px)
    assert layer.gain.shape == (2, 3, 2)  # gain per metasurface, as the profile says


def test_a_foreign_default_profile_is_named(tmp_path, monkeypatch):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "default.yaml").write_text("learning_rate: 0.1\n")  # another project's config/
    monkeypatch.delenv("DKOLIB_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"not a valid dkolib profile.*pass optics= and dko="):
        OpticalConv2d(1, 1, 3)


def test_explicit_sections_are_used_as_given():
    smoke = load_config("smoke")
    layer = OpticalConv2d(1, 1, 3, optics=smoke.optics, gain_model="channel")
    assert layer.optics_cfg.n_cells == smoke.optics.n_cells != layer_defaults().optics.n_cells
    assert layer.gain.shape == (1,)
    # a dict is validated like a profile file, its other keys from OpticsConfig's dataclass defaults
    partial = OpticalConv2d(1, 1, 3, optics={"n_cells": 33})
    assert partial.optics_cfg.sensor_distance_m == OpticsConfig().sensor_distance_m


# ---------------------------------------------------------------- the held-out check


def smooth_conv(c_out: int = 2, c_in: int = 3, k: int = 7, sigma_px: float = 1.0, seed: int = 11) -> nn.Conv2d:
    """``nn.Conv2d(c_in, c_out, k, padding=k // 2)`` with Gaussian-blurred random kernels and a non-zero bias.

    White noise ``[c_out, c_in, k + 6, k + 6]`` convolved ('valid') with a normalised 7 x 7 Gaussian
    of ``sigma_px`` pixels: smooth signed kernels of the kind a trained first layer holds, drawn
    independently of anything the default profile was tuned on.
    """
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(c_out * c_in, 1, k + 6, k + 6, generator=g)
    x = torch.arange(7, dtype=torch.float32) - 3.0
    gauss = torch.exp(-x * x / (2 * sigma_px ** 2))
    gauss = gauss / gauss.sum()
    weight = F.conv2d(noise, (gauss[:, None] * gauss[None, :])[None, None]).reshape(c_out, c_in, k, k)
    conv = nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=True)
    with torch.no_grad():
        conv.weight.copy_(weight)
        conv.bias.copy_(torch.tensor([0.3, -0.2][:c_out]))
    return conv


def effective_kernels(layer: nn.Module, c_in: int, k: int) -> torch.Tensor:
    """``[C_out, C_in, k, k]``: the kernels ``layer`` applies, read from delta images through it.

    ``y[j] = sum_u K[u] x[j + u - k // 2]``, so a delta at pixel ``c`` gives ``y[c - k // 2 + m] = K[k - 1 - m]``:
    the ``k x k`` output window around ``c``, flipped, minus the response to a black image (the bias).
    """
    n = 3 * k
    c = n // 2
    with torch.no_grad():
        dark = layer(torch.zeros(1, c_in, n, n))
        columns = []
        for i in range(c_in):
            delta = torch.zeros(1, c_in, n, n)
            delta[0, i, c, c] = 1.0
            window = (layer(delta) - dark)[0, :, c - k // 2:c + k // 2 + 1, c - k // 2:c + k // 2 + 1]
            columns.append(window.flip(-2, -1))
    return torch.stack(columns, 1)


def channel_fidelity(layer: nn.Module, conv: nn.Conv2d) -> tuple[list[float], list[float]]:
    """Per output channel, the Pearson correlation and ``||K_layer - K|| / ||K||`` over its ``C_in x k x k`` kernel."""
    k = conv.kernel_size[0]
    got, want = effective_kernels(layer, conv.in_channels, k), conv.weight.detach()
    corr = [float(torch.corrcoef(torch.stack([got[o].flatten(), want[o].flatten()]))[0, 1])
            for o in range(conv.out_channels)]
    err = [float((got[o] - want[o]).norm() / want[o].norm()) for o in range(conv.out_channels)]
    return corr, err


def test_delta_read_back_is_the_conv_itself():
    """The read-back recovers an electronic conv exactly (so that a failure below is the optics')."""
    conv = smooth_conv()
    corr, err = channel_fidelity(conv, conv)
    assert min(corr) > 0.999999 and max(err) < 1e-5


@pytest.mark.slow
def test_from_conv_with_defaults_renders_held_out_smooth_kernels():
    conv = smooth_conv()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RealisabilityWarning)  # the default geometry renders these kernels
        layer = OpticalConv2d.from_conv(conv, steps=STEPS, generator=torch.Generator().manual_seed(0),
                                        progress=False)
    assert layer.optics_cfg.sensor_distance_m == layer_defaults().optics.sensor_distance_m
    assert layer.gain.shape == (2, 3, 2)  # one gain per metasurface
    corr, err = channel_fidelity(layer, conv)
    assert min(corr) >= TARGET_CORR, (corr, err)
    assert max(err) <= 0.15, (corr, err)
    # the layer's own bookkeeping agrees with the independent read-back
    assert layer.fidelity_summary["channel_corr_elem_mean"] == pytest.approx(sum(corr) / len(corr), abs=2e-3)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y, ref = layer(x), conv(x)
    assert y.shape == ref.shape
    assert float((y - ref).norm() / ref.norm()) < 0.15


@pytest.mark.slow
def test_old_defaults_fail_the_bound():
    """The dataclass defaults (1 cm, lens start), and the 1 cm geometry even with the profile's stage 2.

    At 1 cm the 0.64 mm aperture passes spatial frequencies up to ``D / (lambda z)``, below the
    sensor's Nyquist frequency at 550 and 700 nm: the realisability check warns, and no stage 2
    reaches the bound (with 500 lens-start steps, the old default, the correlation stays near 0.83).
    """
    conv = smooth_conv()
    old = {"optics": OpticsConfig(), "dko": DKOConfig()}
    assert (old["optics"].sensor_distance_m, old["dko"].init) == (1e-2, "lens")
    for optics, dko in [(old["optics"], old["dko"]), (old["optics"], None)]:
        with pytest.warns(RealisabilityWarning, match="outside the spatial frequencies"):
            layer = OpticalConv2d.from_conv(conv, optics, dko, steps=STEPS,
                                            generator=torch.Generator().manual_seed(0), progress=False)
        corr, err = channel_fidelity(layer, conv)
        assert max(corr) < TARGET_CORR, (dko, corr, err)
        assert min(err) > 0.15, (dko, corr, err)


def test_replace_conv_takes_the_same_defaults():
    model = nn.Sequential(smooth_conv(c_out=1, c_in=1), nn.ReLU())
    with warnings.catch_warnings():
        warnings.simplefilter("error", RealisabilityWarning)
        layer = replace_conv(model, "0", steps=1, progress=False, generator=torch.Generator().manual_seed(0))
    assert model[0] is layer
    assert layer.optics_cfg == layer_optics(None, 7)
