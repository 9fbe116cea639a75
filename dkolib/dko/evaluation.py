"""Evaluate designs idealised (7 x 7 crop kernel) and physically (full PSF, sensor noise).

Three evaluation modes of an optical front end (``OpticalFrontEnd.mode``):

* ``'crop'``: the paper's idealised model, the PSF cropped to the ``k x k``
  kernel window is the conv1 kernel;
* ``'full_psf'``: the sensor image rendered with the PSF over
  ``optics.render_window_px`` (all the light a real sensor sees around the kernel);
* ``'full_psf_noise'``: as ``'full_psf'`` plus shot and read noise at
  ``optics.photons_per_pixel`` / ``optics.read_noise_e``, drawn from a generator
  seeded with the evaluation seed (the same noise for every design).

The electronic gain of a design (fitted on the crop for DKO, learned for E2E)
is used unchanged in all three modes: the physical modes test the design as
built, not re-calibrated.

A purely electronic network has no optics: it is evaluated once and that row is
repeated for every requested mode (identical numbers), so that it can serve as
the reference line in every mode.

:func:`ideal_optics_model` is the bound no metasurface can beat at a given photon
level: the electronic network's exact kernels delivered by optics that put all
the light through each aperture into the kernel window, read out with the same
sensor noise.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

import pandas as pd
import torch
import torch.nn as nn

from ..io import load_torch
from .frontend import OpticalFrontEnd, find_frontend, with_first_layer

EVAL_MODES = ("crop", "full_psf", "full_psf_noise")
METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")
EVAL_COLUMNS = ("design", "eval") + METRIC_NAMES


def _metric_names() -> tuple[str, ...]:
    try:
        from ..depth.metrics import METRIC_COLUMNS
        return tuple(METRIC_COLUMNS)
    except ImportError:
        return METRIC_NAMES


def hybrid_from_dko(stage1_model: nn.Module, array: nn.Module, gain: torch.Tensor | None, optics_cfg,
                    mode: str = "crop", engine: str = "fast") -> nn.Module:
    """A copy of the stage-1 ``DepthNet`` with the DKO array as its (frozen) first layer.

    Args:
        stage1_model: trained electronic ``DepthNet`` (left untouched).
        array: ``MetasurfaceArray`` with ``2 * C1 * 3`` elements (shared, not copied; its
            parameters are frozen).
        gain: ``[C1]`` electronic gain (e.g. :func:`dkolib.dko.synthesis.fit_gain`); None = ones.
        optics_cfg: :class:`dkolib.config.OpticsConfig`.
        mode: ``'crop'`` | ``'full_psf'`` | ``'full_psf_noise'``.
        engine: PSF engine.
    Returns the hybrid model in eval mode with PSF caching on.
    """
    from .frontend import make_hybrid

    if mode not in EVAL_MODES:
        raise ValueError(f"mode must be one of {EVAL_MODES}, got {mode!r}")
    model = make_hybrid(stage1_model, array, optics_cfg, mode=mode, engine=engine,
                        gain=None if gain is None else torch.as_tensor(gain).detach().float(),
                        trainable_gain=False, cache_psf=True)
    model.first_layer.freeze_optics(True)
    return model.eval()


@contextmanager
def front_end_mode(model: nn.Module, mode: str, engine: str | None = None) -> Iterator[nn.Module]:
    """Temporarily run a hybrid ``model``'s front end in ``mode`` (restored on exit).

    The front end is rebuilt around the same metasurface array with the same gain and
    engine (PSF caching on, optics frozen inside the block, the requires_grad flags
    restored afterwards; the gain it ends with is copied back). Yields ``model``.
    """
    from .frontend import OpticalFrontEnd

    if mode not in EVAL_MODES:
        raise ValueError(f"mode must be one of {EVAL_MODES}, got {mode!r}")
    fe = find_frontend(model)
    if fe is None:
        raise TypeError("front_end_mode needs a model whose first_layer is an OpticalFrontEnd")
    flags = [p.requires_grad for p in fe.array.parameters()]
    new_fe = OpticalFrontEnd(fe.array, fe.optics_cfg, fe.n_out, fe.n_in, mode=mode,
                             engine=engine or fe.engine, gain=fe.gain.detach().clone(),
                             trainable_gain=False, cache_psf=True)
    new_fe.freeze_optics(True)
    old = model.replace_first_layer(new_fe)
    try:
        yield model
    finally:
        model.replace_first_layer(old)
        with torch.no_grad():  # a gain learned inside the block (a fine-tune) is kept
            fe.gain.copy_(new_fe.gain.detach())
        for p, f in zip(fe.array.parameters(), flags):
            p.requires_grad_(f)


def _evaluate(model: nn.Module, dataset, cfg, seed: int, max_items: int | None,
              per_image: list | None = None) -> dict:
    from .train import evaluate

    with torch.no_grad():
        return evaluate(model, dataset, cfg, median_scaling=False, max_items=max_items, noise_seed=seed,
                        per_image=per_image)


def evaluate_design(model: nn.Module | Callable[[str], nn.Module], dataset, cfg,
                    evals: Iterable[str] = EVAL_MODES, seed: int = 0, design: str = "design",
                    max_items: int | None = None, engine: str | None = None,
                    per_image: dict | None = None, sensor: tuple | None = None) -> pd.DataFrame:
    """Depth metrics of one design in each evaluation mode.

    Args:
        model: a ``DepthNet`` (electronic, or hybrid with an ``OpticalFrontEnd`` first layer,
            whose mode is switched per evaluation by :func:`front_end_mode`), or a factory
            ``mode -> model``.
        dataset: items ``{"rgb": [3, H, W], "depth_m": [1, H, W]}``.
        cfg: :class:`dkolib.config.Config` (depth range, noise levels via the front end).
        evals: subset of ``('crop', 'full_psf', 'full_psf_noise')`` and of the whole-sensor modes
            ``('sensor', 'sensor_noise')`` (:mod:`dkolib.dko.sensor_eval`), which a hybrid module
            reads from ``sensor = (psfs, geometry)`` (a factory builds its own model per mode).
        seed: seeds the sensor noise (``train.evaluate(noise_seed=seed)``).
        design: value of the ``design`` column.
        max_items: evaluate only the first items (None: all).
        engine: PSF engine for rebuilt front ends (default: the model's own).
        per_image: a dict to fill with ``{mode: [one metrics dict per image]}`` (dataset order),
            for comparisons paired image by image.
    Returns a DataFrame with columns ``design, eval, abs_rel, sq_rel, rmse, rmse_log, a1, a2, a3``,
    one row per mode. An electronic model is evaluated once; its row is repeated per mode.
    """
    from .sensor_eval import SENSOR_MODES, sensor_model

    evals = tuple(evals)
    bad = [e for e in evals if e not in EVAL_MODES + SENSOR_MODES]
    if bad or not evals:
        raise ValueError(f"evals must be a non-empty subset of {EVAL_MODES + SENSOR_MODES}, got {evals}")
    names = _metric_names()
    rows = []
    electronic_metrics = None
    electronic_images: list = []
    for mode in evals:
        images: list = []
        if isinstance(model, nn.Module):
            if find_frontend(model) is None:
                if electronic_metrics is None:
                    electronic_metrics = _evaluate(model, dataset, cfg, seed, max_items, electronic_images)
                metrics, images = electronic_metrics, electronic_images
            elif mode in SENSOR_MODES:
                if sensor is None:
                    raise ValueError(f"mode {mode!r} reads the whole sensor: pass sensor=(psfs, geometry) "
                                     "(dkolib.dko.sensor_eval.sensor_psfs_for)")
                metrics = _evaluate(sensor_model(model, *sensor, mode), dataset, cfg, seed, max_items, images)
            else:
                with front_end_mode(model, mode, engine) as m:
                    metrics = _evaluate(m, dataset, cfg, seed, max_items, images)
        elif callable(model):
            metrics = _evaluate(model(mode), dataset, cfg, seed, max_items, images)
        else:
            raise TypeError(f"model must be an nn.Module or a callable mode -> model, got {type(model).__name__}")
        missing = [n for n in names if n not in metrics]
        if missing:
            raise KeyError(f"evaluate() returned no {missing} (got {sorted(metrics)})")
        rows.append({"design": design, "eval": mode, **{n: float(metrics[n]) for n in names}})
        if per_image is not None:
            per_image[mode] = images
    return pd.DataFrame(rows, columns=["design", "eval", *names])


# ------------------------------------------------------------------ ideal optics


class IdealOpticsFrontEnd(OpticalFrontEnd):
    """A front end whose PSFs are given, not simulated: ``psf [E, k, k]`` on the kernel window.

    In the full-window modes the PSFs are zero-padded to ``render_window_px`` (no light
    outside the kernel window). There is no metasurface array (an empty module).
    """

    def __init__(self, psf: torch.Tensor, optics_cfg, n_out: int, n_in: int, mode: str, gain: torch.Tensor):
        super().__init__(nn.Module(), optics_cfg, n_out, n_in, mode=mode, gain=gain)
        k = int(optics_cfg.kernel_size)
        if tuple(psf.shape) != (n_out * n_in * 2, k, k):
            raise ValueError(f"psf must be [{n_out * n_in * 2}, {k}, {k}], got {tuple(psf.shape)}")
        pad = (self.window_px - k) // 2
        self.register_buffer("fixed_psf", torch.nn.functional.pad(psf.detach().float(), (pad,) * 4))

    def compute_psf(self) -> torch.Tensor:
        return self.fixed_psf


def ideal_optics_psf(kernels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ideal optics for signed kernels ``[C_out, C_in, k, k]``: ``(psf [E, k, k], gain [C_out, C_in, 2])``.

    Each metasurface delivers all the light through its aperture into the kernel
    window: its PSF is the positive (or negative) part of the kernel normalised to
    unit sum, and the per-metasurface gain is that part's sum, so that
    ``g+ psf+ - g- psf- = K`` exactly. An all-zero part gets a zero PSF and gain.
    """
    if kernels.dim() != 4:
        raise ValueError(f"kernels must be [C_out, C_in, k, k], got {tuple(kernels.shape)}")
    parts = torch.stack([kernels.clamp_min(0), (-kernels).clamp_min(0)], 2).double()  # [O, I, 2, k, k]
    gain = parts.sum((-2, -1))
    psf = parts / gain.clamp_min(1e-30)[..., None, None]
    return psf.reshape(-1, *kernels.shape[-2:]).float(), gain.float()


def ideal_optics_model(stage1_model: nn.Module, optics_cfg, mode: str = "full_psf_noise") -> nn.Module:
    """A copy of the electronic ``DepthNet`` read through ideal optics (see :func:`ideal_optics_psf`).

    In ``'crop'`` and ``'full_psf'`` modes it computes exactly the electronic network; in
    ``'full_psf_noise'`` it adds the sensor noise of ``optics_cfg`` to every metasurface
    read-out: the accuracy no design can beat at that photon level. Returns the model in
    eval mode.
    """
    if mode not in EVAL_MODES:
        raise ValueError(f"mode must be one of {EVAL_MODES}, got {mode!r}")
    weight = stage1_model.first_layer.weight.detach()
    psf, gain = ideal_optics_psf(weight)
    fe = IdealOpticsFrontEnd(psf, optics_cfg, weight.shape[0], weight.shape[1], mode, gain)
    return with_first_layer(stage1_model, fe).eval()


# ------------------------------------------------------------------ loading


def load_design(path: str | Path, cfg=None, stage1: str | Path | None = None, engine: str | None = None) -> nn.Module:
    """Build a design's model from files on disk.

    ``path`` may be

    * a checkpoint written by ``train.save_model``: ``kind='electronic'`` gives the
      ``DepthNet``; any ``kind`` starting with ``'hybrid'`` (E2E, fine-tuned DKO) is
      rebuilt as a ``DepthNet`` with an ``OpticalFrontEnd`` (array from the checkpoint's
      optics config) and its state dict loaded strictly;
    * a DKO output folder holding ``array.pt`` and ``gain.pt`` (from ``scripts/run_dko.py``):
      the array is placed in front of the stage-1 network ``stage1`` (required).

    ``cfg`` overrides the configuration stored in the checkpoint (its optics and model
    sections must match the stored arrays). Returns the model in eval mode.
    """
    from ..config import from_dict
    from .frontend import make_hybrid
    from ..depth.network import DepthNet
    from .synthesis import load_array
    from .train import load_depthnet

    path = Path(path)
    if path.is_dir():
        if not (path / "array.pt").exists() or not (path / "gain.pt").exists():
            raise FileNotFoundError(f"{path} is a folder but holds no array.pt + gain.pt (a DKO output)")
        if stage1 is None:
            raise ValueError(f"design {path} is a DKO array: pass the stage-1 network checkpoint (stage1=...)")
        base = load_depthnet(Path(stage1), cfg)
        cfg_ = cfg if cfg is not None else from_dict(load_torch(stage1, map_location="cpu")["config"])
        array = load_array(path / "array.pt", cfg_.optics)
        gain = load_torch(path / "gain.pt", map_location="cpu")
        return hybrid_from_dko(base, array, gain, cfg_.optics, "crop", engine or cfg_.optics.engine)
    obj = load_torch(path, map_location="cpu")
    if not isinstance(obj, dict) or "kind" not in obj or "state_dict" not in obj:
        raise ValueError(f"{path} is not a checkpoint written by train.save_model (no 'kind'/'state_dict')")
    kind = str(obj["kind"])
    cfg_ = cfg if cfg is not None else from_dict(obj["config"])
    if kind == "electronic":
        return load_depthnet(path, cfg_).eval()
    if not kind.startswith("hybrid"):
        raise ValueError(f"{path}: unknown model kind {kind!r}")
    from .train import _build_array

    base = DepthNet(cfg_.model, kernel_size=cfg_.optics.kernel_size)
    array = _build_array(cfg_, base.conv1_channels, "lens", torch.Generator().manual_seed(0))
    stored_gain = obj["state_dict"].get("first_layer.gain")  # per channel or per metasurface
    model = make_hybrid(base, array, cfg_.optics, mode="crop", engine=engine or cfg_.optics.engine,
                        gain=None if stored_gain is None else torch.ones_like(stored_gain),
                        trainable_gain=False, cache_psf=True)
    model.load_state_dict(obj["state_dict"])
    model.first_layer.freeze_optics(True)
    return model.eval()
