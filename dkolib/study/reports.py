"""Tables the notebooks show and the pipeline writes (each a pandas DataFrame).

Every function here is a thin composition of the evaluation code in
:mod:`dkolib.dko.train` and :mod:`dkolib.depth.metrics`; it exists so that notebooks stay
free of logic and the tables are unit-tested.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..config import Config
from ..depth.data import DepthDataset, get_dataset, motorcycle_scene
from ..depth.metrics import METRIC_COLUMNS
from .paths import ProfilePaths
from ..depth.predict import constant_predictor, training_median_depth
from ..dko.train import evaluate, load_depthnet, run_stage1

STAGE1_COLUMNS = ["model", "split", *METRIC_COLUMNS]


def motorcycle_dataset(cfg: Config) -> DepthDataset:
    """The real Middlebury motorcycle scene as a one-item dataset at the profile's image size."""
    scene = motorcycle_scene(cfg.data.height, cfg.data.width)
    rgb = np.round(scene["rgb"].transpose(1, 2, 0) * 255.0).astype(np.uint8)[None]
    return DepthDataset(rgb, scene["depth_m"][0][None])


def ensure_stage1(cfg: Config, paths: ProfilePaths | None = None, progress: bool = True):
    """The profile's trained stage-1 network: loaded if ``stage1/model.pt`` exists, else trained.

    Returns ``(model, log DataFrame)``.
    """
    paths = paths or ProfilePaths(cfg.profile)
    model_path = paths.stage1 / "model.pt"
    if not model_path.exists():
        run_stage1(cfg, paths.stage1, paths.data_cache, progress=progress)
    return load_depthnet(model_path, cfg), pd.read_csv(paths.stage1 / "log.csv")


def stage1_metrics(model: torch.nn.Module, cfg: Config, cache_dir: Path) -> pd.DataFrame:
    """Metrics of the trained network and of the constant (training-median) predictor.

    Rows: ``model`` in (electronic, constant) x ``split`` in (synthetic_test,
    motorcycle). The real motorcycle scene is indoors and seen by another
    camera, so it is evaluated with median scaling (Monodepth2's protocol for
    scale-ambiguous predictions); the synthetic test split is metric.
    Columns: :data:`STAGE1_COLUMNS`.
    """
    train_set = get_dataset(cfg, "train", cache_dir)
    median_m = training_median_depth(train_set, cfg.data.min_depth_m, cfg.data.max_depth_m)
    constant = constant_predictor(median_m)
    test_set = get_dataset(cfg, "test", cache_dir)
    real = motorcycle_dataset(cfg)
    rows = []
    for name, predictor in (("electronic", model), ("constant", constant)):
        rows.append({"model": name, "split": "synthetic_test", **evaluate(predictor, test_set, cfg)})
        rows.append({"model": name, "split": "motorcycle", **evaluate(predictor, real, cfg, median_scaling=True)})
    return pd.DataFrame(rows)[STAGE1_COLUMNS]


def depth_histogram(dataset, bins_m: np.ndarray, max_items: int = 64) -> pd.DataFrame:
    """Fraction of valid ground-truth pixels per depth bin over up to ``max_items`` items.

    Returns columns ``bin_lo_m, bin_hi_m, fraction`` (fractions sum to 1 over
    the pixels inside the bins).
    """
    n = min(len(dataset), max_items)
    depths = np.concatenate([np.asarray(dataset[i]["depth_m"]).ravel() for i in range(n)])
    counts, edges = np.histogram(depths[depths > 0], bins=bins_m)
    total = counts.sum()
    return pd.DataFrame({"bin_lo_m": edges[:-1], "bin_hi_m": edges[1:],
                         "fraction": counts / total if total else counts.astype(float)})


def dko_kernels(array, gain: torch.Tensor, optics_cfg, engine: str | None = None) -> dict:
    """The optical kernels a DKO array realises, for display and fidelity checks.

    Returns ``{"psf_window": [E, W, W] (loss window, aperture-energy units),
    "signed": [C_out, C_in, k, k] signed crop (P+ - P-), "kernels": the gain-scaled signed
    crop}`` for a per-channel ``gain [C_out]`` or a per-metasurface ``gain [C_out, C_in, 2]``.
    """
    from ..dko.fidelity import apply_element_gains
    from ..optics.render import crop_center, signed_kernels

    with torch.no_grad():
        psf_window = array.psf(optics_cfg.loss_window_px, engine=engine)
    crop = crop_center(psf_window, optics_cfg.kernel_size)
    signed = signed_kernels(crop, array.n_out, array.n_in)
    if gain.dim() == 3:
        kernels = apply_element_gains(crop, gain.reshape(-1), array.n_out, array.n_in)
    else:
        kernels = gain.reshape(-1, 1, 1, 1) * signed
    return {"psf_window": psf_window, "signed": signed, "kernels": kernels}


def gain_restoration(psf_window: torch.Tensor, weight: torch.Tensor) -> pd.DataFrame:
    """Per-channel kernel error ``||g P - K|| / ||K||`` under three electronic gain models.

    ``none`` uses the PSF crop as the kernel (gain 1, the paper's code: the
    sum-normalised loss leaves each kernel's scale undetermined); ``channel``
    one closed-form gain per output channel (:func:`dkolib.dko.fidelity.fit_gain`);
    ``element`` one per metasurface (:func:`dkolib.dko.fidelity.fit_element_gains`).
    Columns: ``gain_mode, channel_norm_err_mean, channel_norm_err_median, channel_corr_mean``.
    """
    from ..dko.fidelity import fidelity_table

    c_out = weight.shape[0]
    fid = fidelity_table(psf_window, weight)
    ones = fidelity_table(psf_window, weight, gain=torch.ones(c_out, dtype=weight.dtype))
    rows = []
    for mode, table, err, corr in (("none", ones, "norm_err", "corr"), ("channel", fid, "norm_err", "corr"),
                                   ("element", fid, "norm_err_elem", "corr_elem")):
        ch = table[table["level"] == "channel"]
        rows.append({"gain_mode": mode, "channel_norm_err_mean": float(ch[err].mean()),
                     "channel_norm_err_median": float(ch[err].median()), "channel_corr_mean": float(ch[corr].mean())})
    return pd.DataFrame(rows)
