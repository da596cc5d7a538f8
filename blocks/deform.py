"""Deformable convolution (DCNv1) and modulated deformable convolution (DCNv2) with their offset conv.

Papers: Dai et al., "Deformable Convolutional Networks", ICCV 2017, https://arxiv.org/abs/1703.06211;
Zhu et al., "Deformable ConvNets v2", CVPR 2019, https://arxiv.org/abs/1811.11168.
Code consulted: ``torchvision.ops.deform_conv2d`` (whose function ``sampled_deform_conv2d`` computes) and
mmcv ``DeformConv2dPack`` / ``ModulatedDeformConv2dPack``, whose arguments and ``state_dict`` keys
(``weight``, ``bias``, ``conv_offset.weight``, ``conv_offset.bias``) we keep.

Offsets use torchvision's layout (the same as mmcv's): for offset group ``g`` and kernel tap
``t = i * kw + j``, channel ``g * 2 * kh * kw + 2 * t`` is dy and ``+ 1`` is dx, in input pixels.
DCNv2's mask channel is ``g * kh * kw + t``: ``sigmoid`` of the last third of ``conv_offset``.
``conv_offset`` starts at zero, so the layer starts as a plain convolution (DCNv2: weights halved).

Precision: the sampling runs in float32 (float64 for float64 input) whatever the input's dtype or
autocast says, and the output takes the input's dtype, so bfloat16 / float16 models work on any device.

Speed: the sampling is one ``grid_sample`` (bilinear, zeros outside, as torchvision's kernel) and the
convolution one batched matrix product, about 4x faster than torchvision's CPU kernel on the default
model's DCN (``benchmarks/blocks.py``). Deformable convolutions stay far slower than plain ones when
depthwise; prefer DCN on regular convolutions.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

__all__ = ["DCN", "DCNv2", "DeformConv", "ModulatedDeformConv", "sampled_deform_conv2d", "split_offset_output"]


def sampled_deform_conv2d(x: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None = None,
                          stride: tuple[int, int] = (1, 1), padding: tuple[int, int] = (0, 0),
                          dilation: tuple[int, int] = (1, 1), mask: Tensor | None = None) -> Tensor:
    """``torchvision.ops.deform_conv2d``'s function, by ``grid_sample`` and a matrix product.

    x: ``(N, C, H, W)``; offset: ``(N, 2 * G * kh * kw, H', W')`` (dy, dx per offset group ``G`` and tap, input
    pixels); weight: ``(out, C / groups, kh, kw)``; mask: ``(N, G * kh * kw, H', W')`` or None. Tap ``(i, j)`` of
    output ``(p, q)`` samples ``(p * sh - ph + i * dh + dy, q * sw - pw + j * dw + dx)`` bilinearly, zero
    outside the map (torchvision's rule: corners outside read 0). Returns ``(N, out, H', W')``.
    """
    n, channels, height, width = x.shape
    out_channels, group_channels, kh, kw = weight.shape
    groups, taps = channels // group_channels, kh * kw
    out_height, out_width = offset.shape[-2:]
    offset_groups = offset.shape[1] // (2 * taps)
    rows = torch.arange(kh, device=x.device, dtype=x.dtype).repeat_interleave(kw)[:, None, None] * dilation[0]
    cols = torch.arange(kw, device=x.device, dtype=x.dtype).repeat(kh)[:, None, None] * dilation[1]
    base_y = rows + (torch.arange(out_height, device=x.device, dtype=x.dtype) * stride[0] - padding[0])[:, None]
    base_x = cols + torch.arange(out_width, device=x.device, dtype=x.dtype) * stride[1] - padding[1]
    dy_dx = offset.view(n, offset_groups, taps, 2, out_height, out_width)
    # pixel -> grid_sample's [-1, 1] (align_corners=False: pixel centres at (2 * i + 1) / size - 1)
    grid = torch.stack([(2 * (base_x + dy_dx[:, :, :, 1]) + 1) / width - 1,
                        (2 * (base_y + dy_dx[:, :, :, 0]) + 1) / height - 1], dim=-1)  # (N, G, taps, H', W', 2)
    sampled = F.grid_sample(x.reshape(n * offset_groups, channels // offset_groups, height, width),
                            grid.view(n * offset_groups, taps * out_height, out_width, 2), mode="bilinear",
                            padding_mode="zeros", align_corners=False)  # (N * G, C / G, taps * H', W')
    sampled = sampled.view(n, offset_groups, channels // offset_groups, taps, out_height, out_width)
    if mask is not None:
        sampled = sampled * mask.view(n, offset_groups, 1, taps, out_height, out_width)
    columns = sampled.reshape(n, groups, group_channels * taps, out_height * out_width)
    out = torch.matmul(weight.reshape(groups, out_channels // groups, group_channels * taps), columns)
    out = out.reshape(n, out_channels, out_height, out_width)
    return out if bias is None else out + bias[:, None, None]


def split_offset_output(output: Tensor, deform_groups: int, kernel_size: tuple[int, int],
                        modulated: bool) -> tuple[Tensor, Tensor | None]:
    """``conv_offset`` output -> (offsets in torchvision layout, mask or None).

    output: ``(N, deform_groups * (3 if modulated else 2) * kh * kw, H', W')``.
    Returns offsets ``(N, 2 * deform_groups * kh * kw, H', W')`` and, for DCNv2, the mask
    ``(N, deform_groups * kh * kw, H', W')`` in (0, 1).
    """
    if not modulated:
        return output, None
    offsets_size = 2 * deform_groups * kernel_size[0] * kernel_size[1]
    return output[:, :offsets_size], torch.sigmoid(output[:, offsets_size:])


class DeformConv(nn.Module):
    """DCN: ``deform_conv2d(x, conv_offset(x), weight)``. mmcv ``DeformConv2dPack`` arguments and keys.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups: as ``nn.Conv2d``.
        deform_groups: offset groups; each group of ``in_channels / deform_groups`` channels moves
            its own sampling points.
        bias: whether the deformable convolution has a bias (mmcv's DCNv1 has none).

    Shapes: ``(N, in_channels, H, W) -> (N, out_channels, H', W')`` as ``nn.Conv2d``.
    """

    modulated = False

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], stride=1,
                 padding=0, dilation=1, groups: int = 1, deform_groups: int = 1, bias: bool = False):
        super().__init__()
        if min(in_channels, out_channels, groups, deform_groups) < 1:
            raise ValueError("channels, groups and deform_groups must be positive")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) "
                             f"must be divisible by groups ({groups})")
        if in_channels % deform_groups:
            raise ValueError(f"in_channels ({in_channels}) must be divisible by deform_groups ({deform_groups})")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding, self.dilation = _pair(padding), _pair(dilation)
        self.groups, self.deform_groups = groups, deform_groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias: nn.Parameter | None
        self.register_parameter("bias", nn.Parameter(torch.empty(out_channels)) if bias else None)
        taps = self.kernel_size[0] * self.kernel_size[1]
        self.conv_offset = nn.Conv2d(in_channels, deform_groups * (3 if self.modulated else 2) * taps,
                                     self.kernel_size, self.stride, self.padding, self.dilation, bias=True)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """mmcv init: weight uniform(+-1/sqrt(C*kh*kw)), bias and ``conv_offset`` zero."""
        bound = 1.0 / math.sqrt(self.in_channels * self.kernel_size[0] * self.kernel_size[1])
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: Tensor) -> Tensor:
        offset, mask = split_offset_output(self.conv_offset(x), self.deform_groups, self.kernel_size, self.modulated)
        # The deformable sampling runs in float32 (float64 for float64 inputs), as torchvision's autocast rule
        # does: sampling positions in bfloat16 would be off by up to a pixel. The result comes back in x's dtype.
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        cast = (lambda t: None if t is None else t.to(dtype))  # noqa: E731
        with torch.autocast(x.device.type, enabled=False):
            out = sampled_deform_conv2d(cast(x), cast(offset), cast(self.weight), cast(self.bias), self.stride,
                                        self.padding, self.dilation, cast(mask))
        return out.to(x.dtype)

    def extra_repr(self) -> str:
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        for name, default in (("stride", (1, 1)), ("padding", (0, 0)), ("dilation", (1, 1)),
                              ("groups", 1), ("deform_groups", 1)):
            if getattr(self, name) != default:
                text += f", {name}={getattr(self, name)}"
        return text + ("" if (self.bias is not None) == self.modulated else f", bias={self.bias is not None}")


class ModulatedDeformConv(DeformConv):
    """DCNv2: offsets from the first two thirds of ``conv_offset``, mask = sigmoid of the last third.

    mmcv ``ModulatedDeformConv2dPack`` arguments and keys; ``bias`` defaults to True as there.
    """

    modulated = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], stride=1,
                 padding=0, dilation=1, groups: int = 1, deform_groups: int = 1, bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, deform_groups,
                         bias)


DCN = DeformConv
DCNv2 = ModulatedDeformConv
