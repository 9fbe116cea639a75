"""The whole sensor (dkolib.optics.sensor, dkolib.optics.sensor_psf) against independent expectations.

* rendering: a wide gap reproduces today's single-window rendering (conv2d, another code
  path); energy on the sensor is the sum of the PSFs' energies times the scenes'; crosstalk
  between two metasurfaces equals a hand-placed copy of the scene, in both grid directions;
* the halo PSF: at the default geometry (D/z 0.256, staircase cells) it converges to the
  exact fast engine evaluated at many sub-pixel samples, and a half-pixel misregistration
  of the window (a plausible wrong convention) fails the same check;
* baffles: with two half-apertures tilted either side of the cut-off, the light on the
  sensor halves, as the ray picture says, and nothing is removed below the cut-off.
"""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dkolib.config import load_config
from dkolib.errors import InputError
from dkolib.optics.propagation import psf_fast
from dkolib.optics.render import optical_conv
from dkolib.optics.sensor import (ArrayGeometry, array_geometry, light_budget, read_regions, render_sensor,
                                  sensor_image)
from dkolib.optics.sensor_psf import baffle_sin_for_wall, sensor_psf_one


def _geometry(n_elements, n_cols, pitch_px, hw):
    return ArrayGeometry(n_elements, n_cols, pitch_px, hw, aperture_m=pitch_px * 1e-6, pixel_pitch_m=1e-6)


# ---------------------------------------------------------------- rendering
@pytest.mark.parametrize("gain_kind", ["element", "channel"])
def test_wide_gap_equals_single_window_rendering(gain_kind):
    """PSFs whose light stays within w x w of the axis, pitch >= region + w: nothing overlaps, and
    each read-out is today's rendering (``optical_conv``, conv2d) with that w x w window."""
    torch.manual_seed(0)
    n_out, n_in, H, W, w = 2, 3, 9, 12, 7
    E = n_out * n_in * 2
    geom = _geometry(E, 4, W + w, (H, W))
    R0, R1 = geom.halo_half_px()
    core = torch.rand(E, w, w, dtype=torch.float64)
    psfs = torch.zeros(E, 2 * R0 + 1, 2 * R1 + 1, dtype=torch.float64)
    psfs[:, R0 - w // 2:R0 + w // 2 + 1, R1 - w // 2:R1 + w // 2 + 1] = core
    images = torch.rand(2, n_in, H, W, dtype=torch.float64)
    gain = (torch.rand(n_out, n_in, 2, dtype=torch.float64) + 0.5 if gain_kind == "element"
            else torch.rand(n_out, dtype=torch.float64) + 0.5)
    pos, neg = core.reshape(n_out, n_in, 2, w, w).unbind(2)
    expected = optical_conv(images, pos, neg, stride=2, gain=gain)
    got = render_sensor(images, psfs, geom, n_out, n_in, stride=2, gain=gain)
    assert torch.allclose(got, expected, atol=1e-12)
    # a pitch one pixel smaller lets the edge of the next region see the light: the read-out changes
    tight = _geometry(E, 4, W + w // 2 - 1, (H, W))
    R0t, R1t = tight.halo_half_px()
    psf_t = torch.zeros(E, 2 * R0t + 1, 2 * R1t + 1, dtype=torch.float64)
    psf_t[:, R0t - w // 2:R0t + w // 2 + 1, R1t - w // 2:R1t + w // 2 + 1] = core
    assert not torch.allclose(render_sensor(images, psf_t, tight, n_out, n_in, stride=2, gain=gain), expected,
                              atol=1e-6)


def test_energy_on_the_sensor_is_the_sum_of_the_psf_energies():
    torch.manual_seed(1)
    n_in, H, W = 3, 6, 8
    E = 2 * n_in * 2
    geom = _geometry(E, 3, 9, (H, W))
    R0, R1 = geom.halo_half_px()
    psfs = torch.rand(E, 2 * R0 + 1, 2 * R1 + 1, dtype=torch.float64) ** 4  # light everywhere, overlapping
    images = torch.rand(2, n_in, H, W, dtype=torch.float64)
    canvas, _ = sensor_image(images, psfs, geom, n_in)
    colour = [(e // 2) % n_in for e in range(E)]
    expected = sum(images[:, colour[e]].sum((-2, -1)) * psfs[e].sum() for e in range(E))
    assert torch.allclose(canvas.sum((-2, -1)), expected, rtol=1e-12)


def test_region_kernels_read_what_the_summed_sensor_holds():
    """Two code paths: regions cut from the summed sensor image (one full correlation per element,
    placed at its axis) and each region's own correlation with its neighbours' PSFs gathered."""
    torch.manual_seed(3)
    n_out, n_in, H, W = 2, 3, 5, 7
    E = n_out * n_in * 2
    geom = _geometry(E, 4, 8, (H, W))
    R0, R1 = geom.halo_half_px()
    psfs = torch.rand(E, 2 * R0 + 1, 2 * R1 + 1, dtype=torch.float64)
    images = torch.rand(2, n_in, H, W, dtype=torch.float64)
    canvas, origin = sensor_image(images, psfs, geom, n_in)
    for stride in (1, 2):
        got = render_sensor(images, psfs, geom, n_out, n_in, stride=stride, return_regions=True)
        assert torch.allclose(got, read_regions(canvas, origin, geom, stride), atol=1e-10)
    with pytest.raises(InputError, match="reach"):
        render_sensor(images, psfs[:, 1:-1, 1:-1], geom, n_out, n_in)


@pytest.mark.parametrize("n_cols", [2, 1])  # neighbours along a row, then along a column
def test_crosstalk_of_two_metasurfaces_by_hand(n_cols):
    """Element 0 sends 0.3 of its light to a spot on element 1's axis, shifted by (1, 2) pixels;
    element 1's read-out must hold 0.3 x the scene moved by that shift, beside its own 0.2 x scene."""
    H, W, a = 7, 9, 12
    geom = _geometry(2, n_cols, a, (H, W))
    R0, R1 = geom.halo_half_px()
    psfs = torch.zeros(2, 2 * R0 + 1, 2 * R1 + 1, dtype=torch.float64)
    psfs[0, R0, R1] = 0.5
    psfs[1, R0, R1] = 0.2
    # light through tap d lands at axis_0 - d (scene centre); element 1's axis sits at axis_0 + off
    off = np.subtract(geom.axis_px(1), geom.axis_px(0))
    shift = np.array([1, 2])
    d = -(off + shift)
    psfs[0, R0 + d[0], R1 + d[1]] = 0.3
    x = torch.rand(1, 1, H, W, dtype=torch.float64)
    regions = render_sensor(x, psfs, geom, n_out=1, n_in=1, stride=1, return_regions=True)[0]
    by_hand = torch.zeros(H, W, dtype=torch.float64)
    # pixel p of region 1 receives scene pixel q = p - shift
    by_hand[shift[0]:, shift[1]:] = 0.3 * x[0, 0, :H - shift[0], :W - shift[1]]
    assert torch.allclose(regions[0], 0.5 * x[0, 0], atol=1e-12)
    assert torch.allclose(regions[1], 0.2 * x[0, 0] + by_hand, atol=1e-12)


def test_read_regions_follow_the_mask_grid():
    geom = _geometry(6, 3, 20, (4, 6))
    assert [geom.axis_px(e) for e in range(6)] == [(0, 0), (0, 20), (0, 40), (-20, 0), (-20, 20), (-20, 40)]
    canvas = torch.arange(200 * 200, dtype=torch.float64).reshape(1, 200, 200)
    reg = read_regions(canvas, (-100, -100), geom)
    # region 4's top-left pixel is its axis minus (H // 2, W // 2)
    assert reg[0, 4, 0, 0] == canvas[0, -20 - 2 + 100, 20 - 3 + 100]
    assert sorted(geom.neighbours(4)) == [0, 1, 2, 3, 4, 5]


def test_array_geometry_rounds_the_pitch_and_refuses_overlapping_regions():
    cfg = load_config("default").optics
    g = array_geometry(cfg, 96, 3, (64, 192))
    D = cfg.n_cells * cfg.cell_pitch_m
    assert g.pitch_px == math.ceil(D / cfg.pixel_pitch_m) and g.n_cols == 12
    assert 0 <= g.mask_gap_m() < cfg.pixel_pitch_m
    assert array_geometry(cfg, 96, 3, (64, 192), gap_m=1e-4).pitch_px == math.ceil((D + 1e-4) / cfg.pixel_pitch_m)
    with pytest.raises(InputError, match="overlap"):
        array_geometry(cfg, 96, 3, (64, 400))
    with pytest.raises(InputError, match="gap_m"):
        array_geometry(cfg, 96, 3, (64, 192), gap_m=-1.0)


# ---------------------------------------------------------------- the halo PSF
def _lens(cfg, wavelength_m):
    x = (np.arange(cfg.n_cells) - (cfg.n_cells - 1) / 2) * cfg.cell_pitch_m
    r2 = x[:, None] ** 2 + x[None, :] ** 2
    z = cfg.sensor_distance_m
    return torch.from_numpy(np.exp(-1j * 2 * np.pi / wavelength_m * (np.sqrt(r2 + z * z) - z)))


def test_halo_psf_converges_to_the_exact_engine_at_the_profiles_aperture():
    """Default geometry (257 cells, D/z 0.256, staircase): the fine-grid PSF of a lens on an
    11 x 11 window against the fast engine's exact field at 21 x 21 samples per pixel."""
    cfg = load_config("default").optics
    lam = 550e-9
    t = _lens(cfg, lam)
    exact = psf_fast(t[None], [lam], cfg, 11, subpixel=21)[0].double()
    errs = [((sensor_psf_one(t, lam, cfg, (5, 5), oversample=o).double() - exact).norm() / exact.norm()).item()
            for o in (1, 4)]
    assert errs[1] < 0.015 and errs[1] < errs[0]
    got = sensor_psf_one(t, lam, cfg, (5, 5), oversample=4).double()
    assert abs(got.sum() / exact.sum() - 1) < 1e-4  # the window's energy, to float32 precision
    # the same PSF read half a pixel off (each pixel the mean of itself and its neighbour): clearly wrong
    wrong = 0.5 * (exact + torch.roll(exact, 1, -1))
    assert ((wrong - exact).norm() / exact.norm()).item() > 5 * errs[1]


def test_blocked_halo_psf_is_the_one_piece_psf(monkeypatch):
    """Above a size (the paper's windows) the halo is computed a block of columns, then of rows, at a
    time, with the transfer function rebuilt per block, to stay within a few GB: forced here on a
    smoke-size window with blocks of a few hundred samples, it is the one-piece PSF to float32
    rounding (the one-piece path is the committed results' computation, kept as it is)."""
    import importlib

    mod = importlib.import_module("dkolib.optics.sensor_psf")
    cfg = load_config("smoke").optics
    lam = 400e-9
    n = cfg.n_cells
    phase = 2 * math.pi * torch.rand(n, n, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    t = torch.polar(torch.ones_like(phase), phase).to(torch.complex64)
    half = (40, 57)
    mod._operators.cache_clear()
    whole = mod.sensor_psf_one(t, lam, cfg, half).double()
    monkeypatch.setattr(mod, "_CACHED_TRANSFER_ELEMENTS", 0)
    monkeypatch.setattr(mod, "_BLOCK_ELEMENTS", 1 << 13)
    mod._operators.cache_clear()
    try:
        blocked = mod.sensor_psf_one(t, lam, cfg, half).double()
    finally:
        mod._operators.cache_clear()
    assert blocked.shape == whole.shape == (81, 115)
    assert ((blocked - whole).norm() / whole.norm()).item() < 1e-5
    # the bound discriminates: the same PSF one pixel off misses it by far
    assert ((blocked - torch.roll(whole, 1, 0)).norm() / whole.norm()).item() > 1e-2


def test_halo_psf_band_limited_convention_differs_from_the_staircase():
    """At the default geometry the band-limited reading of the cells is another device: the fine-grid
    PSF follows the configured cell model, as the engines do."""
    cfg = load_config("default").optics
    lam = 400e-9
    rng = np.random.default_rng(0)
    t = torch.from_numpy(np.exp(2j * np.pi * rng.random((cfg.n_cells, cfg.n_cells))))
    band = dataclasses.replace(cfg, cell_model="bandlimited")
    for c in (cfg, band):
        exact = psf_fast(t[None], [lam], c, 15, subpixel=9)[0].double()
        got = sensor_psf_one(t, lam, c, (7, 7), oversample=2).double()
        assert abs(got.sum() / exact.sum() - 1) < 0.02  # two quadratures of a speckle field
    stair = sensor_psf_one(t, lam, cfg, (7, 7)).sum()
    bl = sensor_psf_one(t, lam, band, (7, 7)).sum()
    assert 0.5 < (stair / bl).item() < 0.8  # the cell's sinc^2 over the band (about 0.6)


# ---------------------------------------------------------------- baffles
def test_baffle_removes_the_light_beyond_its_angle():
    """Two half-apertures deflecting at sin 0.03 and 0.09 (along axis 1) under a cut-off at 0.06:
    the ray picture removes exactly the second half's light; a cut-off at 0.12 removes none."""
    cfg = SimpleNamespace(n_cells=65, cell_pitch_m=2.5e-6, pixel_pitch_m=2.74e-6, sensor_distance_m=400e-6,
                          source_distance_m=10.0, cell_model="bandlimited")
    lam = 550e-9
    x = (np.arange(65) - 32) * cfg.cell_pitch_m
    s = np.where(x[None, :] < 0, 0.03, 0.09) * np.ones((65, 1))
    t = torch.from_numpy(np.exp(1j * 2 * np.pi / lam * s * x[None, :]))
    half = (40, 60)  # catches both beams: 0.09 over 400 um travels 36 um
    free = sensor_psf_one(t, lam, cfg, half).sum().item()
    cut = sensor_psf_one(t, lam, cfg, half, baffle_sin=0.06).sum().item()
    wide = sensor_psf_one(t, lam, cfg, half, baffle_sin=0.12).sum().item()
    assert free > 0.97
    assert cut / free == pytest.approx(0.5, abs=0.02)
    assert wide / free == pytest.approx(1.0, abs=0.01)


def test_baffle_angle_of_a_wall():
    assert baffle_sin_for_wall(1.0, 1.0) == pytest.approx(math.sin(math.pi / 4))
    with pytest.raises(ValueError):
        baffle_sin_for_wall(1.0, 0.0)


def test_light_budget_sums_by_region():
    H, W, a = 4, 6, 10
    geom = _geometry(4, 2, a, (H, W))
    R0, R1 = geom.halo_half_px()
    psfs = torch.zeros(4, 2 * R0 + 1, 2 * R1 + 1, dtype=torch.float64)
    psfs[:, R0, R1] = 0.4                  # on axis: own region and kernel
    psfs[0, R0, R1 - a] = 0.1              # lands on element 1's axis (one column to the right)
    psfs[0, R0 + a, R1 - a] = 0.05         # diagonal neighbour 3, at (-a, +a)
    psfs[0, R0 + 5, R1] = 0.2             # between the regions
    b = light_budget(psfs, geom, kernel_size=3, render_window_px=3,
                     transmitted=torch.tensor([1.0, 0.4, 0.4, 0.4], dtype=torch.float64))
    assert b["kernel"][0] == pytest.approx(0.4) and b["own_region"][0] == pytest.approx(0.4)
    assert b["neighbours"][0] == pytest.approx(0.15)
    assert b["window"][0] == pytest.approx(0.75)
    assert b["beyond_window"][0] == pytest.approx(0.25)


# ---------------------------------------------------------------- the front end and the README section
def test_sensor_front_end_reads_the_whole_sensor_and_trains_its_gain():
    from dkolib.dko.sensor_eval import SensorFrontEnd

    torch.manual_seed(2)
    cfg = load_config("smoke").optics
    n_out, n_in, H, W = 2, 3, 6, 8
    E = n_out * n_in * 2
    geom = _geometry(E, 6, 9, (H, W))
    R0, R1 = geom.halo_half_px()
    psfs = torch.rand(E, 2 * R0 + 1, 2 * R1 + 1) ** 6
    fe = SensorFrontEnd(torch.nn.Module(), cfg, n_out, n_in, psfs, geom, mode="sensor",
                        gain=torch.rand(n_out, n_in, 2) + 0.5, trainable_gain=True)
    x = torch.rand(2, n_in, H, W)
    y = fe(x)
    assert torch.allclose(y, render_sensor(x, psfs, geom, n_out, n_in, stride=2, gain=fe.gain.detach()), atol=1e-6)
    y.square().sum().backward()
    assert fe.gain.grad is not None and fe.gain.grad.abs().sum() > 0
    # its kernels are the central crop, as in the other modes
    k = cfg.kernel_size
    crop = psfs[:, R0 - k // 2:R0 + k // 2 + 1, R1 - k // 2:R1 + k // 2 + 1].reshape(n_out, n_in, 2, k, k)
    g = fe.gain.detach()
    assert torch.allclose(fe.kernels(), crop[:, :, 0] * g[..., 0, None, None] - crop[:, :, 1] * g[..., 1, None, None])
    noisy = SensorFrontEnd(torch.nn.Module(), cfg, n_out, n_in, psfs, geom, mode="sensor_noise")
    noisy.generator = torch.Generator().manual_seed(0)
    assert not torch.allclose(noisy(x), SensorFrontEnd(torch.nn.Module(), cfg, n_out, n_in, psfs, geom)(x))
    with pytest.raises(ValueError, match="mode"):
        SensorFrontEnd(torch.nn.Module(), cfg, n_out, n_in, psfs, geom, mode="full_psf")


def test_readme_sensor_section_reports_the_dropped_light(tmp_path):
    import pandas as pd

    from dkolib.study.paths import ProfilePaths
    from dkolib.study.readme_sensor import sensor_section

    out = tmp_path / "results" / "default" / "sensor"
    out.mkdir(parents=True)
    light = pd.DataFrame({"design": "dko", "gap_m": 0.0, "baffle_wall_m": 0.0, "element": [0, 1],
                          "wavelength_nm": [550.0, 550.0], "kernel": [0.1, 0.1], "render_window": [0.2, 0.3],
                          "own_region": [0.4, 0.6], "neighbours": [0.1, 0.2], "window": [0.6, 0.9],
                          "beyond_window": [0.3, 0.05]})
    light.to_csv(out / "light_budget.csv", index=False)
    ev = pd.DataFrame({"design": ["dko", "dko", "dko"], "gap_m": [float("nan"), 0.0, 0.0],
                       "baffle_wall_m": [float("nan"), 0.0, 0.0], "eval": ["full_psf_noise", "sensor", "sensor_noise"],
                       "abs_rel": [0.3, 0.4, 0.5], "images": 48})
    ev.to_csv(out / "sensor_eval.csv", index=False)
    text = sensor_section(ProfilePaths("default", tmp_path))
    # own region 0.4 / 0.6 of which the render window holds 0.2 / 0.3: half is dropped; neighbours 0.15
    assert "drop 0.5 of the light" in text and "0.15 of its light lands where its neighbours" in text
    assert "| dko | 0.3 | 0.4 | 0.5 |" in text and "first 48 test images" in text


def test_readme_sensor_sentences_follow_hand_tables():
    """The generated sentences name exactly the designs worse than the constant predictor, and the
    setting that helps most, on tables made by hand."""
    import pandas as pd

    from dkolib.study.readme_sensor import below_constant_sentence, setting_sentence

    piv = pd.DataFrame({"design": ["dko", "dko_finetune_sensor", "e2e"], "sensor_noise": [1.8, 0.33, 0.6]})
    text = below_constant_sentence(piv, 0.5)
    assert "`dko`" in text and "`e2e`" in text and "dko_finetune_sensor`," not in text
    assert "`dko_finetune_sensor`" not in text.split("worse than")[0]
    assert "better than the constant" in below_constant_sentence(piv, 2.0)
    vpiv = pd.DataFrame({"sensor_noise": [1.8, 1.3, 1.7], "light in neighbours' regions": [0.10, 0.02, 0.09]},
                        index=["gap 0 um", "gap 320 um", "gap 0 um, walls 2.51 mm"])
    text = setting_sentence(vpiv)
    assert "gap 320 um" in text and "from 1.8 to 1.3" in text and "0.02 of its light" in text


# ---------------------------------------------------------------- ideal optics on the whole sensor
def test_ideal_optics_on_the_whole_sensor_computes_the_electronic_layer():
    """Ideal optics has no halo and no crosstalk: read from the whole sensor (regions edge to edge)
    it gives the electronic first layer, checked against ``F.conv2d`` of the network's own weight;
    with noise it differs, and the noise is drawn on the summed sensor at the profile's photons."""
    import torch.nn.functional as F

    from dkolib.depth.network import DepthNet
    from dkolib.dko.sensor_eval import ideal_optics_sensor_model, ideal_sensor_psfs

    torch.manual_seed(0)
    cfg = load_config("smoke")
    net = DepthNet(cfg.model, kernel_size=cfg.optics.kernel_size).eval()
    H, W = 16, 24
    sensor_cfg = SimpleNamespace(gap_m=cfg.sensor.gap_m)
    x = torch.rand(2, 3, H, W)
    model = ideal_optics_sensor_model(net, cfg.optics, sensor_cfg, (H, W), mode="sensor")
    fe = model.first_layer
    expected = F.conv2d(x, net.first_layer.weight.detach(), stride=2, padding=cfg.optics.kernel_size // 2)
    with torch.no_grad():
        assert torch.allclose(fe(x), expected, atol=1e-5)
    # the PSF window reaches the neighbours, and all of each PSF's light sits in the kernel window
    psfs, gain = ideal_sensor_psfs(net.first_layer.weight.detach(), fe.geometry)
    R0, R1 = fe.geometry.halo_half_px()
    assert psfs.shape[-2:] == (2 * R0 + 1, 2 * R1 + 1)
    k = cfg.optics.kernel_size
    core = psfs[:, R0 - k // 2:R0 + k // 2 + 1, R1 - k // 2:R1 + k // 2 + 1]
    assert torch.allclose(core.sum((-2, -1)), psfs.sum((-2, -1))) and torch.allclose(core.sum((-2, -1)), torch.ones(len(psfs)))
    # a wrong convention (a flipped kernel: convolution instead of correlation) does not pass
    flipped = F.conv2d(x, net.first_layer.weight.detach().flip((-2, -1)), stride=2, padding=k // 2)
    assert not torch.allclose(expected, flipped, atol=1e-3)
    noisy = ideal_optics_sensor_model(net, cfg.optics, sensor_cfg, (H, W), mode="sensor_noise").first_layer
    noisy.generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        diff = noisy(x) - expected
    assert diff.abs().max() > 1e-3 and diff.abs().mean() < expected.abs().mean()


def test_readme_sensor_sentence_measures_against_the_bound_on_the_same_sensor_and_e2e_on_the_same_images():
    """Hand table: the ratio to ideal optics uses its whole-sensor noisy row (not the single-window one),
    and the E2E compared is the one whose back end saw the same whole-sensor images."""
    import pandas as pd

    from dkolib.study.readme_sensor import sensor_sentence

    piv = pd.DataFrame({"design": ["electronic", "ideal_optics", "dko", "dko_finetune_sensor", "e2e_4x",
                                   "e2e_4x_finetune_sensor"],
                        "full_psf_noise": [0.2, 0.25, 0.4, 0.38, 0.3, 0.5],
                        "sensor_noise": [float("nan"), 0.26, 1.8, 0.312, 0.9, 0.45]})
    text = sensor_sentence(piv)
    # 0.312 / 0.2 = 1.56; 0.312 / 0.26 = 1.2; not 0.312 / 0.25 = 1.25
    assert "`dko_finetune_sensor` at 0.312, 1.56x the electronic network" in text
    assert "1.2x the bound ideal optics sets on the same sensor (0.26)" in text
    assert "`e2e_4x_finetune_sensor`, reads 0.45, so DKO is better than E2E" in text
    piv.loc[piv["design"] == "e2e_4x_finetune_sensor", "sensor_noise"] = 0.3
    assert "not better than E2E" in sensor_sentence(piv)


def test_sensor_designs_are_checked_when_the_config_loads():
    from dkolib.config import ConfigError

    cfg = load_config("default")
    assert set(cfg.sensor.finetune_designs) <= set(cfg.sensor.designs)
    with pytest.raises(ConfigError, match="sensor.finetune_designs"):
        load_config("default", {"sensor.finetune_designs": ["e2e_1x"], "sensor.designs": ["dko"]})
    with pytest.raises(ConfigError, match="sensor.designs"):
        load_config("default", {"sensor.designs": ["dko", "e2e_9x"]})


def test_a_whole_sensor_mode_without_psfs_is_refused_with_what_to_pass():
    from dkolib.depth.network import DepthNet
    from dkolib.dko.evaluation import evaluate_design
    from dkolib.dko.frontend import make_hybrid

    cfg = load_config("smoke", {"optics.n_cells": 33, "optics.meta_atom": "ideal"})
    net = DepthNet(cfg.model, kernel_size=cfg.optics.kernel_size)
    hybrid = make_hybrid(net, torch.nn.Module(), cfg.optics)
    with pytest.raises(ValueError, match="sensor=\\(psfs, geometry\\)"):
        evaluate_design(hybrid, [], cfg, evals=("sensor",))
    with pytest.raises(ValueError, match="evals must be"):
        evaluate_design(hybrid, [], cfg, evals=("whole",))


def test_sensor_cost_benchmark_rows_and_sentence(tmp_path):
    """The benchmark writes one PSF row per wavelength (the array's time scaled by the metasurfaces of
    that wavelength) and one render row; the README sentence reads them."""
    import subprocess
    import sys

    import pandas as pd

    from dkolib.study.readme_sensor import bench_sentence

    out = tmp_path / "sensor_cost.csv"
    subprocess.run([sys.executable, "scripts/bench_sensor.py", "--sizes", "smoke", "--repeats", "1", "--out", str(out)],
                   check=True, capture_output=True)
    table = pd.read_csv(out)
    psf, render = table[table["part"] == "psf"], table[table["part"] == "render"]
    cfg = load_config("smoke")
    assert sorted(psf["wavelength_nm"]) == sorted(round(w * 1e9, 3) for w in cfg.optics.wavelengths_m)
    E = int(render["n_elements"].iloc[0])
    assert (psf["array_seconds_estimate"] / psf["seconds"]).round(6).eq(E / 3).all()
    H, W = cfg.data.height, cfg.data.width
    assert render["spectra_gb"].iloc[0] == pytest.approx(E * 3 * (2 * H - 1) * W * 8 / 1e9)
    text = bench_sentence(pd.DataFrame([
        {"size": "paper", "part": "psf", "wavelength_nm": 400.0, "seconds": 30.0, "array_seconds_estimate": 3600.0,
         "n_elements": 384, "n_cells": 1025, "image_hw": "192x640", "psf_window_px": "5x5", "spectra_gb": None,
         "peak_rss_mb": 2048.0},
        {"size": "paper", "part": "render", "wavelength_nm": None, "seconds": 4.0, "array_seconds_estimate": None,
         "n_elements": 384, "n_cells": 1025, "image_hw": "192x640", "psf_window_px": "5x5", "spectra_gb": 2.26,
         "peak_rss_mb": 2048.0}]))
    assert "one PSF 30 s at 400 nm, so about 1 CPU-hours" in text and "one noisy frame 4 s from 2.26 GB" in text
    assert "peak 2 GB" in text
