"""The ideal-optics bound: exact kernels with all the light in the kernel window, read out with sensor noise."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from dkolib.config import load_config
from dkolib.depth.network import DepthNet
from dkolib.dko.evaluation import ideal_optics_model, ideal_optics_psf

torch.set_num_threads(1)


def _net(seed=0):
    cfg = load_config("smoke")
    torch.manual_seed(seed)
    net = DepthNet(cfg.model, kernel_size=cfg.optics.kernel_size).eval()
    return net, cfg


def test_ideal_psf_is_a_unit_sum_split_of_the_kernel():
    k = torch.tensor([[[[1.0, -2.0], [3.0, 0.0]]]])  # [1, 1, 2, 2]
    psf, gain = ideal_optics_psf(k)
    assert torch.allclose(gain, torch.tensor([[[4.0, 2.0]]]))
    assert torch.allclose(psf[0], torch.tensor([[0.25, 0.0], [0.75, 0.0]]))
    assert torch.allclose(psf[1], torch.tensor([[0.0, 1.0], [0.0, 0.0]]))
    # an all-positive kernel: the negative metasurface is dark and unused
    psf, gain = ideal_optics_psf(torch.ones(1, 1, 3, 3))
    assert gain[0, 0, 1] == 0 and torch.all(psf[1] == 0)


@pytest.mark.parametrize("mode", ["crop", "full_psf"])
def test_noiseless_ideal_optics_is_the_electronic_layer(mode):
    net, cfg = _net()
    images = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(1))
    weight = net.first_layer.weight.detach()
    expected = F.conv2d(images, weight, stride=2, padding=weight.shape[-1] // 2)
    model = ideal_optics_model(net, cfg.optics, mode)
    torch.testing.assert_close(model.first_layer(images), expected, rtol=1e-4, atol=1e-5)
    assert net.first_layer.__class__.__name__ == "ElectronicConv1"  # the source network is untouched


def test_noise_variance_matches_shot_and_read_noise_of_each_read_out():
    """A flat white scene: each metasurface collects exactly the aperture's light (signal 1 per pixel),
    so output channel o has variance sum_i,s g_is^2 (1 / ppp + (read_e / ppp)^2)."""
    net, cfg = _net(2)
    ppp, read_e = 50.0, 3.0
    optics = dataclasses.replace(cfg.optics, photons_per_pixel=ppp, read_noise_e=read_e)
    model = ideal_optics_model(net, optics, "full_psf_noise")
    fe = model.first_layer
    fe.generator = torch.Generator().manual_seed(0)
    w = optics.render_window_px
    images = torch.ones(8, 3, 4 * w, 4 * w)
    m = w // 2 + 1  # output pixels (stride 2) whose window lies inside the image: each read-out sees signal 1
    y = fe(images)[..., m:-m, m:-m]
    _, gain = ideal_optics_psf(net.first_layer.weight.detach())
    lit = (gain > 0).float()
    expected_var = ((gain ** 2) * (lit / ppp + (read_e / ppp) ** 2)).sum((1, 2))
    expected_mean = (gain[..., 0] - gain[..., 1]).sum(1)
    measured_var = y.var(dim=(0, 2, 3))
    measured_mean = y.mean(dim=(0, 2, 3))
    n = y[:, 0].numel()
    torch.testing.assert_close(measured_var, expected_var, rtol=5 * (2 / n) ** 0.5 + 0.02, atol=0.0)
    torch.testing.assert_close(measured_mean, expected_mean, rtol=0.0, atol=float(5 * (expected_var.max() / n) ** 0.5))
