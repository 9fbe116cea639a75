"""Monodepth2's depth metrics against values worked out by hand."""

import math

import numpy as np
import pytest
import torch

from dkolib.depth.metrics import METRIC_COLUMNS, compute_depth_metrics, depth_to_disp, disp_to_depth, garg_crop_mask


def test_hand_computed_single_image():
    gt = np.array([[2.0, 4.0], [8.0, 100.0]])  # 100 m is beyond the 80 m cap: not evaluated
    pred = np.array([[1.0, 4.0], [10.0, 5.0]])
    m = compute_depth_metrics(pred, gt)
    assert list(m) == METRIC_COLUMNS
    # valid pairs (gt, pred): (2, 1), (4, 4), (8, 10)
    assert m["abs_rel"] == pytest.approx((1 / 2 + 0 / 4 + 2 / 8) / 3)  # = 0.25
    assert m["sq_rel"] == pytest.approx((1 ** 2 / 2 + 0 + 2 ** 2 / 8) / 3)  # = 1/3
    assert m["rmse"] == pytest.approx(math.sqrt((1 ** 2 + 0 + 2 ** 2) / 3))
    assert m["rmse_log"] == pytest.approx(math.sqrt((math.log(2 / 1) ** 2 + 0 + math.log(8 / 10) ** 2) / 3))
    # ratios max(gt/pred, pred/gt) = 2, 1, 1.25; thresholds 1.25, 1.5625, 1.953125 (strict <)
    assert m["a1"] == pytest.approx(1 / 3)
    assert m["a2"] == pytest.approx(2 / 3)
    assert m["a3"] == pytest.approx(2 / 3)


def test_batch_is_averaged_per_image_not_pooled():
    gt = np.array([[[2.0, 4.0], [8.0, 100.0]], [[1.0, 1.0], [1.0, 1.0]]])
    pred = np.array([[[1.0, 4.0], [10.0, 5.0]], [[2.0, 2.0], [2.0, 2.0]]])
    m = compute_depth_metrics(pred, gt)
    assert m["abs_rel"] == pytest.approx((0.25 + 1.0) / 2)  # pooled would be (0.75 + 4) / 7
    # tensors with a channel axis give the same numbers
    mt = compute_depth_metrics(torch.tensor(pred)[:, None], torch.tensor(gt)[:, None])
    assert mt == pytest.approx(m)


def test_prediction_clamped_to_range():
    gt = np.array([[40.0]])
    assert compute_depth_metrics(np.array([[100.0]]), gt)["abs_rel"] == pytest.approx(40 / 40)  # 100 -> 80
    assert compute_depth_metrics(np.array([[0.0]]), gt, min_depth_m=0.5)["abs_rel"] == pytest.approx(39.5 / 40)


def test_median_scaling_by_hand():
    gt = np.array([[1.0, 2.0, 3.0]])
    pred = np.array([[2.0, 4.0, 7.0]])
    # median(gt) / median(pred) = 2 / 4: pred becomes (1, 2, 3.5)
    m = compute_depth_metrics(pred, gt, median_scaling=True)
    assert m["abs_rel"] == pytest.approx((0 + 0 + 0.5 / 3) / 3)


def test_median_scaling_makes_metrics_scale_invariant():
    rng = np.random.default_rng(0)
    gt = rng.uniform(2.0, 60.0, (3, 12, 20))
    gt[:, :2] = 0.0  # some pixels without ground truth
    pred = gt * rng.lognormal(0.0, 0.2, gt.shape)
    ref = compute_depth_metrics(pred, gt, median_scaling=True)
    for scale in (0.01, 0.37, 5.0, 400.0):
        assert compute_depth_metrics(pred * scale, gt, median_scaling=True) == pytest.approx(ref, rel=1e-9)
        # and without median scaling a global scale does change them
        assert compute_depth_metrics(pred * scale, gt)["abs_rel"] != pytest.approx(ref["abs_rel"], rel=1e-3)


def test_garg_crop():
    # H = W = 10: rows int(4.08) = 4 .. int(9.92) = 9 (exclusive), cols int(0.36) = 0 .. int(9.64) = 9
    mask = garg_crop_mask(10, 10)
    assert mask.sum() == 5 * 9 and mask[4:9, 0:9].all()
    gt = np.ones((10, 10))
    pred = np.ones((10, 10))
    pred[0, 0] = pred[9, 9] = pred[5, 5] = 2.0  # only (5, 5) is inside the crop
    assert compute_depth_metrics(pred, gt, garg_crop=True)["abs_rel"] == pytest.approx(1 / 45)
    assert compute_depth_metrics(pred, gt)["abs_rel"] == pytest.approx(3 / 100)


def test_bad_inputs_are_explained():
    with pytest.raises(ValueError, match="resize the prediction"):
        compute_depth_metrics(np.ones((4, 4)), np.ones((4, 5)))
    with pytest.raises(ValueError, match="no ground-truth pixel"):
        compute_depth_metrics(np.ones((4, 4)), np.full((4, 4), 90.0))
    with pytest.raises(ValueError, match="NaN"):
        compute_depth_metrics(np.full((2, 2), np.nan), np.ones((2, 2)))


def test_disp_depth_conversions():
    scaled, depth = disp_to_depth(np.array([0.0, 1.0, 0.5]), 0.1, 100.0)
    assert depth[0] == pytest.approx(100.0) and depth[1] == pytest.approx(0.1)
    assert scaled[2] == pytest.approx(0.01 + (10 - 0.01) * 0.5)  # 1/max + (1/min - 1/max) * disp
    d = torch.tensor([0.5, 3.0, 42.0])
    back = disp_to_depth(depth_to_disp(d, 0.5, 80.0), 0.5, 80.0)[1]
    assert torch.allclose(back, d)
