"""SPD: space-to-depth downsampling that keeps every pixel, and SPD-Conv.

Paper: Sunkara and Luo, "No More Strided Convolutions or Pooling: A New CNN Building Block for
Low-Resolution Images and Small Objects", ECML PKDD 2022, https://arxiv.org/abs/2208.03641.
Official code consulted: LabSAINT/SPD-Conv (``space_to_depth`` in its YOLOv5 ``common.py``).

``space_to_depth`` keeps the official channel order ``[x[::2, ::2], x[1::2, ::2], x[::2, 1::2],
x[1::2, 1::2]]`` (phase (row, col) = (0,0), (1,0), (0,1), (1,1)), which is *not* the order of
``F.pixel_unshuffle``. Difference: odd heights or widths are zero-padded by one row / column at the
bottom / right (the official slicing gives phases of unequal size and ``cat`` fails).

A stride-2 convolution is exactly ``space_to_depth`` followed by a stride-1 convolution on the
4C phase channels: ``SPDConv.from_strided_conv`` builds that rewrite from a pretrained conv.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

__all__ = ["SPDConv", "SpaceToDepth", "space_to_depth", "PHASES"]

PHASES = ((0, 0), (1, 0), (0, 1), (1, 1))  # (row, column) offset of each channel group, official order


class SpaceToDepth(nn.Module):
    """``(N, C, H, W) -> (N, 4C, ceil(H/2), ceil(W/2))``: the four 2x2 phases stacked on channels.

    Args:
        dimension: kept for the official signature (``space_to_depth(dimension=1)``); the phases are
            always concatenated on dim 1.
    """

    def __init__(self, dimension: int = 1):
        super().__init__()
        self.d = dimension

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        x = F.pad(x, (0, width % 2, 0, height % 2))
        return torch.cat([x[..., row::2, col::2] for row, col in PHASES], dim=1)


space_to_depth = SpaceToDepth  # the seed's name


class SPDConv(nn.Module):
    """SPD-Conv: zero padding, ``space_to_depth``, then a stride-1 convolution on 4C channels.

    Args:
        in_channels: input channels ``C``.
        out_channels: output channels.
        kernel_size: kernel of the convolution on the half-resolution phase map (int or (h, w)).
        padding: ``(left, right, top, bottom)`` zero padding of the full-resolution input, or
            ``"same"``: TensorFlow "SAME" padding of the equivalent stride-2 convolution (kernel
            ``2 * kernel_size - 1``), computed per input size, extra pixel at the bottom / right. The
            default, ``kernel_size // 2`` phase pixels on each side (twice that in input pixels), keeps
            the output at ``ceil(H/2) x ceil(W/2)`` like the YOLO SPD-Conv ``Conv(4C, out, k, 1)``.
        bias: whether the convolution has a bias.

    ``state_dict`` keys: ``conv.weight`` (and ``conv.bias``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int] = 3,
                 padding: tuple[int, int, int, int] | str | None = None, bias: bool = True):
        super().__init__()
        kernel_h, kernel_w = _pair(kernel_size)
        if min(in_channels, out_channels, kernel_h, kernel_w) < 1:
            raise ValueError("in_channels, out_channels and kernel_size must be positive")
        if padding is None:
            padding = (2 * (kernel_w // 2), 2 * (kernel_w // 2), 2 * (kernel_h // 2), 2 * (kernel_h // 2))
        self.padding = padding if padding == "same" else tuple(padding)
        if padding != "same" and (len(self.padding) != 4 or min(self.padding) < 0):
            raise ValueError(f"padding must be 'same' or four non-negative ints (left, right, top, bottom), "
                             f"got {padding}")
        self.space_to_depth = SpaceToDepth()
        self.conv = nn.Conv2d(4 * in_channels, out_channels, kernel_size, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.space_to_depth(F.pad(x, self.input_padding(*x.shape[-2:]))))

    def input_padding(self, height: int, width: int) -> tuple[int, int, int, int]:
        """``(left, right, top, bottom)`` zero padding applied to an input of this size."""
        if self.padding != "same":
            left, right, top, bottom = self.padding
            return left, right, top, bottom
        pads: list[int] = []
        for size, half_kernel in ((width, self.conv.kernel_size[1]), (height, self.conv.kernel_size[0])):
            total = max((-(-size // 2) - 1) * 2 + 2 * half_kernel - 1 - size, 0)
            pads += [total // 2, total - total // 2]
        left, right, top, bottom = pads
        return left, right, top, bottom

    @classmethod
    def from_strided_conv(cls, conv: nn.Conv2d, padding: tuple[int, int, int, int] | str | None = None) -> SPDConv:
        """The exact SPD rewrite of a stride-2 convolution (groups 1, dilation 1, odd kernel, zero padding).

        ``padding`` (``(left, right, top, bottom)`` or ``"same"`` for TensorFlow "SAME") overrides
        ``conv.padding``. The padding is applied before ``space_to_depth``, so the rewrite of the
        weights does not depend on it. Tap ``(a, b)`` of the strided
        kernel reads phase ``(a % 2, b % 2)`` at offset ``(a // 2, b // 2)``, so the new kernel is
        ``ceil(k / 2)`` wide with the original weights spread over the four phase groups.
        """
        if conv.stride != (2, 2) or conv.groups != 1 or conv.dilation != (1, 1) or conv.padding_mode != "zeros":
            raise ValueError("from_strided_conv needs a stride-2, groups-1, dilation-1, zero-padded Conv2d")
        kernel_h, kernel_w = conv.kernel_size
        if kernel_h % 2 == 0 or kernel_w % 2 == 0:
            raise ValueError(f"from_strided_conv needs an odd kernel, got {conv.kernel_size}")
        if isinstance(conv.padding, str):
            raise ValueError("give the padding of a string-padded conv explicitly: 'same' or a 4-tuple")
        if padding is None:
            padding = (conv.padding[1], conv.padding[1], conv.padding[0], conv.padding[0])
        spd = cls(conv.in_channels, conv.out_channels, ((kernel_h + 1) // 2, (kernel_w + 1) // 2), padding,
                  bias=conv.bias is not None).to(device=conv.weight.device, dtype=conv.weight.dtype)
        weight = torch.zeros_like(spd.conv.weight).unflatten(1, (4, conv.in_channels))  # (O, phase, C, kh', kw')
        for phase, (row, col) in enumerate(PHASES):
            taps = conv.weight[:, :, row::2, col::2]  # taps (2u + row, 2v + col)
            weight[:, phase, :, :taps.shape[2], :taps.shape[3]] = taps
        with torch.no_grad():
            spd.conv.weight.copy_(weight.flatten(1, 2))
            if conv.bias is not None and spd.conv.bias is not None:
                spd.conv.bias.copy_(conv.bias)
        return spd

    def extra_repr(self) -> str:
        return f"padding={self.padding}"
