"""OpticalConv2d: a metasurface array standing in for an ``nn.Conv2d`` in any network.

The depth network's :class:`~dkolib.dko.frontend.OpticalFrontEnd` is tied to its
stride-2, 'same'-padded first layer. :class:`OpticalConv2d` is the same optics
(one metasurface per (out, in, sign), input channel ``i`` simulated at its own
wavelength, +/- read-outs subtracted electronically, one gain per metasurface
or per output channel) with ``nn.Conv2d``'s interface: any channel counts, odd
kernel size, stride, zero padding (an int or ``'same'`` / ``'valid'``) and an
optional electronic bias. :meth:`OpticalConv2d.from_conv` designs the optics
for a trained ``nn.Conv2d`` with DKO stage 2; :func:`replace_conv` swaps a named
convolution of a model for it.

Geometry of the output. ``nn.Conv2d`` with padding ``p`` and stride ``s`` puts
output pixel ``j`` at the kernel centred on input pixel ``j s + k // 2 - p``.
The optical layer images the zero-padded scene (black beyond the image, which is
what zero padding means for a scene) onto the sensor and reads the pixel under
that centre, so in ``'crop'`` mode its output equals
``F.conv2d(x, kernels(), stride=s, padding=p) + bias`` exactly; in ``'full_psf'``
modes every output pixel also receives the light of the whole PSF window.

Inputs are scene intensities (``>= 0``, linear): the optics cannot see negative
light. A network that normalises its images (``(x - mean) / std``) should feed
the raw intensities and fold the normalisation into the next layer; a negative
input raises a :class:`NegativeIntensityWarning` (once per layer).

Defaults. Where ``optics`` or ``dko`` is not given, the layer takes the ``default``
profile's ``optics`` / ``dko`` section (:func:`layer_defaults`): 257 x 257 cells of
2.5 um at 2.507 mm from the sensor (the paper's numerical aperture, whose passband
reaches past the sensor's Nyquist frequency: no kernel has energy it cannot pass)
and stage 2 from a random start with the leakage loss and one gain per
metasurface. On held-out smooth 7 x 7 kernels ``from_conv(conv)`` then reaches a
kernel correlation of 0.999 (error 0.04) per output channel; the dataclass defaults of
:class:`~dkolib.config.OpticsConfig` / :class:`~dkolib.config.DKOConfig` (1 cm,
lens start, 500 steps) reach 0.76-0.83 (error 0.5-0.66), and the profile's stage 2 at
1 cm 0.95: at 1 cm the aperture cannot render the kernels' high frequencies
(``tests/test_reuse_defaults.py``). The sections are read
from ``config/default.yaml`` of the project root (:func:`dkolib.root.project_root`)
when there is one, the one source of truth; an installed package used outside a
checkout reads its packaged copy of the two sections, ``dkolib/dko/layer_defaults.yaml``
(kept equal to the profile's by ``tests/test_reuse_defaults.py``).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from ..config import ConfigError, DKOConfig, OpticsConfig, from_dict, load_config, profile_path
from ..errors import InputError
from .frontend import ENGINES, MODES, OpticalFrontEnd, _sensor_noise, unit_gain


class NegativeIntensityWarning(UserWarning):
    """An optical layer received negative inputs, which no scene intensity can be."""


DEFAULT_PROFILE = "default"
"""The profile whose ``optics`` and ``dko`` sections are the layer's defaults."""
PACKAGED_DEFAULTS = Path(__file__).with_name("layer_defaults.yaml")
"""Packaged copy of the default profile's ``optics`` and ``dko`` sections (used outside a checkout)."""


class LayerDefaults(NamedTuple):
    """The settings an :class:`OpticalConv2d` takes where ``optics`` / ``dko`` are not given."""

    optics: OpticsConfig
    dko: DKOConfig
    source: Path
    """The file they were read from: the project's ``config/default.yaml`` or :data:`PACKAGED_DEFAULTS`."""


def layer_defaults() -> LayerDefaults:
    """The ``default`` profile's ``optics`` and ``dko`` sections: the layer's defaults.

    Read through :func:`dkolib.config.load_config` from ``config/default.yaml`` of the project
    root (``$DKOLIB_ROOT``, or the nearest of the working directory and its parents holding
    ``config/*.yaml``; see :mod:`dkolib.root`) when that file exists; otherwise (an installed
    package used outside a checkout) from :data:`PACKAGED_DEFAULTS`, a copy of the two sections
    that ``tests/test_reuse_defaults.py`` keeps equal to the profile's.

    Raises :class:`~dkolib.config.ConfigError` when the project's ``config/default.yaml``
    exists but is not a valid profile (e.g. another project's ``config/`` folder), naming the
    file and the ways out.
    """
    path = profile_path(DEFAULT_PROFILE)
    if path.is_file():
        try:
            cfg = load_config(DEFAULT_PROFILE)
        except ConfigError as err:
            raise ConfigError(f"OpticalConv2d's defaults are the '{DEFAULT_PROFILE}' profile's optics and dko "
                              f"sections, read from {path}, which is not a valid dkolib profile: {err}. Fix it, "
                              f"point DKOLIB_ROOT at a dkolib checkout, run from another folder (the packaged "
                              f"copy {PACKAGED_DEFAULTS.name} is used there) or pass optics= and dko= "
                              "explicitly") from err
        return LayerDefaults(cfg.optics, cfg.dko, path)
    if not PACKAGED_DEFAULTS.is_file():
        raise ConfigError(f"{PACKAGED_DEFAULTS} is missing from the installed package and no {path} exists: "
                          "reinstall dkolib, point DKOLIB_ROOT at a dkolib checkout or pass optics= and dko=")
    with open(PACKAGED_DEFAULTS) as fh:
        cfg = from_dict(yaml.safe_load(fh) or {})
    return LayerDefaults(cfg.optics, cfg.dko, PACKAGED_DEFAULTS)


def _section(value, cls, name: str):
    """A config section from a dataclass, a mapping (validated like a profile file) or None (the
    default profile's section, :func:`layer_defaults`)."""
    if value is None:
        return getattr(layer_defaults(), name)
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        return getattr(from_dict({name: dict(value)}), name)
    raise InputError(f"{name} must be a {cls.__name__} or a dict of its keys, got {type(value).__name__}")


def layer_optics(optics, kernel_size: int) -> OpticsConfig:
    """``optics`` (``OpticsConfig`` | dict | None: the default profile's, :func:`layer_defaults`) with
    ``kernel_size`` set and its windows widened to hold it.

    The loss window becomes ``2 k`` and the render window ``k`` where they are smaller
    than the kernel (the paper's loss window is twice its 7 x 7 kernel).
    """
    cfg = _section(optics, OpticsConfig, "optics")
    k = int(kernel_size)
    return dataclasses.replace(cfg, kernel_size=k,
                               loss_window_px=cfg.loss_window_px if cfg.loss_window_px >= k else 2 * k,
                               render_window_px=max(cfg.render_window_px, k))


def _atom(atom, optics_cfg):
    """A meta-atom model as given, or loaded from a name / CSV path (default ``optics_cfg.meta_atom``)."""
    if atom is not None and not isinstance(atom, (str, Path)):
        return atom
    from ..optics.metaatoms import load_atom

    return load_atom(optics_cfg.meta_atom if atom is None else atom)


def _square(value, what: str) -> int:
    """An int, or a pair of equal ints, as one int."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2 or value[0] != value[1]:
            raise InputError(f"{what} must be one int or two equal ints (square), got {tuple(value)}")
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{what} must be an int, got {value!r}")
    return int(value)


def _padding(padding, kernel_size: int, stride: int) -> int:
    """Zero padding per side (pixels) from an int, a square pair, ``'same'`` or ``'valid'``."""
    if isinstance(padding, str):
        if padding == "valid":
            return 0
        if padding == "same":
            if stride != 1:
                raise InputError("padding='same' needs stride 1 (as in nn.Conv2d); pass padding=kernel_size // 2")
            return kernel_size // 2
        raise InputError(f"padding must be an int, 'same' or 'valid', got {padding!r}")
    p = _square(padding, "padding")
    if p < 0:
        raise InputError(f"padding must be >= 0, got {p}")
    return p


class OpticalConv2d(OpticalFrontEnd):
    """A metasurface-array convolution with ``nn.Conv2d``'s interface (see module docstring).

    Args:
        in_channels, out_channels: channel counts; ``2 * in * out`` metasurfaces.
        kernel_size: odd ``k`` (or ``(k, k)``).
        stride: int (or a square pair).
        padding: zero padding per side: int, ``'same'`` (stride 1) or ``'valid'``.
        bias: add an electronic bias per output channel (a parameter, initialised to 0).
        optics: :class:`~dkolib.config.OpticsConfig` or a dict of its keys (default: the
            ``default`` profile's ``optics`` section, :func:`layer_defaults`); ``kernel_size`` is
            set from ``kernel_size``.
        atom: meta-atom model, or a name / CSV path for :func:`dkolib.optics.metaatoms.load_atom`
            (default ``optics.meta_atom``).
        wavelengths_m: one wavelength per input channel (metres; default the first
            ``in_channels`` of ``optics.wavelengths_m``).
        array: an existing ``MetasurfaceArray`` with ``out * in * 2`` elements (default: a new one).
        init, generator: initialisation of a new array (``MetasurfaceArray``'s ``init``).
        mode: ``'crop'`` | ``'full_psf'`` | ``'full_psf_noise'``.
        engine: PSF engine (default ``optics.engine``).
        gain: electronic gain ``[out, in, 2]`` or ``[out]`` (default: ones of ``gain_model``).
        gain_model: ``'element'`` (per metasurface) or ``'channel'`` (default ``optics.gain``).
        trainable_gain, cache_psf: as :class:`~dkolib.dko.frontend.OpticalFrontEnd`.

    Input ``[B, in, H, W]`` scene intensities; output ``[B, out, H_o, W_o]`` with
    ``H_o = (H + 2 p - k) // s + 1``, as ``nn.Conv2d``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 bias: bool = True, *, optics=None, atom=None, wavelengths_m=None, array: nn.Module | None = None,
                 init: str = "random", generator: torch.Generator | None = None, mode: str = "crop",
                 engine: str | None = None, gain: torch.Tensor | None = None, gain_model: str | None = None,
                 trainable_gain: bool = False, cache_psf: bool = True):
        from ..optics.metasurface import MetasurfaceArray
        from ..optics.realisability import input_wavelengths_m

        k = _square(kernel_size, "kernel_size")
        if k < 1 or k % 2 != 1:
            raise InputError(f"kernel_size must be odd (the optical axis is the kernel's centre pixel), got {k}")
        s = _square(stride, "stride")
        if s < 1:
            raise InputError(f"stride must be >= 1, got {s}")
        if in_channels < 1 or out_channels < 1:
            raise InputError(f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}")
        optics_cfg = layer_optics(optics, k)
        engine = optics_cfg.engine if engine is None else engine
        if mode not in MODES or engine not in ENGINES:
            raise InputError(f"mode must be one of {MODES} and engine one of {ENGINES}, got {mode!r}, {engine!r}")
        wls = input_wavelengths_m(in_channels, optics_cfg, wavelengths_m)
        if array is None:
            array = MetasurfaceArray(out_channels, in_channels, optics_cfg, _atom(atom, optics_cfg), init=init,
                                     generator=generator, wavelengths_m=wls)
        elif (getattr(array, "n_out", out_channels), getattr(array, "n_in", in_channels)) != (out_channels, in_channels):
            raise InputError(f"array is shaped for {array.n_out} x {array.n_in} channels, the layer for "
                             f"{out_channels} x {in_channels}")
        if gain is None:
            gain = unit_gain(out_channels, in_channels, optics_cfg.gain if gain_model is None else gain_model)
        super().__init__(array, optics_cfg, n_out=out_channels, n_in=in_channels, mode=mode, engine=engine,
                         gain=gain, trainable_gain=trainable_gain, cache_psf=cache_psf)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.stride = s
        self.padding = padding if isinstance(padding, str) else _padding(padding, k, s)
        self._pad = _padding(padding, k, s)
        self.wavelengths_m = wls
        self.register_parameter("bias", nn.Parameter(torch.zeros(out_channels)) if bias else None)
        self.fidelity = None
        """Stage-2 fidelity table (:func:`dkolib.dko.fidelity.fidelity_table`) after :meth:`from_conv`."""
        self.fidelity_summary: dict | None = None
        """:func:`dkolib.dko.fidelity.summarize_fidelity` of it."""
        self.synthesis_history = None
        """Stage-2 history (``SynthesisResult.history``: loss, correlation, light per step) after :meth:`from_conv`."""
        self._warned_negative = False

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_conv(cls, conv: nn.Conv2d, optics=None, dko=None, *, atom=None, wavelengths_m=None,
                  mode: str = "crop", engine: str | None = None, gain_model: str | None = None,
                  trainable_gain: bool = False, cache_psf: bool = True, generator: torch.Generator | None = None,
                  progress: bool = True, ckpt_path: str | Path | None = None, check_realisable: bool = True,
                  **synthesis_kwargs) -> OpticalConv2d:
        """Design the optics for a trained ``conv`` by DKO stage 2 and return the optical layer.

        Runs :func:`dkolib.dko.synthesis.synthesize` on ``conv.weight`` (``dko``: a
        :class:`~dkolib.config.DKOConfig` or a dict of its keys; ``synthesis_kwargs`` such as
        ``steps``/``lr`` override it) with a progress bar, fits the closed-form gains
        (``gain_model``, default ``optics.gain``), and copies bias, stride and padding. With
        ``check_realisable`` it first warns (:class:`~dkolib.optics.realisability.RealisabilityWarning`)
        when the kernels carry energy the aperture cannot render. The result's ``fidelity`` /
        ``fidelity_summary`` hold the per-channel kernel correlation and error
        (:mod:`dkolib.dko.fidelity`; with ``progress`` they are also printed) and
        ``synthesis_history`` the stage-2 history.
        The array is optimised on ``conv.weight``'s device.

        ``optics`` / ``dko`` left ``None`` are the ``default`` profile's sections
        (:func:`layer_defaults`: 257 cells of 2.5 um at 2.507 mm, random start, leakage loss,
        one gain per metasurface), which render held-out smooth 7 x 7 kernels at a kernel
        correlation of 0.999; a geometry of your own is checked as above.
        """
        from ..optics.realisability import input_wavelengths_m, realisability
        from .fidelity import summarize_fidelity
        from .synthesis import initial_array, synthesize

        if not isinstance(conv, nn.Conv2d):
            raise InputError(f"from_conv needs an nn.Conv2d, got {type(conv).__name__}")
        unsupported = {k: v for k, v in (("groups", conv.groups), ("dilation", tuple(conv.dilation)),
                                         ("padding_mode", conv.padding_mode))
                       if v not in (1, (1, 1), "zeros")}
        if unsupported:
            raise InputError(f"OpticalConv2d supports groups=1, dilation=1 and zero padding only; this conv has "
                             f"{unsupported}")
        k = _square(tuple(conv.kernel_size), "kernel_size")
        optics_cfg = layer_optics(optics, k)
        dko_cfg = _section(dko, DKOConfig, "dko")
        weight = conv.weight.detach().to(torch.float32)
        wls = input_wavelengths_m(conv.in_channels, optics_cfg, wavelengths_m)
        if check_realisable:
            realisability(weight.cpu(), optics_cfg, wls)
        array = initial_array(conv.out_channels, conv.in_channels, optics_cfg, dko_cfg, _atom(atom, optics_cfg),
                              generator, wavelengths_m=wls).to(weight.device)
        engine = optics_cfg.engine if engine is None else engine
        res = synthesize(weight, optics_cfg, dko_cfg, engine=engine, progress=progress,
                         ckpt_path=ckpt_path, array=array, **synthesis_kwargs)
        gain_model = optics_cfg.gain if gain_model is None else gain_model
        padding = conv.padding if isinstance(conv.padding, str) else _square(tuple(conv.padding), "padding")
        layer = cls(conv.in_channels, conv.out_channels, k, stride=tuple(conv.stride), padding=padding,
                    bias=conv.bias is not None, optics=optics_cfg, wavelengths_m=wls, array=res.array, mode=mode,
                    engine=engine, gain=res.front_end_gain(gain_model), trainable_gain=trainable_gain,
                    cache_psf=cache_psf).to(weight.device)
        if conv.bias is not None:
            with torch.no_grad():
                layer.bias.copy_(conv.bias.detach())
        layer.fidelity, layer.synthesis_history = res.fidelity, res.history
        layer.fidelity_summary = summarize_fidelity(res.fidelity)
        if progress:
            from tqdm import tqdm

            s, suffix = layer.fidelity_summary, "_elem" if gain_model == "element" else ""
            tqdm.write(f"OpticalConv2d {conv.out_channels}x{conv.in_channels}x{k}x{k}: {res.steps} stage-2 steps, "
                       f"gain per {'metasurface' if suffix else 'channel'}: kernel correlation "
                       f"{s['channel_corr' + suffix + '_mean']:.3f}, kernel error "
                       f"{s['channel_norm_err' + suffix + '_mean']:.3f} (means over output channels)")
        return layer

    # ------------------------------------------------------------------ forward
    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """``(H_o, W_o)`` for an ``H x W`` input (``nn.Conv2d``'s formula)."""
        k, p, s = self.kernel_size, self._pad, self.stride
        return (height + 2 * p - k) // s + 1, (width + 2 * p - k) // s + 1

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images [B, in, H, W]`` (intensities) -> ``[B, out, H_o, W_o]``."""
        if images.dim() != 4 or images.shape[1] != self.n_in:
            raise InputError(f"expected images [B, {self.n_in}, H, W], got {tuple(images.shape)}")
        if not self._warned_negative and bool((images < 0).any()):
            self._warned_negative = True
            warnings.warn("OpticalConv2d received negative inputs: an optical layer sees scene intensities (>= 0); "
                          "feed un-normalised images and fold any normalisation into the next layer",
                          NegativeIntensityWarning, stacklevel=2)
        ho, wo = self.output_size(images.shape[-2], images.shape[-1])
        if ho < 1 or wo < 1:
            raise InputError(f"input {tuple(images.shape[-2:])} is smaller than the kernel ({self.kernel_size}) "
                             f"with padding {self._pad}")
        from ..optics.render import optical_conv

        # output j reads the sensor pixel under padded-input pixel j*s + k//2; `lead` extra black pixels
        # put that pixel on optical_conv's stride grid (its outputs sit at 0, s, 2s, ...)
        half, s, p = self.kernel_size // 2, self.stride, self._pad
        lead = (-half) % s
        padded = F.pad(images, (p + lead, p, p + lead, p))
        pos, neg = self.split_psf()
        noise = _sensor_noise(self.optics_cfg) if self.mode == "full_psf_noise" else None
        y = optical_conv(padded, pos, neg, stride=s, gain=self.gain, noise=noise, generator=self.generator)
        first = (half + lead) // s
        y = y[..., first:first + ho, first:first + wo]
        return y if self.bias is None else y + self.bias.to(y.dtype).view(1, -1, 1, 1)

    def with_mode(self, mode: str) -> OpticalConv2d:
        """A layer of the same optics (shared array), gain and bias read out in ``mode``."""
        layer = OpticalConv2d(self.n_in, self.n_out, self.kernel_size, stride=self.stride, padding=self.padding,
                              bias=self.bias is not None, optics=self.optics_cfg, wavelengths_m=self.wavelengths_m,
                              array=self.array, mode=mode, engine=self.engine, gain=self.gain.detach(),
                              cache_psf=self.cache_psf).to(self.gain.device)
        if self.bias is not None:
            with torch.no_grad():
                layer.bias.copy_(self.bias)
        layer.generator = self.generator
        layer.fidelity, layer.fidelity_summary = self.fidelity, self.fidelity_summary
        layer.synthesis_history = self.synthesis_history
        return layer

    def as_conv2d(self) -> nn.Conv2d:
        """The electronic ``nn.Conv2d`` this layer equals in ``'crop'`` mode (weight = :meth:`kernels`)."""
        conv = nn.Conv2d(self.n_in, self.n_out, self.kernel_size, stride=self.stride, padding=self.padding,
                         bias=self.bias is not None)
        with torch.no_grad():
            conv.weight.copy_(self.kernels().detach())
            if self.bias is not None:
                conv.bias.copy_(self.bias.detach())
        return conv.to(self.gain.device)

    def extra_repr(self) -> str:
        return (f"{self.n_in}, {self.n_out}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding!r}, bias={self.bias is not None}, mode={self.mode!r}, "
                f"engine={self.engine!r}, wavelengths_nm={tuple(round(w * 1e9, 1) for w in self.wavelengths_m)}")


def replace_conv(model: nn.Module, name: str, optics=None, dko=None, **kwargs) -> OpticalConv2d:
    """Swap the ``nn.Conv2d`` at dotted ``name`` (e.g. ``'features.0'``) of ``model`` for its optical design.

    Runs :meth:`OpticalConv2d.from_conv` (``optics``, ``dko`` and ``kwargs`` go to it; ``None``:
    the default profile's sections, :func:`layer_defaults`), puts the result in place of the
    convolution (``model`` is changed in place) and returns it.
    """
    try:
        conv = model.get_submodule(name)
    except AttributeError as err:
        convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
        raise InputError(f"model has no submodule {name!r}; its Conv2d layers are {convs}") from err
    if not isinstance(conv, nn.Conv2d):
        raise InputError(f"{name!r} is a {type(conv).__name__}, not an nn.Conv2d")
    layer = OpticalConv2d.from_conv(conv, optics, dko, **kwargs)
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, layer)
    return layer


__all__ = ["DEFAULT_PROFILE", "PACKAGED_DEFAULTS", "LayerDefaults", "NegativeIntensityWarning", "OpticalConv2d",
           "layer_defaults", "layer_optics", "replace_conv"]
