"""Datasets: the embedded synthetic street scenes, KITTI, and one real indoor stereo scene.

* :func:`generate_split` renders a split of :mod:`dkolib.depth.scenes` street scenes;
  :func:`save_split` / :func:`load_split` cache it as a compressed ``.npz``.
* :class:`DepthDataset` serves ``{"rgb": [3, H, W] in [0, 1], "depth_m": [1, H, W]}``.
* :func:`get_dataset` is what the pipeline calls: the cached synthetic split
  (rendered on first use) or KITTI (:mod:`dkolib.depth.kitti`), chosen by
  ``cfg.data.dataset``.
* :func:`motorcycle_scene` is the Middlebury 2014 "Motorcycle" stereo pair that
  ships inside scikit-image, with metric depth from its ground-truth disparity:
  a real photograph with real depth for a sanity check of a trained model.

Depth convention everywhere: metres along the optical axis (z-depth); 0 means
"no ground truth". In the synthetic data, sky and anything beyond the cap is
exactly ``max_depth_m``; Monodepth2's evaluation mask ``min < gt < max``
excludes it (see :mod:`dkolib.depth.scenes`).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError
from ..io import atomic_path
from .scenes import SCENE_VERSION, render_scene

SPLITS = ("train", "val", "test")
SEED_STRIDE = 10_000_019
"""Scene seeds of one (dataset seed, split) stream: ``(3 * seed + split_index) * SEED_STRIDE + i``.
``SEED_STRIDE`` exceeds the largest allowed split size (10,000,000), so the
streams of different splits (and dataset seeds) never share a scene."""

REGENERATE_HINT = (
    "regenerate it with `snakemake data` or "
    "`python scripts/make_dataset.py --profile <profile> --out <cache dir> --force`"
)


def _split_index(split: str) -> int:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    return SPLITS.index(split)


def split_size(data_cfg, split: str) -> int:
    """Number of scenes in ``split`` according to ``data_cfg`` (n_train / n_val / n_test)."""
    _split_index(split)
    return int(getattr(data_cfg, f"n_{split}"))


def scene_seeds(seed: int, split: str, n: int) -> np.ndarray:
    """The ``n`` scene seeds of ``split`` (int64), disjoint from every other split's."""
    if n > SEED_STRIDE:
        raise ValueError(f"a split may hold at most {SEED_STRIDE} scenes, asked for {n}")
    if seed < 0:
        raise ValueError(f"dataset seed must be non-negative, got {seed}")
    base = (3 * int(seed) + _split_index(split)) * SEED_STRIDE
    return base + np.arange(n, dtype=np.int64)


def split_meta(data_cfg, split: str, seed: int) -> dict:
    """What a cached split was made from; a cache whose meta differs is stale."""
    return {
        "generator": "dkolib.scenes",
        "version": SCENE_VERSION,
        "split": split,
        "seed": int(seed),
        "n": split_size(data_cfg, split),
        "height": int(data_cfg.height),
        "width": int(data_cfg.width),
        "max_depth_m": float(data_cfg.max_depth_m),
    }


def generate_split(data_cfg, split: str, seed: int, progress: bool = True) -> dict:
    """Render the synthetic ``split`` described by ``data_cfg`` (a ``DataConfig``).

    Returns ``{"rgb": uint8 [N, H, W, 3], "depth_m": float32 [N, H, W] (metres),
    "meta": dict}`` with ``N = data_cfg.n_<split>``. Deterministic in
    ``(data_cfg, split, seed)``; shows a tqdm progress bar unless ``progress`` is False.
    """
    from tqdm import tqdm

    n = split_size(data_cfg, split)
    h, w = int(data_cfg.height), int(data_cfg.width)
    rgb = np.empty((n, h, w, 3), np.uint8)
    depth = np.empty((n, h, w), np.float32)
    seeds = scene_seeds(seed, split, n)
    for i in tqdm(range(n), desc=f"rendering {split} ({h}x{w})", disable=not progress, unit="scene"):
        rgb[i], depth[i] = render_scene(int(seeds[i]), h, w, max_depth_m=float(data_cfg.max_depth_m))
    return {"rgb": rgb, "depth_m": depth, "meta": split_meta(data_cfg, split, seed)}


def save_split(arrays: dict, path: str | Path) -> Path:
    """Write ``{"rgb", "depth_m"[, "meta"]}`` to ``path`` with ``np.savez_compressed``, atomically."""
    path = Path(path)
    _check_arrays(arrays["rgb"], arrays["depth_m"], f"arrays for {path}")
    meta = json.dumps(arrays.get("meta", {}), sort_keys=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:  # a file object keeps numpy from appending ".npz"
            np.savez_compressed(fh, rgb=arrays["rgb"], depth_m=arrays["depth_m"], meta=np.array(meta))
    return path


def load_split(path: str | Path, expected_meta: dict | None = None) -> dict:
    """Read a split written by :func:`save_split`; check it and return ``{"rgb", "depth_m", "meta"}``.

    Raises ``FileNotFoundError`` / ``ValueError`` naming the file and how to
    regenerate it when the file is missing, unreadable, malformed, or (when
    ``expected_meta`` is given) made with other settings than expected.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset file {path} does not exist; {REGENERATE_HINT}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays["meta"])) if "meta" in arrays else {}
    except (OSError, EOFError, ValueError, AttributeError, zipfile.BadZipFile) as err:
        raise DataError(f"dataset file {path} cannot be read as an .npz ({err}); {REGENERATE_HINT}") from err
    missing = {"rgb", "depth_m"} - set(arrays)
    if missing:
        raise DataError(f"dataset file {path} lacks arrays {sorted(missing)}; {REGENERATE_HINT}")
    rgb, depth = arrays["rgb"], arrays["depth_m"]
    _check_arrays(rgb, depth, f"dataset file {path}")
    if expected_meta is not None:
        diff = {k: (meta.get(k), v) for k, v in expected_meta.items() if meta.get(k) != v}
        if diff:
            desc = ", ".join(f"{k}: file has {a!r}, config wants {b!r}" for k, (a, b) in sorted(diff.items()))
            raise DataError(f"dataset file {path} is stale ({desc}); {REGENERATE_HINT}")
    return {"rgb": rgb, "depth_m": depth, "meta": meta}


def _check_arrays(rgb: np.ndarray, depth: np.ndarray, what: str) -> None:
    if rgb.ndim != 4 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
        raise DataError(f"{what}: rgb must be uint8 [N, H, W, 3], got {rgb.dtype} {list(rgb.shape)}; "
                         f"{REGENERATE_HINT}")
    if depth.shape != rgb.shape[:3] or depth.dtype != np.float32:
        raise DataError(f"{what}: depth_m must be float32 [N, H, W] = {list(rgb.shape[:3])}, got "
                         f"{depth.dtype} {list(depth.shape)}; {REGENERATE_HINT}")


class DepthDataset(Dataset):
    """RGB-D pairs held in memory.

    Args:
        rgb: uint8 [N, H, W, 3].
        depth_m: float [N, H, W], metres (0 = no ground truth).
        flip: randomly mirror items left-right (p = 0.5), drawn from a
            generator seeded with ``seed`` (one stream per dataset object, so
            deterministic with ``num_workers=0``).
        seed: seed of the flip generator.

    Item ``i``: ``{"rgb": float32 Tensor [3, H, W] in [0, 1], "depth_m": float32 Tensor [1, H, W]}``.
    """

    def __init__(self, rgb: np.ndarray, depth_m: np.ndarray, flip: bool = False, seed: int = 0):
        rgb = np.asarray(rgb)
        depth_m = np.asarray(depth_m, dtype=np.float32)
        _check_arrays(rgb, depth_m, "DepthDataset")
        self.rgb = rgb
        self.depth_m = depth_m
        self.flip = bool(flip)
        self.generator = torch.Generator().manual_seed(int(seed))

    def __len__(self) -> int:
        return self.rgb.shape[0]

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of every item, pixels."""
        return tuple(self.rgb.shape[1:3])

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"item {i} out of range for a dataset of {len(self)}")
        rgb = torch.from_numpy(self.rgb[i]).permute(2, 0, 1).float().div_(255.0)
        depth = torch.from_numpy(self.depth_m[i].copy())[None]
        if self.flip and bool(torch.rand((), generator=self.generator) < 0.5):
            rgb, depth = rgb.flip(-1), depth.flip(-1)
        return {"rgb": rgb.contiguous(), "depth_m": depth.contiguous()}


def dataset_seed(cfg) -> int:
    """Seed of the synthetic scenes: ``cfg.data.seed`` if the config has it, else 0.

    Deliberately not ``cfg.seed``: runs with different training seeds must see
    the same data.
    """
    return int(getattr(cfg.data, "seed", 0))


def get_dataset(cfg, split: str, cache_dir: str | Path, flip: bool = False) -> Dataset:
    """The ``split`` the pipeline trains / evaluates on, chosen by ``cfg.data.dataset``.

    * ``synthetic``: ``cache_dir/<split>.npz``, rendered and written (atomically)
      if absent; a cache made with other settings raises with the command
      that regenerates it.
    * ``kitti``: :class:`dkolib.depth.kitti.KittiEigenDataset` under
      ``cfg.data.kitti_root`` (see :func:`dkolib.depth.kitti.kitti_split_file`).

    Items are ``{"rgb": [3, H, W], "depth_m": [1, H, W]}`` at ``cfg.data.height x width``.
    """
    _split_index(split)
    if cfg.data.dataset == "kitti":
        from .kitti import KittiEigenDataset, kitti_split_file

        root = cfg.data.kitti_root
        if not root:
            raise DataError("data.dataset is 'kitti' but data.kitti_root is empty: set it to the folder of "
                             "your KITTI raw download (e.g. data.kitti_root=/path/to/kitti_raw)")
        return KittiEigenDataset(root, kitti_split_file(root, split), cfg.data.height, cfg.data.width,
                                 flip=flip, seed=cfg.seed)
    path = Path(cache_dir) / f"{split}.npz"
    seed = dataset_seed(cfg)
    meta = split_meta(cfg.data, split, seed)
    if not path.exists():
        save_split(generate_split(cfg.data, split, seed), path)
    arrays = load_split(path, expected_meta=meta)
    return DepthDataset(arrays["rgb"], arrays["depth_m"], flip=flip, seed=seed)


# --------------------------------------------------------------------------- Middlebury motorcycle

# Middlebury 2014 "Motorcycle" (perfect) calib.txt: cam0 fx = 3979.911 px, doffs = 124.343 px,
# baseline = 193.001 mm, at full resolution (2964 x 2000). scikit-image ships the images
# downsampled 4x (skimage.data.stereo_motorcycle docstring: focal 994.978 px, dx 31.086 px),
# so the focal length and doffs are divided by 4; the baseline is unchanged.
MOTORCYCLE_FULL_FOCAL_PX = 3979.911
MOTORCYCLE_FULL_DOFFS_PX = 124.343
MOTORCYCLE_BASELINE_M = 0.193001
MOTORCYCLE_DOWNSAMPLE = 4


def motorcycle_depth_m(disp_px: np.ndarray) -> np.ndarray:
    """Metric depth [m] from skimage's motorcycle disparity (px): ``Z = B f / (d + doffs)``; invalid -> 0."""
    f = MOTORCYCLE_FULL_FOCAL_PX / MOTORCYCLE_DOWNSAMPLE
    doffs = MOTORCYCLE_FULL_DOFFS_PX / MOTORCYCLE_DOWNSAMPLE
    disp_px = np.asarray(disp_px, dtype=np.float64)
    ok = np.isfinite(disp_px) & (disp_px + doffs > 0)
    depth = np.zeros(disp_px.shape, np.float32)
    depth[ok] = MOTORCYCLE_BASELINE_M * f / (disp_px[ok] + doffs)
    return depth


def _center_crop_box(h: int, w: int, height: int, width: int) -> tuple[int, int, int, int]:
    """Largest centred (top, bottom, left, right) window of an h x w image with aspect width/height."""
    if w * height > h * width:  # too wide: crop columns
        cw = int(round(h * width / height))
        left = (w - cw) // 2
        return 0, h, left, left + cw
    ch = int(round(w * height / width))
    top = (h - ch) // 2
    return top, top + ch, 0, w


def motorcycle_scene(height: int, width: int) -> dict:
    """The Middlebury 2014 Motorcycle left image with metric depth, at ``height x width``.

    Centre-cropped to the target aspect ratio, then resized (RGB antialiased;
    depth by nearest neighbour so no depths are mixed across edges).
    Returns ``{"rgb": float32 [3, H, W] in [0, 1], "depth_m": float32 [1, H, W]}``
    with depth in metres (2.1 - 5.0 m: motorcycle about 2-3 m, back wall 5 m) and 0 where Middlebury has no
    ground truth. It is an indoor scene seen by another camera, so evaluate a
    KITTI-like model on it with median scaling.
    """
    import skimage.data
    from skimage.transform import resize

    if int(height) != height or int(width) != width or height < 1 or width < 1:
        raise ValueError(f"height and width must be positive integers, got {height} x {width}")
    left, _, disp = skimage.data.stereo_motorcycle()
    depth = motorcycle_depth_m(disp)
    t, b, l, r = _center_crop_box(left.shape[0], left.shape[1], height, width)
    rgb = resize(left[t:b, l:r].astype(np.float32) / 255.0, (height, width), order=1,
                 anti_aliasing=True, preserve_range=True)
    depth = resize(depth[t:b, l:r], (height, width), order=0, anti_aliasing=False, preserve_range=True)
    return {
        "rgb": np.ascontiguousarray(np.clip(rgb, 0, 1).transpose(2, 0, 1), dtype=np.float32),
        "depth_m": np.ascontiguousarray(depth[None], dtype=np.float32),
    }
