"""KITTI raw data with Monodepth2's (Eigen) split files.

Nothing is downloaded here. You need:

* the KITTI raw data ("synced + rectified" drives and the per-date calibration
  zips) from https://www.cvlibs.net/datasets/kitti/raw_data.php (free
  registration), unpacked as ``<root>/<date>/<date>_drive_<NNNN>_sync/...`` with
  ``<root>/<date>/calib_cam_to_cam.txt`` and ``calib_velo_to_cam.txt``;
* a split file in Monodepth2's format, e.g. ``splits/eigen/test_files.txt``
  (the 697-image Eigen test split) or ``splits/eigen_zhou/{train,val}_files.txt``
  from https://github.com/nianticlabs/monodepth2 . Put them under
  ``<root>/splits/`` to let :func:`kitti_split_file` find them, or pass a path.
* optionally, for ``gt="annotated"`` (Monodepth2's "eigen_benchmark"), KITTI's
  annotated depth maps (https://www.cvlibs.net/datasets/kitti/eval_depth.php)
  copied to ``<root>/<date>/<drive>/proj_depth/groundtruth/image_0X/%010d.png``.

Split lines look like ``2011_09_26/2011_09_26_drive_0002_sync 69 l``: folder,
frame index, side (``l``/``2`` = left colour camera image_02, ``r``/``3`` = right
image_03).

Ground truth from the LiDAR follows the KITTI devkit's projection, as
Monodepth2's ``generate_depth_map`` applies it: a velodyne point ``X`` (metres,
homogeneous) goes to the image by ``P_rect_0c @ R_rect_00 @ [R|T]_velo->cam @ X``;
points behind the LiDAR (``x < 0``) are dropped; the pixel is
``round(u) - 1, round(v) - 1`` (the devkit's 1-based MATLAB convention); the depth
is the rectified camera z; where several points land on one pixel the nearest
is kept; the map has the size given by ``S_rect_0c``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError

KITTI_RAW_URL = "https://www.cvlibs.net/datasets/kitti/raw_data.php"
SPLITS_URL = "https://github.com/nianticlabs/monodepth2/tree/master/splits"
HOW_TO_GET = (
    f"Get the KITTI raw data (synced+rectified drives and calibration) from {KITTI_RAW_URL} "
    f"and Monodepth2's split files (splits/eigen/test_files.txt, splits/eigen_zhou/*) from {SPLITS_URL}; "
    "see the dkolib.depth.kitti module docstring for the expected layout"
)
SIDE_TO_CAMERA = {"l": 2, "r": 3, "2": 2, "3": 3}
DEFAULT_SPLIT_FILES = {
    "train": "splits/eigen_zhou/train_files.txt",
    "val": "splits/eigen_zhou/val_files.txt",
    "test": "splits/eigen/test_files.txt",
}


# --------------------------------------------------------------------------- calibration and projection


def read_calib_file(path: str | Path) -> dict[str, np.ndarray]:
    """Parse a KITTI ``key: v1 v2 ...`` calibration file; non-numeric entries are skipped."""
    out: dict[str, np.ndarray] = {}
    with open(path) as fh:
        for line in fh:
            if ":" not in line:
                continue
            key, value = line.split(":", 1)
            try:
                out[key.strip()] = np.array([float(x) for x in value.split()], dtype=np.float64)
            except ValueError:
                continue  # e.g. calib_time
    return out


def _need(calib: dict, key: str, size: int, path: Path) -> np.ndarray:
    if key not in calib or calib[key].size != size:
        raise DataError(f"{path}: expected '{key}' with {size} numbers "
                         f"(found {calib.get(key, np.array([])).size}); is this a KITTI calibration file?")
    return calib[key]


def velo_to_image_matrix(calib_dir: str | Path, camera: int) -> tuple[np.ndarray, tuple[int, int]]:
    """``P_rect_0c @ R_rect_00 @ [R|T]`` (3 x 4) and the rectified image shape (rows, cols) of camera ``c``."""
    calib_dir = Path(calib_dir)
    cam_path, velo_path = calib_dir / "calib_cam_to_cam.txt", calib_dir / "calib_velo_to_cam.txt"
    cam, velo = read_calib_file(cam_path), read_calib_file(velo_path)
    velo_to_cam = np.eye(4)
    velo_to_cam[:3, :3] = _need(velo, "R", 9, velo_path).reshape(3, 3)
    velo_to_cam[:3, 3] = _need(velo, "T", 3, velo_path)
    rect = np.eye(4)
    rect[:3, :3] = _need(cam, "R_rect_00", 9, cam_path).reshape(3, 3)
    p_rect = _need(cam, f"P_rect_0{camera}", 12, cam_path).reshape(3, 4)
    size = _need(cam, f"S_rect_0{camera}", 2, cam_path)
    shape = (int(round(size[1])), int(round(size[0])))
    return p_rect @ rect @ velo_to_cam, shape


def project_velodyne(points: np.ndarray, p_velo_to_im: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Sparse depth map (float32 [rows, cols], metres, 0 = none) from LiDAR ``points`` [N, >=3] (metres)."""
    pts = np.asarray(points, dtype=np.float64)
    pts = pts[pts[:, 0] >= 0, :3]  # in front of the LiDAR
    homo = np.concatenate([pts, np.ones((pts.shape[0], 1))], axis=1)
    proj = homo @ p_velo_to_im.T
    z = proj[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.round(proj[:, 0] / z) - 1
        v = np.round(proj[:, 1] / z) - 1
    rows, cols = shape
    ok = np.isfinite(u) & np.isfinite(v) & (u >= 0) & (v >= 0) & (u < cols) & (v < rows) & (z > 0)
    u, v, z = u[ok].astype(np.int64), v[ok].astype(np.int64), z[ok]
    depth = np.full(rows * cols, np.inf)
    np.minimum.at(depth, v * cols + u, z)  # nearest point wins where several share a pixel
    depth[~np.isfinite(depth)] = 0.0
    return depth.reshape(rows, cols).astype(np.float32)


def load_velodyne(path: str | Path) -> np.ndarray:
    """KITTI velodyne scan: float32 [N, 4] (x, y, z in metres, reflectance)."""
    data = np.fromfile(path, dtype=np.float32)
    if data.size % 4:
        raise DataError(f"{path}: size {data.size * 4} bytes is not a whole number of float32 x 4 points")
    return data.reshape(-1, 4)


def downsample_sparse_depth(depth_m: np.ndarray, height: int, width: int) -> np.ndarray:
    """Sparse depth [rows, cols] -> [height, width]: every valid pixel goes to the target pixel
    containing its centre; the nearest depth wins (no interpolation across edges)."""
    rows, cols = depth_m.shape
    v, u = np.nonzero(depth_m > 0)
    z = depth_m[v, u].astype(np.float64)
    ty = np.minimum(((v + 0.5) * height / rows).astype(np.int64), height - 1)
    tx = np.minimum(((u + 0.5) * width / cols).astype(np.int64), width - 1)
    out = np.full(height * width, np.inf)
    np.minimum.at(out, ty * width + tx, z)
    out[~np.isfinite(out)] = 0.0
    return out.reshape(height, width).astype(np.float32)


# --------------------------------------------------------------------------- split files


def parse_split_lines(lines: Sequence[str]) -> list[tuple[str, int, int]]:
    """``["date/drive frame side", ...]`` -> ``[(folder, frame, camera 2|3), ...]`` (blank lines skipped)."""
    out = []
    for k, line in enumerate(lines):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3 or parts[2] not in SIDE_TO_CAMERA or not parts[1].isdigit():
            raise DataError(f"split line {k + 1} {line.strip()!r} is not 'date/drive frame side' "
                             f"(side one of l, r, 2, 3), e.g. '2011_09_26/2011_09_26_drive_0002_sync 69 l'")
        out.append((parts[0], int(parts[1]), SIDE_TO_CAMERA[parts[2]]))
    if not out:
        raise DataError("the split has no entries")
    return out


def kitti_split_file(root: str | Path, split: str) -> Path:
    """Monodepth2's split file for ``split`` under ``root/splits`` (eigen_zhou train/val, eigen test)."""
    if split not in DEFAULT_SPLIT_FILES:
        raise ValueError(f"unknown split {split!r}: choose one of {', '.join(DEFAULT_SPLIT_FILES)}")
    path = Path(root) / DEFAULT_SPLIT_FILES[split]
    if not path.exists():
        raise FileNotFoundError(f"KITTI split file {path} is missing. {HOW_TO_GET}")
    return path


# --------------------------------------------------------------------------- dataset


class KittiEigenDataset(Dataset):
    """KITTI raw frames listed by a Monodepth2 split, with metric ground-truth depth.

    Args:
        root: folder of the KITTI raw download.
        split: path to a split file, or the split's lines (``"date/drive frame side"``).
        height, width: size of the returned images (the full frame is resized,
            not cropped, as Monodepth2 does).
        gt: ``"velodyne"`` (LiDAR projected with the devkit maths) or
            ``"annotated"`` (KITTI's annotated depth PNGs, uint16 / 256 metres).
        full_res_gt: also return the ground truth at the camera's full
            resolution under ``"depth_gt_full"`` (sizes differ between dates:
            batch with ``batch_size=1`` or your own collate). Monodepth2
            evaluates there, after resizing the prediction.
        flip, seed: random left-right mirroring (p = 0.5) from a seeded generator.

    Item: ``{"rgb": float32 [3, H, W] in [0, 1], "depth_m": float32 [1, H, W]}``
    in metres, 0 where there is no ground truth (nearest LiDAR point per output pixel).
    """

    def __init__(self, root: str | Path, split: str | Path | Sequence[str], height: int, width: int,
                 gt: str = "velodyne", full_res_gt: bool = False, flip: bool = False, seed: int = 0):
        if gt not in ("velodyne", "annotated"):
            raise ValueError(f"gt must be 'velodyne' or 'annotated', got {gt!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"KITTI root {self.root} is not a folder. {HOW_TO_GET}")
        if isinstance(split, (str, Path)):
            split_path = Path(split)
            if not split_path.is_file():
                raise FileNotFoundError(f"KITTI split file {split_path} does not exist (pass the path of a "
                                        f"Monodepth2 split file, or its lines). {HOW_TO_GET}")
            lines = split_path.read_text().splitlines()
        else:
            lines = list(split)
        self.entries = parse_split_lines(lines)
        self.height, self.width = int(height), int(width)
        self.gt = gt
        self.full_res_gt = bool(full_res_gt)
        self.flip = bool(flip)
        self.generator = torch.Generator().manual_seed(int(seed))
        self._calib: dict[tuple[str, int], tuple[np.ndarray, tuple[int, int]]] = {}
        self._check_files()

    # paths -----------------------------------------------------------------
    def image_path(self, i: int) -> Path:
        folder, frame, cam = self.entries[i]
        base = self.root / folder / f"image_0{cam}" / "data" / f"{frame:010d}"
        png = base.with_suffix(".png")
        jpg = base.with_suffix(".jpg")  # Monodepth2 converts to jpg unless --png
        return jpg if (not png.exists() and jpg.exists()) else png

    def gt_path(self, i: int) -> Path:
        folder, frame, cam = self.entries[i]
        if self.gt == "velodyne":
            return self.root / folder / "velodyne_points" / "data" / f"{frame:010d}.bin"
        return self.root / folder / "proj_depth" / "groundtruth" / f"image_0{cam}" / f"{frame:010d}.png"

    def calib_dir(self, i: int) -> Path:
        return self.root / self.entries[i][0].split("/")[0]

    def _check_files(self) -> None:
        needed: list[Path] = []
        for i in range(len(self.entries)):
            needed += [self.image_path(i), self.gt_path(i)]
            if self.gt == "velodyne":
                needed += [self.calib_dir(i) / "calib_cam_to_cam.txt", self.calib_dir(i) / "calib_velo_to_cam.txt"]
        missing = []
        for p in dict.fromkeys(needed):
            if not p.exists():
                missing.append(p)
        if missing:
            shown = "\n  ".join(str(p) for p in missing[:5])
            raise FileNotFoundError(
                f"{len(missing)} KITTI file(s) needed by the split are missing under {self.root}, first:\n  "
                f"{shown}\n{HOW_TO_GET}")

    # items -----------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.entries)

    def ground_truth(self, i: int) -> np.ndarray:
        """Full-resolution ground-truth depth (float32 [rows, cols], metres, 0 = none) of item ``i``."""
        if self.gt == "annotated":
            from PIL import Image

            raw = np.asarray(Image.open(self.gt_path(i)))
            if raw.dtype != np.uint16 and raw.max() <= 255:
                raise DataError(f"{self.gt_path(i)} is not a 16-bit KITTI depth PNG")
            return (raw.astype(np.float32) / 256.0)
        folder, _, cam = self.entries[i]
        key = (folder.split("/")[0], cam)
        if key not in self._calib:
            self._calib[key] = velo_to_image_matrix(self.calib_dir(i), cam)
        p, shape = self._calib[key]
        return project_velodyne(load_velodyne(self.gt_path(i)), p, shape)

    def __getitem__(self, i: int) -> dict:
        from PIL import Image

        if not -len(self) <= i < len(self):
            raise IndexError(f"item {i} out of range for a dataset of {len(self)}")
        i = i % len(self)
        with Image.open(self.image_path(i)) as im:
            im = im.convert("RGB").resize((self.width, self.height), Image.LANCZOS)
            rgb = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float().div_(255.0)
        full = self.ground_truth(i)
        depth = torch.from_numpy(downsample_sparse_depth(full, self.height, self.width))[None]
        full_t = torch.from_numpy(full)[None]
        if self.flip and bool(torch.rand((), generator=self.generator) < 0.5):
            rgb, depth, full_t = rgb.flip(-1), depth.flip(-1), full_t.flip(-1)
        item = {"rgb": rgb.contiguous(), "depth_m": depth.contiguous()}
        if self.full_res_gt:
            item["depth_gt_full"] = full_t.contiguous()
        return item
