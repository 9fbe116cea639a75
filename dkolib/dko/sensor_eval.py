"""Designs read on the whole sensor: the ``sensor`` and ``sensor_noise`` evaluation modes.

``sensor``: every metasurface's PSF over the sensor it reaches (:mod:`dkolib.optics.sensor`),
all of them summed on one sensor, each region read out, gained and subtracted as in the
other modes; ``sensor_noise``: the same with shot and read noise drawn on the summed sensor
(the halo's and the neighbours' photons add their noise to the signal's). The gain of a
design is used unchanged, as in :mod:`dkolib.dko.evaluation`.

The PSFs of a frozen design are computed once (:func:`sensor_psfs_for`, minutes for the
default array) and shared by both modes; the front end is differentiable in its gain and
in everything after it, so a back end can be fine-tuned on whole-sensor images.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn

from ..optics.sensor import ArrayGeometry, array_geometry, array_sensor_psfs, render_sensor
from ..optics.sensor_psf import baffle_sin_for_wall
from .frontend import OpticalFrontEnd, find_frontend, with_first_layer

SENSOR_MODES = ("sensor", "sensor_noise")


class SensorFrontEnd(OpticalFrontEnd):
    """An optical first layer read from the whole sensor, with given PSFs ``[E, 2 R0 + 1, 2 R1 + 1]``.

    ``mode``: ``'sensor'`` or ``'sensor_noise'``. :meth:`kernels` and :meth:`match_gain`
    read the central ``kernel_size`` pixels as in the other modes.
    """

    def __init__(self, array: nn.Module, optics_cfg, n_out: int, n_in: int, psfs: torch.Tensor,
                 geometry: ArrayGeometry, mode: str = "sensor", gain: torch.Tensor | None = None,
                 trainable_gain: bool = False):
        if mode not in SENSOR_MODES:
            raise ValueError(f"mode must be one of {SENSOR_MODES}, got {mode!r}")
        super().__init__(array, optics_cfg, n_out, n_in, mode="full_psf", gain=gain,
                         trainable_gain=trainable_gain)
        self.mode = mode
        self.geometry = geometry
        # not persistent: a checkpoint of a model read this way holds the same keys as any hybrid's
        self.register_buffer("sensor_psfs", psfs.detach().float(), persistent=False)
        self._spectra: torch.Tensor | None = None

    def compute_psf(self) -> torch.Tensor:
        return self.sensor_psfs

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        from ..optics.render import SensorNoise
        from ..optics.sensor import region_kernels, region_spectra

        if images.dim() != 4 or images.shape[1] != self.n_in:
            raise ValueError(f"expected images [B, {self.n_in}, H, W], got {tuple(images.shape)}")
        cdtype = torch.complex128 if images.dtype == torch.float64 else torch.complex64
        if self._spectra is None or self._spectra.dtype != cdtype:
            kernels = region_kernels(self.sensor_psfs.to(images.dtype), self.geometry, self.n_in)
            self._spectra = region_spectra(kernels)
        noise = (SensorNoise(self.optics_cfg.photons_per_pixel, self.optics_cfg.read_noise_e)
                 if self.mode == "sensor_noise" else None)
        return render_sensor(images, self.sensor_psfs, self.geometry, self.n_out, self.n_in, stride=2,
                             gain=self.gain, noise=noise, generator=self.generator, spectra=self._spectra)

    def extra_repr(self) -> str:
        return (f"n_out={self.n_out}, n_in={self.n_in}, mode={self.mode!r}, "
                f"psf_window={tuple(self.sensor_psfs.shape[-2:])}, pitch_px={self.geometry.pitch_px}")


def geometry_for(model: nn.Module, sensor_cfg, optics_cfg, image_hw: tuple[int, int],
                 gap_m: float | None = None) -> ArrayGeometry:
    """The sensor grid of a hybrid ``model``'s array, at ``gap_m`` (default ``sensor_cfg.gap_m``)."""
    fe = find_frontend(model)
    if fe is None:
        raise TypeError("a whole-sensor evaluation needs a hybrid model (an OpticalFrontEnd first layer)")
    gap = sensor_cfg.gap_m if gap_m is None else gap_m
    return array_geometry(optics_cfg, fe.n_out * fe.n_in * 2, fe.n_in, image_hw, gap_m=gap)


def baffle_sin_of(sensor_cfg, optics_cfg, wall_m: float | None = None) -> float | None:
    """The angular cut-off of walls ``wall_m`` high (default ``sensor_cfg.baffle_wall_m``; 0: none)."""
    wall = sensor_cfg.baffle_wall_m if wall_m is None else wall_m
    if not wall:
        return None
    return baffle_sin_for_wall(optics_cfg.n_cells * optics_cfg.cell_pitch_m, wall)


def sensor_psfs_for(model: nn.Module, optics_cfg, geometry: ArrayGeometry, baffle_sin: float | None = None,
                    oversample: float = 1.0, progress: bool = False) -> torch.Tensor:
    """Whole-sensor PSFs of a hybrid ``model``'s array (:func:`dkolib.optics.sensor.array_sensor_psfs`)."""
    fe = find_frontend(model)
    if fe is None:
        raise TypeError("a whole-sensor evaluation needs a hybrid model (an OpticalFrontEnd first layer)")
    return array_sensor_psfs(fe.array, optics_cfg, geometry, baffle_sin=baffle_sin, oversample=oversample,
                             engine=fe.engine, progress=progress)


@contextmanager
def sensor_front_end_mode(model: nn.Module, psfs: torch.Tensor, geometry: ArrayGeometry,
                          mode: str = "sensor_noise") -> Iterator[nn.Module]:
    """Temporarily read a hybrid ``model`` from the whole sensor (restored on exit; a gain learned
    inside the block is kept), as :func:`dkolib.dko.evaluation.front_end_mode` does for the
    single-window modes: a back end fine-tuned inside it learns to read whole-sensor images."""
    fe = find_frontend(model)
    if fe is None:
        raise TypeError("a whole-sensor front end needs a hybrid model (an OpticalFrontEnd first layer)")
    new = SensorFrontEnd(fe.array, fe.optics_cfg, fe.n_out, fe.n_in, psfs, geometry, mode=mode,
                         gain=fe.gain.detach().clone())
    old = model.replace_first_layer(new)
    try:
        yield model
    finally:
        model.replace_first_layer(old)
        with torch.no_grad():
            fe.gain.copy_(new.gain.detach())


def sensor_model(model: nn.Module, psfs: torch.Tensor, geometry: ArrayGeometry, mode: str = "sensor",
                 trainable_gain: bool = False) -> nn.Module:
    """A copy of the hybrid ``model`` read from the whole sensor (its gain copied, its array shared)."""
    fe = find_frontend(model)
    if fe is None:
        raise TypeError("a whole-sensor evaluation needs a hybrid model (an OpticalFrontEnd first layer)")
    new = SensorFrontEnd(fe.array, fe.optics_cfg, fe.n_out, fe.n_in, psfs, geometry, mode=mode,
                         gain=fe.gain.detach().clone(), trainable_gain=trainable_gain)
    return with_first_layer(model, new)


def ideal_sensor_psfs(kernels: torch.Tensor, geometry: ArrayGeometry) -> tuple[torch.Tensor, torch.Tensor]:
    """Ideal optics on the whole sensor: ``(psfs [E, 2 R0 + 1, 2 R1 + 1], gain [C_out, C_in, 2])``.

    Each metasurface puts all its light into the kernel window
    (:func:`dkolib.dko.evaluation.ideal_optics_psf`) and none anywhere else, so no halo and no
    crosstalk: the window is the one that reaches the neighbours
    (:meth:`ArrayGeometry.halo_half_px`), zero outside the central ``k x k`` taps.
    """
    from .evaluation import ideal_optics_psf

    psf, gain = ideal_optics_psf(kernels)
    k = psf.shape[-1]
    R0, R1 = geometry.halo_half_px()
    out = psf.new_zeros((psf.shape[0], 2 * R0 + 1, 2 * R1 + 1))
    out[:, R0 - k // 2:R0 - k // 2 + k, R1 - k // 2:R1 - k // 2 + k] = psf
    return out, gain


def ideal_optics_sensor_model(stage1_model: nn.Module, optics_cfg, sensor_cfg, image_hw: tuple[int, int],
                              mode: str = "sensor_noise") -> nn.Module:
    """The electronic ``stage1_model`` read through ideal optics on the whole sensor (eval mode).

    The array sits on the sensor grid of ``sensor_cfg`` (its gap); each region receives exactly
    its kernel, so ``'sensor'`` computes the electronic network and ``'sensor_noise'`` adds the
    noise of ``optics_cfg`` drawn on the summed sensor: the bound on the whole sensor.
    """
    from ..optics.sensor import array_geometry

    weight = stage1_model.first_layer.weight.detach()
    n_out, n_in = weight.shape[:2]
    geometry = array_geometry(optics_cfg, n_out * n_in * 2, n_in, image_hw, gap_m=sensor_cfg.gap_m)
    psfs, gain = ideal_sensor_psfs(weight, geometry)
    fe = SensorFrontEnd(nn.Module(), optics_cfg, n_out, n_in, psfs, geometry, mode=mode, gain=gain)
    return with_first_layer(stage1_model, fe).eval()


__all__ = ["SENSOR_MODES", "SensorFrontEnd", "baffle_sin_of", "geometry_for", "ideal_optics_sensor_model",
           "ideal_sensor_psfs", "sensor_front_end_mode", "sensor_model", "sensor_psfs_for"]
