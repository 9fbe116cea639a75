"""An array of metasurfaces: one per (output channel, input channel, sign) of a conv layer.

Element index ``e = (o * n_in + i) * 2 + s`` (``s = 0``: the metasurface whose PSF
realises the positive part of kernel ``[o, i]``, ``s = 1``: the negative part).
Element ``e`` is simulated at ``wavelengths_m[i]``, the colour of input channel ``i``.

Each element is an ``N x N`` grid of cells (``optics_cfg.n_cells``, odd) at
``optics_cfg.cell_pitch_m``. The trainable parameter ``latent [E, N, N]`` is

* for a :class:`~dkolib.optics.metaatoms.MetaAtomLibrary`: an unconstrained radius latent,
  ``radius = r_min + (r_max - r_min) * sigmoid(latent)`` (metres);
* for an :class:`~dkolib.optics.metaatoms.IdealPhaseAtom`: the phase itself (rad).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .propagation import cell_coords_m

INITS = ("lens", "random", "lens_random", "smooth_random", "phase")


def _is_library(atom) -> bool:
    return hasattr(atom, "r_min_m") and hasattr(atom, "r_max_m") and hasattr(atom, "radius_for_phase")


def _radius_from_latent(latent: torch.Tensor, atom) -> torch.Tensor:
    try:
        from .metaatoms import radius_from_latent
    except ImportError:  # pragma: no cover - metaatoms is part of the package
        return atom.r_min_m + (atom.r_max_m - atom.r_min_m) * torch.sigmoid(latent)
    return radius_from_latent(latent, atom)


_INIT_BLOCK_CELLS = 1 << 22
"""Cells per block of a random initialisation (32 MB of float64 per temporary)."""


def _latent_from_radius(radius_m: torch.Tensor, atom) -> torch.Tensor:
    try:
        from .metaatoms import latent_from_radius
    except ImportError:  # pragma: no cover
        u = ((radius_m - atom.r_min_m) / (atom.r_max_m - atom.r_min_m)).clamp(1e-4, 1 - 1e-4)
        return torch.log(u) - torch.log1p(-u)
    return latent_from_radius(radius_m, atom)


def lens_phase_rad(n_cells: int, cell_pitch_m: float, wavelength_m: float, sensor_distance_m: float,
                   source_distance_m: float | None = None, wrap: bool = True) -> np.ndarray:
    """Hyperbolic phase ``[N, N]`` (rad, float64) that images an on-axis point onto the sensor.

    ``phi(r) = -k (sqrt(r^2 + z^2) - z) - k (sqrt(r^2 + d^2) - d)``: cancels the
    incident spherical wave from distance ``d`` (``source_distance_m``; ``None``:
    plane wave) and focuses on axis at ``z`` (``sensor_distance_m``). With
    ``wrap`` the result is reduced to ``[0, 2 pi)``.
    """
    x = cell_coords_m(n_cells, cell_pitch_m)
    r2 = x[:, None] ** 2 + x[None, :] ** 2
    k = 2 * np.pi / wavelength_m
    z = float(sensor_distance_m)
    phi = -k * (r2 / (np.sqrt(r2 + z * z) + z))
    if source_distance_m is not None:
        d = float(source_distance_m)
        phi = phi - k * (r2 / (np.sqrt(r2 + d * d) + d))
    return np.mod(phi, 2 * np.pi) if wrap else phi


def smooth_random_phase_rad(n_elements: int, n_cells: int, corr_cells: float,
                            generator: torch.Generator | None = None) -> torch.Tensor:
    """Random phase ``[E, N, N]`` (rad, float64, in ``(-pi, pi]``) correlated over ``corr_cells`` cells.

    Complex white Gaussian noise is low-passed with a Gaussian of standard deviation
    ``corr_cells`` (cells; periodic, by FFT) and its argument taken: the phase stays uniformly
    distributed at every cell, but neighbouring cells differ by little once ``corr_cells > 1``
    (``0``: white phase, as ``init='random'`` in phase).
    """
    if corr_cells < 0:
        raise ValueError(f"corr_cells must be >= 0, got {corr_cells}")
    shape = (n_elements, n_cells, n_cells)
    noise = torch.complex(torch.randn(shape, generator=generator, dtype=torch.float64),
                          torch.randn(shape, generator=generator, dtype=torch.float64))
    if corr_cells > 0:
        f = torch.fft.fftfreq(n_cells, dtype=torch.float64)
        g = torch.exp(-2.0 * (math.pi * corr_cells) ** 2 * (f[:, None] ** 2 + f[None, :] ** 2))
        noise = torch.fft.ifft2(torch.fft.fft2(noise) * g)
    return torch.angle(noise)


def block_average(values: torch.Tensor, block_cells: int) -> torch.Tensor:
    """Average ``values [..., N, N]`` over blocks of ``b x b`` cells and spread it back over them.

    Blocks are centred on the optical axis (cell ``N // 2`` lies in the middle of its block
    for odd ``b``); the blocks at the rim are cut by the aperture and average the cells they
    hold. ``b = 1`` returns ``values`` unchanged. Used as the projection onto a coarser
    phase grid (every cell of a block gets one radius).
    """
    b = int(block_cells)
    if b < 1:
        raise ValueError(f"block_cells must be >= 1, got {block_cells}")
    if b == 1:
        return values
    n = values.shape[-1]
    centre = n // 2
    idx = torch.div(torch.arange(n) - centre + b // 2, b, rounding_mode="floor")
    idx = idx - idx.min()
    member = (idx[None, :] == torch.arange(int(idx.max()) + 1)[:, None]).to(values.dtype)  # [n_blocks, N]
    mean_op = member / member.sum(1, keepdim=True)
    coarse = mean_op @ values @ mean_op.T
    return member.T @ coarse @ member


class MetasurfaceArray(nn.Module):
    """``n_out * n_in * 2`` metasurfaces of ``N x N`` cells (see module docstring).

    Args:
        n_out, n_in: conv output / input channels (``n_in`` wavelengths are needed).
        optics_cfg: :class:`dkolib.config.OpticsConfig` (``n_cells``, pitches, distances, wavelengths).
        atom: a ``MetaAtomLibrary`` (radius latent) or ``IdealPhaseAtom`` (phase latent).
        init: ``'lens'`` (imaging lens at every element's wavelength), ``'random'``
            (uniform radii in ``[r_min, r_max]`` or uniform phase in ``[0, 2 pi)``, from
            ``generator``), ``'lens_random'`` (lens phase plus i.i.d. Gaussian phase noise of
            standard deviation ``init_noise_rad`` per cell, from ``generator``), ``'smooth_random'``
            (random phase correlated over about ``init_corr_cells`` cells: :func:`smooth_random_phase_rad`),
            ``'phase'`` (``target_phase_rad`` via the reverse lookup).
        generator: ``torch.Generator`` for ``'random'`` / ``'lens_random'`` (reproducible).
        init_noise_rad: phase-noise standard deviation (rad) of ``'lens_random'``.
        init_corr_cells: correlation length (cells) of ``'smooth_random'``.
        target_phase_rad: ``[N, N]`` or ``[E, N, N]`` phase (rad) for ``init='phase'``.
        wavelengths_m: per-input-channel wavelengths (default ``optics_cfg.wavelengths_m``).
        n_cells: override ``optics_cfg.n_cells``.
    Attributes:
        latent: ``nn.Parameter [E, N, N]`` (float32).
        wavelengths_m: buffer ``[E]`` (float64, metres).
    """

    def __init__(self, n_out: int, n_in: int, optics_cfg, atom, init: str = "lens",
                 generator: torch.Generator | None = None, target_phase_rad=None,
                 wavelengths_m=None, n_cells: int | None = None, init_noise_rad: float = 1.0,
                 init_corr_cells: float = 4.0):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if n_out < 1 or n_in < 1:
            raise ValueError(f"n_out and n_in must be >= 1, got {n_out}, {n_in}")
        wls = tuple(optics_cfg.wavelengths_m if wavelengths_m is None else wavelengths_m)
        if len(wls) < n_in:
            raise ValueError(
                f"n_in={n_in} input channels need {n_in} wavelengths, got {len(wls)} "
                "(pass wavelengths_m=... or use optics.wavelengths_m)")
        n = int(optics_cfg.n_cells if n_cells is None else n_cells)
        if n % 2 != 1:
            raise ValueError(f"n_cells must be odd so the optical axis falls on a cell, got {n}")
        if not hasattr(atom, "transmission_at"):
            raise TypeError(f"atom must be a MetaAtomLibrary or IdealPhaseAtom, got {type(atom).__name__}")
        self.n_out, self.n_in, self.n_cells = int(n_out), int(n_in), n
        self.optics_cfg = optics_cfg
        self.atom = atom
        self.is_library = _is_library(atom)
        per_el = [float(wls[i]) for o in range(n_out) for i in range(n_in) for _s in range(2)]
        self.register_buffer("wavelengths_m", torch.tensor(per_el, dtype=torch.float64))
        self.init_noise_rad = float(init_noise_rad)
        self.init_corr_cells = float(init_corr_cells)
        self.latent = nn.Parameter(self._init_latent(init, generator, target_phase_rad))

    @property
    def n_elements(self) -> int:
        return self.n_out * self.n_in * 2

    @staticmethod
    def element_index(o: int, i: int, s: int, n_in: int) -> int:
        """Element index of output ``o``, input ``i``, sign ``s`` (0 = positive part)."""
        return (o * n_in + i) * 2 + s

    # ------------------------------------------------------------------ init
    def _phase_to_latent(self, phase: torch.Tensor) -> torch.Tensor:
        """``phase [E, N, N]`` (rad) -> latent, via the library's reverse lookup per wavelength."""
        if not self.is_library:
            return torch.remainder(phase, 2 * math.pi).to(torch.float32)
        out = torch.empty(phase.shape, dtype=torch.float32)
        wl = self.wavelengths_m.numpy()
        for lam in np.unique(wl):
            sel = torch.as_tensor(np.nonzero(wl == lam)[0])
            radius = self.atom.radius_for_phase(phase[sel].to(torch.float64), float(lam))
            out[sel] = _latent_from_radius(radius.to(torch.float64), self.atom).to(torch.float32)
        return out

    def _init_latent(self, init, generator, target_phase_rad) -> torch.Tensor:
        E, n, cfg = self.n_elements, self.n_cells, self.optics_cfg
        if init == "random":
            # drawn a block of elements at a time (the CPU generator fills a tensor in order, so the
            # values are those of one draw of [E, N, N]) to keep the float64 temporaries small:
            # at the paper's size one draw of all 384 x 1025^2 cells took 19 GB
            out = torch.empty((E, n, n), dtype=torch.float32)
            block = max(1, _INIT_BLOCK_CELLS // (n * n))
            for start in range(0, E, block):
                stop = min(E, start + block)
                u = torch.rand((stop - start, n, n), generator=generator, dtype=torch.float64)
                if self.is_library:
                    r = self.atom.r_min_m + (self.atom.r_max_m - self.atom.r_min_m) * u
                    out[start:stop] = _latent_from_radius(r, self.atom).to(torch.float32)
                else:
                    out[start:stop] = (2 * math.pi * u).to(torch.float32)
            return out
        if init == "smooth_random":
            return self._phase_to_latent(smooth_random_phase_rad(E, n, self.init_corr_cells, generator))
        if init in ("lens", "lens_random"):
            phase = torch.empty((E, n, n), dtype=torch.float64)
            for lam in np.unique(self.wavelengths_m.numpy()):
                sel = torch.as_tensor(np.nonzero(self.wavelengths_m.numpy() == lam)[0])
                phase[sel] = torch.from_numpy(lens_phase_rad(n, cfg.cell_pitch_m, float(lam), cfg.sensor_distance_m,
                                                             cfg.source_distance_m))
            if init == "lens_random":
                phase = phase + self.init_noise_rad * torch.randn((E, n, n), generator=generator, dtype=torch.float64)
            return self._phase_to_latent(phase)
        if target_phase_rad is None:
            raise ValueError("init='phase' needs target_phase_rad ([N, N] or [E, N, N], radians)")
        phase = torch.as_tensor(target_phase_rad, dtype=torch.float64)
        if phase.shape == (n, n):
            phase = phase.expand(E, n, n)
        if phase.shape != (E, n, n):
            raise ValueError(f"target_phase_rad must be [{n}, {n}] or [{E}, {n}, {n}], got {tuple(phase.shape)}")
        return self._phase_to_latent(phase.clone())

    @classmethod
    def from_conv_weight(cls, weight: torch.Tensor, optics_cfg, atom, init: str = "lens",
                         generator: torch.Generator | None = None, **kwargs) -> "MetasurfaceArray":
        """Array shaped for a conv weight ``[C_out, C_in, k, k]`` (``n_out = C_out``, ``n_in = C_in``).

        ``k`` must not exceed the sensor windows used later (checked against
        ``optics_cfg.render_window_px``); the weight values are not used here
        (DKO synthesis fits them, see ``dkolib.dko.synthesis``).
        """
        if weight.dim() != 4 or weight.shape[-1] != weight.shape[-2]:
            raise ValueError(f"weight must be [C_out, C_in, k, k], got {tuple(weight.shape)}")
        if weight.shape[-1] > optics_cfg.render_window_px:
            raise ValueError(f"kernel size {weight.shape[-1]} exceeds optics.render_window_px "
                             f"{optics_cfg.render_window_px}")
        return cls(int(weight.shape[0]), int(weight.shape[1]), optics_cfg, atom, init=init, generator=generator,
                   **kwargs)

    # ------------------------------------------------------------------ physics
    def radii_m(self, index=None) -> torch.Tensor:
        """Cylinder radii ``[E, N, N]`` (metres); only for a meta-atom library."""
        if not self.is_library:
            raise TypeError("radii_m() needs a MetaAtomLibrary atom; this array uses an ideal phase atom")
        lat = self.latent if index is None else self.latent[index]
        return _radius_from_latent(lat, self.atom)

    def phase_rad(self) -> torch.Tensor:
        """Phase of the transmission ``[E, N, N]`` (rad)."""
        return torch.angle(self.transmission())

    def transmission(self, index=None) -> torch.Tensor:
        """Complex transmission ``[E, N, N]`` (complex64), differentiable in ``latent``.

        ``index``: optional element indices (tensor/list/slice) to compute a subset.
        """
        lat = self.latent if index is None else self.latent[index]
        wl = self.wavelengths_m if index is None else self.wavelengths_m[index]
        if self.is_library:
            return self.atom.transmission_at(_radius_from_latent(lat, self.atom), wl)
        return self.atom.transmission_at(lat, wl)

    def psf(self, window_px: int, engine: str | None = None, **kwargs) -> torch.Tensor:
        """PSFs ``[E, W, W]`` of every element (see :func:`dkolib.optics.propagation.psf`)."""
        from .propagation import psf as _psf
        return _psf(self.transmission(), self.wavelengths_m, self.optics_cfg, window_px,
                    engine=engine or self.optics_cfg.engine, **kwargs)

    def extra_repr(self) -> str:
        kind = "library" if self.is_library else "ideal-phase"
        return f"n_out={self.n_out}, n_in={self.n_in}, n_cells={self.n_cells}, atom={kind}"


__all__ = ["INITS", "MetasurfaceArray", "block_average", "lens_phase_rad", "smooth_random_phase_rad"]
