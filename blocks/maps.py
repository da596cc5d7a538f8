"""What ``blocks.capture`` records for each block kind: the full maps and one summary heatmap.

Every record has ``type`` (the kind's short name) and ``heatmap``: a tensor ``(N, H, W)`` at the
block's feature resolution, the one map used for overlays and evaluation. Tensors are detached and
stay on the model's device; ``N`` is the batch.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from .acmix import attention_received

__all__ = ["BlockMaps", "ContextMaps", "CoordMaps", "DeformMaps", "SpaceToDepthMaps", "WindowAttentionMaps"]


class BlockMaps(ABC):
    """Base of the records; subclasses are frozen dataclasses."""

    type: ClassVar[str]

    @property
    @abstractmethod
    def heatmap(self) -> Tensor:
        """The summary map ``(N, H, W)``."""


@dataclass(frozen=True)
class ContextMaps(BlockMaps):
    """GC block. ``context_mask`` ``(N, H, W)``: the softmax weights with which the block pools its
    global context; each image's mask sums to 1 (uniform ``1/(H*W)`` for ``pool="avg"``).
    Heatmap: the context mask."""

    type: ClassVar[str] = "gc"
    context_mask: Tensor

    @property
    def heatmap(self) -> Tensor:
        return self.context_mask


@dataclass(frozen=True)
class CoordMaps(BlockMaps):
    """Coordinate attention. ``a_h`` ``(N, C, H)`` and ``a_w`` ``(N, C, W)``: sigmoid weights in (0, 1)
    with which each channel keeps each row and each column. Heatmap: ``mean_c a_h[c] (x) a_w[c]``,
    the mean factor by which the block scales each position, in (0, 1)."""

    type: ClassVar[str] = "ca"
    a_h: Tensor
    a_w: Tensor

    @property
    def heatmap(self) -> Tensor:
        return torch.einsum("nch,ncw->nhw", self.a_h, self.a_w) / self.a_h.shape[1]


@dataclass(frozen=True)
class WindowAttentionMaps(BlockMaps):
    """ACmix. ``attention`` ``(N, heads, k*k, H', W')``: for each query position, the softmax weights
    over its ``k x k`` window (tap ``t = i*k + j``, window row ``i``, column ``j``; the window of query
    ``(y, x)`` is centred on input position ``(stride*y, stride*x)``, taps ``dilation`` apart);
    ``rate1`` / ``rate2``: the weights of the attention and convolution paths in the output.
    ``input_size``: ``(H, W)`` of the block's input. Heatmap: attention each input position receives
    (``blocks.acmix.attention_received``), mean over heads: ``(N, H, W)``, mean ``1/stride**2``."""

    type: ClassVar[str] = "acmix"
    attention: Tensor
    rate1: float
    rate2: float
    input_size: tuple[int, int]
    stride: int = 1
    dilation: int = 1

    @property
    def kernel_size(self) -> int:
        return round(self.attention.shape[2] ** 0.5)

    @property
    def heatmap(self) -> Tensor:
        return attention_received(self.attention.float(), *self.input_size, stride=self.stride,
                                  dilation=self.dilation)


@dataclass(frozen=True)
class DeformMaps(BlockMaps):
    """Deformable convolution. ``offsets`` ``(N, G, kh*kw, 2, H', W')``: for offset group ``g`` and
    kernel tap ``t = i*kw + j``, the ``[dy, dx]`` displacement in input pixels of that tap's sampling
    point from its regular grid position ``(stride*y - padding + dilation*i, ...)``; ``mask``
    ``(N, G, kh*kw, H', W')``: DCNv2 modulation in (0, 1), ``None`` for DCNv1.
    Heatmap: mean offset length ``|(dy, dx)|`` over groups and taps, in input pixels."""

    type: ClassVar[str] = "dcn"
    offsets: Tensor
    mask: Tensor | None
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]

    @property
    def heatmap(self) -> Tensor:
        return self.offsets.norm(dim=3).mean(dim=(1, 2))


@dataclass(frozen=True)
class SpaceToDepthMaps(BlockMaps):
    """Space-to-depth. ``phase_energy`` ``(N, 4, H/2, W/2)``: mean square activation over channels of
    each 2x2 phase, in the official order (row, col) = (0,0), (1,0), (0,1), (1,1); ``phase_detail``
    ``(N, H/2, W/2)``: mean over channels of the variance across the four phases, the detail a plain
    stride-2 sampling would drop and SPD keeps (squared activation units). Heatmap: ``phase_detail``."""

    type: ClassVar[str] = "spd"
    phase_energy: Tensor
    phase_detail: Tensor

    @property
    def heatmap(self) -> Tensor:
        return self.phase_detail
