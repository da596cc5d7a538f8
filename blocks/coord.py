"""Coordinate Attention: channel attention factorised into a height profile and a width profile.

Paper: Hou, Zhou and Feng, "Coordinate Attention for Efficient Mobile Network Design", CVPR 2021,
https://arxiv.org/abs/2103.02907. Official code consulted: houqb/CoordAttention (``CoordAtt``, the
seed's ``CA``), whose ``state_dict`` keys (``conv1, bn1, conv_h, conv_w``) we keep.

Differences: the seed builds two ``nn.AdaptiveAvgPool2d`` modules inside every ``forward``; we take
plain means. ``oup`` must equal ``inp`` (the output multiplies the input channel-wise); other
values raise ``ValueError`` here instead of a broadcasting error in ``forward``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CA", "CoordinateAttention", "HardSwish"]


class HardSwish(nn.Module):
    """``x * relu6(x + 3) / 6``, the official ``h_swish``."""

    def forward(self, x: Tensor) -> Tensor:
        return x * F.relu6(x + 3.0) / 6.0


class CoordinateAttention(nn.Module):
    """CA block: ``out = x * a_h * a_w``, ``a_h = sigmoid(conv_h(.))`` ``(N, C, H, 1)``, ``a_w`` ``(N, C, 1, W)``.

    Args:
        inp: input channels ``C``.
        oup: output channels; must equal ``inp``.
        reduction: bottleneck ``mip = max(8, inp // reduction)``.

    The height weights ``a_h`` and width weights ``a_w`` are in (0, 1): how much each row / column of
    each channel is kept. Shapes: ``(N, C, H, W) -> (N, C, H, W)``.

    Example::

        >>> block = CA(64, 64)
        >>> block(torch.randn(2, 64, 7, 9)).shape
        torch.Size([2, 64, 7, 9])
    """

    def __init__(self, inp: int, oup: int, reduction: int = 32):
        super().__init__()
        if oup != inp:
            raise ValueError(f"oup ({oup}) must equal inp ({inp}): the attention multiplies the input")
        if inp < 1 or reduction < 1:
            raise ValueError(f"inp and reduction must be positive, got {inp} and {reduction}")
        mip = max(8, inp // reduction)
        self.inp, self.oup, self.reduction = inp, oup, reduction
        self.conv1 = nn.Conv2d(inp, mip, kernel_size=1)
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = HardSwish()
        self.conv_h = nn.Conv2d(mip, oup, kernel_size=1)
        self.conv_w = nn.Conv2d(mip, oup, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        x_h = x.mean(dim=3, keepdim=True)  # (N, C, H, 1)
        x_w = x.mean(dim=2, keepdim=True).transpose(2, 3)  # (N, C, W, 1)
        y = self.act(self.bn1(self.conv1(torch.cat([x_h, x_w], dim=2))))  # (N, mip, H + W, 1)
        y_h, y_w = torch.split(y, [height, width], dim=2)
        a_h = self.conv_h(y_h).sigmoid()  # (N, C, H, 1)
        a_w = self.conv_w(y_w.transpose(2, 3)).sigmoid()  # (N, C, 1, W)
        return x * a_w * a_h

    def extra_repr(self) -> str:
        return f"{self.inp}, {self.oup}" + (f", reduction={self.reduction}" if self.reduction != 32 else "")


CA = CoordinateAttention  # the seed's name
