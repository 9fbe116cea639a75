"""A design read through another optical model: as designed versus as fabricated.

A design fixes pillar radii; what those radii do depends on the optical model that
reads them: the cell model (:mod:`dkolib.optics.propagation`, ``optics.cell_model``) and the
meta-atom library. :func:`read_design` rebuilds a design's metasurfaces with the same radii
under another model and measures what a camera built from it would give:

* ``light_crop`` / ``light_render``: mean fraction of the aperture energy of a lit
  metasurface inside the ``k x k`` crop and the render window;
* ``corr``, ``kernel_err``: the signed kernels' channel correlation and relative error
  against the kernels the design is meant to realise, with the electronic gains refitted in
  closed form (a built camera is calibrated: its gains are fitted to the PSFs it has);
* ``abs_rel`` etc. per evaluation mode (crop, full PSF with sensor noise, ...), with those gains.

:func:`subdivided` and :func:`lattice_transmission` put a design's cells on a finer simulation
grid: each cell repeated ``s x s`` times (the same staircase, or a finer sampling for the
band-limited model), or the mask's own pillar lattice, every site taking its cell's transmission
(:func:`dkolib.fab.layout.pillar_lattice`: the cells' edges snap to the lattice).

Units: PSFs in fractions of the aperture energy, radii in metres.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..dko.evaluation import evaluate_design, find_frontend
from ..dko.fidelity import (element_gain_shape, fidelity_table, fit_element_gains, fit_gain,
                            summarize_fidelity)
from ..dko.frontend import OpticalFrontEnd, with_first_layer
from ..dko.kernels import merge_signed
from ..optics.metaatoms import latent_from_radius, radius_from_latent
from ..optics.metasurface import MetasurfaceArray
from ..optics.propagation import psf
from ..optics.render import crop_center
from .layout import pillar_lattice


def array_radii_m(array: nn.Module) -> torch.Tensor:
    """Pillar radii ``[E, N, N]`` (metres) of a library-based :class:`MetasurfaceArray`."""
    atom = getattr(array, "atom", None)
    if atom is None or not hasattr(atom, "r_min_m"):
        raise TypeError("array_radii_m needs a MetasurfaceArray of a meta-atom library (radius latents); "
                        f"got atom {type(atom).__name__}")
    return radius_from_latent(array.latent.detach(), atom)


def rebuild_array(array: nn.Module, optics_cfg, atom) -> MetasurfaceArray:
    """The same radii as ``array``, simulated with ``optics_cfg`` (e.g. another cell model) and ``atom``.

    Raises ``ValueError`` where a radius lies outside ``atom``'s range (it cannot be looked up).
    """
    radii = array_radii_m(array)
    lo, hi = float(radii.min()), float(radii.max())
    if lo < atom.r_min_m - 1e-12 or hi > atom.r_max_m + 1e-12:
        raise ValueError(f"the design's radii span {lo * 1e9:.1f}-{hi * 1e9:.1f} nm, outside the library's "
                         f"{atom.r_min_m * 1e9:.1f}-{atom.r_max_m * 1e9:.1f} nm")
    per_input = tuple(float(w) for w in array.wavelengths_m[0::2][:array.n_in])
    out = MetasurfaceArray(array.n_out, array.n_in, optics_cfg, atom, init="lens", wavelengths_m=per_input)
    same_range = (atom.r_min_m, atom.r_max_m) == (array.atom.r_min_m, array.atom.r_max_m)
    with torch.no_grad():  # the latent itself where it means the same radius (no round trip)
        out.latent.copy_(array.latent.detach() if same_range else latent_from_radius(radii, atom))
    return out.requires_grad_(False)


def designed_kernels(model: nn.Module) -> torch.Tensor:
    """The gain-applied signed crop kernels ``[C_out, C_in, k, k]`` (float64) of a hybrid model's front end.

    The crop is taken from the loss window's PSFs, as :func:`read_design` takes it (the window
    band limit, and with it the band-limited model's values, depend on the window).
    """
    fe = find_frontend(model)
    if fe is None:
        raise TypeError("designed_kernels needs a hybrid model (an OpticalFrontEnd first layer)")
    with torch.no_grad():
        window = psf(fe.array, fe.array.wavelengths_m, fe.optics_cfg, fe.optics_cfg.loss_window_px,
                     engine=fe.engine)
        return fe.kernels(window.to(torch.float64))


def read_design(model: nn.Module, target: torch.Tensor, cfg, optics_cfg, atom, dataset,
                evals: Iterable[str] = ("crop", "full_psf_noise"), seed: int = 0,
                max_items: int | None = None) -> dict:
    """Fidelity, light and depth metrics of a hybrid ``model`` with its radii read by another optical model.

    Args:
        model: hybrid ``DepthNet`` (its ``OpticalFrontEnd`` array holds radius latents).
        target: ``[C_out, C_in, k, k]`` kernels the design is meant to realise (DKO: the
            electronic network's; E2E: its own as-designed kernels, :func:`designed_kernels`).
        cfg: the profile's :class:`~dkolib.config.Config` (data, noise levels, gain model).
        optics_cfg: the optics that read the radii (``cell_model``, geometry).
        atom: the meta-atom library that maps radii to transmissions.
        dataset, evals, seed, max_items: as :func:`dkolib.dko.evaluation.evaluate_design`.
    Returns a dict: ``light_crop``, ``light_render``, ``corr``, ``kernel_err`` and ``abs_rel_<eval>``,
    ``a1_<eval>``, ``rmse_<eval>`` per evaluation mode.
    """
    fe = find_frontend(model)
    if fe is None:
        raise TypeError("read_design needs a hybrid model (an OpticalFrontEnd first layer)")
    array = rebuild_array(fe.array, optics_cfg, atom)
    target = target.detach().to(torch.float64).cpu()
    with torch.no_grad():
        window = psf(array, array.wavelengths_m, optics_cfg, optics_cfg.loss_window_px, engine=fe.engine)
        render = psf(array, array.wavelengths_m, optics_cfg, optics_cfg.render_window_px, engine=fe.engine)
    crop = crop_center(window, optics_cfg.kernel_size).to(torch.float64)
    channel_gain = fit_gain(merge_signed(crop, fe.n_out, fe.n_in), target)
    element_gain = fit_element_gains(crop, target)
    summary = summarize_fidelity(fidelity_table(window, target, channel_gain, psf_render=render,
                                                element_gain=element_gain))
    if cfg.optics.gain == "element":
        gain = element_gain_shape(element_gain, fe.n_out, fe.n_in)
        corr, err = summary["channel_corr_elem_mean"], summary["channel_norm_err_elem_mean"]
    else:
        gain = channel_gain
        corr, err = summary["channel_corr_mean"], summary["channel_norm_err_mean"]
    front = OpticalFrontEnd(array, optics_cfg, fe.n_out, fe.n_in, mode="crop", engine=fe.engine,
                            gain=gain.float(), trainable_gain=False, cache_psf=True)
    front.freeze_optics(True)
    read = with_first_layer(model, front).eval()
    metrics = evaluate_design(read, dataset, dataclasses.replace(cfg, optics=optics_cfg), evals=evals,
                              seed=seed, max_items=max_items)
    row = {"light_crop": summary["eff_crop_mean"], "light_render": summary["eff_render_mean"],
           "corr": corr, "kernel_err": err}
    for _, m in metrics.iterrows():
        for name in ("abs_rel", "rmse", "a1"):
            row[f"{name}_{m['eval']}"] = float(m[name])
    return row


def read_designs(designs: dict[str, tuple[nn.Module, torch.Tensor]], readings: dict[str, tuple], cfg, dataset,
                 **kwargs) -> pd.DataFrame:
    """:func:`read_design` for every design and reading -> one row each (``design``, ``reading`` first).

    ``designs``: ``name -> (model, target kernels)``; ``readings``: ``name -> (optics_cfg, atom)``.
    """
    rows = []
    for name, (model, target) in designs.items():
        for reading, (optics_cfg, atom) in readings.items():
            rows.append({"design": name, "reading": reading, "cell_model": optics_cfg.cell_model,
                         **read_design(model, target, cfg, optics_cfg, atom, dataset, **kwargs)})
    return pd.DataFrame(rows)


def subdivided(transmission: torch.Tensor, optics_cfg, factor: int) -> tuple[torch.Tensor, object]:
    """Each cell of ``transmission [E, N, N]`` repeated ``factor x factor`` times, and the optics of that grid.

    ``factor`` must be odd so the optical axis stays on a (sub-)cell centre; the grid has
    ``N factor`` cells at ``cell_pitch_m / factor`` over the same aperture.
    """
    factor = int(factor)
    if factor < 1 or factor % 2 != 1:
        raise ValueError(f"factor must be a positive odd integer (the axis stays on a cell), got {factor}")
    fine = transmission.repeat_interleave(factor, dim=-1).repeat_interleave(factor, dim=-2)
    return fine, dataclasses.replace(optics_cfg, n_cells=optics_cfg.n_cells * factor,
                                     cell_pitch_m=optics_cfg.cell_pitch_m / factor)


def lattice_transmission(transmission: torch.Tensor, optics_cfg) -> tuple[torch.Tensor, object]:
    """The mask's pillar lattice: ``[E, 2J+1, 2J+1]`` site transmissions at ``unit_cell_m``, and that grid's optics.

    Each site takes the transmission of the simulation cell its centre falls in, as
    :func:`dkolib.fab.layout.pillar_lattice` assigns radii; the aperture is the sites' unit
    cells (slightly smaller than ``N p`` where ``p / a`` is not whole).
    """
    lattice = pillar_lattice(optics_cfg.n_cells, optics_cfg.cell_pitch_m, optics_cfg.unit_cell_m)
    cell_of_site = torch.from_numpy(np.repeat(np.arange(lattice.n_cells), np.diff(lattice.first_site)))
    fine = transmission.index_select(-1, cell_of_site).index_select(-2, cell_of_site)
    return fine, dataclasses.replace(optics_cfg, n_cells=len(cell_of_site), cell_pitch_m=optics_cfg.unit_cell_m)


__all__ = ["array_radii_m", "designed_kernels", "lattice_transmission", "read_design", "read_designs", "rebuild_array",
           "subdivided"]
