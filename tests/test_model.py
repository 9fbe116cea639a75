"""DepthNet: layout, shapes, swappable first layer."""

import pytest
import torch
import torch.nn as nn

from dkolib.config import ModelConfig
from dkolib.depth.network import (DepthNet, ElectronicConv1, conv1_channels, depth_to_disp, disp_to_depth,
                          encoder_widths, scaled_width)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    torch.manual_seed(0)


def test_scaled_width_rounds_to_multiple_of_four_and_floors():
    assert scaled_width(64, 1.0) == 64
    assert scaled_width(64, 0.25) == 16
    assert scaled_width(64, 0.03125) == 4  # 2 -> floor 4
    assert scaled_width(512, 0.3) == 152  # 153.6 -> 152
    assert all(w % 4 == 0 and w >= 4 for f in (0.03125, 0.1, 0.37, 2.0) for w in encoder_widths(f))
    with pytest.raises(ValueError):
        scaled_width(64, 0.0)


def test_full_width_encoder_has_resnet18_layout():
    """At width 1 the encoder (conv1 + bn1 + layer1..4) has exactly ResNet-18's 11,176,512
    parameters (torchvision's resnet18 minus its 513,000-parameter fc layer)."""
    net = DepthNet(ModelConfig(width_factor=1.0, scales=4))
    enc = [net.first_layer, net.bn1, net.layer1, net.layer2, net.layer3, net.layer4]
    assert sum(p.numel() for m in enc for p in m.parameters()) == 11_176_512
    assert tuple(net.conv1_weight().shape) == (64, 3, 7, 7)
    assert [len(s) for s in (net.layer1, net.layer2, net.layer3, net.layer4)] == [2, 2, 2, 2]


@pytest.mark.parametrize("width_factor,scales,hw", [
    (0.03125, 4, (32, 64)), (0.125, 4, (64, 96)), (0.25, 2, (96, 320)), (0.5, 1, (32, 32)),
])
def test_output_shapes(width_factor, scales, hw):
    net = DepthNet(ModelConfig(width_factor=width_factor, scales=scales))
    h, w = hw
    out = net(torch.rand(2, 3, h, w))
    assert set(out) == {("disp", s) for s in range(scales)}
    for s in range(scales):
        d = out[("disp", s)]
        assert d.shape == (2, 1, h // 2 ** s, w // 2 ** s)
        assert torch.all((d > 0) & (d < 1))
    feats = net.encode(torch.rand(2, 3, h, w))
    assert [f.shape[1] for f in feats] == list(encoder_widths(width_factor))
    assert [f.shape[-1] for f in feats] == [w // 2 ** (i + 1) for i in range(5)]
    assert feats[0].shape[1] == conv1_channels(ModelConfig(width_factor=width_factor))


def test_bad_inputs_raise_clear_errors():
    net = DepthNet(ModelConfig(width_factor=0.125))
    with pytest.raises(ValueError, match="multiples of 32"):
        net(torch.rand(1, 3, 40, 64))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        net(torch.rand(1, 1, 32, 64))
    net.replace_first_layer(nn.Conv2d(3, 5, 3, stride=2, padding=1))  # wrong channel count
    with pytest.raises(ValueError, match="first_layer returned"):
        net(torch.rand(1, 3, 32, 64))


def test_replace_first_layer_changes_the_computation():
    net = DepthNet(ModelConfig(width_factor=0.125)).eval()
    x = torch.rand(1, 3, 32, 64)
    ref = net(x)[("disp", 0)]
    c1 = net.conv1_channels
    new = ElectronicConv1(c1)
    with torch.no_grad():
        new.weight.copy_(net.conv1_weight())
    old = net.replace_first_layer(new)
    assert isinstance(old, ElectronicConv1) and net.first_layer is new
    assert torch.equal(net(x)[("disp", 0)], ref)  # same kernels: same output
    with torch.no_grad():
        new.weight.mul_(-1.0)
    assert not torch.allclose(net(x)[("disp", 0)], ref)
    net.replace_first_layer(nn.Identity())
    with pytest.raises(TypeError):
        net.conv1_weight()
    assert all(p is not new.weight for p in net.backend_parameters())


def test_first_layer_sees_the_raw_image():
    """No normalisation before the first layer: it receives exactly the [0, 1] input."""
    seen = {}

    class Spy(ElectronicConv1):
        def forward(self, x):
            seen["x"] = x
            return super().forward(x)

    net = DepthNet(ModelConfig(width_factor=0.125), first_layer=Spy(conv1_channels(ModelConfig(width_factor=0.125))))
    x = torch.rand(1, 3, 32, 64)
    net(x)
    assert torch.equal(seen["x"], x)


def test_disp_depth_roundtrip():
    depth = torch.tensor([0.1, 1.0, 7.5, 80.0, 100.0])
    disp = depth_to_disp(depth)
    assert torch.all((disp >= -1e-6) & (disp <= 1 + 1e-6))
    _, back = disp_to_depth(disp)
    assert torch.allclose(back, depth, rtol=1e-5)


def test_untrained_net_starts_near_the_initial_depth():
    x = torch.rand(2, 3, 32, 64)
    depths = {}
    for d0 in (3.0, 30.0):
        torch.manual_seed(0)
        net = DepthNet(ModelConfig(width_factor=0.125), init_depth_m=d0)
        with torch.no_grad():
            depths[d0] = float(disp_to_depth(net(x)[("disp", 0)])[1].median())
    assert depths[3.0] < 9.0 < depths[30.0]
    assert depths[30.0] > 4 * depths[3.0]
