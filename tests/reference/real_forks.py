"""Blocks as real public forks write them, whose names ``capture``'s structure readers do not know; each written
here in the tests' own words, keeping the fork's class and attribute names, call style and layout (so the maps
must come from recognition by computation).

* ``ParamGeneratorDCN``: YOLOAir ``models/Models/resnet.py`` ``DeformableConv2d``: one 3x3 ``param_generator``
  conv, ``chunk(3)`` into dy-block, dx-block, mask; ``cat`` of the first two; sigmoid mask; functional
  ``torchvision.ops.deform_conv2d`` with keywords; no ``kernel_size`` attribute.
* ``ModulatorDCN``: developer0hye ``dcn.py`` ``DeformableConv2d``: separate ``offset_conv`` and
  ``modulator_conv``, mask ``2 * sigmoid``, the weight of a ``regular_conv`` that is never called.
* ``CA_Block``: bubbliiiing ``nets/attention.py``: ``conv_1x1``, ``bn``, ``relu``, ``F_h``, ``F_w``,
  ``sigmoid_h``, ``sigmoid_w``; row and column means laid along dim 3; ``expand_as``; gate on rows first.
* ``GC`` / ``BottleneckCSPGC``: YOLOAir ``models/Models/yolor.py``: only ``channel_add_conv``, softmax module
  over dim 2, ``matmul``; ``GC`` ends in a 3x3 conv; ``BottleneckCSPGC`` pools its own CSP output.
* ``JointAtt``: RDD-RGNet ``ultralytics/nn/tricks/attention.py``: one set of CA convs run on four channel
  groups (``torch.split``), outputs concatenated and channel-shuffled.
* ``TorchOpsDCNv2``: the DCNv2 of many YOLO forks that calls ``torch.ops.torchvision.deform_conv2d`` directly
  (weight before offset, 14 positional arguments), with BN and SiLU after.
* ``EMA``: "Efficient Multi-scale Attention": groups folded into the batch, CA-like gates on each group.
* ``GlobalContext``: timm's GC (``conv_attn``, ``mlp_scale``, ``F.softmax(dim=-1)``, ``@``).
* ``Focus``: YOLOv5's stem, the same four slices, then a conv.
* ``EinopsSPD``: space-to-depth written as reshape / permute (as einops' ``rearrange`` lowers it),
  channel-major in row-major phase order.
* ``CBAM``, ``SEBlock``: channel and spatial gates: no kind attnlens reads.
"""
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.ops import deform_conv2d


class ParamGeneratorDCN(nn.Module):
    def __init__(self, in_dim, out_dim, kernel_size, stride=1, padding=1, dilation=1, *, offset_groups=1):
        super().__init__()
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim, kernel_size, kernel_size) * 0.1)
        self.bias = None
        self.param_generator = nn.Conv2d(in_dim, 3 * offset_groups * kernel_size * kernel_size, 3, stride, 1)

    def forward(self, x):
        dy_block, dx_block, mask = self.param_generator(x).chunk(3, dim=1)
        offset = torch.cat([dy_block, dx_block], dim=1)
        return deform_conv2d(x, offset=offset, weight=self.weight, bias=self.bias, stride=self.stride,
                             padding=self.padding, dilation=self.dilation, mask=mask.sigmoid())


class ModulatorDCN(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=1, dilation=1, bias=False):
        super().__init__()
        k = (kernel_size, kernel_size)
        self.stride, self.padding, self.dilation = (stride, stride), padding, dilation
        self.offset_conv = nn.Conv2d(in_channels, 2 * k[0] * k[1], k, stride, padding, dilation, bias=True)
        self.modulator_conv = nn.Conv2d(in_channels, k[0] * k[1], k, stride, padding, dilation, bias=True)
        self.regular_conv = nn.Conv2d(in_channels, out_channels, k, stride, padding, dilation, bias=bias)

    def forward(self, x):
        offset = self.offset_conv(x)
        modulator = 2.0 * torch.sigmoid(self.modulator_conv(x))
        return torchvision.ops.deform_conv2d(input=x, offset=offset, weight=self.regular_conv.weight,
                                             bias=self.regular_conv.bias, padding=self.padding, mask=modulator,
                                             stride=self.stride, dilation=self.dilation)


class CA_Block(nn.Module):  # noqa: N801 - the fork's name
    def __init__(self, channel, reduction=16):
        super().__init__()
        self.conv_1x1 = nn.Conv2d(channel, channel // reduction, 1, bias=False)
        self.relu = nn.ReLU()
        self.bn = nn.BatchNorm2d(channel // reduction)
        self.F_h = nn.Conv2d(channel // reduction, channel, 1, bias=False)
        self.F_w = nn.Conv2d(channel // reduction, channel, 1, bias=False)
        self.sigmoid_h = nn.Sigmoid()
        self.sigmoid_w = nn.Sigmoid()

    def forward(self, x):
        _, _, h, w = x.size()
        x_h = torch.mean(x, dim=3, keepdim=True).permute(0, 1, 3, 2)  # (N, C, 1, H)
        x_w = torch.mean(x, dim=2, keepdim=True)  # (N, C, 1, W)
        z = self.relu(self.bn(self.conv_1x1(torch.cat((x_h, x_w), 3))))
        split_h, split_w = z.split([h, w], 3)
        s_h = self.sigmoid_h(self.F_h(split_h.permute(0, 1, 3, 2)))
        s_w = self.sigmoid_w(self.F_w(split_w))
        return x * s_h.expand_as(x) * s_w.expand_as(x)


class Conv(nn.Module):
    """YOLO's Conv: conv, BN, SiLU."""

    def __init__(self, c1, c2, k=1, s=1):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


def _add_transform(c):
    return nn.Sequential(nn.Conv2d(c, c, 1), nn.LayerNorm([c, 1, 1]), nn.ReLU(inplace=True), nn.Conv2d(c, c, 1))


def _yolor_spatial_pool(block, x):
    batch, channel, height, width = x.size()
    input_x = x.view(batch, channel, height * width).unsqueeze(1)
    context_mask = block.softmax(block.conv_mask(x).view(batch, 1, height * width)).unsqueeze(-1)
    return torch.matmul(input_x, context_mask).view(batch, channel, 1, 1)


class GC(nn.Module):
    def __init__(self, c1, c2, k=3, s=1):
        super().__init__()
        self.channel_add_conv = _add_transform(c1)
        self.conv_mask = nn.Conv2d(c1, 1, kernel_size=1)
        self.softmax = nn.Softmax(dim=2)
        self.cv = Conv(c1, c2, k, s)

    def forward(self, x):
        return self.cv(x + self.channel_add_conv(_yolor_spatial_pool(self, x)))


class Bottleneck(nn.Module):
    def __init__(self, c1, c2):
        super().__init__()
        self.cv1, self.cv2 = Conv(c1, c2, 1), Conv(c2, c2, 3)

    def forward(self, x):
        return x + self.cv2(self.cv1(x))


class BottleneckCSPGC(nn.Module):
    def __init__(self, c1, c2, n=1, e=0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = nn.Conv2d(c1, c_, 1, 1, bias=False)
        self.cv3 = nn.Conv2d(c_, c_, 1, 1, bias=False)
        self.cv4 = Conv(2 * c_, c2, 1, 1)
        self.bn = nn.BatchNorm2d(2 * c_)
        self.act = nn.SiLU()
        self.m = nn.Sequential(*(Bottleneck(c_, c_) for _ in range(n)))
        self.channel_add_conv = _add_transform(c2)
        self.conv_mask = nn.Conv2d(c2, 1, kernel_size=1)
        self.softmax = nn.Softmax(dim=2)

    def forward(self, x):
        y1 = self.cv3(self.m(self.cv1(x)))
        y2 = self.cv2(x)
        y = self.cv4(self.act(self.bn(torch.cat((y1, y2), dim=1))))
        return y + self.channel_add_conv(_yolor_spatial_pool(self, y))


class h_swish(nn.Module):  # noqa: N801
    def forward(self, x):
        return x * F.relu6(x + 3) / 6


class JointAtt(nn.Module):
    def __init__(self, inp, oup, grp=4, reduction=32):
        super().__init__()
        self.group = grp
        mip = max(8, inp // reduction)
        self.pool_h = nn.AdaptiveAvgPool2d((None, 1))
        self.pool_w = nn.AdaptiveAvgPool2d((1, None))
        self.conv1 = nn.Conv2d(inp // grp, mip, 1)
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = h_swish()
        self.conv_h = nn.Conv2d(mip, oup // grp, 1)
        self.conv_w = nn.Conv2d(mip, oup // grp, 1)

    def _coordinate_gate(self, identity):
        _, _, h, w = identity.size()
        x_h = self.pool_h(identity)
        x_w = self.pool_w(identity).permute(0, 1, 3, 2)
        y = self.act(self.bn1(self.conv1(torch.cat([x_h, x_w], dim=2))))
        x_h, x_w = torch.split(y, [h, w], dim=2)
        a_h = self.conv_h(x_h).sigmoid()
        a_w = self.conv_w(x_w.permute(0, 1, 3, 2)).sigmoid()
        return identity * a_w * a_h

    def forward(self, x):
        n, c, h, w = x.size()
        groups = torch.split(x, [c // 4, c // 4, c // 4, c - 3 * (c // 4)], dim=1)
        out = torch.cat([self._coordinate_gate(group) for group in groups], dim=1)
        per_group = c // self.group
        return out.reshape(n, per_group, self.group, h, w).permute(0, 2, 1, 3, 4).reshape(n, c, h, w)


class TorchOpsDCNv2(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=1, deformable_groups=1):
        super().__init__()
        self.kernel_size, self.stride, self.padding = (kernel_size,) * 2, (stride,) * 2, (padding,) * 2
        self.dilation, self.groups, self.deformable_groups = (1, 1), 1, deformable_groups
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size) * 0.1)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.conv_offset_mask = nn.Conv2d(in_channels, deformable_groups * 3 * kernel_size ** 2, kernel_size,
                                          stride, padding, bias=True)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.SiLU()

    def forward(self, x):
        o1, o2, mask = torch.chunk(self.conv_offset_mask(x), 3, dim=1)
        offset = torch.cat((o1, o2), dim=1)
        x = torch.ops.torchvision.deform_conv2d(x, self.weight, offset, torch.sigmoid(mask), self.bias,
                                                self.stride[0], self.stride[1], self.padding[0], self.padding[1],
                                                self.dilation[0], self.dilation[1], self.groups,
                                                self.deformable_groups, True)
        return self.act(self.bn(x))


class EMA(nn.Module):
    def __init__(self, channels, factor=4):
        super().__init__()
        self.groups = factor
        self.softmax = nn.Softmax(-1)
        self.agp = nn.AdaptiveAvgPool2d((1, 1))
        self.pool_h = nn.AdaptiveAvgPool2d((None, 1))
        self.pool_w = nn.AdaptiveAvgPool2d((1, None))
        self.gn = nn.GroupNorm(channels // factor, channels // factor)
        self.conv1x1 = nn.Conv2d(channels // factor, channels // factor, 1)
        self.conv3x3 = nn.Conv2d(channels // factor, channels // factor, 3, padding=1)

    def forward(self, x):
        b, c, h, w = x.size()
        group_x = x.reshape(b * self.groups, -1, h, w)
        x_h = self.pool_h(group_x)
        x_w = self.pool_w(group_x).permute(0, 1, 3, 2)
        hw = self.conv1x1(torch.cat([x_h, x_w], dim=2))
        x_h, x_w = torch.split(hw, [h, w], dim=2)
        x1 = self.gn(group_x * x_h.sigmoid() * x_w.permute(0, 1, 3, 2).sigmoid())
        x2 = self.conv3x3(group_x)
        x11 = self.softmax(self.agp(x1).reshape(b * self.groups, -1, 1).permute(0, 2, 1))
        x12 = x2.reshape(b * self.groups, c // self.groups, -1)
        x21 = self.softmax(self.agp(x2).reshape(b * self.groups, -1, 1).permute(0, 2, 1))
        x22 = x1.reshape(b * self.groups, c // self.groups, -1)
        weights = (torch.matmul(x11, x12) + torch.matmul(x21, x22)).reshape(b * self.groups, 1, h, w)
        return (group_x * weights.sigmoid()).reshape(b, c, h, w)


class GlobalContext(nn.Module):
    def __init__(self, channels, rd_ratio=1 / 8):
        super().__init__()
        rd = max(1, int(channels * rd_ratio))
        self.conv_attn = nn.Conv2d(channels, 1, kernel_size=1, bias=True)
        self.mlp_scale = nn.Sequential(nn.Conv2d(channels, rd, 1), nn.ReLU(), nn.Conv2d(rd, channels, 1))
        self.gate = nn.Sigmoid()

    def forward(self, x):
        b, c, h, w = x.shape
        attn = self.conv_attn(x).reshape(b, 1, h * w)
        attn = F.softmax(attn, dim=-1).unsqueeze(3)
        context = (x.reshape(b, c, h * w).unsqueeze(1) @ attn).view(b, c, 1, 1)
        return x * self.gate(self.mlp_scale(context))


class Focus(nn.Module):
    def __init__(self, c1, c2, k=1):
        super().__init__()
        self.conv = Conv(c1 * 4, c2, k)

    def forward(self, x):
        return self.conv(torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1))


class EinopsSPD(nn.Module):
    """``rearrange(x, "b c (h p1) (w p2) -> b (c p1 p2) h w", p1=2, p2=2)`` then a conv."""

    def __init__(self, c1, c2):
        super().__init__()
        self.conv = nn.Conv2d(4 * c1, c2, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        x = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, c * 4, h // 2, w // 2)
        return self.conv(x)


class CBAM(nn.Module):
    def __init__(self, channel, ratio=8, kernel_size=7):
        super().__init__()
        self.fc1 = nn.Conv2d(channel, channel // ratio, 1, bias=False)
        self.fc2 = nn.Conv2d(channel // ratio, channel, 1, bias=False)
        self.conv1 = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x):
        avg = self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1))))
        peak = self.fc2(F.relu(self.fc1(F.adaptive_max_pool2d(x, 1))))
        x = x * torch.sigmoid(avg + peak)
        spatial = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
        return x * torch.sigmoid(self.conv1(spatial))


class SEBlock(nn.Module):
    def __init__(self, channel, ratio=4):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(channel, channel // ratio, bias=False), nn.ReLU(),
                                nn.Linear(channel // ratio, channel, bias=False), nn.Sigmoid())

    def forward(self, x):
        b, c, _, _ = x.size()
        return x * self.fc(x.mean((2, 3))).view(b, c, 1, 1)
