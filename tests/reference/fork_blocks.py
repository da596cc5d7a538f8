"""Block variants as YOLO forks and other copies write them (SPEC section 7), kept as test models.

* ``YoloDCNv2``: the DCNv2 of YOLOv5/v8 forks and CenterNet copies: one ``conv_offset_mask`` conv,
  ``o1, o2, mask = chunk(out, 3)``, offsets ``cat(o1, o2)``, ``sigmoid`` mask, ``deformable_groups``;
  ints for stride / padding as some forks keep them.
* ``OffsetConv2dDCN``: a DCNv1 whose offset conv is called ``conv_offset2d``, no group attribute.
* ``ForkCoordAtt``: ``CoordAtt(inp, oup, reduction)`` with pools made in ``forward``, ``nn.Hardswish`` and a
  hard-sigmoid gate module (``h_sigmoid``), not ``.sigmoid()``.
* ``ContextBlock2d``: GCNet's older name, both fusions.
* ``PixelUnshuffleSPDConv`` / ``SlicingSPDConv``: SPDConv on ``nn.PixelUnshuffle`` and SPDConv slicing inline.
"""
import torch
from torch import nn
from torchvision.ops import deform_conv2d

from tests.reference.official_blocks import SeedCB2d, h_sigmoid


class YoloDCNv2(nn.Module):
    def __init__(self, c1, c2, k=3, s=1, p=1, deformable_groups=1):
        super().__init__()
        self.kernel_size = (k, k)
        self.stride = s
        self.padding = p
        self.dilation = 1
        self.deformable_groups = deformable_groups
        self.weight = nn.Parameter(torch.empty(c2, c1, k, k))
        self.bias = nn.Parameter(torch.zeros(c2))
        self.conv_offset_mask = nn.Conv2d(c1, deformable_groups * 3 * k * k, k, s, p, bias=True)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU()
        nn.init.kaiming_uniform_(self.weight)
        nn.init.zeros_(self.conv_offset_mask.weight)
        nn.init.zeros_(self.conv_offset_mask.bias)

    def forward(self, x):
        offset_mask = self.conv_offset_mask(x)
        o1, o2, mask = torch.chunk(offset_mask, 3, dim=1)
        offset = torch.cat((o1, o2), dim=1)
        mask = torch.sigmoid(mask)
        x = deform_conv2d(x, offset, self.weight, self.bias, stride=self.stride, padding=self.padding, mask=mask)
        return self.act(self.bn(x))


class OffsetConv2dDCN(nn.Module):
    def __init__(self, c1, c2, k=3):
        super().__init__()
        self.kernel_size, self.stride, self.padding = k, 1, k // 2
        self.conv_offset2d = nn.Conv2d(c1, 2 * k * k, k, padding=k // 2)
        self.weight = nn.Parameter(torch.randn(c2, c1, k, k) * 0.1)

    def forward(self, x):
        return deform_conv2d(x, self.conv_offset2d(x), self.weight, padding=self.padding)


class ForkCoordAtt(nn.Module):
    def __init__(self, inp, oup, reduction=32):
        super().__init__()
        mip = max(8, inp // reduction)
        self.conv1 = nn.Conv2d(inp, mip, kernel_size=1, stride=1, padding=0)
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = nn.Hardswish()
        self.conv_h = nn.Conv2d(mip, oup, kernel_size=1, stride=1, padding=0)
        self.conv_w = nn.Conv2d(mip, oup, kernel_size=1, stride=1, padding=0)
        self.gate = h_sigmoid()

    def forward(self, x):
        identity = x
        n, c, h, w = x.size()
        pool_h = nn.AdaptiveAvgPool2d((h, 1))
        pool_w = nn.AdaptiveAvgPool2d((1, w))
        x_h = pool_h(x)
        x_w = pool_w(x).permute(0, 1, 3, 2)
        y = torch.cat([x_h, x_w], dim=2)
        y = self.act(self.bn1(self.conv1(y)))
        x_h, x_w = torch.split(y, [h, w], dim=2)
        x_w = x_w.permute(0, 1, 3, 2)
        a_h = self.gate(self.conv_h(x_h))
        a_w = self.gate(self.conv_w(x_w))
        return identity * a_w * a_h


class ContextBlock2d(SeedCB2d):
    """GCNet's ``ContextBlock2d(inplanes, planes, pool, fusions)`` (same structure as ``CB2d``)."""

    def __init__(self, inplanes, planes=None, pool="att", fusions=("channel_add", "channel_mul")):
        super().__init__(inplanes, pool, list(fusions))


class PixelUnshuffleSPDConv(nn.Module):
    def __init__(self, c1, c2):
        super().__init__()
        self.unshuffle = nn.PixelUnshuffle(2)
        self.conv = nn.Conv2d(4 * c1, c2, 3, padding=1)

    def forward(self, x):
        return self.conv(self.unshuffle(x))


class SPDConv(nn.Module):
    """The fork's SPDConv that slices in its own forward (the class name is what forks use)."""

    def __init__(self, c1, c2):
        super().__init__()
        self.conv = nn.Conv2d(4 * c1, c2, 3, padding=1)

    def forward(self, x):
        x = torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1)
        return self.conv(x)
