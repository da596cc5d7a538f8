"""ACmix: convolution and self-attention sharing one set of 1x1 projections.

Paper: Pan et al., "On the Integration of Self-Attention and Convolution", CVPR 2022,
https://arxiv.org/abs/2111.14556. Official code consulted: LeapLabTHU/ACmix (``ResNet/test_bottleneck.py``).

We keep the official parameters (and so its ``state_dict`` keys: ``rate1, rate2, conv1, conv2,
conv3, conv_p, fc, dep_conv.weight``, no ``dep_conv.bias``), its initialisation and, wherever the
official forward works, its function. Where we differ:

* **No unfold.** The official code materialises ``kernel_att**2`` copies of K, V and the positional
  encoding with ``nn.Unfold``. We group queries in small blocks that attend densely to the keys their
  windows cover (one batched matrix product), with the keys outside each query's window masked out of
  the softmax, and work through the blocks in cache-sized parts that gather their own keys and values,
  so the peak extra memory is a few copies of one feature map, not ``kernel_att**2``. The backward
  (our own) gathers each part again and adds the keys' and values' gradients back by position.
  The attention in the official layout is only laid out when the ``softmax`` submodule is hooked.
* **Fewer, larger operations.** q, k and v come from one matrix product (the three 1x1 convs' weights
  stacked, the queries' scale folded in), written channels last in the order the convolution path
  groups them; that path's ``fc`` (a 1x1 conv) and ``dep_conv`` (a grouped k x k conv) are applied as
  their composition, one grouped conv whose input is a view of the product. Same function (rounding
  aside), same parameters and keys.
* **Positional term on the keys.** ``q . pe_q`` is a per-query constant (ignored by the softmax), and so
  is ``conv_p``'s bias, so the logits are ``q . (k - w [x_k, y_k])``: each key carries its own position
  term, and the reflection at the edges carries it along, as ``pe_k`` in the official code.
* **Any map size.** Keys outside the map are read by reflection, like the official
  ``ReflectionPad2d``; for maps smaller than the padding (where ``ReflectionPad2d`` raises) the
  reflection is repeated (period ``2 * (n - 1)``; a size-1 axis repeats its only row).
* **Odd sizes with stride > 1** give ``ceil(n / stride)`` outputs in both paths (the official view to
  ``n // stride`` fails there).
* **dilation** dilates the attention window (the official code only enlarges the padding, then fails).
* **kernel_conv** may be any odd size (the official ``padding=1`` only fits 3).
* **Any device and dtype**: coordinates are built on the input's device (the official calls ``.cuda()``).
* Invalid sizes (``out_planes % head``, even kernels, non-positive values) raise ``ValueError`` here,
  not a shape error inside ``forward``.
* **First derivatives only**: the window attention's own backward is not differentiable again, and a
  second derivative (``create_graph=True``, e.g. a gradient penalty) raises a ``RuntimeError`` saying so.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn.modules.module import _global_forward_hooks, _global_forward_pre_hooks

__all__ = [
    "ACmix", "WindowGeometry", "attention_received", "reflect_indices", "uniform_attention", "window_attention",
]

# the ACmix modules whose window attention is uniform in this thread (or task): ``uniform_attention``
_uniform: ContextVar[frozenset[int]] = ContextVar("attnlens_uniform_attention", default=frozenset())


@contextmanager
def uniform_attention(module: nn.Module) -> Iterator[None]:
    """Inside: ``module`` (an ``ACmix``) weighs every tap of each query's window the same (``1 / k**2``): its
    attention path becomes the mean of the values over the window (reflection padding as the official code)."""
    token = _uniform.set(_uniform.get() | {id(module)})
    try:
        yield
    finally:
        _uniform.reset(token)


def reflect_indices(size: int, start: int, stop: int, device: torch.device | None = None) -> Tensor:
    """Source index of positions ``start <= i < stop`` of an axis of ``size``, reflected at the edges.

    Reflection without repeating the edge, as ``ReflectionPad``: ``-1 -> 1``, ``size -> size - 2``.
    Beyond one reflection it repeats with period ``2 * (size - 1)``; a size-1 axis maps to 0.
    """
    index = torch.arange(start, stop, device=device)
    if size == 1:
        return torch.zeros_like(index)
    period = 2 * (size - 1)
    index = index.remainder(period)
    return torch.where(index >= size, period - index, index)


QUERY_TILE = (4, 4)  # queries per block (rows, columns); keys come from the block grown by the window
# block products (query x key) per part, bounding the peak memory: on CPU small enough that a part stays in
# cache; elsewhere (CUDA) larger, since there each part's kernel launches cost more than its cache misses
CHUNK_ELEMENTS = {"cpu": 2 ** 19, "other": 2 ** 24}


class WindowGeometry:
    """Where the ``kernel x kernel`` window of each query reads on a reflection-padded map.

    Query ``(i, j)`` sits at ``(stride * i, stride * j)``; its tap ``(a, b)`` reads the padded map at
    ``(stride * i + dilation * a, stride * j + dilation * b)``, padding ``dilation * (kernel - 1) // 2``.

    For speed, queries are grouped in blocks of ``tile`` queries; every block attends densely to the
    keys its windows cover (``key_tile``) in one batched matrix product, where ``window_mask`` hides the
    keys outside each query's window and ``windows`` reads each query's ``kernel**2`` taps as a strided
    view (HaloNet-style blocking, no unfold).
    """

    def __init__(self, height: int, width: int, kernel: int, stride: int, dilation: int, device: torch.device):
        self.kernel, self.stride, self.dilation = kernel, stride, dilation
        self.part_elements = CHUNK_ELEMENTS["cpu" if torch.device(device).type == "cpu" else "other"]
        self.pad = dilation * (kernel - 1) // 2
        self.positions = height * width
        self.out_height = (height - 1) // stride + 1
        self.out_width = (width - 1) // stride + 1
        self.tile = (min(QUERY_TILE[0], self.out_height), min(QUERY_TILE[1], self.out_width))
        self.tiles = (-(-self.out_height // self.tile[0]), -(-self.out_width // self.tile[1]))
        span = dilation * (kernel - 1) + 1
        self.key_tile = tuple(stride * (t - 1) + span for t in self.tile)
        # Flat source index of every key of every block, (blocks, key_tile rows * cols). Keys past the
        # padded map are only read by padding queries, whose results are dropped.
        source = []
        for size, tiles, tile, key_tile in zip((height, width), self.tiles, self.tile, self.key_tile):
            extent = stride * (tiles * tile - 1) + span
            source.append(reflect_indices(size, -self.pad, extent - self.pad, device).unfold(0, key_tile, stride * tile))
        rows, cols = source  # (r, key rows), (c, key cols)
        self.key_index = (rows[:, None, :, None] * width + cols[None, :, None, :]).flatten()

    @property
    def blocks_per_map(self) -> int:
        return self.tiles[0] * self.tiles[1]

    def chunks(self, maps: int) -> list[tuple[slice, slice]]:
        """Split ``maps`` (batch x heads) so that each part's block products stay near ``CHUNK_ELEMENTS`` (a part
        holds at least one map): ``(map rows, block rows)`` slices."""
        per_map = self.blocks_per_map * self.tile[0] * self.tile[1] * self.key_tile[0] * self.key_tile[1]
        step = max(1, self.part_elements // per_map)
        return [(slice(start, min(maps, start + step)),
                 slice(start * self.blocks_per_map, min(maps, start + step) * self.blocks_per_map))
                for start in range(0, maps, step)]

    def key_rows(self, maps: slice) -> Tensor:
        """Row of each key of each block of ``maps`` (a range of maps, stacked as ``H * W`` rows each): ``key_index``
        offset per map (gathers and adds of whole rows are the fast ones)."""
        offsets = torch.arange(maps.start, maps.stop, device=self.key_index.device) * self.positions
        return (self.key_index[None, :] + offsets[:, None]).flatten()

    def window_mask(self, dtype: torch.dtype, device: torch.device) -> Tensor:
        """``(tile, key_tile)``, added to every block's products: 0 where a key is in the query's window, -inf
        elsewhere (the same for every block), so a softmax over a block's keys is the softmax over the window."""
        (tile_rows, tile_cols), (key_rows, key_cols) = self.tile, self.key_tile
        taps = torch.arange(self.kernel, device=device) * self.dilation
        rows = (torch.arange(tile_rows, device=device) * self.stride)[:, None] + taps  # (tile rows, k)
        cols = (torch.arange(tile_cols, device=device) * self.stride)[:, None] + taps
        window = (rows[:, None, :, None] * key_cols + cols[None, :, None, :]).reshape(tile_rows * tile_cols, -1)
        mask = torch.full((tile_rows * tile_cols, key_rows * key_cols), -math.inf, dtype=dtype, device=device)
        return mask.scatter_(1, window, 0.0)

    def query_blocks(self, positions: Tensor) -> Tensor:
        """``(..., H', W', C)`` at the query positions -> ``(B * blocks, tile rows * cols, C)`` (``B``: the leading
        dimensions' product), zero padded to whole tiles."""
        (rows, cols), (tile_rows, tile_cols) = self.tiles, self.tile
        extra_rows, extra_cols = rows * tile_rows - self.out_height, cols * tile_cols - self.out_width
        if extra_rows or extra_cols:
            positions = F.pad(positions, (0, 0, 0, extra_cols, 0, extra_rows))
        blocks = positions.unflatten(-3, (rows, tile_rows)).unflatten(-2, (cols, tile_cols))  # (..., r, tr, c, tc, C)
        return blocks.transpose(-4, -3).reshape(-1, tile_rows * tile_cols, positions.shape[-1])

    def windows(self, products: Tensor) -> Tensor:
        """Taps of every query in block products: ``(B * blocks, tile, key_tile) -> (B, r, c, tr, tc, k, k)``.

        A strided view of the contiguous ``products``; query ``(u, v)`` of a block, tap ``(a, b)`` is
        key ``(stride * u + dilation * a, stride * v + dilation * b)`` of the block's keys.
        """
        (rows, cols), (tile_rows, tile_cols) = self.tiles, self.tile
        key_rows, key_cols = self.key_tile
        block = tile_rows * tile_cols * key_rows * key_cols
        size = (len(products) // self.blocks_per_map, rows, cols, tile_rows, tile_cols, self.kernel, self.kernel)
        stride = (rows * cols * block, cols * block, block,
                  tile_cols * key_rows * key_cols + self.stride * key_cols, key_rows * key_cols + self.stride,
                  self.dilation * key_cols, self.dilation)
        return products.as_strided(size, stride, products.storage_offset())

    def to_map(self, windows: Tensor) -> Tensor:
        """``(B, r, c, tr, tc, k, k) -> (B, k * k, H', W')``, the official attention layout."""
        batch = len(windows)
        flat = windows.permute(0, 5, 6, 1, 3, 2, 4).reshape(batch, self.kernel ** 2, self.tiles[0] * self.tile[0],
                                                             self.tiles[1] * self.tile[1])
        return flat[..., :self.out_height, :self.out_width]

    def write_map(self, windows: Tensor, out: Tensor) -> None:
        """``out.copy_(to_map(windows))``, in one copy when the queries fill whole tiles."""
        (rows, cols), (tile_rows, tile_cols) = self.tiles, self.tile
        if (rows * tile_rows, cols * tile_cols) != (self.out_height, self.out_width) or not out.is_contiguous():
            out.copy_(self.to_map(windows))
            return
        grid = out.view(len(out), self.kernel, self.kernel, rows, tile_rows, cols, tile_cols)
        grid.permute(0, 3, 5, 4, 6, 1, 2).copy_(windows)

    def unblock(self, blocks: Tensor) -> Tensor:
        """``(B * blocks, tile, C) -> (B, C, H', W')``."""
        (rows, cols), (tile_rows, tile_cols) = self.tiles, self.tile
        channels = blocks.shape[-1]
        grid = blocks.reshape(-1, rows, cols, tile_rows, tile_cols, channels).permute(0, 5, 1, 3, 2, 4)
        return grid.reshape(-1, channels, rows * tile_rows, cols * tile_cols)[..., :self.out_height, :self.out_width]


def window_attention(q: Tensor, k: Tensor, v: Tensor, position_weight: Tensor, geometry: WindowGeometry,
                     logits_out: Tensor | None = None) -> Tensor:
    """ACmix window attention: each query's softmax over its window of ``q . (k + pe_q - pe_k)``, applied to v.

    q, k, v: ``(N, heads, H, W, head_dim)``, any strides, q already scaled by ``head_dim ** -0.5``;
    position_weight: ``(head_dim, 2)``, the weight of ``conv_p`` on the (x, y) coordinates. Returns
    ``(N * heads, head_dim, H', W')``. ``logits_out`` ``(N * heads, k*k, H', W')``, when given, receives the
    logits in the official layout.

    ``q . pe_q`` is the same for every key of a query's window and cancels in the softmax, and so does
    conv_p's bias, so the logits are ``q . (k - w [x_k, y_k])``: the keys carry their position term, and the
    reflection at the edges (a gather by source position) carries it along, as ``pe_k`` in the official code.
    Each block of queries meets every key its windows cover in one matrix product; the keys outside a
    query's window are masked to -inf, so the softmax over the block's keys is the softmax over the window
    and the weighted sum is one more product, with the same keys' values.
    """
    g = geometry
    n, heads, height, width, depth = k.shape
    x = torch.linspace(-1.0, 1.0, width, device=k.device, dtype=k.dtype).expand(height, width)
    y = torch.linspace(-1.0, 1.0, height, device=k.device, dtype=k.dtype)[:, None].expand(height, width)
    position = torch.stack([x, y], -1).view(-1, 2) @ position_weight.to(k.dtype).t()  # (H*W, d), pe less bias
    keys = k.clone(memory_format=torch.contiguous_format).view(n * heads, -1, depth)
    keys = keys.sub_(position).view(-1, depth)  # (N*heads*H*W, d)
    values = v.reshape(-1, depth)  # (N*heads*H*W, d)
    queries = g.query_blocks(q[:, :, ::g.stride, ::g.stride])  # (N*heads*blocks, tile, d)
    return g.unblock(_WindowAttention.apply(queries, keys, values, g, logits_out))


class _WindowAttention(torch.autograd.Function):
    """Window attention on blocks of queries: ``(B * blocks, tile, d)``. queries ``(B * blocks, tile, c)``;
    keys ``(B * H * W, c)`` and values ``(B * H * W, d)``, one row per position.

    Works through the maps in parts (``WindowGeometry.chunks``; on CPU small enough to stay in cache): each part
    gathers its blocks' keys and values, then multiplies, masks, softmaxes and sums, in buffers the parts
    share (a fresh allocation per part costs more in page faults than its arithmetic). With gradients the
    weights are kept; the backward gathers each part's keys and values again and adds their gradients
    back by position (autograd would keep every gathered block, and zero a whole gradient per part)."""

    @staticmethod
    def forward(ctx, queries: Tensor, keys: Tensor, values: Tensor, g: WindowGeometry,
                logits_out: Tensor | None) -> Tensor:
        keep = any(ctx.needs_input_grad[:3])
        mask = g.window_mask(queries.dtype, queries.device)
        parts = _gathered_parts(g, len(queries) // g.blocks_per_map, keys, values)
        weights = out = None
        for maps, blocks, _, part_keys, part_values in parts:
            if out is None:  # the first part is the largest
                weights = queries.new_empty(len(queries) if keep else len(part_keys), *mask.shape)
                out = values.new_empty(len(queries), queries.shape[1], values.shape[1])
            logits = weights[blocks] if keep else weights[:len(part_keys)]
            torch.baddbmm(mask, queries[blocks], part_keys.transpose(1, 2), out=logits)
            if logits_out is not None:
                g.write_map(g.windows(logits), logits_out[maps])
            torch.bmm(torch.softmax(logits, dim=-1, out=logits), part_values, out=out[blocks])
        if keep:
            ctx.save_for_backward(queries, keys, values, weights)
            ctx.geometry = g
        return out

    @staticmethod
    @once_differentiable  # its backward is not differentiable again: a second derivative says so plainly
    def backward(ctx, grad_out: Tensor):
        queries, keys, values, weights = ctx.saved_tensors
        g = ctx.geometry
        grad_queries, grad_keys, grad_values = torch.empty_like(queries), torch.zeros_like(keys), torch.zeros_like(values)
        buffers = None
        for _, blocks, index, part_keys, part_values in _gathered_parts(g, len(queries) // g.blocks_per_map, keys, values):
            count = len(part_keys)
            if buffers is None:  # the first part is the largest
                buffers = (torch.empty_like(part_keys), torch.empty_like(part_values),
                           weights.new_empty(count, *weights.shape[1:]))
            part_weights, part_grad = weights[blocks], grad_out[blocks]
            grad_part_values = torch.bmm(part_weights.transpose(1, 2), part_grad, out=buffers[1][:count])
            grad_values.index_add_(0, index, grad_part_values.flatten(0, 1))
            grad_logits = torch.bmm(part_grad, part_values.transpose(1, 2), out=buffers[2][:count])
            # softmax backward, in place: weights * (grad - sum(grad * weights))
            torch._softmax_backward_data(grad_logits, part_weights, -1, part_weights.dtype, grad_input=grad_logits)
            torch.bmm(grad_logits, part_keys, out=grad_queries[blocks])
            grad_part_keys = torch.bmm(grad_logits.transpose(1, 2), queries[blocks], out=buffers[0][:count])
            grad_keys.index_add_(0, index, grad_part_keys.flatten(0, 1))
        return grad_queries, grad_keys, grad_values, None, None


def _gathered_parts(g: WindowGeometry, maps: int, keys: Tensor, values: Tensor):
    """Yield ``(maps, blocks, key rows, keys, values)`` of each part of ``g.chunks(maps)``: the part's blocks' keys
    ``(blocks, key_tile, c)`` and values, gathered into two buffers the parts share."""
    key_buffer = value_buffer = None
    for part_maps, blocks in g.chunks(maps):
        index = g.key_rows(part_maps)
        if key_buffer is None:  # the first part is the largest
            key_buffer, value_buffer = keys.new_empty(len(index), keys.shape[1]), values.new_empty(len(index), values.shape[1])
        count = blocks.stop - blocks.start
        yield (part_maps, blocks, index,
               torch.index_select(keys, 0, index, out=key_buffer[:len(index)]).view(count, -1, keys.shape[1]),
               torch.index_select(values, 0, index, out=value_buffer[:len(index)]).view(count, -1, values.shape[1]))


def _has_forward_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks or _global_forward_hooks or _global_forward_pre_hooks)


class ACmix(nn.Module):
    """ACmix block: ``rate1 * window_attention + rate2 * shift_convolution``, sharing q, k, v.

    Args:
        in_planes: input channels.
        out_planes: output channels; must be divisible by ``head``.
        kernel_att: attention window size (odd).
        head: attention heads.
        kernel_conv: size of the convolution path's kernel (odd).
        stride: output stride of both paths.
        dilation: dilation of the attention window.

    Shapes: ``(N, in_planes, H, W) -> (N, out_planes, ceil(H / stride), ceil(W / stride))``.
    The submodule ``softmax`` outputs the window attention ``(N*head, kernel_att**2, H', W')``
    (called only when something hooks it, as ``blocks.capture`` does: the block's own computation
    never needs this layout),
    tap ``t = i * kernel_att + j`` for window row ``i`` and column ``j``, as in the official code.

    Example::

        >>> block = ACmix(64, 64)
        >>> block(torch.randn(2, 64, 14, 14)).shape
        torch.Size([2, 64, 14, 14])
    """

    def __init__(self, in_planes: int, out_planes: int, kernel_att: int = 7, head: int = 4,
                 kernel_conv: int = 3, stride: int = 1, dilation: int = 1):
        super().__init__()
        for name, value in dict(in_planes=in_planes, out_planes=out_planes, kernel_att=kernel_att, head=head,
                                kernel_conv=kernel_conv, stride=stride, dilation=dilation).items():
            if value < 1:
                raise ValueError(f"{name} must be positive, got {value}")
        if out_planes % head:
            raise ValueError(f"out_planes ({out_planes}) must be divisible by head ({head})")
        if kernel_att % 2 == 0 or kernel_conv % 2 == 0:
            raise ValueError(f"kernel_att and kernel_conv must be odd, got {kernel_att} and {kernel_conv}")
        self.in_planes, self.out_planes = in_planes, out_planes
        self.head, self.head_dim = head, out_planes // head
        self.kernel_att, self.kernel_conv = kernel_att, kernel_conv
        self.stride, self.dilation = stride, dilation

        self.rate1 = nn.Parameter(torch.empty(1))
        self.rate2 = nn.Parameter(torch.empty(1))
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=1)  # q
        self.conv2 = nn.Conv2d(in_planes, out_planes, kernel_size=1)  # k
        self.conv3 = nn.Conv2d(in_planes, out_planes, kernel_size=1)  # v
        self.conv_p = nn.Conv2d(2, self.head_dim, kernel_size=1)  # positional encoding of (x, y)
        self.softmax = nn.Softmax(dim=1)  # over the window taps; hooked by blocks.capture
        self.fc = nn.Conv2d(3 * head, kernel_conv * kernel_conv, kernel_size=1, bias=False)
        self.dep_conv = nn.Conv2d(kernel_conv * kernel_conv * self.head_dim, out_planes, kernel_size=kernel_conv,
                                  padding=kernel_conv // 2, stride=stride, groups=self.head_dim, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official init: rates 0.5, ``dep_conv`` = one-hot shift kernels (one per tap)."""
        nn.init.constant_(self.rate1, 0.5)
        nn.init.constant_(self.rate2, 0.5)
        taps = self.kernel_conv * self.kernel_conv
        shift = torch.zeros(taps, self.kernel_conv, self.kernel_conv)
        for t in range(taps):
            shift[t, t // self.kernel_conv, t % self.kernel_conv] = 1.0
        with torch.no_grad():
            self.dep_conv.weight.copy_(shift.repeat(self.out_planes, 1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        n, _, height, width = x.shape
        qkv = self._projections(x)
        # (N, head, H, W, d) views; unbound along the q/k/v axis first, so that autograd gathers their gradients
        # with one stack along it (unbinding a permuted view costs a slow transposing copy, ~6 ms at (4, 128, 28, 28))
        parts = qkv.view(n, height, width, self.head_dim, 3, self.head).unbind(-2)
        q, k, v = (part.permute(0, 4, 1, 2, 3) for part in parts)
        geometry = WindowGeometry(height, width, self.kernel_att, self.stride, self.dilation, x.device)

        if id(self) in _uniform.get():  # a knockout: every tap weighs the same
            out_att = self._window_mean(v, geometry)
        else:
            # the window attention in the official layout only when something hooks `softmax` (blocks.capture does)
            observed = _has_forward_hooks(self.softmax)
            logits = x.new_empty(n * self.head, self.kernel_att ** 2, geometry.out_height, geometry.out_width) \
                if observed else None
            out_att = window_attention(q, k, v, self.conv_p.weight[:, :, 0, 0], geometry, logits)
            if observed:
                self.softmax(logits)  # (N*head, k_att**2, H', W')
            out_att = out_att.reshape(n, self.out_planes, geometry.out_height, geometry.out_width)

        # Convolution path: fc mixes q, k, v per head into kernel_conv**2 features per head channel d, which
        # dep_conv (groups = head_dim) convolves. Both are linear, so they are applied as one grouped conv
        # whose weight is dep_conv's composed with fc's (and rate2, and undoing the queries' scale), on q, k, v
        # as the projections lay them out: grouped by d, channels last (where this grouped conv is fast on CPU).
        taps = self.kernel_conv ** 2
        dep = self.dep_conv.weight.view(self.out_planes, taps, taps)  # (out, fc output f, tap)
        fc = self.fc.weight.flatten(1)  # (f, m): m = q, k, v x head; q arrives scaled, so undo that
        fc = torch.cat([fc[:, :self.head] / self.head_dim ** -0.5, fc[:, self.head:]], 1) * self.rate2
        composed = torch.einsum("oft,fm->omt", dep, fc)
        out_conv = F.conv2d(qkv.view(n, height, width, -1).permute(0, 3, 1, 2),
                            composed.reshape(self.out_planes, 3 * self.head, self.kernel_conv, self.kernel_conv),
                            stride=self.stride, padding=self.kernel_conv // 2, groups=self.head_dim)
        return out_att * self.rate1 + out_conv  # out_conv carries rate2; NCHW first, so the sum is NCHW

    def _window_mean(self, v: Tensor, geometry: WindowGeometry) -> Tensor:
        """The attention path with uniform weights: each query's mean of the values over its window
        ``(N, out_planes, H', W')``, channels head-major as the official output."""
        n, head, height, width, dim = v.shape
        values = v.permute(0, 1, 4, 2, 3).reshape(n, head * dim, height, width)
        if geometry.pad:
            values = F.pad(values, [geometry.pad] * 4, mode="reflect")
        kernel = values.new_full((head * dim, 1, self.kernel_att, self.kernel_att), 1.0 / self.kernel_att ** 2)
        out = F.conv2d(values, kernel, stride=self.stride, dilation=self.dilation, groups=head * dim)
        return out[..., :geometry.out_height, :geometry.out_width]

    def _projections(self, x: Tensor) -> Tensor:
        """conv1, conv2, conv3 (q, k, v) in one matrix product: ``(N, H*W, head_dim * 3 * head)``, for every
        position channels ``(d, [q * head_dim**-0.5, k, v], head)``, the order in which the convolution path
        groups them."""
        convs = (self.conv1, self.conv2, self.conv3)
        scale = (self.head_dim ** -0.5, 1.0, 1.0)
        weight = torch.stack([conv.weight.flatten(1) * s for conv, s in zip(convs, scale)])  # (3, C, in)
        bias = torch.stack([conv.bias * s for conv, s in zip(convs, scale)])  # (3, C)
        weight = weight.view(3, self.head, self.head_dim, -1).permute(2, 0, 1, 3).reshape(3 * self.out_planes, -1)
        bias = bias.view(3, self.head, self.head_dim).permute(2, 0, 1).flatten()
        rows = x.flatten(2).transpose(1, 2)  # (N, H*W, in), a view
        return torch.baddbmm(bias, rows, weight.t().expand(len(x), -1, -1))

    def extra_repr(self) -> str:
        defaults = dict(kernel_att=7, head=4, kernel_conv=3, stride=1, dilation=1)
        extra = [f"{key}={getattr(self, key)}" for key, default in defaults.items() if getattr(self, key) != default]
        return ", ".join([f"{self.in_planes}, {self.out_planes}", *extra])


def attention_received(attention: Tensor, height: int, width: int, stride: int = 1, dilation: int = 1) -> Tensor:
    """Attention each key position receives: ``(N, heads, k*k, H', W') -> (N, H, W)``.

    For every key position, the sum of the window weights of all queries that read it (taps on the
    reflection padding count for the position they reflect), averaged over heads. Each query hands
    out a total of 1, so the map sums to ``H' * W'`` and averages ``1 / stride**2`` per position.
    """
    n, _, taps, out_height, out_width = attention.shape
    kernel = math.isqrt(taps)
    pad = dilation * (kernel - 1) // 2
    offsets = torch.arange(kernel, device=attention.device) * dilation - pad
    rows = reflect_indices(height, -pad, stride * (out_height - 1) + pad + 1, attention.device)
    cols = reflect_indices(width, -pad, stride * (out_width - 1) + pad + 1, attention.device)
    row = rows[(torch.arange(out_height, device=attention.device) * stride)[None, :] + offsets[:, None] + pad]
    col = cols[(torch.arange(out_width, device=attention.device) * stride)[None, :] + offsets[:, None] + pad]
    source = row[:, None, :, None] * width + col[None, :, None, :]  # (k, k, H', W') flat key index
    received = attention.new_zeros(n, height * width)
    received.scatter_add_(1, source.flatten().expand(n, -1), attention.mean(dim=1).flatten(1))
    return received.view(n, height, width)
