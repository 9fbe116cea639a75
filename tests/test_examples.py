"""The worked example's library code (notebooks/09_resnet18_example.ipynb), on tiny sizes.

Each check has an independent reference: the shapes' areas from geometry, the ResNet-18's
parameter count from torchvision's published model, the BatchNorm statistics from the
activations computed here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from dkolib.config import load_config
from dkolib.dko.conv import OpticalConv2d
from dkolib.errors import InputError
from dkolib.examples import (CLASSES, accuracy, load_classifier, make_shapes, reestimate_batchnorm, resnet18,
                             save_classifier, train_classifier)
from dkolib.examples.figures import kernels_rgb, mosaic, plot_swap_summary
from dkolib.examples.resnet import predict
from dkolib.examples.shapes import _shape_mask

torch.set_num_threads(1)


# ---------------------------------------------------------------- data


def test_shapes_are_reproducible_balanced_intensities():
    x, y = make_shapes(10, size=16, seed=3)
    assert x.shape == (10, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert sorted(np.bincount(y.numpy(), minlength=len(CLASSES)).tolist()) == [2, 2, 3, 3]
    x2, y2 = make_shapes(10, size=16, seed=3)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(make_shapes(10, size=16, seed=4)[0], x)
    with pytest.raises(InputError, match="subset"):
        make_shapes(4, classes=("disk", "hexagon"))
    with pytest.raises(InputError, match="size >= 8"):
        make_shapes(4, size=4)


@pytest.mark.parametrize("name, area_over_r2", [
    ("disk", math.pi),
    ("square", 2.0),                          # inscribed in the circle of radius r: side r sqrt(2)
    ("triangle", 3.0 * math.sqrt(3.0) / 4.0),  # equilateral, circumradius r
    ("cross", 20.0 / 9.0),                    # two 2r x 2r/3 bars overlapping in a 2r/3 square
])
def test_shape_masks_have_their_geometric_area(name, area_over_r2):
    r, n = 1.0, 1201
    t = np.linspace(-1.2, 1.2, n)
    u, v = np.meshgrid(t, t, indexing="ij")
    area = _shape_mask(name, u, v, r).sum() * (t[1] - t[0]) ** 2
    assert area == pytest.approx(area_over_r2 * r * r, rel=5e-3)


# ---------------------------------------------------------------- network


def test_resnet18_is_the_standard_network():
    model = resnet18()  # width 64, 1000 classes: torchvision's resnet18 has 11,689,512 parameters
    assert sum(p.numel() for p in model.parameters()) == 11_689_512
    keys = model.state_dict().keys()
    for key in ("conv1.weight", "bn1.running_var", "layer1.1.conv2.weight", "layer2.0.downsample.0.weight",
                "layer4.1.bn2.weight", "fc.bias"):
        assert key in keys
    assert (model.conv1.kernel_size, model.conv1.stride, model.conv1.padding, model.conv1.bias) == \
        ((7, 7), (2, 2), (3, 3), None)
    small = resnet18(num_classes=4, width=4)
    assert small(torch.rand(2, 3, 32, 32)).shape == (2, 4)
    with pytest.raises(InputError, match="width >= 1"):
        resnet18(width=0)


def test_training_learns_and_accuracy_counts():
    x, y = make_shapes(16, size=16, seed=0)
    model = resnet18(num_classes=len(CLASSES), width=4)
    losses = train_classifier(model, x, y, epochs=30, batch_size=16, lr=1e-2, flips=False, seed=0)
    assert len(losses) == 30 and losses[-1] < 0.1 * losses[0]   # it memorises 16 images
    assert accuracy(model, x, y) >= 0.75                          # (eval mode: running BatchNorm statistics)
    logits = predict(model, x)
    assert accuracy(model, x, y) == pytest.approx(float((logits.argmax(1) == y).float().mean()))
    assert model.training  # predict / accuracy restore the mode
    with pytest.raises(InputError, match="labels"):
        accuracy(model, x, y[:3])


def test_batchnorm_reestimation_is_the_average_over_the_images():
    torch.manual_seed(0)
    model = resnet18(num_classes=3, width=4).eval()
    x = torch.rand(24, 3, 16, 16)
    with torch.no_grad():
        h = model.conv1(x)  # what bn1 sees
        model.bn1.running_mean.fill_(5.0)
        model.bn1.running_var.fill_(9.0)
    params = {k: v.clone() for k, v in model.named_parameters()}
    assert reestimate_batchnorm(model, x, batch_size=8) == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    # equal batches: the average of the batch means is the mean; of the unbiased batch variances, their average
    torch.testing.assert_close(model.bn1.running_mean, h.mean((0, 2, 3)), rtol=1e-5, atol=1e-6)
    batch_vars = torch.stack([h[i:i + 8].var((0, 2, 3), unbiased=True) for i in range(0, 24, 8)])
    torch.testing.assert_close(model.bn1.running_var, batch_vars.mean(0), rtol=1e-5, atol=1e-6)
    assert not model.training and model.bn1.momentum == 0.1
    assert all(torch.equal(v, params[k]) for k, v in model.named_parameters())


# ---------------------------------------------------------------- saving


@pytest.mark.parametrize("optical", [False, True])
def test_save_and_load_give_the_same_outputs(tmp_path, optical):
    model = resnet18(num_classes=3, width=2)
    if optical:  # an optical conv1 of small optics, no synthesis: random metasurfaces and gains
        layer = OpticalConv2d(3, 2, 7, stride=2, padding=3, bias=False, optics=load_config("smoke").optics,
                              mode="full_psf", generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            layer.gain.copy_(1 + torch.rand(layer.gain.shape))
        model.conv1 = layer
    model.eval()
    x = torch.rand(2, 3, 16, 16)
    loaded = load_classifier(save_classifier(model, tmp_path / "m.pt"))
    assert type(loaded.conv1) is type(model.conv1)
    if optical:
        assert (loaded.conv1.mode, loaded.conv1.optics_cfg) == ("full_psf", model.conv1.optics_cfg)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_load_refuses_other_files(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="not a classifier"):
        load_classifier(tmp_path / "other.pt")
    with pytest.raises(InputError, match="ResNet"):
        save_classifier(nn.Linear(2, 2), tmp_path / "x.pt")


# ---------------------------------------------------------------- figure


def test_kernel_images_and_mosaic():
    w = torch.zeros(2, 3, 3, 3)
    w[0, 0, 1, 1], w[1, 2, 0, 0] = 2.0, -4.0
    img = kernels_rgb(w)
    assert img.shape == (2, 3, 3, 3)
    assert img[0, 1, 1, 0] == 1.0 and img[1, 0, 0, 2] == 0.0 and img[0, 0, 0, 0] == 0.5  # grey is 0
    assert kernels_rgb(w, scale=torch.tensor([4.0, 4.0]))[0, 1, 1, 0] == 0.75
    m = mosaic(img, ncols=2, pad=1, fill=1.0)
    assert m.shape == (3, 7, 3) and np.all(m[:, 3] == 1.0)
    np.testing.assert_array_equal(m[:, 4:], img[1])


def test_summary_figure_has_its_three_panels():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = make_shapes(8, size=16, seed=0)
    w = torch.randn(4, 3, 7, 7)
    fig = plot_swap_summary(x, y, CLASSES, w, 0.9 * w, {"electronic": 0.9, "optical": 0.8})
    assert len(fig.axes) == 3
    assert [t.get_text() for t in fig.axes[2].get_yticklabels()] == ["electronic", "optical"]
    plt.close(fig)
