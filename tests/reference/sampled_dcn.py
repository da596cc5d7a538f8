"""Deformable convolutions that sample by hand, written for the tests from the papers' equations (DCNv1:
Dai et al. 2017, eq. 2; DCNv2: Zhu et al. 2019, eq. 3; DCNv3: Wang et al., InternImage, 2023, eq. 4), in the
three ways re-implementations do it. None calls ``torchvision.ops.deform_conv2d``; each keeps the layout of its
offsets in ``offsets_by_hand`` / ``mask_by_hand`` (torchvision's layout, for the tests to compare with).

* ``GatherDCNv2``: positions ``p0 + pn + offset`` in the zero-padded input, ``floor`` and a gather of the four
  corners (zero outside), the ``k*k`` samples laid out as a ``(kh*H', kw*W')`` map and a conv of stride ``k``
  over it; offsets as ``[dy of every tap | dx of every tap]``, a sigmoid modulation from a second conv.
* ``GridSampleDCN``: DCNv1, ``grid_sample`` with ``align_corners=True`` on the unpadded input, offsets
  ``(tap, [dx, dy])``, the samples ``(N, C, taps * H', W')`` and an einsum with the weight.
* ``ChannelsLastDCNv3``: DCNv3's core, input ``(N, H, W, C)``: offsets and mask from linear layers over the
  channels, taps column-major, ``(x, y)`` per tap, a softmax over each group's taps, ``grid_sample`` on the
  padded input with positions normalised by its size (``align_corners=False``).
"""
import torch
import torch.nn.functional as F
from torch import nn


class GatherDCNv2(nn.Module):
    def __init__(self, inc, outc, kernel_size=3, padding=1, stride=1):
        super().__init__()
        self.k, self.padding, self.stride = kernel_size, padding, stride
        self.p_conv = nn.Conv2d(inc, 2 * kernel_size * kernel_size, 3, padding=1, stride=stride)
        self.m_conv = nn.Conv2d(inc, kernel_size * kernel_size, 3, padding=1, stride=stride)
        self.conv = nn.Conv2d(inc, outc, kernel_size, stride=kernel_size, bias=False)

    def forward(self, x):
        offset = self.p_conv(x)
        m = torch.sigmoid(self.m_conv(x))
        k, taps = self.k, self.k * self.k
        b, c = x.shape[:2]
        h, w = offset.shape[-2:]
        x = F.pad(x, [self.padding] * 4)
        hp, wp = x.shape[-2:]
        i, j = torch.meshgrid(torch.arange(k), torch.arange(k), indexing="ij")
        rows = (torch.arange(h) * self.stride)[:, None, None] + i.flatten()  # (h, 1, taps) in padded pixels
        cols = (torch.arange(w) * self.stride)[None, :, None] + j.flatten()  # (1, w, taps)
        p = torch.cat([rows.expand(h, w, taps), cols.expand(h, w, taps)], -1).to(x) + offset.permute(0, 2, 3, 1)
        corner = p.floor()
        frac = p - corner
        sampled = x.new_zeros(b, c, h, w, taps)
        for dy in (0, 1):
            for dx in (0, 1):
                y, xx = corner[..., :taps] + dy, corner[..., taps:] + dx
                weight = (frac[..., :taps] if dy else 1 - frac[..., :taps]) * \
                    (frac[..., taps:] if dx else 1 - frac[..., taps:])
                inside = (y >= 0) & (y < hp) & (xx >= 0) & (xx < wp)
                index = (y.clamp(0, hp - 1) * wp + xx.clamp(0, wp - 1)).long()  # (b, h, w, taps)
                values = x.flatten(2).gather(2, index.flatten(1)[:, None].expand(b, c, -1)).view(b, c, h, w, taps)
                sampled = sampled + (weight * inside)[:, None] * values
        sampled = sampled * m.permute(0, 2, 3, 1)[:, None]
        larger = sampled.view(b, c, h, w, k, k).permute(0, 1, 2, 4, 3, 5).reshape(b, c, h * k, w * k)
        return self.conv(larger)

    def offsets_by_hand(self, x):
        raw = self.p_conv(x)
        taps = self.k * self.k
        return torch.stack([raw[:, :taps], raw[:, taps:]], 2)[:, None]  # (N, 1, taps, 2, H', W')

    def mask_by_hand(self, x):
        return torch.sigmoid(self.m_conv(x))[:, None]

    def torchvision_weight(self):
        return self.conv.weight


class GridSampleDCN(nn.Module):
    def __init__(self, inc, outc, kernel_size=3, stride=2, padding=2, dilation=2):
        super().__init__()
        self.k, self.stride, self.padding, self.dilation = kernel_size, stride, padding, dilation
        self.offset_net = nn.Conv2d(inc, 2 * kernel_size * kernel_size, 3, stride=stride, padding=1)
        self.weight = nn.Parameter(torch.randn(outc, inc, kernel_size * kernel_size) * 0.1)

    def forward(self, x):
        n, c, height, width = x.shape
        raw = self.offset_net(x)
        h, w = raw.shape[-2:]
        taps = self.k * self.k
        shift = raw.view(n, taps, 2, h, w)  # (dx, dy) per tap
        t = torch.arange(taps)
        ty = (t // self.k * self.dilation).to(x)[:, None, None]
        tx = (t % self.k * self.dilation).to(x)[:, None, None]
        py = ty + (torch.arange(h) * self.stride - self.padding).to(x)[:, None] + shift[:, :, 1]
        px = tx + (torch.arange(w) * self.stride - self.padding).to(x) + shift[:, :, 0]
        grid = torch.stack([px / (width - 1) * 2 - 1, py / (height - 1) * 2 - 1], -1)  # (n, taps, h, w, 2)
        sampled = F.grid_sample(x, grid.reshape(n, taps * h, w, 2), align_corners=True, padding_mode="zeros")
        return torch.einsum("nckhw,ock->nohw", sampled.view(n, c, taps, h, w), self.weight)

    def offsets_by_hand(self, x):
        raw = self.offset_net(x)
        n, _, h, w = raw.shape
        return raw.view(n, -1, 2, h, w).flip(2)[:, None]  # (dy, dx)

    def mask_by_hand(self, x):
        return None

    def torchvision_weight(self):
        return self.weight.view(*self.weight.shape[:2], self.k, self.k)


class ChannelsLastDCNv3(nn.Module):
    def __init__(self, channels, kernel_size=3, group=2, padding=1, offset_scale=1.0):
        super().__init__()
        self.channels, self.k, self.group, self.padding, self.offset_scale = \
            channels, kernel_size, group, padding, offset_scale
        self.offset = nn.Linear(channels, group * kernel_size * kernel_size * 2)
        self.mask = nn.Linear(channels, group * kernel_size * kernel_size)

    def forward(self, x):  # (N, H, W, C)
        n, height, width, channels = x.shape
        k, g, taps = self.k, self.group, self.k * self.k
        offset = self.offset(x)  # (n, h, w, g * taps * 2), taps column-major, (x, y)
        mask = F.softmax(self.mask(x).view(n, height, width, g, taps), -1)
        padded = F.pad(x, [0, 0, self.padding, self.padding, self.padding, self.padding])
        hp, wp = padded.shape[1:3]
        a, b = torch.meshgrid(torch.arange(k), torch.arange(k), indexing="ij")  # a: column tap, b: row tap
        tap_x, tap_y = a.flatten().to(x), b.flatten().to(x)  # column-major: tap = a * k + b
        centre_y = torch.arange(height).to(x)[:, None, None] + (k - 1) // 2 + 0.5
        centre_x = torch.arange(width).to(x)[None, :, None] + (k - 1) // 2 + 0.5
        reference = torch.stack([(centre_x + tap_x - (k - 1) // 2).expand(height, width, taps) / wp,
                                 (centre_y + tap_y - (k - 1) // 2).expand(height, width, taps) / hp], -1)
        scale = torch.tensor([wp, hp]).to(x)
        locations = reference[None, :, :, None] + \
            offset.view(n, height, width, g, taps, 2) * self.offset_scale / scale
        grids = (2 * locations - 1).view(n, height * width, g, taps, 2).transpose(1, 2).flatten(0, 1)
        source = padded.view(n, hp * wp, g * (channels // g)).transpose(1, 2).reshape(n * g, channels // g, hp, wp)
        sampled = F.grid_sample(source, grids, mode="bilinear", padding_mode="zeros", align_corners=False)
        weights = mask.view(n, height * width, g, taps).transpose(1, 2).reshape(n * g, 1, height * width, taps)
        out = (sampled * weights).sum(-1).view(n, channels, height * width)
        return out.transpose(1, 2).reshape(n, height, width, channels)

    def _column_major_to_rows(self, tensor):  # (..., taps) with tap = a * k + b -> tap = b * k + a
        k = self.k
        return tensor.unflatten(-1, (k, k)).transpose(-1, -2).flatten(-2)

    def offsets_by_hand(self, x):
        n, height, width, _ = x.shape
        raw = self.offset(x).view(n, height, width, self.group, self.k * self.k, 2) * self.offset_scale
        raw = self._column_major_to_rows(raw.movedim(-1, 3)).movedim(3, -1)  # taps in row-major order
        return raw.flip(-1).permute(0, 3, 4, 5, 1, 2)  # (n, g, taps, (dy, dx), h, w)

    def mask_by_hand(self, x):
        n, height, width, _ = x.shape
        mask = F.softmax(self.mask(x).view(n, height, width, self.group, self.k * self.k), -1)
        return self._column_major_to_rows(mask).permute(0, 3, 4, 1, 2)

    def torchvision_weight(self):
        return torch.ones(self.channels, 1, self.k, self.k)
