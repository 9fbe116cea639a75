"""Depth: synthetic and KITTI scenes, the Monodepth2-style network, its loss and metrics."""

from .data import get_dataset, motorcycle_scene
from .losses import depth_loss, make_depth_loss
from .metrics import METRIC_COLUMNS, compute_depth_metrics
from .network import DepthNet
from .predict import constant_predictor, predict_depth, training_median_depth
from .scenes import render_scene
