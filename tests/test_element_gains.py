"""Per-metasurface electronic gains: the sensor read-out, the front end and the stopping rule."""

import dataclasses

import torch
import torch.nn.functional as F

from dkolib.config import load_config
from dkolib.dko import OpticalFrontEnd, synthesize
from dkolib.dko.frontend import unit_gain
from dkolib.optics import optical_conv

torch.set_num_threads(1)


def _bank(seed=0, c_out=2, c_in=3, k=5):
    g = torch.Generator().manual_seed(seed)
    pos, neg = torch.rand(c_out, c_in, k, k, generator=g), torch.rand(c_out, c_in, k, k, generator=g)
    gain = torch.rand(c_out, c_in, 2, generator=g) * 3 + 0.5
    images = torch.rand(2, c_in, 12, 16, generator=g)
    return images, pos, neg, gain


def test_element_gain_equals_a_conv_with_the_scaled_difference():
    images, pos, neg, gain = _bank()
    expected = F.conv2d(images, gain[..., 0, None, None] * pos - gain[..., 1, None, None] * neg, stride=2, padding=2)
    got = optical_conv(images, pos, neg, stride=2, gain=gain)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_element_gain_scales_each_read_out_after_its_noise():
    """With a 'noise' that adds a constant offset per read-out, the gain must scale that offset too."""
    images, pos, neg, gain = _bank(1)

    def offset_noise(s, generator=None):  # s: [B, C_in, C_out * 2, H, W]
        return s + 1.0

    got = optical_conv(images, pos, neg, stride=2, gain=gain, noise=offset_noise)
    clean = optical_conv(images, pos, neg, stride=2, gain=gain)
    # each (o, i) adds g+ * 1 - g- * 1, summed over i
    offset = (gain[..., 0] - gain[..., 1]).sum(1)
    torch.testing.assert_close(got - clean, offset.view(1, -1, 1, 1).expand_as(got), rtol=1e-5, atol=1e-5)


def test_front_end_kernels_and_gain_matching_per_element():
    cfg = load_config("smoke").optics
    k = cfg.kernel_size

    class FixedArray(torch.nn.Module):
        def __init__(self, psf):
            super().__init__()
            self.register_buffer("wavelengths_m", torch.full((psf.shape[0],), 550e-9, dtype=torch.float64))
            self.latent = torch.nn.Parameter(torch.zeros(1))
            self.fixed = psf

    g = torch.Generator().manual_seed(3)
    psf = torch.rand(2 * 2 * 3, k, k, generator=g)
    fe = OpticalFrontEnd(FixedArray(psf), cfg, n_out=2, n_in=3, gain=unit_gain(2, 3, "element"))
    with fe.injected_psf(psf):
        true = torch.rand(2, 3, 2, generator=g) + 0.5
        p = psf.reshape(2, 3, 2, k, k)
        reference = true[..., 0, None, None] * p[:, :, 0] - true[..., 1, None, None] * p[:, :, 1]
        fitted = fe.match_gain(reference, method="lstsq")
        torch.testing.assert_close(fitted, true, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(fe.kernels(), reference, rtol=1e-4, atol=1e-5)


def test_stopping_rule_ends_a_converged_run_and_resumes_to_the_same_result(tmp_path):
    cfg = load_config("smoke")
    dko = dataclasses.replace(cfg.dko, init="random", stop_window=3, stop_tol=0.5)  # stops as soon as it can
    weight = torch.randn(1, 3, cfg.optics.kernel_size, cfg.optics.kernel_size, generator=torch.Generator().manual_seed(0))
    kw = dict(steps=40, lr=0.05, progress=False)
    res = synthesize(weight, cfg.optics, dko, generator=torch.Generator().manual_seed(1),
                     ckpt_path=tmp_path / "ckpt.pt", **kw)
    assert res.stopped_early and 3 < res.steps < 40
    losses = res.history["loss"].to_numpy()
    assert (losses[-4] - losses[-1]) / abs(losses[-4]) < 0.5
    again = synthesize(weight, cfg.optics, dko, generator=torch.Generator().manual_seed(1),
                       ckpt_path=tmp_path / "ckpt.pt", **kw)
    assert again.steps == res.steps and again.stopped_early
    torch.testing.assert_close(again.array.latent, res.array.latent)
