"""GC, CA, SPD and DCN as their official code writes them (literal ports, kept as oracles).

* ``SeedCB2d``: the seed's ``CB2d`` (xvjiarui/GCNet ``ContextBlock2d``).
* ``MmcvContextBlock``: mmcv ``ContextBlock`` (``pooling_type``, ``fusion_types``, ``ratio``).
* ``OfficialCoordAtt``: houqb/CoordAttention ``CoordAtt``; ``SeedCA``: the seed's ``CA`` (builds its
  pooling modules inside ``forward``).
* ``space_to_depth``: the seed's ``space_to_depth`` (same class name, recognised by it).
* ``MmcvDeformConv2dPack`` / ``MmcvModulatedDeformConv2dPack``: mmcv's modules with the same keys and
  forward, on torchvision's kernel (mmcv's compiled ops are not installable offline).
* ``naive_deform_conv2d``: deformable convolution as loops over bilinear samples (tiny inputs only).
"""
import math

import torch
from torch import nn
from torchvision.ops import deform_conv2d


def kaiming_init(module, mode="fan_in"):
    nn.init.kaiming_normal_(module.weight, mode=mode, nonlinearity="relu")
    if module.bias is not None:
        nn.init.constant_(module.bias, 0)


def last_zero_init(m):
    nn.init.constant_(m[-1].weight, 0)
    nn.init.constant_(m[-1].bias, 0)


class SeedCB2d(nn.Module):
    def __init__(self, inplanes, pool='att', fusions=['channel_add', 'channel_mul']):
        super().__init__()
        assert pool in ['avg', 'att']
        assert all([f in ['channel_add', 'channel_mul'] for f in fusions])
        assert len(fusions) > 0, 'at least one fusion should be used'
        self.inplanes = inplanes
        self.planes = inplanes // 4
        self.pool = pool
        self.fusions = fusions
        if 'att' in pool:
            self.conv_mask = nn.Conv2d(inplanes, 1, kernel_size=1)
            self.softmax = nn.Softmax(dim=2)
        else:
            self.avg_pool = nn.AdaptiveAvgPool2d(1)
        if 'channel_add' in fusions:
            self.channel_add_conv = nn.Sequential(
                nn.Conv2d(self.inplanes, self.planes, kernel_size=1),
                nn.LayerNorm([self.planes, 1, 1]),
                nn.ReLU(inplace=True),
                nn.Conv2d(self.planes, self.inplanes, kernel_size=1))
        else:
            self.channel_add_conv = None
        if 'channel_mul' in fusions:
            self.channel_mul_conv = nn.Sequential(
                nn.Conv2d(self.inplanes, self.planes, kernel_size=1),
                nn.LayerNorm([self.planes, 1, 1]),
                nn.ReLU(inplace=True),
                nn.Conv2d(self.planes, self.inplanes, kernel_size=1))
        else:
            self.channel_mul_conv = None
        self.reset_parameters()

    def reset_parameters(self):
        if self.pool == 'att':
            kaiming_init(self.conv_mask, mode='fan_in')
        if self.channel_add_conv is not None:
            last_zero_init(self.channel_add_conv)
        if self.channel_mul_conv is not None:
            last_zero_init(self.channel_mul_conv)

    def spatial_pool(self, x):
        batch, channel, height, width = x.size()
        if self.pool == 'att':
            input_x = x.view(batch, channel, height * width).unsqueeze(1)
            context_mask = self.conv_mask(x).view(batch, 1, height * width)
            context_mask = self.softmax(context_mask).unsqueeze(3)
            context = torch.matmul(input_x, context_mask).view(batch, channel, 1, 1)
        else:
            context = self.avg_pool(x)
        return context

    def forward(self, x):
        context = self.spatial_pool(x)
        if self.channel_mul_conv is not None:
            out = x * torch.sigmoid(self.channel_mul_conv(context))
        else:
            out = x
        if self.channel_add_conv is not None:
            out = out + self.channel_add_conv(context)
        return out


class MmcvContextBlock(SeedCB2d):
    """mmcv ``ContextBlock``: same modules and keys, arguments spelled differently."""

    def __init__(self, in_channels, ratio, pooling_type='att', fusion_types=('channel_add',)):
        nn.Module.__init__(self)
        self.in_channels = in_channels
        self.ratio = ratio
        self.planes = int(in_channels * ratio)
        self.pooling_type = pooling_type
        self.fusion_types = fusion_types
        self.inplanes, self.pool = in_channels, pooling_type
        if pooling_type == 'att':
            self.conv_mask = nn.Conv2d(in_channels, 1, kernel_size=1)
            self.softmax = nn.Softmax(dim=2)
        else:
            self.avg_pool = nn.AdaptiveAvgPool2d(1)
        branch = lambda: nn.Sequential(  # noqa: E731
            nn.Conv2d(self.in_channels, self.planes, kernel_size=1),
            nn.LayerNorm([self.planes, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(self.planes, self.in_channels, kernel_size=1))
        self.channel_add_conv = branch() if 'channel_add' in fusion_types else None
        self.channel_mul_conv = branch() if 'channel_mul' in fusion_types else None
        self.reset_parameters()


class h_sigmoid(nn.Module):
    def __init__(self, inplace=True):
        super().__init__()
        self.relu = nn.ReLU6(inplace=inplace)

    def forward(self, x):
        return self.relu(x + 3) / 6


class h_swish(nn.Module):
    def __init__(self, inplace=True):
        super().__init__()
        self.sigmoid = h_sigmoid(inplace=inplace)

    def forward(self, x):
        return x * self.sigmoid(x)


class OfficialCoordAtt(nn.Module):
    def __init__(self, inp, oup, reduction=32):
        super().__init__()
        self.pool_h = nn.AdaptiveAvgPool2d((None, 1))
        self.pool_w = nn.AdaptiveAvgPool2d((1, None))
        mip = max(8, inp // reduction)
        self.conv1 = nn.Conv2d(inp, mip, kernel_size=1, stride=1, padding=0)
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = h_swish()
        self.conv_h = nn.Conv2d(mip, oup, kernel_size=1, stride=1, padding=0)
        self.conv_w = nn.Conv2d(mip, oup, kernel_size=1, stride=1, padding=0)

    def forward(self, x):
        identity = x
        n, c, h, w = x.size()
        x_h = self.pool_h(x)
        x_w = self.pool_w(x).permute(0, 1, 3, 2)
        y = torch.cat([x_h, x_w], dim=2)
        y = self.conv1(y)
        y = self.bn1(y)
        y = self.act(y)
        x_h, x_w = torch.split(y, [h, w], dim=2)
        x_w = x_w.permute(0, 1, 3, 2)
        a_h = self.conv_h(x_h).sigmoid()
        a_w = self.conv_w(x_w).sigmoid()
        return identity * a_w * a_h


class SeedCA(OfficialCoordAtt):
    """The seed's ``CA``: pooling modules created inside ``forward``."""

    def __init__(self, inp, oup, reduction=32):
        super().__init__(inp, oup, reduction)
        del self.pool_h, self.pool_w

    def forward(self, x):
        n, c, h, w = x.size()
        self.pool_h = nn.AdaptiveAvgPool2d((h, 1))
        self.pool_w = nn.AdaptiveAvgPool2d((1, w))
        return super().forward(x)


class space_to_depth(nn.Module):
    def __init__(self, dimension=1):
        super().__init__()
        self.d = dimension

    def forward(self, x):
        return torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1)


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


class MmcvDeformConv2dPack(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 deform_groups=1, bias=False):
        super().__init__()
        assert not bias
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding, self.dilation = _pair(padding), _pair(dilation)
        self.groups, self.deform_groups = groups, deform_groups
        self.weight = nn.Parameter(torch.Tensor(out_channels, in_channels // groups, *self.kernel_size))
        n = in_channels * math.prod(self.kernel_size)
        self.weight.data.uniform_(-1.0 / math.sqrt(n), 1.0 / math.sqrt(n))
        self.conv_offset = nn.Conv2d(in_channels, deform_groups * 2 * math.prod(self.kernel_size),
                                     self.kernel_size, self.stride, self.padding, self.dilation, bias=True)
        self.conv_offset.weight.data.zero_()
        self.conv_offset.bias.data.zero_()

    def forward(self, x):
        offset = self.conv_offset(x)
        return deform_conv2d(x, offset, self.weight, None, self.stride, self.padding, self.dilation)


class MmcvModulatedDeformConv2dPack(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 deform_groups=1, bias=True):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding, self.dilation = _pair(padding), _pair(dilation)
        self.groups, self.deform_groups = groups, deform_groups
        self.weight = nn.Parameter(torch.Tensor(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        n = in_channels * math.prod(self.kernel_size)
        self.weight.data.uniform_(-1.0 / math.sqrt(n), 1.0 / math.sqrt(n))
        self.conv_offset = nn.Conv2d(in_channels, deform_groups * 3 * math.prod(self.kernel_size),
                                     self.kernel_size, self.stride, self.padding, self.dilation, bias=True)
        self.conv_offset.weight.data.zero_()
        self.conv_offset.bias.data.zero_()

    def forward(self, x):
        out = self.conv_offset(x)
        o1, o2, mask = torch.chunk(out, 3, dim=1)
        offset = torch.cat((o1, o2), dim=1)
        mask = torch.sigmoid(mask)
        return deform_conv2d(x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask)


def _bilinear(image, y, x):
    """Bilinear sample of ``image`` (H, W) at real (y, x); zero outside, per corner."""
    height, width = image.shape
    if y <= -1 or y >= height or x <= -1 or x >= width:
        return image.new_zeros(())
    y0, x0 = math.floor(y), math.floor(x)
    total = image.new_zeros(())
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < height and 0 <= xx < width:
                total = total + wy * wx * image[yy, xx]
    return total


def naive_deform_conv2d(x, offset, weight, bias=None, stride=1, padding=0, dilation=1, mask=None):
    """Deformable convolution by its definition (DCNv1/v2 papers), torchvision's offset layout."""
    n, c, height, width = x.shape
    out_c, c_per_group, kh, kw = weight.shape
    groups = c // c_per_group
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    out_h, out_w = offset.shape[-2:]
    offset_groups = offset.shape[1] // (2 * kh * kw)
    x, offset, weight = x.detach(), offset.detach(), weight.detach()
    bias = None if bias is None else bias.detach()
    mask = None if mask is None else mask.detach()
    out = x.new_zeros(n, out_c, out_h, out_w)
    for b in range(n):
        for o in range(out_c):
            g = o // (out_c // groups)
            for i in range(out_h):
                for j in range(out_w):
                    total = x.new_zeros(())
                    for ci in range(c_per_group):
                        channel = g * c_per_group + ci
                        og = channel // (c // offset_groups)
                        for a in range(kh):
                            for bb in range(kw):
                                t = a * kw + bb
                                dy = offset[b, og * 2 * kh * kw + 2 * t, i, j]
                                dx = offset[b, og * 2 * kh * kw + 2 * t + 1, i, j]
                                y = i * sh - ph + a * dh + dy
                                xx = j * sw - pw + bb * dw + dx
                                value = _bilinear(x[b, channel], y.item(), xx.item())
                                if mask is not None:
                                    value = value * mask[b, og * kh * kw + t, i, j]
                                total = total + weight[o, ci, a, bb] * value
                    out[b, o, i, j] = total + (bias[o] if bias is not None else 0)
    return out
