"""KITTI loader on a tiny fake raw tree with the real layout and hand-predictable LiDAR points."""

import numpy as np
import pytest
import torch
from PIL import Image

from dkolib.depth.kitti import (KittiEigenDataset, kitti_split_file, parse_split_lines, project_velodyne,
                          velo_to_image_matrix)

DATE, DRIVE, FRAME = "2011_09_26", "2011_09_26_drive_0001_sync", 5
ROWS, COLS = 40, 100  # full-resolution "camera" size (S_rect)

# velodyne (x forward, y left, z up) -> camera (x right, y down, z forward), no translation
VELO_R = "0 -1 0 0 0 -1 1 0 0"
# f = 100 px, principal point (50, 20); the right camera has a 0.5 m baseline: P[0, 3] = -f * b = -50
P2 = "100 0 50 0 0 100 20 0 0 0 1 0"
P3 = "100 0 50 -50 0 100 20 0 0 0 1 0"

POINTS = np.array([
    # velodyne x, y, z, reflectance -> camera (X, Y, Z) -> (u, v) = (100 X/Z + 50, 100 Y/Z + 20)
    [10.0, -2.0, 1.0, 0.5],    # cam (2, -1, 10): u = 70, v = 10 -> pixel (col 69, row 9), 10 m
    [20.0, 0.0, 0.0, 0.5],     # cam (0, 0, 20): u = 50, v = 20 -> (49, 19), 20 m ...
    [15.0, 0.0, 0.0, 0.5],     # ... and 15 m on the same pixel: the nearer one is kept
    [-5.0, 0.0, 0.0, 0.5],     # behind the LiDAR: dropped
    [10.0, -10.0, 0.0, 0.5],   # cam (10, 0, 10): u = 150, outside the 100 columns: dropped
    [8.0, 4.0, -0.4, 0.5],     # cam (-4, 0.4, 8): u = 0 -> round(0) - 1 = -1: dropped (1-based devkit)
    [8.0, 3.904, -0.4, 0.5],   # cam (-3.904, 0.4, 8): u = 1.2, v = 25 -> (0, 24), 8 m
], dtype=np.float32)
EXPECTED_LEFT = {(9, 69): 10.0, (19, 49): 15.0, (24, 0): 8.0}  # (row, col): depth in metres


def _make_tree(root, with_annotated=False):
    calib = root / DATE
    calib.mkdir(parents=True)
    (calib / "calib_cam_to_cam.txt").write_text(
        "calib_time: 09-Jan-2012 13:57:47\n"
        "R_rect_00: 1 0 0 0 1 0 0 0 1\n"
        f"P_rect_02: {P2}\nS_rect_02: {COLS} {ROWS}\n"
        f"P_rect_03: {P3}\nS_rect_03: {COLS} {ROWS}\n")
    (calib / "calib_velo_to_cam.txt").write_text(f"calib_time: 15-Mar-2012 11:37:16\nR: {VELO_R}\nT: 0 0 0\n")
    drive = calib / DRIVE
    rng = np.random.default_rng(0)
    for cam in (2, 3):
        d = drive / f"image_0{cam}" / "data"
        d.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (ROWS, COLS, 3), dtype=np.uint8)).save(d / f"{FRAME:010d}.png")
    v = drive / "velodyne_points" / "data"
    v.mkdir(parents=True)
    POINTS.tofile(v / f"{FRAME:010d}.bin")
    if with_annotated:
        a = drive / "proj_depth" / "groundtruth" / "image_02"
        a.mkdir(parents=True)
        ann = np.zeros((ROWS, COLS), np.uint16)
        ann[5, 7] = 3200  # 3200 / 256 = 12.5 m
        Image.fromarray(ann).save(a / f"{FRAME:010d}.png")
    return root


def test_projection_matches_hand_computation(tmp_path):
    _make_tree(tmp_path)
    p, shape = velo_to_image_matrix(tmp_path / DATE, 2)
    assert shape == (ROWS, COLS)
    depth = project_velodyne(POINTS, p, shape)
    assert {tuple(map(int, ij)): float(depth[tuple(ij)]) for ij in np.argwhere(depth > 0)} == \
        pytest.approx(EXPECTED_LEFT)
    # right camera: the same point moves left by f * b / Z = 100 * 0.5 / 10 = 5 px
    p3, _ = velo_to_image_matrix(tmp_path / DATE, 3)
    right = project_velodyne(POINTS[:1], p3, shape)
    assert np.argwhere(right > 0).tolist() == [[9, 64]] and right[9, 64] == pytest.approx(10.0)


def test_dataset_items(tmp_path):
    _make_tree(tmp_path)
    lines = [f"{DATE}/{DRIVE} {FRAME} l", f"{DATE}/{DRIVE} {FRAME} r", ""]
    ds = KittiEigenDataset(tmp_path, lines, height=20, width=50, full_res_gt=True)
    assert len(ds) == 2
    item = ds[0]
    assert item["rgb"].shape == (3, 20, 50) and item["rgb"].dtype == torch.float32
    assert 0 <= item["rgb"].min() and item["rgb"].max() <= 1
    src = np.asarray(Image.open(tmp_path / DATE / DRIVE / "image_02" / "data" / f"{FRAME:010d}.png"))
    assert float(item["rgb"].mean()) == pytest.approx(src.mean() / 255, abs=0.01)
    full = item["depth_gt_full"][0].numpy()
    assert {tuple(map(int, ij)) for ij in np.argwhere(full > 0)} == set(EXPECTED_LEFT)
    # half resolution: full-res pixel (r, c) lands in (floor((r + .5) / 2), floor((c + .5) / 2))
    small = item["depth_m"][0].numpy()
    assert item["depth_m"].shape == (1, 20, 50)
    assert {tuple(map(int, ij)): float(small[tuple(ij)]) for ij in np.argwhere(small > 0)} == \
        pytest.approx({(4, 34): 10.0, (9, 24): 15.0, (12, 0): 8.0})
    assert not torch.equal(ds[1]["rgb"], item["rgb"])  # 'r' reads image_03


def test_split_file_and_annotated_gt(tmp_path):
    _make_tree(tmp_path, with_annotated=True)
    split = tmp_path / "splits" / "eigen" / "test_files.txt"
    split.parent.mkdir(parents=True)
    split.write_text(f"{DATE}/{DRIVE} {FRAME:010d} l\n")
    assert kitti_split_file(tmp_path, "test") == split
    ds = KittiEigenDataset(tmp_path, split, 40, 100, gt="annotated")
    depth = ds[0]["depth_m"][0].numpy()
    assert np.argwhere(depth > 0).tolist() == [[5, 7]] and depth[5, 7] == pytest.approx(12.5)


def test_wrong_root_lists_missing_files(tmp_path):
    lines = [f"{DATE}/{DRIVE} {FRAME} l"]
    with pytest.raises(FileNotFoundError, match=r"(?s)missing.*0000000005\.png.*cvlibs.*monodepth2"):
        KittiEigenDataset(tmp_path, lines, 20, 50)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        KittiEigenDataset(tmp_path / "nope", lines, 20, 50)
    with pytest.raises(FileNotFoundError, match=r"eigen_zhou/train_files\.txt"):
        kitti_split_file(tmp_path, "train")


def test_split_line_format():
    assert parse_split_lines(["2011_09_26/x 12 r", "a/b 0000000007 2"]) == [("2011_09_26/x", 12, 3), ("a/b", 7, 2)]
    with pytest.raises(ValueError, match="line 1"):
        parse_split_lines(["2011_09_26/x 12 left"])
