"""Realisability: the fraction of a kernel's energy outside the aperture's passband D / (lambda z).

Expected values are analytic: a delta kernel has a flat spectrum, so its out-of-band
fraction is 1 - (area of the passband inside the Nyquist square) / (area of the square);
a sampled Gaussian of std sigma_x has |FT|^2 = exp(-4 pi^2 sigma_x^2 |f|^2), whose mass
inside |f_x|, |f_y| <= f_c is erf(2 pi sigma_x f_c)^2. The code counts DFT bins by their
centres; each tolerance is the bound on the bins that the passband edge cuts.
"""

import dataclasses
import math
import warnings

import pytest
import torch

from dkolib.config import OpticsConfig, load_config
from dkolib.errors import InputError
from dkolib.optics.realisability import RealisabilityWarning, realisability

WAVELENGTH_M = 550e-9
N_FFT = 2048


def _optics(cutoff_over_nyquist: float) -> OpticsConfig:
    """Default geometry with the sensor distance set so that D / (lambda z) = ratio x 1 / (2 P) at 550 nm."""
    cfg = OpticsConfig()
    aperture = cfg.n_cells * cfg.cell_pitch_m
    nyquist = 1 / (2 * cfg.pixel_pitch_m)
    z = aperture / (WAVELENGTH_M * cutoff_over_nyquist * nyquist)
    return dataclasses.replace(cfg, sensor_distance_m=z, wavelengths_m=(WAVELENGTH_M,) * 3)


def _delta(k: int = 7) -> torch.Tensor:
    w = torch.zeros(1, 1, k, k, dtype=torch.float64)
    w[0, 0, k // 2, k // 2] = 1.0
    return w


def _disk_in_square_area(r: float, a: float = 1.0) -> float:
    """Area of the disk of radius r inside the square [-a, a]^2 (for r <= a sqrt 2)."""
    if r <= a:
        return math.pi * r * r
    segment = r * r * math.acos(a / r) - a * math.sqrt(r * r - a * a)   # beyond one side
    return math.pi * r * r - 4 * segment


def _edge_bins_fraction(edge_length_over_nyquist: float) -> float:
    """Bound on the share of the n^2 bins cut by an edge of that length (bins 2 f_N / n wide)."""
    return 4 * (edge_length_over_nyquist * N_FFT / 2 + 1) / N_FFT ** 2


@pytest.mark.parametrize("ratio", [0.7, 1.2])
def test_delta_kernel_disk_passband_is_the_area_outside_the_disk(ratio):
    res = realisability(_delta(), _optics(ratio), passband="disk", n_fft=N_FFT, warn=False)
    expected = 1 - _disk_in_square_area(ratio) / 4.0
    got = res.table["out_of_band_fraction"].item()
    assert got == pytest.approx(expected, abs=_edge_bins_fraction(2 * math.pi * ratio))
    assert res.table["cutoff_over_nyquist"].item() == pytest.approx(ratio, rel=1e-12)


@pytest.mark.parametrize("ratio", [0.7, 1.2])
def test_delta_kernel_square_passband(ratio):
    res = realisability(_delta(), _optics(ratio), passband="square", n_fft=N_FFT, warn=False)
    expected = 1 - min(ratio, 1.0) ** 2
    got = res.table["out_of_band_fraction"].item()
    assert got == pytest.approx(expected, abs=_edge_bins_fraction(8 * min(ratio, 1.0)))
    if ratio >= 1:
        assert got == 0.0   # the whole Nyquist square is in band


def _gaussian(sigma_px: float, k: int) -> torch.Tensor:
    x = torch.arange(k, dtype=torch.float64) - k // 2
    g = torch.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * sigma_px ** 2))
    return g[None, None]


def test_gaussian_kernel_matches_the_analytic_spectrum():
    sigma, ratio = 1.0, 0.5
    cfg = _optics(ratio)
    res = realisability(_gaussian(sigma, 11), cfg, passband="square", n_fft=N_FFT, warn=False)
    # f_c = ratio / (2 P), sigma_x = sigma P: 2 pi sigma_x f_c = pi sigma ratio
    expected = 1 - math.erf(math.pi * sigma * ratio) ** 2
    # edge bins: count x (peak density on the edge) x bin area / total mass (1 / (4 pi sigma_x^2))
    delta_px = 1.0 / N_FFT                                            # bin width x P
    edge_density = math.exp(-4 * math.pi ** 2 * sigma ** 2 * (ratio / 2 - delta_px) ** 2)
    tol = 4 * (8 * ratio * N_FFT / 2 + 1) * edge_density * delta_px ** 2 * 4 * math.pi * sigma ** 2
    assert res.table["out_of_band_fraction"].item() == pytest.approx(expected, abs=tol)


def test_smooth_gaussian_is_in_band_where_a_delta_is_not():
    cfg = _optics(0.5)
    assert 1 - math.erf(math.pi * 3.0 * 0.5) ** 2 < 1e-6               # analytic: in band
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        smooth = realisability(_gaussian(3.0, 21), cfg)
    assert bool(smooth.table["realisable"].item())
    assert smooth.summary["out_of_band_fraction_max"] < smooth.summary["threshold"]
    with pytest.warns(RealisabilityWarning, match="1 of 1 kernels"):
        sharp = realisability(_delta(), cfg)
    assert not bool(sharp.table["realisable"].item())


def test_paper_geometry_passes_more_than_a_4x_smaller_aperture():
    paper = load_config("paper").optics
    small = dataclasses.replace(paper, n_cells=(paper.n_cells - 1) // 4 + 1)     # 257 of 1025 cells, same z
    kernels = torch.randn(4, 3, 7, 7, generator=torch.Generator().manual_seed(0))
    big = realisability(kernels, paper, warn=False)
    with pytest.warns(RealisabilityWarning) as record:
        tiny = realisability(kernels, small)
    # cutoff over Nyquist by hand: D / (lambda z) x 2 P
    red = paper.n_cells * paper.cell_pitch_m / (700e-9 * paper.sensor_distance_m) * 2 * paper.pixel_pitch_m
    assert big.table.loc[big.table.in_channel == 0, "cutoff_over_nyquist"].iloc[0] == pytest.approx(red)
    assert big.summary["out_of_band_fraction_total"] < tiny.summary["out_of_band_fraction_total"]
    assert (big.table["out_of_band_fraction"] <= tiny.table["out_of_band_fraction"]).all()
    assert f"{tiny.summary['out_of_band_fraction_total']:.3f}" in str(record[0].message)
    # shorter wavelengths (blue, input channel 2) pass more
    per_channel = tiny.table.groupby("in_channel")["out_of_band_fraction"].mean()
    assert per_channel[2] < per_channel[0]


def test_table_rows_zero_kernels_and_errors():
    cfg = _optics(0.5)
    kernels = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    kernels[1, 2] = 0.0
    res = realisability(kernels, cfg, warn=False)
    assert list(zip(res.table.out_channel, res.table.in_channel)) == [(o, i) for o in range(2) for i in range(3)]
    zero = res.table[(res.table.out_channel == 1) & (res.table.in_channel == 2)]
    assert math.isnan(zero["out_of_band_fraction"].item()) and bool(zero["realisable"].item())
    with pytest.raises(InputError, match="4 input channels need 4 wavelengths"):
        realisability(torch.randn(1, 4, 3, 3), cfg)
    with pytest.raises(InputError, match=r"\[C_out, C_in, k, k\]"):
        realisability(torch.randn(3, 3, 3), cfg)
    with pytest.raises(InputError, match="passband"):
        realisability(kernels, cfg, passband="hexagon")
