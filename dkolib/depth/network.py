"""Monodepth2-style depth network with a swappable first layer.

Layout
------
* Encoder: ResNet-18 (BasicBlocks ``[2, 2, 2, 2]``) with the widths
  64/64/128/256/512 multiplied by ``model_cfg.width_factor`` (each rounded to a
  multiple of 4, at least 4). Its first layer -- in ResNet the 7x7 stride-2
  convolution -- is the attribute ``first_layer``: any ``nn.Module`` mapping
  ``[B, 3, H, W] -> [B, C1, H/2, W/2]``. By default an :class:`ElectronicConv1`;
  swap in an optical front end (``dkolib.dko.frontend.OpticalFrontEnd``) with
  :meth:`DepthNet.replace_first_layer`. BatchNorm, ReLU and the 3x3 stride-2
  max-pool that follow conv1 in ResNet stay in the electronic back end.
* Decoder: Monodepth2's depth decoder (3x3 conv + ELU with reflection padding,
  nearest x2 upsampling, skip connections, sigmoid disparity heads at scales
  ``0 .. model_cfg.scales - 1``). Decoder widths 16/32/64/128/256 are scaled by
  the same width factor (rounded to a multiple of 4, at least 8).

Input convention
----------------
The first layer always receives the *raw* image in ``[0, 1]`` (linear
intensity, what a camera sees): an optical front end can only convolve
non-negative light, so no mean/std normalisation happens before it. Nothing is
lost: ``conv(x - m) = conv(x) - const`` per output channel and a per-channel
``1/std`` folds into the kernel, and the BatchNorm that follows conv1 removes
both, so a network trained on raw input is as expressive as Monodepth2's
normalised one.

Output
------
``forward(rgb)`` returns ``{("disp", s): [B, 1, H / 2**s, W / 2**s]}`` with
sigmoid disparities in ``(0, 1)``; convert to metres with :func:`disp_to_depth`
using :data:`DISP_MIN_DEPTH_M` / :data:`DISP_MAX_DEPTH_M` (Monodepth2's 0.1 m
and 100 m). H and W must be multiples of 32.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import metrics
from ..config import ModelConfig

ENCODER_BASE_WIDTHS = (64, 64, 128, 256, 512)
DECODER_BASE_WIDTHS = (16, 32, 64, 128, 256)
DISP_MIN_DEPTH_M = 0.1
"""Depth (m) that a sigmoid disparity of 1 maps to (Monodepth2's ``min_depth``)."""
DISP_MAX_DEPTH_M = 100.0
"""Depth (m) that a sigmoid disparity of 0 maps to (Monodepth2's ``max_depth``)."""
DISP_INIT_DEPTH_M = 10.0
"""Depth (m) an untrained DepthNet predicts (bias of the disparity heads)."""


def scaled_width(base: int, width_factor: float, minimum: int = 4) -> int:
    """``base * width_factor`` rounded to a multiple of 4, at least ``minimum``."""
    if width_factor <= 0:
        raise ValueError(f"width_factor must be positive, got {width_factor}")
    return max(minimum, int(round(base * width_factor / 4.0)) * 4)


def encoder_widths(width_factor: float) -> tuple[int, ...]:
    """Channel counts of the 5 encoder feature maps (conv1, layer1..layer4)."""
    return tuple(scaled_width(c, width_factor) for c in ENCODER_BASE_WIDTHS)


def conv1_channels(model_cfg: ModelConfig) -> int:
    """C1: number of output channels of the first (swappable) layer."""
    return encoder_widths(model_cfg.width_factor)[0]


def disp_to_depth(disp: torch.Tensor, min_depth_m: float = DISP_MIN_DEPTH_M,
                  max_depth_m: float = DISP_MAX_DEPTH_M) -> tuple[torch.Tensor, torch.Tensor]:
    """Monodepth2's mapping of a sigmoid output to (scaled disparity [1/m], depth [m])
    (:func:`dkolib.depth.metrics.disp_to_depth` with the network's depth range)."""
    return metrics.disp_to_depth(disp, min_depth_m, max_depth_m)


def depth_to_disp(depth_m: torch.Tensor | float, min_depth_m: float = DISP_MIN_DEPTH_M,
                  max_depth_m: float = DISP_MAX_DEPTH_M) -> torch.Tensor:
    """Inverse of :func:`disp_to_depth`: the sigmoid output that decodes to ``depth_m``."""
    return metrics.depth_to_disp(torch.as_tensor(depth_m, dtype=torch.float32), min_depth_m, max_depth_m)


class ElectronicConv1(nn.Conv2d):
    """The all-electronic first layer: ``Conv2d(3, C1, k, stride=2, padding=k//2, bias=False)``.

    Input ``[B, 3, H, W]`` raw intensities in [0, 1]; output ``[B, C1, H/2, W/2]``.
    """

    def __init__(self, out_channels: int, in_channels: int = 3, kernel_size: int = 7):
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size, stride=2,
                         padding=kernel_size // 2, bias=False)


class BasicBlock(nn.Module):
    """ResNet BasicBlock: two 3x3 convs with BN, identity (or 1x1 projection) shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + identity)


def _make_stage(in_ch: int, out_ch: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [BasicBlock(in_ch, out_ch, stride)]
    layers += [BasicBlock(out_ch, out_ch, 1) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class PadConv3x3(nn.Module):
    """3x3 conv with 1-pixel reflection padding (replicate on maps with a side of 1 pixel,
    where reflection is undefined, e.g. the H/32 bottleneck of a 32-pixel-high image)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mode = "reflect" if min(x.shape[-2:]) >= 2 else "replicate"
        return self.conv(F.pad(x, (1, 1, 1, 1), mode=mode))


class ConvBlock(nn.Module):
    """Monodepth2's ConvBlock: reflection-padded 3x3 conv followed by ELU."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = PadConv3x3(in_ch, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.elu(self.conv(x))


class DepthDecoder(nn.Module):
    """Monodepth2 depth decoder. Input: 5 encoder features; output: disparities per scale."""

    def __init__(self, enc_widths: Iterable[int], dec_widths: Iterable[int], scales: Iterable[int]):
        super().__init__()
        self.enc_widths = tuple(enc_widths)
        self.dec_widths = tuple(dec_widths)
        self.scales = tuple(sorted(scales))
        self.upconv0 = nn.ModuleList()
        self.upconv1 = nn.ModuleList()
        for i in range(5):
            in0 = self.enc_widths[-1] if i == 4 else self.dec_widths[i + 1]
            self.upconv0.append(ConvBlock(in0, self.dec_widths[i]))
            in1 = self.dec_widths[i] + (self.enc_widths[i - 1] if i > 0 else 0)
            self.upconv1.append(ConvBlock(in1, self.dec_widths[i]))
        self.dispconv = nn.ModuleDict({
            str(s): PadConv3x3(self.dec_widths[s], 1)
            for s in self.scales})

    def forward(self, features: list[torch.Tensor]) -> dict:
        outputs = {}
        x = features[-1]
        for i in range(4, -1, -1):
            x = self.upconv0[i](x)
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            if i > 0:
                x = torch.cat([x, features[i - 1]], dim=1)
            x = self.upconv1[i](x)
            if i in self.scales:
                outputs[("disp", i)] = torch.sigmoid(self.dispconv[str(i)](x))
        return outputs


class DepthNet(nn.Module):
    """Monodepth2-style depth network with a swappable first layer (see module docstring).

    Args:
        model_cfg: ``width_factor`` and ``scales`` (number of disparity scales, 1..4).
        first_layer: module ``[B, 3, H, W] -> [B, C1, H/2, W/2]``; default
            :class:`ElectronicConv1` with ``C1 = conv1_channels(model_cfg)``.
        kernel_size: kernel side of the default electronic conv1 (ResNet: 7).
        init_depth_m: the disparity heads' biases are set so that an untrained net
            predicts about this depth (a plausible scene depth instead of
            Monodepth2's sigmoid(0) = 0.2 m; saves the first steps of a short schedule).
            None keeps PyTorch's default bias init.
    """

    def __init__(self, model_cfg: ModelConfig, first_layer: nn.Module | None = None,
                 kernel_size: int = 7, init_depth_m: float | None = DISP_INIT_DEPTH_M):
        super().__init__()
        self.model_cfg = model_cfg
        self.enc_widths = encoder_widths(model_cfg.width_factor)
        self.dec_widths = tuple(scaled_width(c, model_cfg.width_factor, minimum=8)
                                for c in DECODER_BASE_WIDTHS)
        self.scales = tuple(range(model_cfg.scales))
        c1 = self.enc_widths[0]
        self.first_layer = first_layer if first_layer is not None else ElectronicConv1(c1, 3, kernel_size)
        self.bn1 = nn.BatchNorm2d(c1)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        w = self.enc_widths
        self.layer1 = _make_stage(w[0], w[1], 2, 1)
        self.layer2 = _make_stage(w[1], w[2], 2, 2)
        self.layer3 = _make_stage(w[2], w[3], 2, 2)
        self.layer4 = _make_stage(w[3], w[4], 2, 2)
        self.decoder = DepthDecoder(self.enc_widths, self.dec_widths, self.scales)
        # torchvision's ResNet init for the encoder; the decoder keeps PyTorch's default (as Monodepth2)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for m in stage.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if init_depth_m is not None:
            d = float(depth_to_disp(init_depth_m).clamp(1e-4, 1 - 1e-4))
            for head in self.decoder.dispconv.values():
                nn.init.constant_(head.conv.bias, math.log(d / (1.0 - d)))

    @property
    def conv1_channels(self) -> int:
        return self.enc_widths[0]

    def encode(self, rgb: torch.Tensor) -> list[torch.Tensor]:
        """Encoder features ``[conv1 (H/2), layer1 (H/4), layer2 (H/8), layer3 (H/16), layer4 (H/32)]``."""
        if rgb.dim() != 4 or rgb.shape[1] != 3:
            raise ValueError(f"expected rgb of shape [B, 3, H, W], got {tuple(rgb.shape)}")
        h, w = rgb.shape[-2:]
        if h % 32 or w % 32:
            raise ValueError(f"image height and width must be multiples of 32, got {h} x {w}")
        x = self.first_layer(rgb)
        expected = (rgb.shape[0], self.enc_widths[0], h // 2, w // 2)
        if tuple(x.shape) != expected:
            raise ValueError(f"first_layer returned {tuple(x.shape)}, expected {expected}")
        f0 = F.relu(self.bn1(x))
        f1 = self.layer1(self.maxpool(f0))
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        f4 = self.layer4(f3)
        return [f0, f1, f2, f3, f4]

    def forward(self, rgb: torch.Tensor) -> dict:
        """``rgb [B, 3, H, W]`` in [0, 1] -> ``{("disp", s): [B, 1, H/2^s, W/2^s]}``."""
        return self.decoder(self.encode(rgb))

    def conv1_weight(self) -> torch.Tensor:
        """Kernels ``[C1, 3, k, k]`` of the electronic first layer (error if it is not electronic)."""
        if not isinstance(self.first_layer, nn.Conv2d):
            raise TypeError(f"first layer is a {type(self.first_layer).__name__}, not an electronic conv; "
                            "use its own kernels() method")
        return self.first_layer.weight

    def replace_first_layer(self, module: nn.Module) -> nn.Module:
        """Swap in ``module`` as the first layer; return the previous one."""
        if not isinstance(module, nn.Module):
            raise TypeError(f"first layer must be an nn.Module, got {type(module).__name__}")
        old = self.first_layer
        self.first_layer = module
        return old

    def backend_parameters(self) -> list[nn.Parameter]:
        """All parameters except those of the first layer (the electronic back end)."""
        first = {id(p) for p in self.first_layer.parameters()}
        return [p for p in self.parameters() if id(p) not in first]
