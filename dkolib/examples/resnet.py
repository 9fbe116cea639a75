"""A standard ResNet-18 classifier in plain PyTorch, and what swapping its ``conv1`` for optics takes.

The network is torchvision's ``resnet18`` (He et al. 2016): a 7 x 7 stride-2 ``conv1`` (3 input
channels, no bias), BatchNorm, ReLU, a 3 x 3 stride-2 max-pool, four stages of two
:class:`BasicBlock`\\ s (widths ``w, 2w, 4w, 8w``, the last three starting with stride 2), global
average pooling and a linear classifier; module and parameter names are torchvision's, so with
``width=64`` its ``state_dict`` is interchangeable with ``torchvision.models.resnet18``'s.
``width`` scales every stage (``64``: the standard network) so that the example runs in seconds
on a CPU.

Swapping the first layer (``dkolib.dko.conv.replace_conv(model, "conv1")``) changes the
statistics of what ``bn1`` sees a little (the optical kernels are close to, not equal to, the
electronic ones; in the ``full_psf`` modes every output pixel also gets the light that misses the
7 x 7 crop). :func:`reestimate_batchnorm` recomputes every BatchNorm's running statistics on
training images without any gradient step; :func:`train_classifier` then fine-tunes what is left
trainable (freeze the optics with ``layer.freeze_optics()``). :func:`save_classifier` /
:func:`load_classifier` store a network with an optical ``conv1`` as a plain tensor file
(:func:`dkolib.io.save_torch`) and rebuild it.

Inputs are intensities in ``[0, 1]`` with no mean / std normalisation: an optical layer cannot
see negative light, and ``bn1`` absorbs what the normalisation would do (see
:mod:`dkolib.depth.network`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..io import load_torch, save_torch

CHECKPOINT_FORMAT = "dkolib.examples.resnet/1"
"""Tag of the files :func:`save_classifier` writes."""


class BasicBlock(nn.Module):
    """ResNet's two-convolution residual block (torchvision's ``BasicBlock``; ``expansion = 1``).

    ``[B, in_ch, H, W] -> [B, out_ch, ceil(H / stride), ceil(W / stride)]``: 3 x 3 conv (stride),
    BatchNorm, ReLU, 3 x 3 conv, BatchNorm, plus the shortcut (a strided 1 x 1 conv and BatchNorm
    where the shape changes), then ReLU.
    """

    expansion = 1

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet(nn.Module):
    """ResNet classifier (torchvision's layout): ``[B, in_channels, H, W] -> [B, num_classes]`` logits.

    Args:
        layers: blocks per stage (``(2, 2, 2, 2)``: ResNet-18).
        num_classes: outputs of the final linear layer.
        width: channels of ``conv1`` and the first stage (stages: ``width * (1, 2, 4, 8)``; 64 standard).
        in_channels: input channels (3: RGB).

    ``conv1`` is 7 x 7, stride 2, padding 3, no bias. ``H`` and ``W`` can be anything ``>= 1``
    (global average pooling at the end); at 32 x 32 the last stage is 1 x 1.
    """

    def __init__(self, layers: tuple[int, ...] = (2, 2, 2, 2), num_classes: int = 1000, width: int = 64,
                 in_channels: int = 3):
        super().__init__()
        if len(layers) != 4 or min(layers) < 1 or num_classes < 1 or width < 1 or in_channels < 1:
            raise InputError(f"need 4 stages of >= 1 block, num_classes >= 1, width >= 1 and in_channels >= 1, "
                             f"got layers={layers}, num_classes={num_classes}, width={width}, "
                             f"in_channels={in_channels}")
        self.layers, self.num_classes, self.width, self.in_channels = tuple(layers), num_classes, width, in_channels
        self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        widths = [width * m for m in (1, 2, 4, 8)]
        stages, in_ch = [], width
        for i, (w, n) in enumerate(zip(widths, layers)):
            blocks = [BasicBlock(in_ch, w, stride=1 if i == 0 else 2)] + [BasicBlock(w, w) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            in_ch = w
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 1000, width: int = 64, in_channels: int = 3) -> ResNet:
    """ResNet-18 (two :class:`BasicBlock`\\ s per stage); ``width=64`` is the standard network."""
    return ResNet((2, 2, 2, 2), num_classes=num_classes, width=width, in_channels=in_channels)


# ---------------------------------------------------------------- training and evaluation


def _check_data(images: torch.Tensor, labels: torch.Tensor | None = None) -> None:
    if images.dim() != 4:
        raise InputError(f"images must be [N, C, H, W], got {tuple(images.shape)}")
    if labels is not None and (labels.dim() != 1 or labels.shape[0] != images.shape[0]):
        raise InputError(f"labels must be [N] with N = {images.shape[0]}, got {tuple(labels.shape)}")


def train_classifier(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, epochs: int,
                     batch_size: int = 64, lr: float = 1e-3, weight_decay: float = 1e-4, flips: bool = True,
                     seed: int = 0) -> list[float]:
    """Train the parameters of ``model`` that require grad with Adam and cross-entropy; returns the mean loss per epoch.

    The learning rate follows a cosine from ``lr`` down to 0 over the run's steps, so that the
    last epochs settle the weights rather than leave them where the last large step put them.

    Args:
        model: a classifier ``[B, C, H, W] -> [B, classes]`` (left in train mode).
        images: ``[N, C, H, W]`` inputs; labels: ``[N]`` class indices.
        epochs: passes over the data, each in an order drawn from ``seed``.
        batch_size, lr, weight_decay: mini-batch size, Adam's initial learning rate and (L2) weight decay.
        flips: augment each batch with a random horizontal and a random vertical flip (for classes
            that a mirror image does not change, such as :mod:`~dkolib.examples.shapes`').
        seed: seed of the order and the flips.
    """
    _check_data(images, labels)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise InputError("model has no parameter that requires grad")
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = -(-images.shape[0] // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps_per_epoch))
    gen = torch.Generator().manual_seed(seed)
    model.train()
    history = []
    for _ in range(epochs):
        order = torch.randperm(images.shape[0], generator=gen)
        total = 0.0
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            x = images[idx]
            if flips:
                dims = [d for d, flip in zip((-1, -2), torch.rand(2, generator=gen) < 0.5) if flip]
                x = x.flip(dims) if dims else x
            loss = F.cross_entropy(model(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            total += float(loss.detach()) * len(idx)
        history.append(total / len(order))
    return history


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Logits ``[N, classes]`` of ``model`` in eval mode (its mode is restored afterwards)."""
    _check_data(images)
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(images[i:i + batch_size]) for i in range(0, images.shape[0], batch_size)])
    finally:
        model.train(was_training)


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float:
    """Fraction of ``images`` whose arg-max logit (eval mode) is its label."""
    _check_data(images, labels)
    return float((predict(model, images, batch_size).argmax(1) == labels).float().mean())


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, images: torch.Tensor, batch_size: int = 128) -> int:
    """Recompute the running mean / variance of every BatchNorm of ``model`` on ``images``; returns their count.

    The statistics are reset and re-accumulated as exact averages over the batches (``momentum=None``),
    in train mode and without gradients; no parameter changes. Use it after swapping a layer whose
    outputs differ from the original's (e.g. an optical ``conv1``). Every module's mode and
    momentum is restored afterwards.
    """
    _check_data(images)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    try:
        for i in range(0, images.shape[0], batch_size):
            model(images[i:i + batch_size])
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)
    return len(norms)


# ---------------------------------------------------------------- saving and loading


def _optical_spec(layer: nn.Module) -> dict:
    """Plain-data arguments that rebuild an ``OpticalConv2d`` shaped as ``layer`` (weights: from the state dict)."""
    return {"in_channels": layer.in_channels, "out_channels": layer.out_channels, "kernel_size": layer.kernel_size,
            "stride": layer.stride, "padding": layer.padding, "bias": layer.bias is not None,
            "optics": dataclasses.asdict(layer.optics_cfg), "wavelengths_m": list(layer.wavelengths_m),
            "mode": layer.mode, "engine": layer.engine, "gain_model": "element" if layer.gain.dim() == 3 else "channel",
            "trainable_gain": isinstance(layer.gain, nn.Parameter)}


def save_classifier(model: ResNet, path: str | Path) -> Path:
    """Write ``model`` (a :class:`ResNet`, ``conv1`` electronic or an ``OpticalConv2d``) to ``path``.

    The file (:func:`dkolib.io.save_torch`: tensors and plain data only, safe to load) holds the
    architecture, the optical layer's settings (optics section, wavelengths, read-out mode, gain
    model) and the ``state_dict``. Which optics parameters are frozen is not stored.
    """
    from ..dko.conv import OpticalConv2d

    if not isinstance(model, ResNet):
        raise InputError(f"save_classifier takes a dkolib.examples.resnet.ResNet, got {type(model).__name__}")
    conv1 = _optical_spec(model.conv1) if isinstance(model.conv1, OpticalConv2d) else None
    return save_torch({"format": CHECKPOINT_FORMAT,
                       "arch": {"layers": list(model.layers), "num_classes": model.num_classes, "width": model.width,
                                "in_channels": model.in_channels},
                       "optical_conv1": conv1, "state_dict": dict(model.state_dict())}, path)


def load_classifier(path: str | Path, map_location: str | torch.device = "cpu") -> ResNet:
    """Rebuild the :class:`ResNet` that :func:`save_classifier` wrote to ``path`` (in eval mode)."""
    from ..dko.conv import OpticalConv2d

    data = load_torch(path, map_location=map_location)
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path} is not a classifier written by dkolib.examples.resnet.save_classifier")
    arch = data["arch"]
    model = ResNet(tuple(arch["layers"]), arch["num_classes"], arch["width"], arch["in_channels"])
    spec = data["optical_conv1"]
    if spec is not None:
        spec = dict(spec)
        model.conv1 = OpticalConv2d(spec.pop("in_channels"), spec.pop("out_channels"), spec.pop("kernel_size"),
                                    stride=spec.pop("stride"), padding=spec.pop("padding"), bias=spec.pop("bias"),
                                    wavelengths_m=tuple(spec.pop("wavelengths_m")), init="lens", **spec)
    model.load_state_dict(data["state_dict"])
    return model.to(map_location).eval()


__all__ = ["CHECKPOINT_FORMAT", "BasicBlock", "ResNet", "accuracy", "load_classifier", "predict",
           "reestimate_batchnorm", "resnet18", "save_classifier", "train_classifier"]
