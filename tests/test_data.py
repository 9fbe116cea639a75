"""Synthetic splits, caching, the torch dataset, get_dataset and the Middlebury scene."""

import re

import numpy as np
import pytest
import torch

from dkolib.depth import data
from dkolib.config import load_config
from dkolib.depth.data import (SEED_STRIDE, DepthDataset, generate_split, get_dataset, load_split, motorcycle_depth_m,
                         motorcycle_scene, save_split, scene_seeds)


@pytest.fixture
def tiny_cfg():
    return load_config("smoke", {"data.height": 24, "data.width": 64, "data.n_train": 3, "data.n_val": 2,
                                 "data.n_test": 2})


def test_seed_streams_are_disjoint():
    streams = [set(scene_seeds(seed, split, 1000)) for seed in (0, 1) for split in ("train", "val", "test")]
    assert sum(len(s) for s in streams) == len(set().union(*streams))
    # even the largest allowed split cannot reach the next stream
    last_train = scene_seeds(0, "train", SEED_STRIDE)[-1]
    assert last_train < scene_seeds(0, "val", 1)[0]
    with pytest.raises(ValueError, match="split"):
        scene_seeds(0, "training", 3)


def test_generate_split_shapes_determinism(tiny_cfg):
    a = generate_split(tiny_cfg.data, "train", seed=0, progress=False)
    b = generate_split(tiny_cfg.data, "train", seed=0, progress=False)
    v = generate_split(tiny_cfg.data, "val", seed=0, progress=False)
    assert a["rgb"].shape == (3, 24, 64, 3) and a["rgb"].dtype == np.uint8
    assert a["depth_m"].shape == (3, 24, 64) and a["depth_m"].dtype == np.float32
    assert v["rgb"].shape[0] == 2
    assert np.array_equal(a["rgb"], b["rgb"]) and np.array_equal(a["depth_m"], b["depth_m"])
    assert not np.array_equal(a["depth_m"][:2], v["depth_m"])
    assert 0 < a["depth_m"].min() and a["depth_m"].max() <= tiny_cfg.data.max_depth_m


def test_save_load_roundtrip_and_errors(tmp_path, tiny_cfg):
    arrays = generate_split(tiny_cfg.data, "val", seed=0, progress=False)
    path = save_split(arrays, tmp_path / "val.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["val.npz"]  # no temporary left behind
    back = load_split(path, expected_meta=arrays["meta"])
    assert np.array_equal(back["rgb"], arrays["rgb"]) and np.array_equal(back["depth_m"], arrays["depth_m"])
    assert back["meta"] == arrays["meta"]

    with pytest.raises(FileNotFoundError, match=r"nothere\.npz.*make_dataset\.py"):
        load_split(tmp_path / "nothere.npz")
    with pytest.raises(ValueError, match=r"stale.*height"):
        load_split(path, expected_meta={**arrays["meta"], "height": 48})
    bad = tmp_path / "bad.npz"
    np.savez_compressed(bad, rgb=arrays["rgb"], depth_m=arrays["depth_m"][:, :10])
    with pytest.raises(ValueError, match=r"bad\.npz.*depth_m.*snakemake data"):
        load_split(bad)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match=r"junk\.npz.*cannot be read"):
        load_split(junk)


def test_depth_dataset_items_and_flip():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (4, 6, 10, 3), dtype=np.uint8)
    depth = rng.uniform(1, 80, (4, 6, 10)).astype(np.float32)
    ds = DepthDataset(rgb, depth)
    item = ds[2]
    assert item["rgb"].shape == (3, 6, 10) and item["rgb"].dtype == torch.float32
    assert item["depth_m"].shape == (1, 6, 10) and item["depth_m"].dtype == torch.float32
    assert torch.equal(item["rgb"], torch.from_numpy(rgb[2]).permute(2, 0, 1).float() / 255)
    assert torch.equal(item["depth_m"][0], torch.from_numpy(depth[2]))

    flips = []
    for _ in range(2):
        fds = DepthDataset(rgb, depth, flip=True, seed=7)
        seq = []
        for _ in range(40):
            it = fds[1]
            flipped = torch.equal(it["depth_m"][0], torch.from_numpy(depth[1][:, ::-1].copy()))
            assert flipped or torch.equal(it["depth_m"][0], torch.from_numpy(depth[1]))
            # image and depth are flipped together
            ref = torch.from_numpy((rgb[1][:, ::-1] if flipped else rgb[1]).copy()).permute(2, 0, 1).float() / 255
            assert torch.equal(it["rgb"], ref)
            seq.append(flipped)
        flips.append(seq)
    assert flips[0] == flips[1]  # seeded
    assert 5 < sum(flips[0]) < 35  # both outcomes occur
    with pytest.raises(ValueError, match="depth_m"):
        DepthDataset(rgb, depth[:, :5])
    with pytest.raises(IndexError):
        ds[4]


def test_get_dataset_caches(tmp_path, tiny_cfg, monkeypatch):
    ds = get_dataset(tiny_cfg, "test", tmp_path)
    assert len(ds) == 2 and ds[0]["rgb"].shape == (3, 24, 64)
    assert (tmp_path / "test.npz").exists()

    def boom(*a, **k):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(data, "generate_split", boom)
    again = get_dataset(tiny_cfg, "test", tmp_path)
    assert torch.equal(again[1]["depth_m"], ds[1]["depth_m"])
    # a training seed does not change the data
    assert torch.equal(get_dataset(tiny_cfg.replace({"seed": 5}), "test", tmp_path)[0]["rgb"], ds[0]["rgb"])
    # a config that no longer matches the cache is refused with the fix
    with pytest.raises(ValueError, match=r"stale.*n: file has 2, config wants 3.*--force"):
        get_dataset(tiny_cfg.replace({"data.n_test": 3}), "test", tmp_path)


def test_get_dataset_kitti_needs_root(tmp_path, tiny_cfg):
    with pytest.raises(ValueError, match="kitti_root"):
        get_dataset(tiny_cfg.replace({"data.dataset": "kitti"}), "test", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"test_files\.txt.*cvlibs"):
        get_dataset(tiny_cfg.replace({"data.dataset": "kitti", "data.kitti_root": str(tmp_path)}), "test",
                    tmp_path)


def test_motorcycle_calibration_matches_skimage_docstring():
    """Our full-resolution Middlebury constants / 4 must equal what skimage documents for its copy."""
    import skimage.data

    doc = skimage.data.stereo_motorcycle.__doc__
    focal = float(re.search(r"Focal length:\s*([\d.]+)px", doc).group(1))
    doffs = float(re.search(r"Principal point dx:\s*([\d.]+)px", doc).group(1))
    baseline_mm = float(re.search(r"Baseline:\s*([\d.]+)mm", doc).group(1))
    assert data.MOTORCYCLE_FULL_FOCAL_PX / data.MOTORCYCLE_DOWNSAMPLE == pytest.approx(focal, abs=1e-3)
    assert data.MOTORCYCLE_FULL_DOFFS_PX / data.MOTORCYCLE_DOWNSAMPLE == pytest.approx(doffs, abs=1e-3)
    assert data.MOTORCYCLE_BASELINE_M * 1e3 == pytest.approx(baseline_mm)
    # Z = B f / (d + doffs): hand value for d = 100 px at skimage's scale
    expected = 0.193001 * (3979.911 / 4) / (100 + 124.343 / 4)
    assert motorcycle_depth_m(np.array([100.0]))[0] == pytest.approx(expected, rel=1e-6)
    assert motorcycle_depth_m(np.array([np.inf, np.nan]))[0] == 0 == motorcycle_depth_m(np.array([np.nan]))[0]


def test_motorcycle_scene():
    scene = motorcycle_scene(96, 320)
    rgb, depth = scene["rgb"], scene["depth_m"]
    assert rgb.shape == (3, 96, 320) and rgb.dtype == np.float32 and 0 <= rgb.min() and rgb.max() <= 1
    assert depth.shape == (1, 96, 320) and depth.dtype == np.float32
    valid = depth > 0
    assert 0.7 < valid.mean() < 1.0  # Middlebury leaves occlusions without ground truth
    # an indoor table-top scene: a motorcycle 2-3 m away in front of a wall about 5 m away
    assert 1.5 < np.median(depth[valid]) < 3.5 and depth[valid].max() < 6.0 and depth[valid].min() > 1.5
