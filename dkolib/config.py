"""Typed configuration: one object per run, loaded from ``config/<profile>.yaml``.

Every number the pipeline uses lives in a profile file; code reads it from the
``Config`` object returned by :func:`load_config`. Unknown keys, wrong types and
out-of-range values fail with a :class:`ConfigError` that names the key.

Overrides use dotted keys, e.g. ``load_config("default", {"optics.n_cells": 129})``
or, from the command line, ``optics.n_cells=129``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, get_args, get_origin, get_type_hints

import yaml

from .errors import InputError

from .root import project_root

PROFILES = ("smoke", "default", "paper")


class ConfigError(InputError):
    """A configuration key is unknown, mistyped or out of range."""


def _range(lo: float | None = None, hi: float | None = None, choices: tuple | None = None):
    return {"lo": lo, "hi": hi, "choices": choices}


@dataclass(frozen=True)
class OpticsConfig:
    """Geometry of the metasurface array and the sensor (SI units)."""

    n_cells: int = field(default=257, metadata=_range(8, 8193))
    """Simulation samples per side of one metasurface (the paper: 1025)."""
    cell_pitch_m: float = field(default=2.5e-6, metadata=_range(1e-8, 1e-3))
    """Sampling pitch of the metasurface plane (the paper: 2.5 um)."""
    unit_cell_m: float = field(default=300e-9, metadata=_range(1e-8, 1e-5))
    """Meta-atom unit cell (lattice constant) used by the RCWA library."""
    sensor_distance_m: float = field(default=1e-2, metadata=_range(1e-5, 10.0))
    source_distance_m: float = field(default=10.0, metadata=_range(1e-3, 1e6))
    pixel_pitch_m: float = field(default=2.74e-6, metadata=_range(1e-8, 1e-3))
    kernel_size: int = field(default=7, metadata=_range(1, 63))
    loss_window_px: int = field(default=14, metadata=_range(1, 255))
    """Side of the sensor window that the DKO loss compares (paper: 2 x kernel)."""
    render_window_px: int = field(default=31, metadata=_range(1, 1023))
    """Side of the sensor window used for full-PSF (physical) rendering."""
    subpixel: int = field(default=3, metadata=_range(1, 16))
    """Samples per sensor pixel per axis used to integrate over pixel area."""
    wavelengths_m: tuple = (700e-9, 550e-9, 400e-9)
    """Design wavelength for each input colour channel (R, G, B)."""
    meta_atom: str = "tio2"
    """Meta-atom model: ``tio2`` (the packaged RCWA library), ``ideal`` (unit amplitude, any phase) or
    the path of your own library CSV (relative to the project root; format and checks:
    ``dkolib.optics.metaatoms.load_atom``)."""
    engine: str = field(default="fast", metadata=_range(choices=("fast", "reference")))
    cell_model: str = field(default="staircase", metadata=_range(choices=("staircase", "bandlimited")))
    """What field the cells make (:mod:`dkolib.optics.propagation`): ``staircase``, each cell a uniform
    square of its transmission, as the mask builds it (the spectrum carries the cell's
    ``sinc(p f_x) sinc(p f_y)`` and the grid's replicas beyond its Nyquist frequency); or
    ``bandlimited``, the cells read as samples of a field band-limited to ``|f| < 1/(2p)`` (the
    paper's and D-Flat's convention)."""
    photons_per_pixel: float = field(default=1000.0, metadata=_range(1.0, 1e9))
    """Mean photo-electrons of a white pixel seen through an ideal delta PSF."""
    read_noise_e: float = field(default=2.0, metadata=_range(0.0, 1e4))
    gain: str = field(default="element", metadata=_range(choices=("element", "channel")))
    """Electronic scale of the optical first layer: one per metasurface read-out (``element``,
    ``C_out x C_in x 2`` multiplies per output pixel) or one per output channel (``channel``,
    the paper's model)."""


@dataclass(frozen=True)
class DataConfig:
    height: int = field(default=96, metadata=_range(16, 4096))
    width: int = field(default=320, metadata=_range(16, 8192))
    n_train: int = field(default=1200, metadata=_range(1, 10_000_000))
    n_val: int = field(default=100, metadata=_range(1, 10_000_000))
    n_test: int = field(default=200, metadata=_range(1, 10_000_000))
    min_depth_m: float = field(default=1e-3, metadata=_range(0.0, 10.0))
    max_depth_m: float = field(default=80.0, metadata=_range(1.0, 1000.0))
    dataset: str = field(default="synthetic", metadata=_range(choices=("synthetic", "kitti")))
    seed: int = field(default=0, metadata=_range(0, 2**31 - 1))
    """Seed of the synthetic scenes; independent of the training seed."""
    kitti_root: str = ""
    """Root of a KITTI raw download (only read when dataset == 'kitti')."""


@dataclass(frozen=True)
class ModelConfig:
    width_factor: float = field(default=0.25, metadata=_range(0.03125, 4.0))
    """Channel multiplier on the ResNet-18 widths (1.0 = 64 conv1 channels)."""
    scales: int = field(default=4, metadata=_range(1, 4))


@dataclass(frozen=True)
class TrainConfig:
    steps: int = field(default=3000, metadata=_range(1, 10_000_000))
    batch_size: int = field(default=8, metadata=_range(1, 4096))
    lr: float = field(default=1e-3, metadata=_range(1e-8, 10.0))
    weight_decay: float = field(default=1e-4, metadata=_range(0.0, 10.0))
    eval_every: int = field(default=250, metadata=_range(1, 10_000_000))
    checkpoint_every: int = field(default=250, metadata=_range(1, 10_000_000))
    plateau_patience: int = field(default=0, metadata=_range(0, 10_000))
    """Stage 1's stopping rule: stop once validation AbsRel improved by less than ``plateau_tol``
    (relative) over the last ``plateau_patience`` evaluations (every ``eval_every`` steps);
    0 = always run ``steps``, which is otherwise the cap."""
    plateau_tol: float = field(default=0.01, metadata=_range(0.0, 0.99))
    passband_weight: float = field(default=0.0, metadata=_range(0.0, 1e6))
    """Optics-aware stage 1: weight of the first layer's out-of-band energy fraction in the loss
    (:func:`dkolib.optics.realisability.passband_penalty`; 0: a purely electronic stage 1)."""
    passband: str = field(default="square", metadata=_range(choices=("square", "disk")))
    """Passband of ``passband_weight``: the square aperture's, or the inscribed disk's (stricter)."""


@dataclass(frozen=True)
class DKOConfig:
    steps: int = field(default=500, metadata=_range(1, 10_000_000))
    lr: float = field(default=5e-2, metadata=_range(1e-8, 100.0))
    loss: str = field(default="leakage", metadata=_range(choices=("paper", "leakage")))
    leakage_weight: float = field(default=1.0, metadata=_range(0.0, 1e6))
    init: str = field(default="lens", metadata=_range(choices=("lens", "random", "lens_random", "smooth_random")))
    """Stage-2 start: imaging lens, uniform random radii, lens plus Gaussian phase noise, or random
    phase correlated over ``init_corr_cells`` cells."""
    init_noise_rad: float = field(default=1.0, metadata=_range(0.0, 100.0))
    """Phase-noise standard deviation (rad) of ``init: lens_random``."""
    init_corr_cells: float = field(default=4.0, metadata=_range(0.0, 1e4))
    """Correlation length (cells) of ``init: smooth_random``."""
    smoothness_weight: float = field(default=0.0, metadata=_range(0.0, 1e6))
    """Weight of the cell-to-cell smoothness term (:func:`dkolib.dko.losses.smoothness_penalty`)."""
    phase_block_cells: int = field(default=1, metadata=_range(1, 1000))
    """Coarser phase grid: blocks of b x b cells share one radius (1: every cell free)."""
    stop_window: int = field(default=0, metadata=_range(0, 10_000_000))
    """Stopping rule: stop once the loss improved by less than ``stop_tol`` (relative) over
    the last ``stop_window`` steps; 0 = always run ``steps`` (the cap)."""
    stop_tol: float = field(default=1e-3, metadata=_range(0.0, 1.0))
    operating_weights: tuple = (0.25, 0.5, 1.0, 2.0)
    """Leakage weights ``scripts/operating_point.py`` compares under sensor noise."""
    finetune_steps: int = field(default=500, metadata=_range(0, 10_000_000))
    finetune_lr: float = field(default=3e-4, metadata=_range(1e-8, 10.0))


@dataclass(frozen=True)
class E2EConfig:
    steps: int = field(default=1000, metadata=_range(1, 10_000_000))
    batch_size: int = field(default=8, metadata=_range(1, 4096))
    lr_net: float = field(default=1e-3, metadata=_range(1e-8, 10.0))
    lr_optics: float = field(default=5e-2, metadata=_range(1e-8, 100.0))
    init: str = field(default="random", metadata=_range(choices=("lens", "random")))
    network_parallel: str = field(default="replicated", metadata=_range(choices=("replicated", "data")))
    """Under torchrun: every process runs the network on the whole batch (``replicated``), or
    each on its slice with BatchNorm and gradients synchronised (``data``;
    :mod:`dkolib.distributed.data_parallel`). One process: no difference."""


@dataclass(frozen=True)
class BudgetConfig:
    ladder_fractions: tuple = (0.25, 0.5, 1.0, 2.0)
    """Budgets as multiples of DKO's full cost (stage 1 + stage 2)."""
    seeds: tuple = (0, 1, 2)
    methods: tuple = ("electronic", "dko", "dko_ft", "e2e_scratch", "e2e_warm")
    """Methods compared (``dkolib.study.protocol.METHODS``; electronic, dko and e2e_scratch required)."""
    engines: tuple = ("fast", "reference")
    lr_grid: tuple = (0.5, 1.0, 2.0)
    """Learning-rate multipliers searched identically for every method."""
    lr_search: str = field(default="first_seed", metadata=_range(choices=("first_seed", "every_seed")))
    """Where the multiplier is selected: on the first seed with the fast engine, then reused by the
    other seeds and the reference engine (``first_seed``), or by every job for itself (``every_seed``)."""
    stage1_steps: int = field(default=0, metadata=_range(0, 10_000_000))
    """Stage-1 steps of the reference DKO run that defines the budget unit C_ref; 0 = the main
    chain's stage 1 (the step its plateau rule stopped at, ``results/<profile>/stage1/log.csv``)."""
    dko_steps: int = field(default=0, metadata=_range(0, 10_000_000))
    """Stage-2 steps of the reference DKO run; 0 = the main chain's stage 2 (its stopping rule's
    count, ``results/<profile>/dko/summary.csv``). Every DKO run of the experiment then stops by
    the same rule (``dko.stop_window``), capped by ``dko.steps`` and by what its budget has left."""
    stage1_stop: str = field(default="budget", metadata=_range(choices=("budget", "plateau")))
    """Where each seed's stage 1 ends: at its largest budget (``budget``: every electronic and DKO
    point spends its budget on training, at the constant rate that makes one run serve every
    budget), or at the main chain's plateau, ``N1`` steps (``plateau``: a budget above that cost
    reads the ``N1``-step network and spends less)."""
    finetune_steps: int = field(default=30, metadata=_range(0, 10_000_000))
    eval_items: int = field(default=0, metadata=_range(0, 10_000_000))
    """Test (and validation) images per evaluation; 0 = the whole split."""
    axes: tuple = ("wall", "flops")
    """Budget axes on which designs are snapshotted (wall-clock seconds, FLOPs)."""
    noise_eval: bool = False
    """Also evaluate every design with sensor noise (``full_psf_noise``), at every budget."""
    lr_tie_rel: float = field(default=0.0, metadata=_range(0.0, 1.0))
    """Learning-rate selection keeps the base multiplier (1) unless another beats its validation
    AbsRel by more than this fraction (seed noise), so that a tie never decides a result."""
    calib_steps: int = field(default=3, metadata=_range(1, 100))
    """Steps timed per component to calibrate C_ref."""


_TOLERANCE_LIMITS = {"radius_sigma_m": (0.0, 1e-7), "radius_bias_m": (-1e-7, 1e-7), "distance_rel": (-0.5, 0.5),
                     "photon_factors": (1e-6, 1e6), "read_noise_factors": (0.0, 1e4), "bandwidths_m": (0.0, 3e-7)}


@dataclass(frozen=True)
class ToleranceConfig:
    """Tolerance study of built designs (:mod:`dkolib.fab.tolerances`): errors, levels, images (SI units)."""

    eval_items: int = field(default=12, metadata=_range(0, 10_000_000))
    """Test images per evaluation; 0 = the whole split."""
    draws: int = field(default=5, metadata=_range(2, 1000))
    """Random radius-error draws per standard deviation (at least 2, for an interval)."""
    seed: int = field(default=0, metadata=_range(0, 2**31 - 1))
    """Draw ``d`` of the radius errors uses ``seed + d``; the sensor noise uses ``seed``."""
    radius_sigma_m: tuple = (2e-9, 5e-9, 10e-9)
    """Standard deviations of i.i.d. Gaussian radius errors, one per simulation cell."""
    radius_bias_m: tuple = (-5e-9, 5e-9)
    """Systematic radius errors (every cell)."""
    distance_rel: tuple = (-0.05, -0.01, 0.01, 0.05)
    """Relative errors of the metasurface-sensor distance."""
    photon_factors: tuple = (0.1, 10.0)
    """Multiples of ``optics.photons_per_pixel``."""
    read_noise_factors: tuple = (0.0, 2.0)
    """Multiples of ``optics.read_noise_e``."""
    bandwidths_m: tuple = (20e-9, 40e-9)
    """Widths of the illumination band around each design wavelength."""
    band_samples: int = field(default=5, metadata=_range(1, 101))
    """Wavelength samples across a band (midpoint rule)."""

    def __post_init__(self):
        for name, (lo, hi) in _TOLERANCE_LIMITS.items():
            for v in getattr(self, name):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                    hint = " (YAML reads 1e-9 as text: write 1.0e-9)" if isinstance(v, str) else ""
                    raise ConfigError(f"config key 'tolerances.{name}' must list numbers in [{lo:g}, {hi:g}] "
                                      f"(SI units), got {v!r}{hint}")


#: the main chain's optical designs a profile may read on the whole sensor
SENSOR_DESIGNS = ("dko", "dko_finetune", "dko_finetune_psf", "dko_finetune_noise", "e2e", "e2e_1x", "e2e_4x")


@dataclass(frozen=True)
class SensorConfig:
    """The whole sensor under the array (:mod:`dkolib.optics.sensor`, ``scripts/sensor_study.py``), SI units."""

    gap_m: float = field(default=0.0, metadata=_range(0.0, 1.0))
    """Least gap between neighbouring apertures; the array pitch is rounded up to whole pixels."""
    baffle_wall_m: float = field(default=0.0, metadata=_range(0.0, 1.0))
    """Height of opaque walls between apertures (0: none), modelled as an angular cut-off."""
    oversample: float = field(default=1.0, metadata=_range(1.0, 8.0))
    """Output-grid samples per Nyquist sample of the halo's fine-grid propagation."""
    eval_items: int = field(default=48, metadata=_range(0, 10_000_000))
    """Test images per whole-sensor evaluation; 0 = the whole split."""
    finetune_steps: int = field(default=200, metadata=_range(0, 10_000_000))
    """Steps of the back-end fine-tunes on noisy whole-sensor images (DKO's and E2E's alike)."""
    study_gaps_m: tuple = (0.0,)
    """Gaps the sensor study tries on the DKO design (besides ``gap_m``)."""
    study_baffle_walls_m: tuple = field(default=(), metadata={"may_be_empty": True})
    """Baffle heights the sensor study tries on the DKO design (may be empty: no baffle)."""
    designs: tuple = ("dko", "dko_finetune", "dko_finetune_psf", "dko_finetune_noise", "e2e")
    """The designs read on the whole sensor (the sensor study, and the physical evaluation's
    ``sensor`` modes); names of the main chain's designs."""
    finetune_designs: tuple = ("dko", "e2e")
    """Designs (among ``designs``) whose back ends are fine-tuned on noisy whole-sensor images,
    as ``<name>_finetune_sensor``."""

    def __post_init__(self):
        for name in ("study_gaps_m", "study_baffle_walls_m"):
            for v in getattr(self, name):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                    raise ConfigError(f"config key 'sensor.{name}' must list lengths in metres in [0, 1], got {v!r}")
        unknown = [d for d in self.designs if d not in SENSOR_DESIGNS]
        if unknown:
            raise ConfigError(f"config key 'sensor.designs' names {unknown}: choose among {list(SENSOR_DESIGNS)}")
        stray = [d for d in self.finetune_designs if d not in self.designs]
        if stray:
            raise ConfigError(f"config key 'sensor.finetune_designs' names {stray}, which 'sensor.designs' "
                              f"({list(self.designs)}) does not read: add them there or drop them here")


@dataclass(frozen=True)
class Config:
    profile: str = field(default="default", metadata=_range(choices=PROFILES))
    seed: int = field(default=0, metadata=_range(0, 2**31 - 1))
    threads: int = field(default=2, metadata=_range(1, 1024))
    device: str = field(default="cpu", metadata=_range(choices=("cpu", "cuda")))
    processes: int = field(default=1, metadata=_range(1, 4096))
    """Processes of the sharded jobs (stage 2 and E2E; ``dkolib.distributed``): > 1 makes the
    workflow launch them with ``torchrun --standalone --nproc_per_node processes`` (one GPU each
    with ``device: cuda``). Snakemake's ``--config processes=N`` overrides it."""
    optics: OpticsConfig = OpticsConfig()
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    stage1: TrainConfig = TrainConfig()
    dko: DKOConfig = DKOConfig()
    e2e: E2EConfig = E2EConfig()
    budget: BudgetConfig = BudgetConfig()
    tolerances: ToleranceConfig = ToleranceConfig()
    sensor: SensorConfig = SensorConfig()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, overrides: Mapping[str, Any]) -> "Config":
        """A copy with dotted-key overrides applied (validated like a file)."""
        merged = self.to_dict()
        for key, value in overrides.items():
            _set_dotted(merged, key, value)
        return from_dict(merged)


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for i, part in enumerate(parts[:-1]):
        if part not in node or not isinstance(node[part], dict):
            raise ConfigError(f"unknown config key '{key}': '{'.'.join(parts[: i + 1])}' is not a section")
        node = node[part]
    if parts[-1] not in node:
        raise ConfigError(f"unknown config key '{key}'")
    node[parts[-1]] = value


def _coerce(key: str, value: Any, typ: Any, meta: Mapping) -> Any:
    if isinstance(value, str) and typ is not str:
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ConfigError(f"config key '{key}': cannot parse {value!r}") from err
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
    elif typ is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value):
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        value = int(value)
    elif typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"config key '{key}' must be a finite number, got {value!r}")
        value = float(value)
    elif typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
    elif typ is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        if len(value) == 0 and not meta.get("may_be_empty"):
            raise ConfigError(f"config key '{key}' must be a non-empty list, got {value!r}")
        value = tuple(value)
    lo, hi, choices = meta.get("lo"), meta.get("hi"), meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"config key '{key}' must be one of {list(choices)}, got {value!r}")
    if lo is not None and value < lo:
        raise ConfigError(f"config key '{key}' = {value!r} is below its minimum {lo}")
    if hi is not None and value > hi:
        raise ConfigError(f"config key '{key}' = {value!r} is above its maximum {hi}")
    return value


def _build(cls: type, data: Mapping, prefix: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"config section '{prefix.rstrip('.') or '<root>'}' must be a mapping")
    hints = get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}' (known keys here: {', '.join(sorted(known))})"
        )
    kwargs = {}
    for name, f in known.items():
        if name not in data:
            continue
        typ = hints[name]
        if dataclasses.is_dataclass(typ):
            kwargs[name] = _build(typ, data[name], f"{prefix}{name}.")
        else:
            if get_origin(typ) is not None and get_args(typ):
                typ = get_origin(typ)
            kwargs[name] = _coerce(prefix + name, data[name], typ, f.metadata)
    obj = cls(**kwargs)
    _check_consistency(obj, prefix)
    return obj


def _check_consistency(obj: Any, prefix: str) -> None:
    if isinstance(obj, OpticsConfig):
        if obj.kernel_size % 2 != 1:
            raise ConfigError(f"config key '{prefix}kernel_size' must be odd, got {obj.kernel_size}")
        if obj.render_window_px < obj.kernel_size:
            raise ConfigError(
                f"config key '{prefix}render_window_px' ({obj.render_window_px}) must be at least "
                f"kernel_size ({obj.kernel_size})"
            )
        if obj.n_cells % 2 != 1:
            raise ConfigError(
                f"config key '{prefix}n_cells' must be odd so that the optical axis falls on a cell, "
                f"got {obj.n_cells} (the paper uses 1025)"
            )
        if len(obj.wavelengths_m) != 3 or not all(200e-9 <= w <= 2e-6 for w in obj.wavelengths_m):
            raise ConfigError(
                f"config key '{prefix}wavelengths_m' must list 3 wavelengths in metres between "
                f"200e-9 and 2e-6, got {obj.wavelengths_m!r}"
            )
        if obj.meta_atom not in ("tio2", "ideal") and not obj.meta_atom.lower().endswith(".csv"):
            raise ConfigError(
                f"config key '{prefix}meta_atom' must be 'tio2', 'ideal' or the path of a .csv meta-atom "
                f"library, got {obj.meta_atom!r}"
            )


def from_dict(data: Mapping) -> Config:
    return _build(Config, data, "")


def profile_path(profile: str) -> Path:
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile '{profile}': choose one of {', '.join(PROFILES)}")
    return project_root() / "config" / f"{profile}.yaml"


def load_config(profile: str = "default", overrides: Mapping[str, Any] | None = None) -> Config:
    """Read ``config/<profile>.yaml`` and apply dotted-key ``overrides``."""
    path = profile_path(profile)
    if not path.exists():
        raise ConfigError(f"profile file {path} is missing: run from the project root (the folder that "
                          f"holds config/) or set DKOLIB_ROOT")
    with open(path) as fh:
        data = yaml.safe_load(fh) or {}
    if data.get("profile", profile) != profile:
        raise ConfigError(f"{path} declares profile '{data.get('profile')}', expected '{profile}'")
    data["profile"] = profile
    cfg = from_dict(data)
    return cfg.replace(dict(overrides)) if overrides else cfg


def parse_overrides(items: list[str]) -> dict[str, str]:
    """Turn ``["optics.n_cells=129", ...]`` into a dict (values parsed later)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like section.key=value")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out
