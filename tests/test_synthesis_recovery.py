"""Stage 2 recovers a kernel bank that a metasurface array can realise exactly."""

import dataclasses

import torch

from dkolib.config import load_config
from dkolib.optics import MetasurfaceArray, crop_center, psf
from dkolib.dko import fit_element_gains, summarize_fidelity, synthesize
from dkolib.dko.synthesis import make_atom

torch.set_num_threads(1)

PAPER_APERTURE_OVER_Z = 1025 * 2.5e-6 / 1e-2   # the paper's D / z (2.5625 mm / 1 cm)


def _smoke_paper_na(**extra):
    n = load_config("smoke").optics.n_cells
    return load_config("smoke", {"optics.sensor_distance_m": n * 2.5e-6 / PAPER_APERTURE_OVER_Z, **extra})


def test_stage2_recovers_realisable_target():
    cfg = _smoke_paper_na()
    atom = make_atom(cfg.optics)
    c_out, c_in, k = 1, 3, cfg.optics.kernel_size
    # a known array (lens + strong phase noise: structured, non-trivial PSFs)
    truth = MetasurfaceArray(c_out, c_in, cfg.optics, atom, init="lens_random", init_noise_rad=1.5,
                             generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        crops = crop_center(psf(truth, window_px=cfg.optics.loss_window_px), k)          # [E, k, k]
    # signed kernels realisable by construction: K[o, i] = +/- 100 x (one element's crop PSF);
    # the other element of the pair must then go dark
    signs = [1.0, -1.0, 1.0]
    weight = torch.stack([signs[i] * 100.0 * crops[2 * i + (0 if signs[i] > 0 else 1)] for i in range(c_in)])[None]
    dko = dataclasses.replace(cfg.dko, init="random", loss="leakage", leakage_weight=0.0,
                              stop_window=0)
    res = synthesize(weight, cfg.optics, dko, atom=atom, generator=torch.Generator().manual_seed(0),
                     steps=150, lr=0.1, progress=False)
    s = summarize_fidelity(res.fidelity)
    assert s["channel_corr_elem_mean"] >= 0.99, s
    assert s["channel_norm_err_elem_mean"] <= 0.15, s
    assert res.element_gain.shape == (2 * c_out * c_in,)
    # started far from the truth
    assert res.history["corr_mean"].iloc[0] < 0.5


def test_fit_element_gains_exact_pairs_and_dark_elements():
    g = torch.Generator().manual_seed(0)
    c_out, c_in, k = 2, 3, 7
    p = torch.rand(2 * c_out * c_in, k, k, generator=g)
    true = torch.rand(2 * c_out * c_in, generator=g) + 0.5
    p[3] = 0.0                                                  # a dark element
    w = (p * true[:, None, None]).reshape(c_out, c_in, 2, k, k)
    w = w[:, :, 0] - w[:, :, 1]
    got = fit_element_gains(p, w)
    keep = torch.ones(2 * c_out * c_in, dtype=torch.bool)
    keep[3] = False
    torch.testing.assert_close(got[keep], true[keep], rtol=1e-4, atol=1e-5)
    assert got[3].item() == 0.0                                 # minimum-norm: no gain on a dark element
