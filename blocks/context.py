"""Global context block (GCNet): attention pooling of one global context, fused into every position.

Paper: Cao et al., "GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond",
ICCVW 2019, https://arxiv.org/abs/1904.11492. Official code consulted: xvjiarui/GCNet
(``ContextBlock2d``, the seed's ``CB2d``) and mmcv ``ContextBlock``, whose ``state_dict`` keys
(``conv_mask``, ``channel_add_conv.{0,1,3}``, ``channel_mul_conv.{0,1,3}``) we keep.

Kept from the official code: ``conv_mask`` is kaiming-normal (fan_in) with zero bias, and the last
conv of each fusion branch is zero, so at init ``channel_add`` adds nothing and ``channel_mul``
scales by ``sigmoid(0) = 0.5`` (the block is the identity with ``fusions=["channel_add"]``).
Differences: the bottleneck ratio is a keyword (``ratio=1/4``, mmcv's ``ratio``); invalid arguments
raise ``ValueError`` instead of failing an ``assert``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["CB2d", "GlobalContextBlock", "context_mask"]

POOLS = ("att", "avg")
FUSIONS = ("channel_add", "channel_mul")


def context_mask(mask_logits: Tensor) -> Tensor:
    """Softmax of ``conv_mask(x)`` over all positions: ``(N, 1, H, W) -> (N, H, W)``, each map sums to 1."""
    n, _, height, width = mask_logits.shape
    return mask_logits.reshape(n, height * width).softmax(dim=1).reshape(n, height, width)


def _transform(channels: int, planes: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, planes, kernel_size=1),
        nn.LayerNorm([planes, 1, 1]),
        nn.ReLU(inplace=True),
        nn.Conv2d(planes, channels, kernel_size=1),
    )


class GlobalContextBlock(nn.Module):
    """GC block: ``context = sum_p softmax(conv_mask(x))_p x_p``; ``out = x * sigmoid(mul(context)) + add(context)``.

    Args:
        inplanes: channels ``C`` of the input (and output).
        pool: ``"att"`` (softmax attention pooling, the GC block) or ``"avg"`` (global average).
        fusions: any of ``"channel_add"``, ``"channel_mul"``.
        ratio: bottleneck width ``planes = int(inplanes * ratio)`` of the fusion transforms.

    Shapes: ``(N, C, H, W) -> (N, C, H, W)``. The context mask (where the block pools its global
    context from) is ``context_mask(self.conv_mask(x))``: ``(N, H, W)``, summing to 1.

    Example::

        >>> block = CB2d(64)
        >>> block(torch.randn(2, 64, 7, 7)).shape
        torch.Size([2, 64, 7, 7])
    """

    def __init__(self, inplanes: int, pool: str = "att", fusions: Sequence[str] = ("channel_add", "channel_mul"),
                 ratio: float = 1 / 4):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        if not fusions or any(f not in FUSIONS for f in fusions):
            raise ValueError(f"fusions must be a non-empty subset of {FUSIONS}, got {fusions!r}")
        planes = int(inplanes * ratio)
        if planes < 1:
            raise ValueError(f"inplanes * ratio must be at least 1, got {inplanes} * {ratio}")
        self.inplanes, self.planes, self.pool, self.fusions = inplanes, planes, pool, tuple(fusions)
        if pool == "att":
            self.conv_mask = nn.Conv2d(inplanes, 1, kernel_size=1)
        self.channel_add_conv = _transform(inplanes, planes) if "channel_add" in fusions else None
        self.channel_mul_conv = _transform(inplanes, planes) if "channel_mul" in fusions else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official init: ``conv_mask`` kaiming fan_in, last conv of each fusion branch zero."""
        if self.pool == "att":
            nn.init.kaiming_normal_(self.conv_mask.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(self.conv_mask.bias)
        for branch in (self.channel_add_conv, self.channel_mul_conv):
            if branch is not None:
                nn.init.zeros_(branch[-1].weight)
                nn.init.zeros_(branch[-1].bias)

    def spatial_pool(self, x: Tensor) -> Tensor:
        """The global context ``(N, C, 1, 1)``."""
        n, c, height, width = x.shape
        if self.pool == "avg":
            return x.mean(dim=(2, 3), keepdim=True)
        mask = context_mask(self.conv_mask(x)).reshape(n, height * width, 1)  # (N, H*W, 1)
        return torch.bmm(x.reshape(n, c, height * width), mask).reshape(n, c, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        context = self.spatial_pool(x)  # (N, C, 1, 1)
        out = x
        if self.channel_mul_conv is not None:
            out = out * torch.sigmoid(self.channel_mul_conv(context))
        if self.channel_add_conv is not None:
            out = out + self.channel_add_conv(context)
        return out

    def extra_repr(self) -> str:
        extra = [str(self.inplanes)]
        if self.pool != "att":
            extra.append(f"pool={self.pool!r}")
        if self.fusions != FUSIONS:
            extra.append(f"fusions={list(self.fusions)}")
        return ", ".join(extra)


CB2d = GlobalContextBlock  # the seed's name
