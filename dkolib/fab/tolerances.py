"""Tolerance of a built hybrid design to fabrication, assembly and sensor errors.

A design (DKO, fine-tuned DKO, E2E: a ``DepthNet`` whose first layer is an
:class:`~dkolib.dko.frontend.OpticalFrontEnd`) is first turned into its *as-built*
form: a :class:`BuiltArray` holds what was fabricated (one cylinder radius per
simulation cell, or one phase for an ideal atom) and the wavelengths each
metasurface is lit with. Every perturbation returns a perturbed **copy** (the
original model, its array and its gain are never modified), whose front end
(a :class:`BuiltFrontEnd`) is in ``full_psf_noise`` mode by default, so that
:func:`dkolib.dko.evaluation.evaluate_design` scores what a camera would see.
The electronic gain of the design is kept unchanged (the design as built, not
re-calibrated).

The errors
----------
* :func:`radius_error`: i.i.d. Gaussian radius errors, one per *simulation cell*
  (2.5 um at every profile's pitch), plus an optional systematic bias. A cell holds
  many 300 nm meta-atoms; the model is an error correlated over one cell. Radii are
  clamped to the meta-atom library's range ``[r_min, r_max]`` (the library has no
  data beyond it); :attr:`BuiltArray.clamped_cells` counts the clamped cells.
* :func:`sensor_distance_error`: the metasurface-sensor distance ``z -> z (1 + e)``;
  the PSF is propagated over the new distance by the profile's PSF engine.
* :func:`photon_level`, :func:`read_noise`: the sensor's photons per pixel and
  read noise (:class:`~dkolib.optics.render.SensorNoise`).
* :func:`wavelength_band`: each metasurface lit by a flat band of width ``B``
  around its design wavelength instead of one line. The intensity PSF is the
  incoherent mean over ``n_samples`` wavelengths at the band's midpoints, each
  with the library's transmission at that wavelength
  (``MetaAtomLibrary.transmission_at``, linear between its 25 nm grid rows) and
  propagated at that wavelength. **Edges**: the library covers 400-700 nm, and the
  blue and red channels sit on its edges (400 and 700 nm). Their band is
  truncated to the library's range: the 400 nm channel sees ``[400, 400 + B/2]``
  and the 700 nm channel ``[700 - B/2, 700]`` (half the width, centred off the
  design wavelength); the 550 nm channel sees the full band. No light outside the
  library's range is simulated (it could only be extrapolated).

:func:`tolerance_cases` lists the cases of a profile (``cfg.tolerances``);
:func:`run_tolerance_study` evaluates them; :func:`degradation` turns the table into
increases of a metric over each design's unperturbed value, with intervals over the
random draws.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..dko.evaluation import METRIC_NAMES, evaluate_design, load_design
from ..dko.frontend import OpticalFrontEnd, find_frontend, make_hybrid
from ..optics.metasurface import MetasurfaceArray
from ..optics.propagation import psf as compute_psf

NOISY = "full_psf_noise"
PERTURBATIONS = ("none", "radius_random", "radius_bias", "sensor_distance", "photons", "read_noise", "bandwidth")
UNITS = {"none": "", "radius_random": "nm", "radius_bias": "nm", "sensor_distance": "%",
         "photons": "photons/px", "read_noise": "e-", "bandwidth": "nm"}
"""Unit of the ``level`` column per perturbation (radius sigma / bias, distance error, ...)."""
_TO_SI = {"none": 1.0, "radius_random": 1e-9, "radius_bias": 1e-9, "sensor_distance": 1e-2, "photons": 1.0,
          "read_noise": 1.0, "bandwidth": 1e-9}
TABLE_COLUMNS = ("design", "perturbation", "level", "unit", "draw", *METRIC_NAMES, "clamped_fraction",
                 "eval_items", "seconds")
REFERENCES = ("electronic", "constant")
"""Reference rows of the table: the electronic network (no optics) and the constant-depth predictor."""


def _is_library(atom) -> bool:
    return hasattr(atom, "r_min_m") and hasattr(atom, "r_max_m")


def band_samples_m(centre_m: float, bandwidth_m: float, n_samples: int,
                   limits_m: tuple[float, float] | None = None) -> np.ndarray:
    """Wavelengths ``[S]`` (metres) sampling a flat band of width ``bandwidth_m`` around ``centre_m``.

    Midpoint rule: ``n_samples`` equal sub-bands of ``[lo, hi]``, where the band is
    truncated to ``limits_m`` (the meta-atom library's range; see the module docstring).
    A band of zero width is the single wavelength ``centre_m`` (``S = 1``).
    """
    if not bandwidth_m >= 0:
        raise ValueError(f"bandwidth_m must be >= 0 (metres), got {bandwidth_m}")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    lo, hi = centre_m - bandwidth_m / 2, centre_m + bandwidth_m / 2
    if limits_m is not None:
        if not limits_m[0] <= centre_m <= limits_m[1]:
            raise ValueError(f"design wavelength {centre_m:.4g} m lies outside the library range "
                             f"[{limits_m[0]:.4g}, {limits_m[1]:.4g}] m")
        lo, hi = max(lo, limits_m[0]), min(hi, limits_m[1])
    if bandwidth_m == 0:
        return np.array([centre_m])
    return lo + (hi - lo) * (np.arange(n_samples) + 0.5) / n_samples


class BuiltArray(nn.Module):
    """A metasurface array as fabricated and lit: fixed cells, wavelength samples per element.

    Args:
        cells: ``[E, N, N]`` cylinder radii (metres) for a ``MetaAtomLibrary``, or phases
            (rad) for an ``IdealPhaseAtom``.
        wavelengths_m: ``[E]`` design wavelength of each element (metres).
        band_m: ``[E, S]`` wavelengths lighting each element (metres); the PSF is the mean
            of the ``S`` monochromatic PSFs (flat spectrum). ``S = 1``: monochromatic.
        atom: the meta-atom model.
        n_out, n_in: conv1 output / input channels (``E = 2 n_out n_in``, element order of
            :class:`~dkolib.optics.metasurface.MetasurfaceArray`).
        clamped_cells: cells whose perturbed radius was clamped to the library's range.
    """

    element_index = staticmethod(MetasurfaceArray.element_index)

    def __init__(self, cells: torch.Tensor, wavelengths_m: torch.Tensor, band_m: torch.Tensor, atom,
                 n_out: int, n_in: int, clamped_cells: int = 0):
        super().__init__()
        E = 2 * int(n_out) * int(n_in)
        if cells.dim() != 3 or cells.shape[0] != E or cells.shape[1] != cells.shape[2]:
            raise ValueError(f"cells must be [E = 2 n_out n_in = {E}, N, N], got {tuple(cells.shape)}")
        if tuple(wavelengths_m.shape) != (E,) or band_m.dim() != 2 or band_m.shape[0] != E:
            raise ValueError(f"wavelengths_m must be [{E}] and band_m [{E}, S], got "
                             f"{tuple(wavelengths_m.shape)} and {tuple(band_m.shape)}")
        self.atom, self.n_out, self.n_in = atom, int(n_out), int(n_in)
        self.is_library = _is_library(atom)
        self.clamped_cells = int(clamped_cells)
        self.register_buffer("cells", cells.detach().clone())
        self.register_buffer("wavelengths_m", wavelengths_m.detach().to(torch.float64).clone())
        self.register_buffer("band_m", band_m.detach().to(torch.float64).clone())

    @classmethod
    def from_array(cls, array: nn.Module) -> BuiltArray:
        """The as-built form of a :class:`~dkolib.optics.metasurface.MetasurfaceArray` (monochromatic)."""
        if not isinstance(array, MetasurfaceArray):
            raise TypeError(f"expected a MetasurfaceArray (a design's fabricated optics), got {type(array).__name__}")
        with torch.no_grad():
            cells = array.radii_m() if array.is_library else array.latent
        wl = array.wavelengths_m
        return cls(cells, wl, wl[:, None], array.atom, array.n_out, array.n_in)

    def replace(self, cells: torch.Tensor | None = None, band_m: torch.Tensor | None = None,
                clamped_cells: int | None = None) -> BuiltArray:
        """A new array with some fields replaced (this one is left as it is)."""
        return BuiltArray(self.cells if cells is None else cells, self.wavelengths_m,
                          self.band_m if band_m is None else band_m, self.atom, self.n_out, self.n_in,
                          self.clamped_cells if clamped_cells is None else clamped_cells)

    @property
    def n_cells(self) -> int:
        return int(self.cells.shape[-1])

    @property
    def clamped_fraction(self) -> float:
        """Fraction of all cells whose perturbed radius was clamped to the library's range."""
        return self.clamped_cells / self.cells.numel()

    def radii_m(self) -> torch.Tensor:
        """Cylinder radii ``[E, N, N]`` (metres); only for a meta-atom library."""
        if not self.is_library:
            raise TypeError("radii_m() needs a MetaAtomLibrary atom; this array uses an ideal phase atom")
        return self.cells

    def transmission(self, wavelengths_m: torch.Tensor | None = None) -> torch.Tensor:
        """Complex transmission ``[E, N, N]`` at ``wavelengths_m [E]`` (default: the design wavelengths).

        Without ``wavelengths_m`` a broadband array raises: one transmission cannot stand
        for a band (a plain ``OpticalFrontEnd`` rebuilt around this array, e.g. by
        ``front_end_mode``, would silently simulate one wavelength).
        """
        if wavelengths_m is None:
            if self.band_m.shape[1] != 1:
                raise TypeError("this array is lit by a band of wavelengths: its PSF is band-averaged by "
                                "BuiltArray.psf (use a BuiltFrontEnd, e.g. dkolib.fab.tolerances.as_built)")
            wavelengths_m = self.band_m[:, 0]
        return self.atom.transmission_at(self.cells, wavelengths_m)

    def psf(self, window_px: int, optics_cfg, engine: str = "fast") -> torch.Tensor:
        """PSFs ``[E, W, W]`` (fraction of the aperture energy per pixel), mean over the band samples."""
        out = None
        for s in range(self.band_m.shape[1]):
            wl = self.band_m[:, s]
            p = compute_psf(self.transmission(wl), wl, optics_cfg, window_px, engine=engine)
            out = p if out is None else out + p
        return out if self.band_m.shape[1] == 1 else out / self.band_m.shape[1]

    def extra_repr(self) -> str:
        return (f"n_out={self.n_out}, n_in={self.n_in}, n_cells={self.n_cells}, band_samples={self.band_m.shape[1]}, "
                f"clamped_cells={self.clamped_cells}")


class BuiltFrontEnd(OpticalFrontEnd):
    """An :class:`~dkolib.dko.frontend.OpticalFrontEnd` whose PSFs come from a :class:`BuiltArray`.

    Same forward (+/- read-outs, gain, sensor noise of ``optics_cfg``); the PSFs are
    :meth:`BuiltArray.psf` on this front end's window with its ``optics_cfg`` (so a
    changed sensor distance is propagated), computed once and cached.
    """

    def compute_psf(self) -> torch.Tensor:
        key = self._version_key()
        if self._cache is None or self._cache_key != key:
            with torch.no_grad():
                psf = self.array.psf(self.window_px, self.optics_cfg, self.engine)
            expected = (self.n_out * self.n_in * 2, self.window_px, self.window_px)
            if tuple(psf.shape) != expected:
                raise RuntimeError(f"BuiltArray.psf returned {tuple(psf.shape)}, expected {expected}")
            self._cache, self._cache_key = psf, key
        return self._cache


# ------------------------------------------------------------------ building perturbed copies


def _front_end(model: nn.Module) -> OpticalFrontEnd:
    fe = find_frontend(model)
    if fe is None:
        raise TypeError("tolerances perturb the optics of a hybrid design: this model has no OpticalFrontEnd "
                        "first layer (an electronic network has no optics; evaluate it as a reference)")
    return fe


def built_array(model: nn.Module) -> BuiltArray:
    """The :class:`BuiltArray` of a hybrid ``model`` (its own if already built, else made from its array)."""
    fe = _front_end(model)
    return fe.array if isinstance(fe.array, BuiltArray) else BuiltArray.from_array(fe.array)


def as_built(model: nn.Module, array: BuiltArray | None = None, optics_cfg=None, mode: str = NOISY) -> nn.Module:
    """A copy of the hybrid ``model`` with a :class:`BuiltFrontEnd` around ``array`` in ``mode``.

    ``array`` defaults to :func:`built_array` ``(model)`` and ``optics_cfg`` to the model's
    own; the gain and the PSF engine are the model's (copied). ``model`` is left untouched.
    Returns the copy in eval mode.
    """
    fe = _front_end(model)
    array = built_array(model) if array is None else array
    optics_cfg = fe.optics_cfg if optics_cfg is None else optics_cfg
    gain = fe.gain.detach().clone()
    hybrid = make_hybrid(model, array, optics_cfg, mode=mode, engine=fe.engine, gain=gain, cache_psf=True)
    hybrid.replace_first_layer(BuiltFrontEnd(array, optics_cfg, fe.n_out, fe.n_in, mode=mode, engine=fe.engine,
                                             gain=gain, cache_psf=True))
    return hybrid.eval()


def radius_error(model: nn.Module, sigma_m: float = 0.0, bias_m: float = 0.0,
                 generator: torch.Generator | None = None, mode: str = NOISY) -> nn.Module:
    """Radii ``r + bias_m + sigma_m z`` (``z`` i.i.d. standard normal per cell, from ``generator``).

    Perturbed radii outside the library's range are clamped to it; the copy's
    ``first_layer.array.clamped_cells`` counts them. Needs a meta-atom library design.
    """
    if not sigma_m >= 0:
        raise ValueError(f"sigma_m must be >= 0 (metres), got {sigma_m}")
    array = built_array(model)
    if not array.is_library:
        raise TypeError("radius errors need a MetaAtomLibrary design (optics.meta_atom: tio2); "
                        "this design uses ideal phase atoms, which have no radius")
    radii = array.cells
    z = torch.randn(radii.shape, generator=generator, dtype=torch.float64).to(radii.device)  # CPU draws: any device
    raw = radii.to(torch.float64) + bias_m + sigma_m * z
    clamped = raw.clamp(array.atom.r_min_m, array.atom.r_max_m)
    n_clamped = int((clamped != raw).sum())
    return as_built(model, array.replace(cells=clamped.to(radii.dtype), clamped_cells=n_clamped), mode=mode)


def _with_optics(model: nn.Module, mode: str, **changes) -> nn.Module:
    fe = _front_end(model)
    return as_built(model, optics_cfg=dataclasses.replace(fe.optics_cfg, **changes), mode=mode)


def sensor_distance_error(model: nn.Module, relative: float, mode: str = NOISY) -> nn.Module:
    """The sensor at ``z (1 + relative)`` instead of ``z`` (the PSF propagated over the new distance)."""
    if not relative > -1:
        raise ValueError(f"relative distance error must be > -1, got {relative}")
    z = _front_end(model).optics_cfg.sensor_distance_m
    return _with_optics(model, mode, sensor_distance_m=z * (1 + relative))


def photon_level(model: nn.Module, photons_per_pixel: float, mode: str = NOISY) -> nn.Module:
    """``photons_per_pixel`` photo-electrons for a white pixel instead of the model's.

    The shot-noise variance of the normalised signal ``s`` is ``s / photons_per_pixel``.
    """
    if not photons_per_pixel > 0:
        raise ValueError(f"photons_per_pixel must be > 0, got {photons_per_pixel}")
    return _with_optics(model, mode, photons_per_pixel=float(photons_per_pixel))


def read_noise(model: nn.Module, read_noise_e: float, mode: str = NOISY) -> nn.Module:
    """A read noise of ``read_noise_e`` electrons (rms) instead of the model's."""
    if not read_noise_e >= 0:
        raise ValueError(f"read_noise_e must be >= 0, got {read_noise_e}")
    return _with_optics(model, mode, read_noise_e=float(read_noise_e))


def wavelength_band(model: nn.Module, bandwidth_m: float, n_samples: int = 5, mode: str = NOISY) -> nn.Module:
    """Each element lit by a flat band of ``bandwidth_m`` around its design wavelength.

    Samples from :func:`band_samples_m`, truncated to the library's wavelength range
    (see the module docstring); the PSF is their incoherent mean.
    """
    array = built_array(model)
    limits = None
    if array.is_library:
        limits = (float(array.atom.wavelengths_m[0]), float(array.atom.wavelengths_m[-1]))
    rows = [band_samples_m(float(w), bandwidth_m, n_samples, limits) for w in array.wavelengths_m.tolist()]
    band_m = torch.tensor(np.stack(rows), dtype=torch.float64, device=array.band_m.device)
    return as_built(model, array.replace(band_m=band_m), mode=mode)


# ------------------------------------------------------------------ the study


_RADIUS_ERROR_STREAM = 0x7AD1
"""Names the random stream of fabrication radius errors (:func:`radius_error_seed`)."""


def radius_error_seed(seed: int, draw: int) -> int:
    """Generator seed of radius-error draw ``draw`` of a study seeded ``seed``.

    Derived through ``numpy.random.SeedSequence`` from ``(seed, draw, stream)`` rather than
    ``seed + draw``: a design whose random start was drawn from a small seed (0, 1, ...) would
    otherwise get fabrication errors from the same Mersenne-Twister stream as its own initial
    radii, i.e. errors correlated with the design.
    """
    import numpy as np

    return int(np.random.SeedSequence([int(seed), int(draw), _RADIUS_ERROR_STREAM]).generate_state(1, np.uint64)[0]
               & 0x7FFF_FFFF_FFFF_FFFF)


@dataclass(frozen=True)
class ToleranceCase:
    """One perturbation at one level (``level`` in :data:`UNITS`; ``draw`` numbers random draws)."""

    perturbation: str
    level: float
    draw: int = 0
    seed: int = 0
    band_samples: int = 5

    def apply(self, model: nn.Module, mode: str = NOISY) -> nn.Module:
        """The perturbed copy of ``model``."""
        value = self.level * _TO_SI[self.perturbation]
        if self.perturbation == "none":
            return as_built(model, mode=mode)
        if self.perturbation == "radius_random":
            gen = torch.Generator().manual_seed(radius_error_seed(self.seed, self.draw))
            return radius_error(model, sigma_m=value, generator=gen, mode=mode)
        if self.perturbation == "radius_bias":
            return radius_error(model, bias_m=value, mode=mode)
        if self.perturbation == "sensor_distance":
            return sensor_distance_error(model, value, mode=mode)
        if self.perturbation == "photons":
            return photon_level(model, value, mode=mode)
        if self.perturbation == "read_noise":
            return read_noise(model, value, mode=mode)
        if self.perturbation == "bandwidth":
            return wavelength_band(model, value, self.band_samples, mode=mode)
        raise ValueError(f"perturbation must be one of {PERTURBATIONS}, got {self.perturbation!r}")


def nominal_levels(cfg) -> dict[str, float]:
    """The unperturbed value of each perturbation's ``level`` (in :data:`UNITS`)."""
    return {"radius_random": 0.0, "radius_bias": 0.0, "sensor_distance": 0.0,
            "photons": float(cfg.optics.photons_per_pixel), "read_noise": float(cfg.optics.read_noise_e),
            "bandwidth": 0.0}


def tolerance_cases(cfg) -> list[ToleranceCase]:
    """The cases of ``cfg.tolerances``: the unperturbed design, then every error at every level."""
    tol = cfg.tolerances
    common = {"seed": tol.seed, "band_samples": tol.band_samples}
    cases = [ToleranceCase("none", 0.0, **common)]
    cases += [ToleranceCase("radius_random", s * 1e9, d, **common)
              for s in tol.radius_sigma_m for d in range(tol.draws)]
    cases += [ToleranceCase("radius_bias", b * 1e9, **common) for b in tol.radius_bias_m]
    cases += [ToleranceCase("sensor_distance", r * 100, **common) for r in tol.distance_rel]
    cases += [ToleranceCase("photons", f * cfg.optics.photons_per_pixel, **common) for f in tol.photon_factors]
    cases += [ToleranceCase("read_noise", f * cfg.optics.read_noise_e, **common) for f in tol.read_noise_factors]
    cases += [ToleranceCase("bandwidth", b * 1e9, **common) for b in tol.bandwidths_m]
    return cases


def _factory(built: nn.Module):
    """``built`` as ``evaluate_design``'s ``mode -> model`` form: its :class:`BuiltFrontEnd` is used as
    it is (a module would be rebuilt around a plain ``OpticalFrontEnd``, which cannot average a band)."""
    def factory(mode: str) -> nn.Module:
        if built.first_layer.mode != mode:
            raise ValueError(f"this copy was built for mode {built.first_layer.mode!r}, not {mode!r}")
        return built
    return factory


def _row(frame: pd.DataFrame, case: ToleranceCase, clamped: float, n_items: int, seconds: float) -> dict:
    row = frame.iloc[0]
    return {"design": row["design"], "perturbation": case.perturbation, "level": case.level,
            "unit": UNITS[case.perturbation], "draw": case.draw, **{m: float(row[m]) for m in METRIC_NAMES},
            "clamped_fraction": clamped, "eval_items": n_items, "seconds": seconds}


def run_tolerance_study(designs: Mapping[str, nn.Module], dataset, cfg,
                        references: Mapping[str, nn.Module] | None = None, progress: bool = True) -> pd.DataFrame:
    """Evaluate every case of :func:`tolerance_cases` for every hybrid design.

    Args:
        designs: name -> hybrid model (left untouched; each case evaluates a perturbed copy).
        dataset: test items ``{"rgb": [3, H, W], "depth_m": [1, H, W]}``; the first
            ``cfg.tolerances.eval_items`` are evaluated (0: all).
        cfg: :class:`dkolib.config.Config` (nominal optics and ``tolerances``).
        references: name -> model without optics (e.g. ``electronic``, ``constant``),
            evaluated once each (rows with perturbation ``'none'``).
    Every evaluation is ``full_psf_noise`` with the same images and the same sensor-noise
    seed (``cfg.tolerances.seed``), so rows differ by the perturbation only.
    Returns a DataFrame with :data:`TABLE_COLUMNS` (``clamped_fraction`` NaN where no radius
    changed; ``seconds``: wall time of the evaluation).
    """
    from tqdm.auto import tqdm

    tol = cfg.tolerances
    max_items = tol.eval_items or None
    n_items = len(dataset) if max_items is None else min(len(dataset), max_items)
    cases = tolerance_cases(cfg)
    references = dict(references or {})
    rows = []
    with tqdm(total=len(references) + len(designs) * len(cases), desc="tolerances", disable=not progress) as bar:
        for name, model in references.items():
            t0 = time.perf_counter()
            frame = evaluate_design(model, dataset, cfg, evals=(NOISY,), seed=tol.seed, design=name,
                                    max_items=max_items)
            rows.append(_row(frame, cases[0], math.nan, n_items, time.perf_counter() - t0))
            bar.update()
        for name, model in designs.items():
            for case in cases:
                bar.set_postfix_str(f"{name} {case.perturbation} {case.level:g}")
                t0 = time.perf_counter()
                built = case.apply(model, NOISY)
                frame = evaluate_design(_factory(built), dataset, cfg, evals=(NOISY,), seed=tol.seed,
                                        design=name, max_items=max_items)
                clamped = (built.first_layer.array.clamped_fraction
                           if case.perturbation.startswith("radius") else math.nan)
                rows.append(_row(frame, case, clamped, n_items, time.perf_counter() - t0))
                bar.update()
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def study_from_files(cfg, designs: Mapping[str, Path], stage1: Path, cache_dir: Path, split: str = "test",
                     progress: bool = True) -> pd.DataFrame:
    """:func:`run_tolerance_study` of designs on disk, with the electronic and constant references.

    ``designs``: name -> checkpoint or DKO folder (:func:`dkolib.dko.evaluation.load_design`);
    ``stage1``: the electronic network (reference, and back end of DKO folders); the constant
    predictor is the median of the training split's valid depths. Models run on ``cfg.device``.
    """
    from ..depth.data import get_dataset
    from ..depth.predict import constant_predictor, training_median_depth
    from ..dko.train import resolve_device

    device = resolve_device(cfg)
    models = {name: load_design(path, cfg, stage1=stage1).to(device) for name, path in designs.items()}
    median_m = training_median_depth(get_dataset(cfg, "train", cache_dir), cfg.data.min_depth_m,
                                     cfg.data.max_depth_m)
    references = {"electronic": load_design(stage1, cfg).to(device), "constant": constant_predictor(median_m).to(device)}
    return run_tolerance_study(models, get_dataset(cfg, split, cache_dir), cfg, references, progress=progress)


def degradation(table: pd.DataFrame, metric: str = "abs_rel", confidence: float = 0.95) -> pd.DataFrame:
    """Increase of ``metric`` over each design's unperturbed row, per perturbation and level.

    Columns ``design, perturbation, level, unit, draws, value, delta, delta_lo, delta_hi``:
    ``value`` and ``delta`` are means over the draws; ``[delta_lo, delta_hi]`` is the
    ``confidence`` Student-t interval of the mean over draws (NaN with one draw: a
    deterministic error has no spread). Reference rows are left out.
    """
    from scipy import stats

    if metric not in table.columns:
        raise KeyError(f"metric {metric!r} is not a column of the table ({list(table.columns)})")
    designs = [d for d in table["design"].unique() if (table["design"] == d).sum() > 1]
    base = table[table["perturbation"] == "none"].set_index("design")[metric]
    rows = []
    for (design, pert, level), grp in table[table["design"].isin(designs)].groupby(
            ["design", "perturbation", "level"], sort=False):
        if pert == "none":
            continue
        delta = grp[metric].to_numpy(float) - float(base[design])
        n = len(delta)
        half = (stats.t.ppf(0.5 + confidence / 2, n - 1) * delta.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
        rows.append({"design": design, "perturbation": pert, "level": level, "unit": grp["unit"].iloc[0],
                     "draws": n, "value": float(grp[metric].mean()), "delta": float(delta.mean()),
                     "delta_lo": float(delta.mean() - half), "delta_hi": float(delta.mean() + half)})
    return pd.DataFrame(rows, columns=["design", "perturbation", "level", "unit", "draws", "value", "delta",
                                       "delta_lo", "delta_hi"])


__all__ = [
    "NOISY",
    "PERTURBATIONS",
    "REFERENCES",
    "TABLE_COLUMNS",
    "UNITS",
    "BuiltArray",
    "BuiltFrontEnd",
    "ToleranceCase",
    "as_built",
    "band_samples_m",
    "built_array",
    "degradation",
    "nominal_levels",
    "photon_level",
    "radius_error",
    "read_noise",
    "run_tolerance_study",
    "sensor_distance_error",
    "study_from_files",
    "tolerance_cases",
    "wavelength_band",
]
