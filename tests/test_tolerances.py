"""Tolerance study: perturbed copies of a built design against physics computed independently."""

from __future__ import annotations

import importlib.util
import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dkolib.config import ConfigError, load_config
from dkolib.depth.network import DepthNet
from dkolib.dko.evaluation import evaluate_design, front_end_mode, hybrid_from_dko
from dkolib.fab.tolerances import (
    TABLE_COLUMNS,
    band_samples_m,
    degradation,
    photon_level,
    radius_error,
    read_noise,
    run_tolerance_study,
    sensor_distance_error,
    wavelength_band,
)
from dkolib.optics import IdealPhaseAtom, MetaAtomLibrary, MetasurfaceArray

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parent.parent


def _model(meta_atom: str, init: str, **overrides):
    """A smoke-sized hybrid (65-cell metasurfaces) with per-metasurface gains in [0.5, 2]."""
    cfg = load_config("smoke", {"optics.meta_atom": meta_atom, **overrides})
    torch.manual_seed(0)
    net = DepthNet(cfg.model, kernel_size=cfg.optics.kernel_size).eval()
    atom = MetaAtomLibrary.load() if meta_atom == "tio2" else IdealPhaseAtom()
    array = MetasurfaceArray(net.conv1_channels, 3, cfg.optics, atom, init=init,
                             generator=torch.Generator().manual_seed(1))
    gain = 0.5 + 1.5 * torch.rand(net.conv1_channels, 3, 2, generator=torch.Generator().manual_seed(2))
    return hybrid_from_dko(net, array, gain, cfg.optics), cfg


def _psf(model):
    with torch.no_grad():
        return model.first_layer.compute_psf()


def _reference_psf(model):
    """The unperturbed design's PSF through the ordinary front end (not the tolerance code)."""
    with torch.no_grad(), front_end_mode(model, "full_psf") as m:
        return m.first_layer.compute_psf().clone()


def test_zero_sigma_radius_error_reproduces_the_psf_exactly_and_leaves_the_design_alone():
    model, _ = _model("tio2", "random")
    latent = model.first_layer.array.latent.detach().clone()
    gain = model.first_layer.gain.clone()
    same = radius_error(model, sigma_m=0.0, generator=torch.Generator().manual_seed(0), mode="full_psf")
    assert torch.equal(_psf(same), _reference_psf(model))
    assert same.first_layer.array.clamped_cells == 0
    changed = radius_error(model, sigma_m=10e-9, generator=torch.Generator().manual_seed(0), mode="full_psf")
    assert not torch.allclose(_psf(changed), _reference_psf(model))
    assert torch.equal(model.first_layer.array.latent, latent)  # the original is untouched
    assert torch.equal(model.first_layer.gain, gain) and torch.equal(changed.first_layer.gain, gain)
    assert model.first_layer.mode == "crop"


def test_bias_moves_every_radius_by_exactly_the_bias_except_the_clamped_cells():
    model, _ = _model("tio2", "random")  # radii uniform over the library's range: some clamp
    lib = model.first_layer.array.atom
    before = model.first_layer.array.radii_m().detach().double()
    for bias in (5e-9, -5e-9):
        after = radius_error(model, bias_m=bias).first_layer.array.radii_m().double()
        inside = (before + bias >= lib.r_min_m) & (before + bias <= lib.r_max_m)
        resolution = 2 * float(np.spacing(np.float32(lib.r_max_m)))  # radii are float32
        assert torch.allclose((after - before)[inside], torch.full_like(before[inside], bias), rtol=0,
                              atol=resolution)
        edge = lib.r_max_m if bias > 0 else lib.r_min_m
        assert torch.all(after[~inside] == torch.tensor(edge, dtype=torch.float32).double())
        built = radius_error(model, bias_m=bias).first_layer.array
        assert built.clamped_cells == int((~inside).sum()) > 0
        assert built.clamped_fraction == pytest.approx(float((~inside).double().mean()))


def _interior(before: torch.Tensor, lib, margin_m: float) -> torch.Tensor:
    """Cells whose nominal radius lies ``margin_m`` inside the library's range: none of them can
    be clamped by an error below ``margin_m``, and choosing them does not look at the errors."""
    return (before >= lib.r_min_m + margin_m) & (before <= lib.r_max_m - margin_m)


def test_configured_random_radius_errors_have_the_configured_size():
    from dkolib.fab.tolerances import tolerance_cases

    # radii uniform over the library's range, drawn from seed 1; the draws' seeds (tolerances.seed +
    # draw) are moved away from it: torch.randn from seed 1 is correlated with torch.rand from seed 1,
    # so selecting cells by their nominal radius would select the errors of draw 1 too
    model, cfg = _model("tio2", "random", **{"tolerances.seed": 100})
    lib = model.first_layer.array.atom
    before = model.first_layer.array.radii_m().detach().double()
    sigmas = sorted(cfg.tolerances.radius_sigma_m)
    cases = [c for c in tolerance_cases(cfg) if c.perturbation == "radius_random"]
    assert sorted({c.level for c in cases}) == pytest.approx([s * 1e9 for s in sigmas])  # the level is in nm
    assert {c.draw for c in cases} == set(range(cfg.tolerances.draws))
    for sigma in sigmas:
        # a cell 4 sigma inside the range is clamped with probability 6e-5: too rarely to matter
        inside = _interior(before, lib, 4 * sigma)
        n = int(inside.sum())
        assert n > 20_000  # the relative error of a sample std is ~ 1 / sqrt(2 n) < 0.5 %
        errors = []
        for case in (c for c in cases if c.level == pytest.approx(sigma * 1e9)):
            after = case.apply(model, mode="full_psf").first_layer.array.radii_m().double()
            d = (after - before)[inside]
            # float32 radii: the error is resolved to ~1e-14 m, far below the configured sigma
            assert float(d.std()) == pytest.approx(sigma, rel=0.03), (case, float(d.std()))
            assert abs(float(d.mean())) < 5 * sigma / math.sqrt(n)  # unbiased
            assert float((d.abs() < sigma).double().mean()) == pytest.approx(math.erf(1 / math.sqrt(2)), abs=0.01)
            errors.append(d)
        # the draws are independent: different errors, uncorrelated across draws
        assert len(errors) == cfg.tolerances.draws >= 2
        corr = np.corrcoef(errors[0].numpy(), errors[1].numpy())[0, 1]
        assert abs(corr) < 5 / math.sqrt(n)


def test_radius_bias_and_sigma_together_shift_the_mean_and_keep_the_spread():
    from dkolib.fab.tolerances import tolerance_cases

    model, cfg = _model("tio2", "random")  # radii drawn from seed 1; the errors below from seed 3
    lib = model.first_layer.array.atom
    before = model.first_layer.array.radii_m().detach().double()
    biases = [c for c in tolerance_cases(cfg) if c.perturbation == "radius_bias"]
    assert sorted(c.level for c in biases) == pytest.approx(sorted(b * 1e9 for b in cfg.tolerances.radius_bias_m))
    resolution = 2 * float(np.spacing(np.float32(lib.r_max_m)))  # radii are float32
    for case in biases:  # the configured bias cases: every interior radius moves by exactly the bias
        bias = case.level * 1e-9
        d = (case.apply(model, mode="full_psf").first_layer.array.radii_m().double() - before)
        inside = _interior(before, lib, abs(bias))
        assert float((d[inside] - bias).abs().max()) <= resolution
    for sigma, bias in itertools.product(cfg.tolerances.radius_sigma_m, cfg.tolerances.radius_bias_m):
        inside = _interior(before, lib, abs(bias) + 4 * sigma)
        n = int(inside.sum())
        assert n > 5_000
        after = radius_error(model, sigma_m=sigma, bias_m=bias, generator=torch.Generator().manual_seed(3),
                             mode="full_psf").first_layer.array.radii_m().double()
        d = (after - before)[inside]
        assert float(d.mean()) == pytest.approx(bias, abs=5 * sigma / math.sqrt(n)), (sigma, bias)
        assert float(d.std()) == pytest.approx(sigma, rel=0.05), (sigma, bias)


def test_radius_errors_need_a_meta_atom_library():
    model, _ = _model("ideal", "lens")
    with pytest.raises(TypeError, match="MetaAtomLibrary"):
        radius_error(model, sigma_m=1e-9)


def _rms_radius_m(psf: torch.Tensor, pitch_m: float) -> float:
    w = psf.shape[-1]
    x = (np.arange(w) - w // 2) * pitch_m
    q = psf.double().numpy()
    return float(np.sqrt((q * (x[:, None] ** 2 + x[None, :] ** 2)).sum() / q.sum()))


def test_sensor_distance_error_defocuses_an_ideal_lens_as_geometric_optics_predicts():
    # the 700 nm element: its lens phase is sampled without aliasing at this NA (550 and 400 nm alias)
    model, cfg = _model("ideal", "lens", **{"optics.render_window_px": 31})
    o = cfg.optics
    side_m = o.n_cells * o.cell_pitch_m  # square aperture
    peaks, rms = {}, {}
    for e in (-0.3, -0.2, -0.1, -0.05, -0.01, 0.0, 0.01, 0.05, 0.1, 0.2, 0.3):
        psf = _psf(sensor_distance_error(model, e, mode="full_psf"))[0]
        peaks[e], rms[e] = float(psf.max()), _rms_radius_m(psf, o.pixel_pitch_m)
    for sign in (1, -1):
        ladder = [peaks[sign * e] for e in (0.0, 0.01, 0.05, 0.1, 0.2, 0.3)]
        assert all(a > b for a, b in itertools.pairwise(ladder)), ladder  # the in-focus peak is the highest
    # Geometric optics: at z (1 + e) the ray from aperture point x lands at x |e|, so the blur's second
    # moment is e^2 <x^2 + y^2>, added to the in-focus spot's (diffraction, pixels). The cells are a
    # staircase: a cell whose lens phase tilts the light by direction sines (a_x, a_y) sends the share
    # sinc^2(p a_x / lambda) sinc^2(p a_y / lambda) of it along the ray (the rest goes to the grid's
    # replica orders), so the average is weighted by that blaze efficiency; a uniform square beam
    # (<x^2 + y^2> = D^2 / 6, the band-limited picture) overestimates the blur by 10 %.
    # Diffraction smears the blur's edge over ~ lambda z / D (2.7 um here, against 16-49 um blurs).
    lam, p, z = o.wavelengths_m[0], o.cell_pitch_m, o.sensor_distance_m
    xc = (np.arange(o.n_cells) - (o.n_cells - 1) / 2) * p
    X, Y = np.meshgrid(xc, xc, indexing="ij")
    r = np.sqrt(X ** 2 + Y ** 2 + z ** 2)
    blaze = np.sinc(p * X / (lam * r)) ** 2 * np.sinc(p * Y / (lam * r)) ** 2
    second_moment = float((blaze * (X ** 2 + Y ** 2)).sum() / blaze.sum())
    for e in (-0.3, -0.2, -0.1, 0.1, 0.2, 0.3):
        predicted = math.sqrt(rms[0.0] ** 2 + second_moment * e ** 2)
        assert rms[e] == pytest.approx(predicted, rel=0.05), (e, rms[e], predicted)
        uniform = math.sqrt(rms[0.0] ** 2 + (side_m * e) ** 2 / 6)
        if abs(e) >= 0.2:
            assert rms[e] < uniform / 1.07, (e, rms[e], uniform)


def test_band_samples_follow_the_midpoint_rule_and_stop_at_the_library_edges():
    nm = 1e-9
    np.testing.assert_allclose(band_samples_m(550 * nm, 20 * nm, 5), np.array([542, 546, 550, 554, 558]) * nm)
    np.testing.assert_allclose(band_samples_m(400 * nm, 40 * nm, 5, (400 * nm, 700 * nm)),
                               np.array([402, 406, 410, 414, 418]) * nm)
    np.testing.assert_allclose(band_samples_m(700 * nm, 40 * nm, 2, (400 * nm, 700 * nm)), np.array([685, 695]) * nm)
    assert band_samples_m(550 * nm, 0.0, 5).tolist() == [550 * nm]
    with pytest.raises(ValueError, match="outside the library range"):
        band_samples_m(390 * nm, 20 * nm, 5, (400 * nm, 700 * nm))


def test_zero_width_band_is_the_single_wavelength_psf_and_a_band_blurs_a_lens():
    model, _ = _model("tio2", "lens")
    assert torch.equal(_psf(wavelength_band(model, 0.0, 5, mode="full_psf")), _reference_psf(model))
    # a diffractive lens focuses lambda0 + d at z lambda0 / (lambda0 + d): a wider band blurs more
    peaks = [float(_psf(wavelength_band(model, b, 5, mode="full_psf"))[2].max()) for b in (0.0, 20e-9, 40e-9)]
    assert peaks[0] > peaks[1] > peaks[2], peaks


def test_a_band_cannot_be_evaluated_through_a_rebuilt_single_wavelength_front_end():
    model, cfg = _model("ideal", "lens")
    band = wavelength_band(model, 20e-9, 3)
    data = [{"rgb": torch.rand(3, 32, 32), "depth_m": torch.full((1, 32, 32), 5.0)}]
    with pytest.raises(TypeError, match="band"):
        evaluate_design(band, data, cfg, evals=("full_psf",))


def test_photon_level_scales_the_shot_noise_variance_as_one_over_photons():
    model, _ = _model("ideal", "lens")
    v = 0.5
    images = torch.full((1, 3, 128, 128), v)
    clean = photon_level(model, 1000.0, mode="full_psf")
    with torch.no_grad():
        y0 = clean.first_layer(images)
    pos, neg = clean.first_layer.split_psf()
    g = clean.first_layer.gain  # [C_out, C_in, 2]
    w = pos.shape[-1]
    inner = slice((w // 2 + 1) // 2, (128 - w // 2) // 2)  # read-outs whose window lies inside the image
    # each read-out is v * sum(psf) on average; shot noise adds variance signal / photons per read-out
    signal = v * torch.stack([pos.sum((-1, -2)), neg.sum((-1, -2))], -1).double()  # [C_out, C_in, 2]
    for ppp in (100.0, 10000.0):
        noisy = read_noise(photon_level(model, ppp), 0.0)
        torch.manual_seed(3)
        with torch.no_grad():
            y = noisy.first_layer(images)
        resid = (y - y0)[0, :, inner, inner].double()
        predicted = (g.double() ** 2 * signal).sum((1, 2)) / ppp  # [C_out]
        ratio = resid.var(dim=(1, 2)) / predicted
        n = resid[0].numel()
        # the mean of C_out sample-variance ratios: 1 within 5 standard errors sqrt(2 / (n C_out))
        assert float(ratio.mean()) == pytest.approx(1.0, abs=5 * math.sqrt(2 / (n * len(ratio))))


def test_study_rows_at_the_nominal_levels_reproduce_the_ordinary_physical_evaluation():
    model, cfg = _model("tio2", "random")
    cfg = cfg.replace({"tolerances.eval_items": 2, "tolerances.draws": 2, "tolerances.radius_sigma_m": [0.0, 5e-9],
                       "tolerances.radius_bias_m": [0.0], "tolerances.distance_rel": [0.0],
                       "tolerances.photon_factors": [1.0], "tolerances.read_noise_factors": [1.0],
                       "tolerances.bandwidths_m": [0.0]})
    g = torch.Generator().manual_seed(4)
    data = [{"rgb": torch.rand(3, 32, 64, generator=g), "depth_m": 1 + 30 * torch.rand(1, 32, 64, generator=g)}
            for _ in range(3)]
    table = run_tolerance_study({"d": model}, data, cfg, references={"electronic": DepthNet(cfg.model).eval()},
                                progress=False)
    assert list(table.columns) == list(TABLE_COLUMNS) and set(table["eval_items"]) == {2}
    assert list(table["design"]).count("electronic") == 1
    # the design through the ordinary front end (dkolib.dko), not the tolerance code
    ordinary = evaluate_design(model, data, cfg, evals=("full_psf_noise",), seed=cfg.tolerances.seed, max_items=2)
    metrics = ["abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3"]
    d = table[table["design"] == "d"]
    nominal = d[~((d["perturbation"] == "radius_random") & (d["level"] > 0))]
    # none, sigma 0 (2 draws), bias 0, distance 0, photons x1, read noise x1, band 0
    assert len(nominal) == 8
    for _, row in nominal.iterrows():
        assert row[metrics].to_numpy(float) == pytest.approx(ordinary.iloc[0][metrics].to_numpy(float), rel=1e-6)
    moved = d[(d["perturbation"] == "radius_random") & (d["level"] == 5.0)]
    assert list(moved["draw"]) == [0, 1] and moved["abs_rel"].nunique() == 2  # two different fabrications


def test_degradation_gives_the_mean_increase_and_a_student_t_interval_over_draws():
    table = pd.DataFrame({
        "design": ["electronic", "a", "a", "a", "a"],
        "perturbation": ["none", "none", "radius_random", "radius_random", "sensor_distance"],
        "level": [0.0, 0.0, 2.0, 2.0, 5.0], "unit": ["", "", "nm", "nm", "%"], "draw": [0, 0, 0, 1, 0],
        "abs_rel": [0.9, 1.0, 1.1, 1.3, 1.05]})
    out = degradation(table).set_index("perturbation")
    assert list(out["design"]) == ["a", "a"]  # the reference row is no design
    r = out.loc["radius_random"]
    half = 12.7062 * (math.sqrt(0.02) / math.sqrt(2))  # t(0.975, 1 dof) * sd / sqrt(n), by hand
    assert (r["draws"], r["value"], r["delta"]) == (2, pytest.approx(1.2), pytest.approx(0.2))
    assert (r["delta_lo"], r["delta_hi"]) == (pytest.approx(0.2 - half, rel=1e-4), pytest.approx(0.2 + half, rel=1e-4))
    d = out.loc["sensor_distance"]
    assert d["delta"] == pytest.approx(0.05) and math.isnan(d["delta_lo"])


def test_tolerance_config_rejects_bad_levels_naming_the_key():
    with pytest.raises(ConfigError, match="tolerances.radius_sigma_m"):
        load_config("smoke", {"tolerances.radius_sigma_m": "[-1.0e-9]"})
    with pytest.raises(ConfigError, match="1.0e-9"):
        load_config("smoke", {"tolerances.bandwidths_m": "[2e-8]"})  # YAML text, not a number
    with pytest.raises(ConfigError, match="tolerances.draws"):
        load_config("smoke", {"tolerances.draws": 1})


def test_script_reports_a_missing_design_as_one_error_line(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("tolerance_study", ROOT / "scripts" / "tolerance_study.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    from dkolib.study.cli import run_cli

    status = run_cli(script.main, ["--profile", "smoke", "--design", f"dko={tmp_path / 'none.pt'}",
                                   "--stage1", str(tmp_path / "stage1.pt"), "--out", str(tmp_path / "t.csv")])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("error: ") and "none.pt" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "t.csv").exists()


def test_radius_errors_are_not_drawn_from_the_designs_own_random_stream():
    # a design's random start draws uniform radii from a generator seeded with a small integer;
    # the fabrication errors of draw d must not come from that same stream (seed + d would: the
    # Gaussian and the uniform numbers of one Mersenne-Twister stream are strongly related)
    from dkolib.fab.tolerances import radius_error_seed

    n = 20000
    for seed, draw in ((0, 0), (0, 1), (1, 0), (3, 2)):
        design = torch.rand(n, generator=torch.Generator().manual_seed(seed + draw), dtype=torch.float64)
        errors = torch.randn(n, generator=torch.Generator().manual_seed(radius_error_seed(seed, draw)),
                             dtype=torch.float64)
        r = torch.corrcoef(torch.stack([design, errors]))[0, 1].item()
        assert abs(r) < 5.0 / n ** 0.5  # independent streams: |r| ~ 1 / sqrt(n)
        same = torch.randn(n, generator=torch.Generator().manual_seed(seed + draw), dtype=torch.float64)
        assert abs(torch.corrcoef(torch.stack([design, same]))[0, 1].item()) > 10.0 / n ** 0.5
    assert len({radius_error_seed(0, d) for d in range(50)}) == 50
