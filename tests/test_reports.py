"""Tables the notebooks show."""

import numpy as np
import torch

from dkolib.depth.data import DepthDataset
from dkolib.study.reports import depth_histogram, gain_restoration
from dkolib.dko.kernels import split_kernel


def test_depth_histogram_fractions():
    depth = np.zeros((2, 4, 4), dtype=np.float32)
    depth[0, :2] = 3.0      # 8 pixels in [0, 5)
    depth[1, :1] = 12.0     # 4 pixels in [10, 15)
    rgb = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    hist = depth_histogram(DepthDataset(rgb, depth), np.array([0.0, 5.0, 10.0, 15.0]))
    assert np.allclose(hist["fraction"], [8 / 12, 0.0, 4 / 12])


def test_gain_restoration_recovers_an_exactly_scaled_kernel():
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(2, 3, 3, 3, generator=gen)
    # PSFs that are exactly the split kernels divided by 7, zero-padded into a 6 x 6 window
    targets = split_kernel(weight) / 7.0
    window = torch.zeros(targets.shape[0], 6, 6)
    window[:, 2:5, 2:5] = targets
    table = gain_restoration(window, weight).set_index("gain_mode")
    assert table.loc["channel", "channel_norm_err_mean"] < 1e-6
    assert table.loc["element", "channel_norm_err_mean"] < 1e-6
    assert table.loc["none", "channel_norm_err_mean"] > 0.8  # 1 - 1/7 of the kernel is missing


def test_element_gains_restore_what_one_gain_per_channel_cannot():
    gen = torch.Generator().manual_seed(1)
    weight = torch.randn(2, 3, 3, 3, generator=gen)
    # every metasurface dimmed by its own factor: one scale per channel cannot undo that
    scale = torch.rand(12, generator=gen) * 9 + 1
    targets = split_kernel(weight) / scale[:, None, None]
    window = torch.zeros(targets.shape[0], 6, 6)
    window[:, 2:5, 2:5] = targets
    table = gain_restoration(window, weight).set_index("gain_mode")
    assert table.loc["element", "channel_norm_err_mean"] < 1e-6
    assert table.loc["channel", "channel_norm_err_mean"] > 0.05


def test_training_median_ignores_capped_sky():
    from dkolib.depth.predict import training_median_depth

    depth = np.full((1, 4, 4), 80.0, dtype=np.float32)  # sky at the cap
    depth[0, :2] = [[5.0, 6.0, 7.0, 8.0], [9.0, 10.0, 11.0, 12.0]]
    median = training_median_depth(DepthDataset(np.zeros((1, 4, 4, 3), np.uint8), depth), 1e-3, 80.0)
    assert 8.0 <= median <= 9.0  # torch's lower median of 5..12, the 80 m sky excluded
