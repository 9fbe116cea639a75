"""Optical front end: a metasurface array standing in for the first conv layer.

An :class:`OpticalFrontEnd` maps raw images ``[B, C_in, H, W]`` (linear
intensity in [0, 1]) to ``[B, C_out, H/2, W/2]`` like ``ElectronicConv1``:

1. the PSFs of all ``E = C_out * C_in * 2`` metasurfaces are simulated on a
   sensor window (``mode='crop'``: ``kernel_size`` pixels per side, the
   paper's idealised 7 x 7 kernel; ``'full_psf'`` / ``'full_psf_noise'``:
   ``render_window_px`` pixels, the light that a real sensor sees, the latter
   with shot + read noise). Element ``e = (o * C_in + i) * 2 + s``, ``s = 0``
   is the positive and ``s = 1`` the negative part of kernel ``(o, i)``.
2. ``render.optical_conv`` forms the stride-2 sensor images of the +
   and - metasurfaces, scales them electronically, subtracts them and sums
   over input channels. The gain (a buffer, or a parameter when ``trainable_gain``)
   is ``[C_out, C_in, 2]``, one per metasurface read-out, or ``[C_out]``, one per
   output channel after the subtraction (the paper's model).

PSFs are normalised to the aperture energy (dimensionless, per sensor pixel),
so the effective signed kernel is ``g[o,i,+] psf[o,i,+] - g[o,i,-] psf[o,i,-]``
(per element) or ``g[o] (psf[o,i,+] - psf[o,i,-])`` (per channel)
(:meth:`OpticalFrontEnd.kernels`).

With ``cache_psf=True`` the PSFs are computed once and reused while the optics
is frozen (no metasurface parameter requires grad) and unchanged (parameter
versions are tracked, so ``load_state_dict`` invalidates the cache): the
front end then costs one convolution per step, like the electronic layer.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn

from ..config import OpticsConfig
from ..optics.render import crop_center

MODES = ("crop", "full_psf", "full_psf_noise")
ENGINES = ("fast", "reference")


# Thin indirections to the optics modules (resolved at call time so that this
# module imports without them, and tests can substitute them).
def _compute_psf(array: nn.Module, optics_cfg: OpticsConfig, window_px: int, engine: str) -> torch.Tensor:
    from ..optics.propagation import psf
    return psf(array, array.wavelengths_m, optics_cfg, window_px, engine=engine)


def _optical_conv(images, psf_pos, psf_neg, gain, noise, generator):
    from ..optics.render import optical_conv
    return optical_conv(images, psf_pos, psf_neg, stride=2, gain=gain, noise=noise, generator=generator)


def _sensor_noise(optics_cfg: OpticsConfig):
    from ..optics.render import SensorNoise
    return SensorNoise(optics_cfg.photons_per_pixel, optics_cfg.read_noise_e)


class OpticalFrontEnd(nn.Module):
    """Metasurface-array first layer (see module docstring).

    Args:
        array: ``MetasurfaceArray`` with ``n_out * n_in * 2`` elements (``.wavelengths_m [E]``).
        optics_cfg: geometry, ``kernel_size``, ``render_window_px``, noise levels.
        n_out: C_out (conv1 channels); n_in: C_in (3 colour channels).
        mode: ``'crop'`` | ``'full_psf'`` | ``'full_psf_noise'``.
        engine: PSF engine, ``'fast'`` | ``'reference'``.
        gain: electronic scale, ``[C_out, C_in, 2]`` per metasurface or ``[C_out]`` per
            output channel (default: ones per channel).
        trainable_gain: register the gain as a parameter (else a buffer).
        cache_psf: reuse PSFs while the optics is frozen and unchanged.
    """

    def __init__(self, array: nn.Module, optics_cfg: OpticsConfig, n_out: int, n_in: int = 3,
                 mode: str = "crop", engine: str = "fast", gain: torch.Tensor | None = None,
                 trainable_gain: bool = False, cache_psf: bool = False):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        n_el = getattr(array, "wavelengths_m", None)
        if n_el is not None and n_el.numel() != n_out * n_in * 2:
            raise ValueError(f"array has {n_el.numel()} elements, expected n_out*n_in*2 = {n_out * n_in * 2}")
        self.array = array
        self.optics_cfg = optics_cfg
        self.n_out, self.n_in = int(n_out), int(n_in)
        self.mode, self.engine = mode, engine
        self.kernel_size = int(optics_cfg.kernel_size)
        self.window_px = self.kernel_size if mode == "crop" else int(optics_cfg.render_window_px)
        self.cache_psf = bool(cache_psf)
        self.generator: torch.Generator | None = None
        """Random generator for sensor noise (None: torch's global RNG)."""
        g = torch.ones(n_out) if gain is None else torch.as_tensor(gain, dtype=torch.float32).detach().clone()
        if tuple(g.shape) not in ((n_out,), (n_out, n_in, 2)):
            raise ValueError(f"gain must have shape [{n_out}] (per channel) or [{n_out}, {n_in}, 2] "
                             f"(per metasurface), got {tuple(g.shape)}")
        if trainable_gain:
            self.gain = nn.Parameter(g)
        else:
            self.register_buffer("gain", g)
        self._cache: torch.Tensor | None = None
        self._cache_key: tuple | None = None
        self._injected: torch.Tensor | None = None

    # ------------------------------------------------------------------ optics
    def optics_frozen(self) -> bool:
        """True when no metasurface parameter requires grad."""
        return not any(p.requires_grad for p in self.array.parameters())

    def freeze_optics(self, frozen: bool = True) -> None:
        for p in self.array.parameters():
            p.requires_grad_(not frozen)

    def _version_key(self) -> tuple:
        tensors = list(self.array.parameters()) + list(self.array.buffers())
        return (self.window_px, self.engine) + tuple((id(t), t._version) for t in tensors)

    def compute_psf(self) -> torch.Tensor:
        """PSFs ``[E, W, W]`` on this front end's window (W = kernel_size or render_window_px)."""
        if self._injected is not None:
            return self._injected
        use_cache = self.cache_psf and self.optics_frozen()
        if use_cache:
            key = self._version_key()
            if self._cache is not None and self._cache_key == key:
                return self._cache
        psf = _compute_psf(self.array, self.optics_cfg, self.window_px, self.engine)
        expected = (self.n_out * self.n_in * 2, self.window_px, self.window_px)
        if tuple(psf.shape) != expected:
            raise RuntimeError(f"PSF engine returned {tuple(psf.shape)}, expected {expected}")
        if use_cache:
            self._cache, self._cache_key = psf.detach(), key
            return self._cache
        return psf

    def psf_is_cached(self) -> bool:
        """Whether the next :meth:`compute_psf` will reuse cached PSFs."""
        return (self.cache_psf and self.optics_frozen() and self._cache is not None
                and self._cache_key == self._version_key())

    @contextmanager
    def injected_psf(self, psf: torch.Tensor) -> Iterator[None]:
        """Use ``psf [E, W, W]`` instead of simulating (lets a trainer split the graph)."""
        prev = self._injected
        self._injected = psf
        try:
            yield
        finally:
            self._injected = prev

    def split_psf(self, psf: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(psf_pos, psf_neg)``, each ``[C_out, C_in, W, W]``."""
        psf = self.compute_psf() if psf is None else psf
        p = psf.reshape(self.n_out, self.n_in, 2, psf.shape[-2], psf.shape[-1])
        return p[:, :, 0], p[:, :, 1]

    def make_gain_trainable(self) -> nn.Parameter:
        """Turn a buffer gain into a parameter (same value and state-dict key); return it."""
        if not isinstance(self.gain, nn.Parameter):
            value = self.gain.detach().clone()
            del self._buffers["gain"]
            self.gain = nn.Parameter(value)
        return self.gain

    # ------------------------------------------------------------------ kernels
    def kernels(self, psf: torch.Tensor | None = None) -> torch.Tensor:
        """Effective signed crop kernels ``g+ psf+ - g- psf-`` (or ``g (psf+ - psf-)``): ``[C_out, C_in, k, k]``."""
        pos, neg = self.split_psf(psf)
        if self.gain.dim() == 3:
            return crop_center(pos * self.gain[..., 0, None, None] - neg * self.gain[..., 1, None, None],
                               self.kernel_size)
        signed = crop_center(pos - neg, self.kernel_size)
        return signed * self.gain.view(-1, 1, 1, 1)

    @torch.no_grad()
    def match_gain(self, reference: torch.Tensor, method: str = "lstsq") -> torch.Tensor:
        """Set the gain so that :meth:`kernels` approximates ``reference [C_out, C_in, k, k]``.

        ``'lstsq'``: per channel ``g = <K, D> / <D, D>`` (closed-form least squares,
        D = signed crop of the PSFs); ``'norm'``: ``g = ||K|| / ||D||`` (matches
        magnitude only; useful when D is unrelated to K, e.g. random optics).
        A per-metasurface gain ``[C_out, C_in, 2]`` is fitted the same way per ``(o, i)``:
        ``'lstsq'`` solves for ``(g+, g-)`` jointly
        (:func:`dkolib.dko.fidelity.fit_element_gains`); ``'norm'`` gives both signs
        ``||K[o, i]|| / ||psf+ - psf-||`` on the crop.
        Returns the new gain.
        """
        if reference.shape != (self.n_out, self.n_in, self.kernel_size, self.kernel_size):
            raise ValueError(f"reference kernels must be [{self.n_out}, {self.n_in}, {self.kernel_size}, "
                             f"{self.kernel_size}], got {tuple(reference.shape)}")
        pos, neg = self.split_psf()
        if self.gain.dim() == 3:
            return self._match_element_gain(reference, pos, neg, method)
        d = crop_center(pos - neg, self.kernel_size).detach().flatten(1).to(reference.dtype)
        k = reference.detach().flatten(1)
        dd = (d * d).sum(1).clamp_min(1e-30)
        if method == "lstsq":
            g = (k * d).sum(1) / dd
        elif method == "norm":
            g = k.norm(dim=1) / dd.sqrt()
        else:
            raise ValueError(f"method must be 'lstsq' or 'norm', got {method!r}")
        self.gain.data.copy_(g.to(self.gain.dtype))
        return self.gain.detach().clone()

    def _match_element_gain(self, reference, pos, neg, method: str) -> torch.Tensor:
        from .fidelity import element_gain_shape, fit_element_gains

        k = self.kernel_size
        if method == "lstsq":
            crop = crop_center(torch.stack([pos, neg], 2).detach(), k).reshape(-1, k, k)
            g = element_gain_shape(fit_element_gains(crop, reference), self.n_out, self.n_in)
        elif method == "norm":
            d = crop_center(pos - neg, k).detach().flatten(2).to(reference.dtype)
            ratio = reference.detach().flatten(2).norm(dim=2) / d.norm(dim=2).clamp_min(1e-30)
            g = torch.stack([ratio, ratio], -1)
        else:
            raise ValueError(f"method must be 'lstsq' or 'norm', got {method!r}")
        self.gain.data.copy_(g.to(self.gain.dtype))
        return self.gain.detach().clone()

    # ------------------------------------------------------------------ forward
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images [B, C_in, H, W]`` (intensity in [0, 1]) -> ``[B, C_out, H/2, W/2]``."""
        if images.dim() != 4 or images.shape[1] != self.n_in:
            raise ValueError(f"expected images [B, {self.n_in}, H, W], got {tuple(images.shape)}")
        pos, neg = self.split_psf()
        noise = _sensor_noise(self.optics_cfg) if self.mode == "full_psf_noise" else None
        return _optical_conv(images, pos, neg, self.gain, noise, self.generator)

    def extra_repr(self) -> str:
        return (f"n_out={self.n_out}, n_in={self.n_in}, mode={self.mode!r}, engine={self.engine!r}, "
                f"window_px={self.window_px}, cache_psf={self.cache_psf}")


def unit_gain(n_out: int, n_in: int = 3, model: str = "element") -> torch.Tensor:
    """Gain of ones: ``[n_out, n_in, 2]`` per metasurface (``'element'``) or ``[n_out]`` (``'channel'``)."""
    if model == "element":
        return torch.ones(n_out, n_in, 2)
    if model == "channel":
        return torch.ones(n_out)
    raise ValueError(f"gain model must be 'element' or 'channel', got {model!r} (set optics.gain)")


def make_hybrid(model: nn.Module, array: nn.Module, optics_cfg: OpticsConfig, mode: str = "crop",
                engine: str = "fast", gain: torch.Tensor | None = None, trainable_gain: bool = False,
                cache_psf: bool = True) -> nn.Module:
    """A deep copy of ``model`` (a ``DepthNet``) whose first layer is an :class:`OpticalFrontEnd`.

    ``array`` is used as is (not copied); ``model`` is left untouched.
    """
    fe = OpticalFrontEnd(array, optics_cfg, n_out=model.conv1_channels, n_in=3, mode=mode, engine=engine,
                         gain=gain, trainable_gain=trainable_gain, cache_psf=cache_psf)
    return with_first_layer(model, fe)


def with_first_layer(model: nn.Module, first_layer: nn.Module) -> nn.Module:
    """A deep copy of ``model`` (a ``DepthNet``) with ``first_layer`` (used as is) in place of its own.

    The old first layer is not copied and ``model`` is left untouched.
    """
    original_first = model.replace_first_layer(nn.Identity())
    try:
        copied = copy.deepcopy(model)
    finally:
        model.replace_first_layer(original_first)
    copied.replace_first_layer(first_layer)
    return copied


def find_frontend(model: nn.Module) -> "OpticalFrontEnd | None":
    """The model's :class:`OpticalFrontEnd` first layer, or None for an electronic model."""
    first = getattr(model, "first_layer", None)
    return first if isinstance(first, OpticalFrontEnd) else None
