"""A design read through another optical model (dkolib.fab.as_fabricated)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from dkolib.config import load_config
from dkolib.depth.network import DepthNet
from dkolib.depth.predict import predict_depth
from dkolib.dko.evaluation import hybrid_from_dko
from dkolib.dko.kernels import merge_signed
from dkolib.fab.as_fabricated import array_radii_m, designed_kernels, read_design, rebuild_array
from dkolib.optics import psf
from dkolib.optics.metaatoms import DEFAULT_LIBRARY_PATH, MetaAtomLibrary, load_atom
from dkolib.optics.metasurface import MetasurfaceArray
from dkolib.optics.render import crop_center

torch.set_num_threads(1)


def _design(cell_model="bandlimited"):
    """A smoke-sized hybrid whose metasurfaces have random radii (white phase at the cell scale)."""
    cfg = load_config("smoke", {"optics.n_cells": 33, "optics.cell_model": cell_model})
    torch.manual_seed(0)
    net = DepthNet(cfg.model, kernel_size=cfg.optics.kernel_size).eval()
    atom = MetaAtomLibrary.load()
    array = MetasurfaceArray(net.conv1_channels, 3, cfg.optics, atom, init="random",
                             generator=torch.Generator().manual_seed(1)).requires_grad_(False)
    n_el = net.conv1_channels * 3 * 2
    model = hybrid_from_dko(net, array, torch.ones(net.conv1_channels, 3, 2), cfg.optics)
    assert n_el == array.latent.shape[0]
    return model, cfg, atom


def _own_predictions(model, n=2):
    g = torch.Generator().manual_seed(3)
    rgb = torch.rand(n, 3, 32, 64, generator=g)
    depth = predict_depth(model.eval(), rgb).clamp(0.01, 79.0)
    return [{"rgb": rgb[i], "depth_m": depth[i]} for i in range(n)]


def test_a_design_read_by_its_own_model_is_itself_and_the_staircase_is_not():
    model, cfg, atom = _design("bandlimited")
    target = designed_kernels(model)  # realisable by construction: the design's own kernels
    dataset = _own_predictions(model)
    own = read_design(model, target, cfg, cfg.optics, atom, dataset, evals=("crop",))
    assert own["kernel_err"] < 1e-5 and own["corr"] > 1 - 1e-6
    assert own["abs_rel_crop"] < 1e-4  # the data are this design's own predictions
    fe = model.first_layer
    with torch.no_grad():
        window = psf(fe.array, fe.array.wavelengths_m, cfg.optics, cfg.optics.loss_window_px)
    light = crop_center(window, cfg.optics.kernel_size).sum((-2, -1))
    lit = merge_signed(crop_center(window, cfg.optics.kernel_size), fe.n_out, fe.n_in).ne(0).any()
    assert lit and own["light_crop"] == pytest.approx(float(light.mean()), rel=1e-6)
    # the same radii as the mask builds them: white phase loses the cell's aperture factor, and the
    # kernels change although the gains are refitted
    stair_optics = dataclasses.replace(cfg.optics, cell_model="staircase")
    stair = read_design(model, target, cfg, stair_optics, atom, dataset, evals=("crop",))
    assert stair["light_crop"] < 0.9 * own["light_crop"]
    assert stair["kernel_err"] > 0.05 and stair["abs_rel_crop"] > own["abs_rel_crop"]


def test_rebuilt_arrays_keep_their_radii_and_refuse_a_library_that_cannot_hold_them(tmp_path):
    model, cfg, atom = _design()
    array = model.first_layer.array
    same = rebuild_array(array, dataclasses.replace(cfg.optics, cell_model="staircase"), atom)
    assert torch.equal(same.latent, array.latent)
    # a library over a narrower radius range: the design's radii fall outside it
    table = pd.read_csv(DEFAULT_LIBRARY_PATH)
    radii = sorted(table["radius_m"].unique())
    narrow = table[(table["radius_m"] >= radii[5]) & (table["radius_m"] <= radii[-6])]
    path = tmp_path / "narrow.csv"
    narrow.to_csv(path, index=False)
    narrow_atom = load_atom(str(path))
    with pytest.raises(ValueError, match="outside the library"):
        rebuild_array(array, cfg.optics, narrow_atom)
    # radii inside the narrow range survive the change of latent parametrisation (to 0.01 nm: a radius
    # on the range's edge is moved just inside it; the mask quantises radii to 1 nm)
    inside = MetasurfaceArray(array.n_out, array.n_in, cfg.optics, atom, init="lens")
    with torch.no_grad():
        r = array_radii_m(array).clamp(narrow_atom.r_min_m, narrow_atom.r_max_m)
        inside.latent.copy_(torch.logit((r - atom.r_min_m) / (atom.r_max_m - atom.r_min_m), eps=1e-6))
    moved = rebuild_array(inside, cfg.optics, narrow_atom)
    torch.testing.assert_close(array_radii_m(moved), array_radii_m(inside), rtol=0, atol=1e-11)


def test_finer_grids_hold_the_same_staircase_and_the_lattice_snaps_cell_edges():
    from dkolib.fab.as_fabricated import lattice_transmission, subdivided
    from dkolib.fab.layout import pillar_lattice

    model, cfg, _ = _design("staircase")
    array = model.first_layer.array
    with torch.no_grad():
        t = array.transmission()[:2]
    wls = array.wavelengths_m[:2]
    fine, fine_optics = subdivided(t, cfg.optics, 3)
    assert fine_optics.n_cells == 3 * cfg.optics.n_cells
    assert fine_optics.n_cells * fine_optics.cell_pitch_m == pytest.approx(cfg.optics.n_cells * cfg.optics.cell_pitch_m)
    with pytest.raises(ValueError, match="odd"):
        subdivided(t, cfg.optics, 2)
    # the staircase of 3 x 3 sub-cells is the same field as the cells': its PSF does not move (to float32
    # round-off), while the band-limited picture moves towards it as the grid refines
    window = cfg.optics.loss_window_px
    coarse = psf(t, wls, cfg.optics, window)
    torch.testing.assert_close(psf(fine, wls, fine_optics, window), coarse, rtol=2e-3, atol=1e-6 * float(coarse.max()))
    err = {}
    for f in (1, 3):
        field, optics = subdivided(t, dataclasses.replace(cfg.optics, cell_model="bandlimited"), f)
        err[f] = float((psf(field, wls, optics, window) - coarse).norm() / coarse.norm())
    assert err[3] < 0.5 * err[1], err
    # the lattice: every site of a cell holds the cell's value; 8 or 9 sites per 2.5 um cell at 300 nm
    lat, lat_optics = lattice_transmission(t, cfg.optics)
    lattice = pillar_lattice(cfg.optics.n_cells, cfg.optics.cell_pitch_m, cfg.optics.unit_cell_m)
    counts = set(np.diff(lattice.first_site).tolist())
    assert counts == {8, 9} and lat.shape[-1] == lat_optics.n_cells == len(lattice.site_dbu)
    for n in (0, cfg.optics.n_cells // 2, cfg.optics.n_cells - 1):
        sites = slice(int(lattice.first_site[n]), int(lattice.first_site[n + 1]))
        assert torch.equal(lat[:, sites, sites], t[:, n:n + 1, n:n + 1].expand(-1, sites.stop - sites.start,
                                                                               sites.stop - sites.start))
