"""Rendering: conv2d equivalence, delta PSF, energy, FFT path, sensor-noise statistics."""

import math

import pytest
import torch
import torch.nn.functional as F

from dkolib.optics.render import SensorNoise, crop_center, optical_conv, signed_kernels, split_psf

torch.set_num_threads(1)


def _rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("method", ["direct", "fft"])
@pytest.mark.parametrize("w", [7, 8, 31])
def test_delta_psf_renders_image_unchanged(method, w):
    x = _rand(2, 3, 20, 23)
    delta = torch.zeros(3, 3, w, w, dtype=torch.float64)
    for i in range(3):
        delta[i, i, w // 2, w // 2] = 1.0  # on-axis pixel is W // 2
    y = optical_conv(x, delta, torch.zeros_like(delta), stride=1, method=method)
    torch.testing.assert_close(y, x)


@pytest.mark.parametrize("method", ["direct", "fft"])
def test_crop_kernel_equals_conv2d(method):
    x = _rand(2, 3, 17, 22, seed=1)
    pos, neg = _rand(5, 3, 7, 7, seed=2), _rand(5, 3, 7, 7, seed=3)
    gain = torch.linspace(0.5, 2.0, 5, dtype=torch.float64)
    y = optical_conv(x, pos, neg, stride=2, gain=gain, method=method)
    want = F.conv2d(x, pos - neg, stride=2, padding=3) * gain.view(1, -1, 1, 1)
    assert y.shape == (2, 5, 9, 11)
    torch.testing.assert_close(y, want)


def test_fft_and_direct_agree_on_large_psf_and_odd_sizes():
    x = _rand(1, 3, 19, 26, seed=4)
    pos, neg = _rand(2, 3, 31, 31, seed=5), _rand(2, 3, 31, 31, seed=6)
    for stride in (1, 2, 3):
        a = optical_conv(x, pos, neg, stride=stride, method="direct")
        b = optical_conv(x, pos, neg, stride=stride, method="fft")
        assert a.shape == (1, 2, math.ceil(19 / stride), math.ceil(26 / stride))
        torch.testing.assert_close(a, b)


def test_rendering_conserves_energy():
    # zero border wider than the PSF: nothing leaves the sensor, sum(out) = sum(img) * sum(psf)
    w = 15
    img = torch.zeros(1, 1, 60, 60, dtype=torch.float64)
    img[..., w:-w, w:-w] = _rand(1, 1, 60 - 2 * w, 60 - 2 * w, seed=7)
    psf = _rand(1, 1, w, w, seed=8) * 0.01
    for method in ("direct", "fft"):
        y = optical_conv(img, psf, torch.zeros_like(psf), stride=1, method=method)
        torch.testing.assert_close(y.sum(), img.sum() * psf.sum())
    # without the border, light falls off the sensor edge
    full = _rand(1, 1, 60, 60, seed=7)
    assert optical_conv(full, psf, torch.zeros_like(psf), stride=1).sum() < full.sum() * psf.sum()


def test_noise_statistics_match_poisson_plus_read():
    ppp, read, s = 200.0, 3.0, 0.37
    noise = SensorNoise(ppp, read)
    sig = torch.full((400_000,), s, dtype=torch.float64)
    y = noise(sig, generator=torch.Generator().manual_seed(0))
    var = s / ppp + (read / ppp) ** 2
    n = sig.numel()
    assert abs(y.mean().item() - s) < 5 * math.sqrt(var / n)
    assert abs(y.var().item() / var - 1) < 5 * math.sqrt(2 / n)
    # shot noise alone: variance proportional to the signal
    y0 = SensorNoise(ppp, 0.0)(sig * 2, generator=torch.Generator().manual_seed(1))
    assert abs(y0.var().item() / (2 * s / ppp) - 1) < 5 * math.sqrt(2 / n)
    # electrons are integers in the shot-noise-only case
    e = y0 * ppp
    assert torch.allclose(e, e.round())


def test_noise_reproducible_and_straight_through():
    noise = SensorNoise(50.0, 1.0)
    x = _rand(4, 4, seed=9).requires_grad_(True)
    a = noise(x, generator=torch.Generator().manual_seed(3))
    b = noise(x, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, x)
    (a * torch.arange(16.0, dtype=torch.float64).view(4, 4)).sum().backward()
    torch.testing.assert_close(x.grad, torch.arange(16.0, dtype=torch.float64).view(4, 4))
    with pytest.raises(ValueError, match="photons_per_pixel"):
        SensorNoise(0.0)


def test_optical_conv_with_noise_is_unbiased():
    x = _rand(1, 3, 24, 24, seed=10)
    pos, neg = _rand(2, 3, 7, 7, seed=11) * 0.05, _rand(2, 3, 7, 7, seed=12) * 0.05
    clean = optical_conv(x, pos, neg)
    g = torch.Generator().manual_seed(0)
    noisy = torch.stack([optical_conv(x, pos, neg, noise=SensorNoise(1e3, 2.0), generator=g) for _ in range(200)])
    assert noisy.shape[1:] == clean.shape
    err = (noisy.mean(0) - clean).abs().mean() / noisy.std(0).mean()
    assert err < 0.25  # mean of 200 draws: ~ 1/sqrt(200) of a single draw's spread
    assert noisy.std(0).mean() > 1e-3  # noise is really there


def test_signed_kernels_and_crop():
    psf = _rand(2 * 3 * 2, 14, 14, seed=13)
    k = signed_kernels(psf, 2, 3)
    pos, neg = split_psf(psf, 2, 3)
    torch.testing.assert_close(k[1, 2], psf[(1 * 3 + 2) * 2] - psf[(1 * 3 + 2) * 2 + 1])
    torch.testing.assert_close(k, pos - neg)
    c = crop_center(psf, 7)
    torch.testing.assert_close(c, psf[:, 4:11, 4:11])  # on-axis pixel 7 stays central
    torch.testing.assert_close(crop_center(_rand(1, 31, 31), 7), _rand(1, 31, 31)[:, 12:19, 12:19])
    with pytest.raises(ValueError, match="n_out"):
        signed_kernels(psf, 3, 3)
    with pytest.raises(ValueError, match="C_in"):
        optical_conv(_rand(1, 2, 8, 8), pos, neg)
