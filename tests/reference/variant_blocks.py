"""Global context and window attention written other ways than the official code, for the tests (from the
papers' equations: GCNet, Cao et al. 2019, eq. 3; ACmix, Pan et al. 2022, eq. 4-6). Each keeps its map by hand
(``mask_by_hand``: ``(N, H, W)``; ``attention_by_hand``: ``(N, heads, k*k, H', W')``, tap ``i*k + j``).

GC: the pooling as an ``einsum``; the logits from a linear layer over ``(N, HW, C)`` tokens and a softmax over
that axis; the softmax written out (``exp`` over its ``sum``). ACmix: zero padding by ``F.unfold`` instead of a
reflection pad; the logits by ``einsum``; the attention kept as ``(N, heads, H'W', k*k)``, softmax over the last axis.
A global (non-windowed) attention over pooled keys, ``(N, heads, HW, hw)``, is no window attention.
"""
import torch
import torch.nn.functional as F
from torch import nn


class _Fusion(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.transform = nn.Sequential(nn.Conv2d(channels, channels // 2, 1), nn.ReLU(),
                                       nn.Conv2d(channels // 2, channels, 1))

    def fuse(self, x, context):  # context (N, C)
        return x + self.transform(context[:, :, None, None])


class EinsumGC(_Fusion):
    def __init__(self, channels):
        super().__init__(channels)
        self.logits = nn.Conv2d(channels, 1, 1)

    def weights(self, x):
        return F.softmax(self.logits(x).flatten(1), dim=1).view(x.shape[0], *x.shape[2:])

    def forward(self, x):
        return self.fuse(x, torch.einsum("nchw,nhw->nc", x, self.weights(x)))

    def mask_by_hand(self, x):
        return self.weights(x)


class TokenGC(_Fusion):
    def __init__(self, channels):
        super().__init__(channels)
        self.score = nn.Linear(channels, 1)

    def forward(self, x):
        tokens = x.flatten(2).permute(0, 2, 1)  # (N, HW, C)
        weights = self.score(tokens).softmax(dim=1)  # (N, HW, 1)
        return self.fuse(x, (tokens * weights).sum(1))

    def mask_by_hand(self, x):
        tokens = x.flatten(2).permute(0, 2, 1)
        return torch.softmax(self.score(tokens)[..., 0], 1).view(x.shape[0], *x.shape[2:])


class ExpGC(_Fusion):
    def __init__(self, channels):
        super().__init__(channels)
        self.logits = nn.Conv2d(channels, 1, 1)

    def forward(self, x):
        logits = self.logits(x)
        e = torch.exp(logits - logits.amax(dim=(2, 3), keepdim=True))
        weights = e / e.sum(dim=(2, 3), keepdim=True)  # (N, 1, H, W)
        return self.fuse(x, (x * weights).sum((2, 3)))

    def mask_by_hand(self, x):
        return torch.softmax(self.logits(x).flatten(1), 1).view(x.shape[0], *x.shape[2:])


class _Window(nn.Module):
    def __init__(self, channels, heads=2, k=3):
        super().__init__()
        self.heads, self.k, self.dim = heads, k, channels // heads
        self.q, self.kv = nn.Conv2d(channels, channels, 1), nn.Conv2d(channels, 2 * channels, 1)

    def parts(self, x):
        n, c, h, w = x.shape
        q = self.q(x).view(n * self.heads, self.dim, h, w) * self.dim ** -0.5
        key, value = self.kv(x).chunk(2, 1)
        unfold = lambda t: F.unfold(t.reshape(n * self.heads, self.dim, h, w), self.k,  # noqa: E731
                                    padding=(self.k - 1) // 2).view(n * self.heads, self.dim, self.k ** 2, h, w)
        return q, unfold(key), unfold(value)

    def attention_by_hand(self, x):
        q, keys, _ = self.parts(x)
        logits = (q[:, :, None] * keys).sum(1)  # (N*heads, k*k, H, W)
        return torch.softmax(logits, 1).view(x.shape[0], self.heads, self.k ** 2, *x.shape[2:])


class ZeroPadWindow(_Window):
    def forward(self, x):
        q, keys, values = self.parts(x)
        att = torch.softmax((q[:, :, None] * keys).sum(1), dim=1)
        return x + (att[:, None] * values).sum(2).view_as(x)


class EinsumWindow(_Window):
    def forward(self, x):
        q, keys, values = self.parts(x)
        att = torch.einsum("bchw,bckhw->bkhw", q, keys).softmax(1)
        return x + torch.einsum("bkhw,bckhw->bchw", att, values).reshape_as(x)


class TokensLastWindow(_Window):
    def forward(self, x):
        n, c, h, w = x.shape
        q, keys, values = self.parts(x)
        q = q.view(n, self.heads, self.dim, h * w).transpose(2, 3)  # (N, heads, HW, d)
        keys = keys.view(n, self.heads, self.dim, self.k ** 2, h * w).permute(0, 1, 4, 3, 2)  # (N, heads, HW, kk, d)
        att = torch.einsum("nhld,nhlkd->nhlk", q, keys).softmax(dim=-1)  # (N, heads, HW, k*k)
        values = values.view(n, self.heads, self.dim, self.k ** 2, h * w).permute(0, 1, 4, 3, 2)
        out = torch.einsum("nhlk,nhlkd->nhld", att, values)
        return x + out.transpose(2, 3).reshape(n, c, h, w)


class PooledKeyAttention(nn.Module):
    """Global attention of every position over keys pooled 2x2 (PVT's spatial reduction): no window."""

    def __init__(self, channels):
        super().__init__()
        self.q, self.kv = nn.Linear(channels, channels), nn.Linear(channels, 2 * channels)

    def forward(self, x):
        n, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        pooled = F.avg_pool2d(x, 2).flatten(2).transpose(1, 2)
        key, value = self.kv(pooled).chunk(2, -1)
        att = (self.q(tokens)[:, None] @ key[:, None].transpose(-1, -2) * c ** -0.5).softmax(-1)  # (N, 1, HW, hw)
        return x + (att @ value[:, None])[:, 0].transpose(1, 2).reshape(n, c, h, w)
