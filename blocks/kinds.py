"""Block kinds, each declared once: how ``capture`` recognises it, what it records, what its maps mean.

A kind is a record class (the maps of one block call, with the summary ``heatmap``, its meaning, unit
and title, a few JSON-sized numbers and the full arrays), the ``Pattern`` that recognises a block of
that kind by what it computes (``blocks.observe``: whatever the module and its parts are called), and
the ``Reader`` s that read the modules whose structure is known (ours, the official code's, the variants
YOLO forks copy) from their submodules' outputs: a fast path, used where recognition found that it reads
exactly what the module computes. ``capture``, the JSON report, the figure, the npz file and the
server's schema read this table.

Every record has ``type`` (the kind's short name) and ``heatmap``: a tensor ``(N, H, W)`` at the
block's feature resolution, computed once per record. Tensors are detached and stay on the model's
device; ``N`` is the batch.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn.modules.utils import _pair
from torchvision.ops import DeformConv2d

from .acmix import attention_received
from .context import context_mask
from .deform import split_offset_output
from .observe import Frame, Op, Pattern, effective_shape, shares_storage, storage_key

__all__ = ["KINDS", "BlockMaps", "Kind", "ContextMaps", "CoordMaps", "DeformMaps", "Pattern", "Reader",
           "SpaceToDepthMaps", "WindowAttentionMaps", "reader_for"]


@dataclass(frozen=True)
class Call:
    """One call of a block or of one of its parts: positional inputs, keyword inputs, output (not detached)."""

    args: tuple
    kwargs: dict
    output: Any


Parts = dict[str, list[Call]]  # part name -> its calls during the block's call, in order


@dataclass(frozen=True)
class Reader:
    """One module structure ``capture`` reads.

    ``matches(module)``: is this module such a block; ``parts(module)``: names of the submodules whose
    calls the maps need; ``build(module, call, parts)``: the record, from the block's own call and its
    parts' calls (tensors not yet detached; ``build`` runs under ``no_grad`` and detaches).
    """

    description: str
    matches: Callable[[nn.Module], bool]
    build: Callable[[nn.Module, Call, Parts], BlockMaps]
    parts: Callable[[nn.Module], tuple[str, ...]] = lambda module: ()


class BlockMaps(ABC):
    """Base of the records (frozen dataclasses). Class attributes: ``type``, ``title``, ``meaning`` and
    ``unit`` of the heatmap."""

    type: ClassVar[str]
    title: ClassVar[str]
    meaning: ClassVar[str]
    unit: ClassVar[str]

    @cached_property
    def heatmap(self) -> Tensor:
        """The summary map ``(N, H, W)``, computed once."""
        return self.compute_heatmap()

    @abstractmethod
    def compute_heatmap(self) -> Tensor:
        """The summary map ``(N, H, W)``."""

    def summary(self, i: int) -> dict[str, Any]:
        """Small maps and parameters of image ``i`` (numbers, lists or small tensors), always reported."""
        return {}

    @cached_property
    def summaries(self) -> list[dict[str, Any]]:
        """``summary(i)`` of every image of the batch, computed once."""
        return [self.summary(i) for i in range(len(self.heatmap))]

    @abstractmethod
    def arrays(self, i: int) -> dict[str, Tensor]:
        """The full maps of image ``i``, by name, without the batch axis."""


def _has(module: nn.Module, *names: str) -> bool:
    return all(hasattr(module, name) for name in names)


def _last_output(parts: Parts, part: str) -> Tensor:
    return parts[part][-1].output


# --- GC -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ContextMaps(BlockMaps):
    """GC block. ``context_mask`` ``(N, H, W)``: the softmax weights with which the block pools its
    global context; each image's mask sums to 1 (uniform ``1/(H*W)`` for ``pool="avg"``).
    Heatmap: the context mask."""

    type: ClassVar[str] = "gc"
    title: ClassVar[str] = "GC context mask"
    meaning: ClassVar[str] = ("context mask: where the block pools its global context from (softmax weights over "
                              "positions, summing to 1)")
    unit: ClassVar[str] = "share of context"
    context_mask: Tensor

    def compute_heatmap(self) -> Tensor:
        return self.context_mask

    def arrays(self, i: int) -> dict[str, Tensor]:
        return {"context_mask": self.context_mask[i]}


def _build_gc(module: nn.Module, call: Call, parts: Parts) -> ContextMaps:
    if "conv_mask" in parts:
        mask = context_mask(_last_output(parts, "conv_mask"))  # the block's own definition, from conv_mask's output
    else:  # average pooling: every position weighs the same
        n, _, height, width = call.args[0].shape
        mask = call.args[0].new_full((n, height, width), 1.0 / (height * width))
    return ContextMaps(context_mask=mask)


def _is_gc(module: nn.Module) -> bool:
    """GCNet ``CB2d`` / ``ContextBlock2d``, mmcv ``ContextBlock``: both fusion attributes (either may be None)
    and attention pooling (``conv_mask``) or average pooling."""
    return (_has(module, "channel_add_conv", "channel_mul_conv")
            and (isinstance(getattr(module, "conv_mask", None), nn.Conv2d) or hasattr(module, "avg_pool")
                 or getattr(module, "pool", getattr(module, "pooling_type", None)) == "avg"))


SOFTMAX = "aten::_softmax"
PRODUCTS = ("aten::bmm", "aten::mm", "aten::mul.Tensor", "aten::mul_.Tensor", "aten::baddbmm", "aten::matmul",
            "aten::addmm")
COPIES = ("aten::clone", "aten::_to_copy", "aten::_unsafe_view", "aten::contiguous", "aten::copy_")


def _softmax_call(op: Op, scratch: dict) -> tuple[Tensor, int, Tensor] | None:
    """``(weights, dim, logits)`` of a softmax: ``softmax`` itself, or written out as ``exp(l) / exp(l).sum(dims,
    keepdim=True)`` (several summed axes next to each other: ``weights`` with them flattened into ``dim``).
    ``scratch``: the pattern's notes, where the exponentials and their sums are kept."""
    if op.name == SOFTMAX:
        return op.out, op.args[1] % op.args[0].dim(), op.args[0]
    if op.name == "aten::exp" and op.out is not None:
        scratch.setdefault("exps", {})[storage_key(op.out)] = op.args[0]
    elif op.name == "aten::sum.dim_IntList" and storage_key(op.args[0]) in scratch.get("exps", {}):
        exp, dims = op.args[0], op.args[1]
        keepdim = len(op.args) > 2 and op.args[2]
        if keepdim and dims:
            scratch.setdefault("sums", {})[id(op.out)] = (op.out, exp, sorted(d % exp.dim() for d in dims),
                                                          scratch["exps"][storage_key(exp)])
    elif op.name == "aten::div.Tensor" and isinstance(op.args[1], Tensor):
        total = scratch.get("sums", {}).get(id(op.args[1]))
        if total is not None and total[0] is op.args[1] and shares_storage(op.args[0], total[1]) and \
                op.args[0].shape == total[1].shape:
            dims = total[2]
            if dims == list(range(dims[0], dims[-1] + 1)):
                return op.out.flatten(dims[0], dims[-1]), dims[0], total[3]
    return None


def _window_softmax(logits: Tensor, dim: int) -> bool:
    """A softmax over a square number of taps laid out ``(.., k*k, H', W')`` (ACmix's window attention)."""
    taps = logits.shape[dim]
    return logits.dim() >= 4 and dim == logits.dim() - 3 and taps >= 4 and math.isqrt(taps) ** 2 == taps


class ContextPattern(Pattern):
    """GC: a softmax over the H*W positions of the block's input, whose weights then pool a tensor (enter a
    matrix product or a product with one): the context mask. Any name for the mask conv, either fusion."""

    kind = "gc"
    description = "a softmax over the H*W positions of the block's input whose weights pool a tensor"

    def see(self, op: Op, frames: list[Frame], scratch: dict) -> None:
        softmax = _softmax_call(op, scratch)
        if softmax is not None:
            weights, dim, logits = softmax
            if _window_softmax(weights, dim):
                return  # ACmix's

            def accepts(frame: Frame) -> bool:
                x = frame.input
                if x is None or x is logits:
                    return False
                positions = x.shape[-2] * x.shape[-1]
                return positions > 1 and weights.shape[dim] == positions and \
                    weights.numel() % (x.shape[0] * positions) == 0 and \
                    weights.numel() // positions <= x.shape[0] * x.shape[1]

            frame = self.owner(frames, accepts)
            if frame is not None and frame.input is not None and weights.shape[dim] == frame.input[0, 0].numel():
                found = {"mask": weights, "dim": dim, "pooled": frame.forced == self.kind,
                         "keys": {storage_key(weights)}, "kept": [weights]}
                frame.state.setdefault(self.kind, []).append(found)
            return
        pending = [found for frame in frames for found in frame.state.get(self.kind, ()) if not found["pooled"]]
        if not pending:
            return
        keys = {storage_key(tensor) for tensor in op.tensors}
        for found in pending:
            if not found["keys"] & keys:
                continue
            if op.name in PRODUCTS:
                found["pooled"] = True
            elif op.name in COPIES and op.out is not None:  # a copy of the weights: follow it
                found["keys"].add(storage_key(op.out))
                found["kept"].append(op.out)

    def finish(self, frame: Frame) -> list[BlockMaps]:
        records = []
        for found in frame.state.get(self.kind, ()):
            if not found["pooled"]:
                frame.candidates.append("a softmax over its H*W positions whose weights pool nothing (not a "
                                        "context mask)")
                continue
            n, _, height, width = frame.input.shape
            weights = found["mask"].movedim(found["dim"], -1).reshape(n, -1, height, width)
            records.append(ContextMaps(context_mask=weights.mean(dim=1)))  # heads: the mean, still summing to 1
        return records


GC_READERS = (Reader("GCNet CB2d / ContextBlock2d, mmcv ContextBlock", _is_gc, _build_gc,
                     lambda module: ("conv_mask",) if isinstance(getattr(module, "conv_mask", None), nn.Module) else ()),)


# --- CA -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CoordMaps(BlockMaps):
    """Coordinate attention. ``a_h`` ``(N, C, H)`` and ``a_w`` ``(N, C, W)``: the gate weights (sigmoid in
    the official code, in (0, 1); a fork's own gate otherwise) with which each channel keeps each row and
    each column. Heatmap: ``mean_c a_h[c] (x) a_w[c]``, the mean factor by which the block scales each
    position."""

    type: ClassVar[str] = "ca"
    title: ClassVar[str] = "CA mean a_h x a_w"
    meaning: ClassVar[str] = "mean over channels of a_h x a_w: the factor by which the block keeps each position"
    unit: ClassVar[str] = "factor in (0, 1)"
    a_h: Tensor
    a_w: Tensor

    def compute_heatmap(self) -> Tensor:
        return torch.einsum("nch,ncw->nhw", self.a_h.float(), self.a_w.float()) / self.a_h.shape[1]

    def summary(self, i: int) -> dict[str, Any]:
        return {"a_h_mean": self.a_h[i].mean(0), "a_w_mean": self.a_w[i].mean(0)}

    def arrays(self, i: int) -> dict[str, Tensor]:
        return {"a_h": self.a_h[i], "a_w": self.a_w[i]}


def _gate_of(pre_gate: Tensor, parts: Parts) -> Tensor:
    """The gate applied to ``pre_gate`` (a ``conv_h`` / ``conv_w`` output): the output of the parameter-free
    submodule called on that very tensor (``nn.Sigmoid``, ``h_sigmoid``, ``nn.Hardsigmoid`` ...), else its
    sigmoid (the official ``conv_h(x).sigmoid()``)."""
    for calls in parts.values():
        for call in calls:
            if call.args and call.args[0] is pre_gate and call.output is not pre_gate:
                return call.output
    return pre_gate.sigmoid()


def _build_ca(module: nn.Module, call: Call, parts: Parts) -> CoordMaps:
    a_h = _gate_of(_last_output(parts, "conv_h"), parts)  # (N, C, H, 1)
    a_w = _gate_of(_last_output(parts, "conv_w"), parts)  # (N, C, 1, W)
    return CoordMaps(a_h=a_h[..., 0], a_w=a_w[:, :, 0, :])


def _ca_parts(module: nn.Module) -> tuple[str, ...]:
    """``conv_h``, ``conv_w`` and every parameter-free child, one of which may be the gate."""
    gates = tuple(name for name, child in module.named_children()
                  if name not in ("conv_h", "conv_w") and next(child.parameters(), None) is None)
    return ("conv_h", "conv_w", *gates)


class CoordPattern(Pattern):
    """CA: two gates multiply the block's input (or a view of it: channel groups, groups folded into the batch;
    or a projection of it, the same rows and columns, other channels, when the input itself is not gated),
    one broadcast along rows ``(N, C, H, 1)`` and one along columns ``(N, C, 1, W)``, in either order, through
    ``expand_as`` or broadcasting, any activation. Gates of channel groups are joined along the input's
    channels, each where its group lies in the input."""

    kind = "ca"
    description = ("gates that multiply the block's input (or a projection of it), one broadcast along rows "
                   "(N, C, H, 1) and one along columns (N, C, 1, W)")
    MULS = ("aten::mul.Tensor", "aten::mul_.Tensor")

    def see(self, op: Op, frames: list[Frame], scratch: dict) -> None:
        if op.name not in self.MULS or len(op.args) < 2 or not all(isinstance(a, Tensor) for a in op.args[:2]):
            return
        a, b = op.args[:2]
        if a.dim() != 4 or b.dim() != 4:
            return
        out = op.out
        roles = {"a": _gate_role(a), "b": _gate_role(b)}
        chains = scratch.setdefault("chains", {})  # id(product so far) -> chain
        products = scratch.setdefault("products", {})  # id(row gate * column gate) -> (row, column)
        if {roles["a"], roles["b"]} == {"rows", "columns"}:
            row, column = (a, b) if roles["a"] == "rows" else (b, a)
            products[id(out)] = (out, row, column)
            return
        for full, gate, role in ((a, b, roles["b"]), (b, a, roles["a"])):
            if _gate_role(full) != "full":
                continue
            if role == "full" and products.get(id(gate), (None,))[0] is gate:
                gates = products[id(gate)][1:]
            elif role in ("rows", "columns"):
                gates = (gate, None) if role == "rows" else (None, gate)
            else:
                if role in ("channels", "positions"):
                    self._note_other_gate(full, role, out, frames, scratch)
                continue
            chain = chains.get(id(full))
            if chain is None or chain["product"] is not full:
                frame = self.owner(frames, lambda frame: _part_of(full, frame.input)) or \
                    self.owner(frames, lambda frame: _projection_of(full, frame.input))
                if frame is None:
                    continue
                chain = {"root": full, "rows": None, "columns": None}
                frame.state.setdefault(self.kind, []).append(chain)
            for axis, value in zip(("rows", "columns"), gates):
                if value is not None:
                    chain[axis] = value if chain[axis] is None else chain[axis] * value
            chain["product"] = out
            chains[id(out)] = chain
            return

    def _note_other_gate(self, full: Tensor, role: str, out: Tensor, frames: list[Frame], scratch: dict) -> None:
        """A gate of another shape (SE's, CBAM's): said as a candidate of the module it gates."""
        others = scratch.setdefault("others", {})  # id(gated tensor) -> (it, the module's call)
        known = others.get(id(full))
        frame = next((frame for frame in reversed(frames) if _part_of(full, frame.input)), None) or \
            (known[1] if known and known[0] is full and any(f is known[1] for f in frames) else None)
        if frame is None:
            return
        others[id(out)] = (out, frame)
        frame.candidates.append(
            "a channel gate (N, C, 1, 1) multiplies its input (squeeze-excitation style), not a kind attnlens reads"
            if role == "channels" else
            "a spatial gate (N, 1, H, W) multiplies its input (CBAM / spatial attention style), not a kind attnlens "
            "reads")

    def finish(self, frame: Frame) -> list[BlockMaps]:
        x = frame.input
        records, covered = [], None
        groups: list[list[tuple[dict, Tensor]]] = []
        for chain in frame.state.get(self.kind, ()):
            if chain["rows"] is None or chain["columns"] is None:
                frame.candidates.append(f"a gate along {'rows' if chain['columns'] is None else 'columns'} only "
                                        f"multiplies its input (CA gates both)")
                continue
            planes = _planes_in(chain["root"], x)  # (n', c', 2): where each plane of the root lies in x
            if planes is None:  # gating a projection of x, or (named) a tensor inside it: that tensor's channels
                if frame.forced == self.kind or _projection_of(chain["root"], x):
                    records.append(_joined_gates([(chain, _planes_in(chain["root"], chain["root"]))], chain["root"]))
                continue
            seen = torch.zeros(x.shape[:2], dtype=torch.bool)
            seen[planes[..., 0].flatten(), planes[..., 1].flatten()] = True
            if covered is None or (covered & seen).any():
                groups.append([])
                covered = torch.zeros_like(seen)
            groups[-1].append((chain, planes))
            covered |= seen
        for group in groups:
            records.append(_joined_gates(group, x))
        return records


def _gate_role(tensor: Tensor) -> str:
    """What a factor of a product is to CA: ``full`` (varies along rows and columns), a gate along ``rows``
    ``(N, C, H, 1)`` or ``columns`` ``(N, C, 1, W)``, a ``channels`` gate ``(N, C, 1, 1)``, or a
    ``positions`` gate ``(N, 1, H, W)``."""
    _, channels, height, width = effective_shape(tensor)
    if height > 1 and width > 1:
        return "positions" if channels == 1 else "full"
    if height > 1:
        return "rows"
    if width > 1:
        return "columns"
    return "channels" if channels > 1 else "scalar"


def _part_of(tensor: Tensor, x: Tensor | None) -> bool:
    """Whether ``tensor`` is ``x`` or a view of it with the same rows and columns (a channel group, groups
    folded into the batch)."""
    if x is None or tensor.shape[-2:] != x.shape[-2:]:
        return False
    if tensor is x:
        return True
    return shares_storage(tensor, x) and tensor.stride()[-2:] == x.stride()[-2:]


def _projection_of(tensor: Tensor, x: Tensor | None) -> bool:
    """Whether ``tensor`` can be a projection of ``x`` (a 1x1 conv of it, any channels): the same images, rows and
    columns, not a view of it."""
    return x is not None and tensor.shape[0] == x.shape[0] and tensor.shape[-2:] == x.shape[-2:] and \
        not shares_storage(tensor, x)


def _planes_in(root: Tensor, x: Tensor) -> Tensor | None:
    """``(n', c', 2)``: the (image, channel) of ``x`` that each (n', c') plane of its view ``root`` is (None if
    ``root`` is no view of ``x``)."""
    if root is not x and not shares_storage(root, x):
        return None
    if root is x or root.shape == x.shape and root.stride() == x.stride() and \
            root.storage_offset() == x.storage_offset():
        n, c = x.shape[:2]
        return torch.stack(torch.meshgrid(torch.arange(n), torch.arange(c), indexing="ij"), -1)
    if x.stride(1) == 0 or x.stride(0) == 0:
        return None
    start = root.storage_offset() - x.storage_offset()
    offsets = start + torch.arange(root.shape[0])[:, None] * root.stride(0) + \
        torch.arange(root.shape[1])[None, :] * root.stride(1)
    image, rest = offsets.div(x.stride(0), rounding_mode="floor"), offsets.remainder(x.stride(0))
    channel, misfit = rest.div(x.stride(1), rounding_mode="floor"), rest.remainder(x.stride(1))
    if (misfit != 0).any() or (image < 0).any() or (image >= x.shape[0]).any() or (channel >= x.shape[1]).any():
        return None
    return torch.stack([image, channel], -1)


def _joined_gates(group: list[tuple[dict, Tensor]], x: Tensor) -> CoordMaps:
    """One record from the chains of one call: each chain's gates put at the channels of ``x`` it gates (the
    channels no chain gates are left out)."""
    n, c, height, width = x.shape
    a_h = x.new_zeros(n, c, height, dtype=torch.float32)
    a_w = x.new_zeros(n, c, width, dtype=torch.float32)
    covered = torch.zeros(n, c, dtype=torch.bool, device=x.device)
    for chain, planes in group:
        root_n, root_c = chain["root"].shape[:2]
        rows = chain["rows"].float().expand(root_n, root_c, height, -1)[..., 0]
        columns = chain["columns"].float().expand(root_n, root_c, -1, width)[:, :, 0]
        image, channel = planes[..., 0].flatten().to(x.device), planes[..., 1].flatten().to(x.device)
        a_h[image, channel] = rows.reshape(-1, height)
        a_w[image, channel] = columns.reshape(-1, width)
        covered[image, channel] = True
    keep = covered.all(dim=0)
    return CoordMaps(a_h=a_h[:, keep], a_w=a_w[:, keep])


CA_READERS = (Reader("CA / CoordAtt (official, pools made in forward, any activation or gate module)",
                     lambda module: _has(module, "conv1", "bn1", "conv_h", "conv_w"), _build_ca, _ca_parts),)


# --- ACmix ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WindowAttentionMaps(BlockMaps):
    """ACmix. ``attention`` ``(N, heads, k*k, H', W')``: for each query position, the softmax weights
    over its ``k x k`` window (tap ``t = i*k + j``, window row ``i``, column ``j``; the window of query
    ``(y, x)`` is centred on input position ``(stride*y, stride*x)``, taps ``dilation`` apart);
    ``rate1`` / ``rate2``: the weights of the attention and convolution paths in the output (None for a
    block recognised by computation that has no such attributes).
    ``input_size``: ``(H, W)`` of the block's input. Heatmap: attention each input position receives
    (``attention_received``), mean over heads: ``(N, H, W)``, mean ``1/stride**2``."""

    type: ClassVar[str] = "acmix"
    title: ClassVar[str] = "ACmix attention received"
    meaning: ClassVar[str] = ("attention received: window-attention weight each position gets from all queries that "
                              "look at it, mean over heads")
    unit: ClassVar[str] = "sum of weights"
    attention: Tensor
    rate1: float | None
    rate2: float | None
    input_size: tuple[int, int]
    stride: int = 1
    dilation: int = 1

    @property
    def kernel_size(self) -> int:
        return round(self.attention.shape[2] ** 0.5)

    def compute_heatmap(self) -> Tensor:
        return attention_received(self.attention.float(), *self.input_size, stride=self.stride,
                                  dilation=self.dilation)

    def summary(self, i: int) -> dict[str, Any]:
        return {"rate1": self.rate1, "rate2": self.rate2, "kernel_size": self.kernel_size, "stride": self.stride,
                "dilation": self.dilation, "heads": self.attention.shape[1], "input_size": list(self.input_size)}

    def arrays(self, i: int) -> dict[str, Tensor]:
        return {"attention": self.attention[i]}


def _build_acmix(module: nn.Module, call: Call, parts: Parts) -> WindowAttentionMaps:
    x = call.args[0]
    return WindowAttentionMaps(attention=_last_output(parts, "softmax").unflatten(0, (x.shape[0], module.head)),
                               rate1=float(module.rate1), rate2=float(module.rate2),
                               input_size=(x.shape[-2], x.shape[-1]), stride=int(module.stride),
                               dilation=int(getattr(module, "dilation", 1)))


class WindowAttentionPattern(Pattern):
    """ACmix: a softmax over the ``k*k`` window taps of logits laid out ``(N*heads, k*k, H', W')`` (or with
    heads as their own axis), ``H', W'`` the block's input rows and columns over an integer stride; or kept
    another way, taps last (``(.., H', W', k*k)``, ``(.., H'*W', k*k)``) or positions flattened
    (``(.., k*k, H'*W')``), checked once to be local: moving one input position changes the weights of the
    queries around it only (a global attention over pooled keys changes them all)."""

    kind = "acmix"
    description = "a softmax over the k*k window taps of (N*heads, k*k, H', W') logits computed from the block's input"

    def see(self, op: Op, frames: list[Frame], scratch: dict) -> None:
        softmax = _softmax_call(op, scratch)
        if softmax is None:
            return
        weights, dim, logits = softmax

        def accepts(frame: Frame) -> bool:
            x = frame.input
            if x is None or x is logits or shares_storage(x, logits) or shares_storage(x, weights):
                return False
            layout = _window_layout(weights.shape, dim, x.shape[-2:])
            return layout is not None and math.prod(weights.shape) // math.prod(layout[1:]) % x.shape[0] == 0

        frame = self.owner(frames, accepts)
        if frame is not None and frame.input is not None:
            layout = _window_layout(weights.shape, dim, frame.input.shape[-2:])
            if layout is not None:
                frame.state.setdefault(self.kind, []).append((weights, layout, (op.name, frame.counts[op.name])))

    def finish(self, frame: Frame) -> list[BlockMaps]:
        x, module = frame.input, frame.module
        records = []
        local = set(frame.detail or ())  # the softmaxes found local before (by their operation and count)
        for weights, (form, taps, out_height, out_width), occurrence in frame.state.get(self.kind, ()):
            if form != "taps-first" and occurrence not in local:
                if frame.replay is None or not _is_local(frame, occurrence, weights, form, (out_height, out_width)):
                    frame.candidates.append(f"a softmax over {taps} taps at each of its {out_height}x{out_width} "
                                            "positions, but not over a window: moving one position changes the "
                                            "weights of most queries (a global attention)")
                    continue
                local.add(occurrence)
            stride = _stride_between(x.shape[-2:], (out_height, out_width)) or 1
            records.append(WindowAttentionMaps(
                attention=_taps_first(weights, form, (out_height, out_width)).reshape(
                    x.shape[0], -1, taps, out_height, out_width),
                rate1=_number(getattr(module, "rate1", None)), rate2=_number(getattr(module, "rate2", None)),
                input_size=(x.shape[-2], x.shape[-1]), stride=stride,
                dilation=int(_number(getattr(module, "dilation", 1)) or 1)))
        if local:
            frame.detail = frozenset(local)
        return records


def _window_layout(shape: torch.Size, dim: int, size: tuple[int, int]) -> tuple[str, int, int, int] | None:
    """How softmax weights of ``shape`` over ``dim`` can be window attention for an input of ``size`` (H, W):
    ``(form, taps, H', W')``, form ``taps-first`` ``(.., k*k, H', W')``, ``taps-last`` ``(.., H', W', k*k)``,
    ``taps-last-flat`` ``(.., H'*W', k*k)`` or ``tokens-last`` ``(.., k*k, H'*W')``; fewer taps than positions."""
    taps, last = shape[dim], len(shape) - 1
    if taps < 4 or math.isqrt(taps) ** 2 != taps:
        return None
    found = None
    if dim == last - 2 and _stride_between(size, shape[-2:]) is not None:
        found = ("taps-first", *shape[-2:])
    elif dim == last and len(shape) >= 3 and _stride_between(size, shape[-3:-1]) is not None:
        found = ("taps-last", *shape[-3:-1])
    elif dim in (last, last - 1) and len(shape) >= 2:
        positions = shape[-2] if dim == last else shape[-1]
        out_size = _flat_size(size, positions)
        if out_size is not None:
            found = ("taps-last-flat" if dim == last else "tokens-last", *out_size)
    if found is None or taps >= found[1] * found[2]:
        return None
    return found[0], taps, found[1], found[2]


def _flat_size(size: tuple[int, int], positions: int) -> tuple[int, int] | None:
    """``(H', W')``: the input's size over an integer stride with ``H' * W' == positions``."""
    height, width = size
    for stride in range(1, 9):
        for out_size in ((math.ceil(height / stride), math.ceil(width / stride)), (height // stride, width // stride)):
            if out_size[0] * out_size[1] == positions:
                return out_size
    return None


def _taps_first(weights: Tensor, form: str, out_size: tuple[int, int]) -> Tensor:
    """The weights laid out ``(.., k*k, H', W')``."""
    if form == "taps-last":
        return weights.movedim(-1, -3)
    if form == "taps-last-flat":
        return weights.movedim(-1, -2).unflatten(-1, out_size)
    if form == "tokens-last":
        return weights.unflatten(-1, out_size)
    return weights


def _is_local(frame: Frame, occurrence: tuple[str, int], weights: Tensor, form: str,
              out_size: tuple[int, int]) -> bool:
    """Whether raising one input position (the centre) changes the weights of at most half the queries."""
    x = frame.input
    raised = x.clone()
    raised[..., x.shape[-2] // 2, x.shape[-1] // 2] += 1 + x.abs().max()
    name, count = occurrence
    answers = []
    for ops in (frame.replay(), frame.replay(input=raised)):
        calls = [op for op in ops if op.name == name]
        if len(calls) < count or calls[count - 1].out is None or calls[count - 1].out.numel() != weights.numel():
            return False
        answers.append(_taps_first(calls[count - 1].out.reshape(weights.shape), form, out_size))
    before, after = (answer.reshape(x.shape[0], -1, *answer.shape[-2:]) for answer in answers)
    changed = ((after - before).abs() > 1e-6).any(dim=1)[0]
    return bool(changed.any()) and float(changed.float().mean()) <= 0.5


def _stride_between(size: tuple[int, int], out_size: tuple[int, int]) -> int | None:
    """The integer stride ``s`` with ``ceil(size / s) == out_size`` on both axes (or floor, as the official
    ACmix does), None if there is none."""
    height, width = size
    for stride in range(1, 9):
        if (math.ceil(height / stride), math.ceil(width / stride)) == tuple(out_size) or \
                (height // stride, width // stride) == tuple(out_size):
            return stride
    return None


def _number(value: Any) -> float | None:
    """A plain number from an attribute (a one-element tensor or parameter, an int or float), else None."""
    if isinstance(value, Tensor) and value.numel() == 1:
        return float(value.detach())
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], int):
        return float(value[0])
    return None


ACMIX_READERS = (Reader("ACmix (official, YOLOAir)",
                        lambda module: _has(module, "conv1", "conv2", "conv3", "conv_p", "fc", "dep_conv", "softmax",
                                            "rate1"),
                        _build_acmix, lambda module: ("softmax",)),)


# --- DCN ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DeformMaps(BlockMaps):
    """Deformable convolution. ``offsets`` ``(N, G, kh*kw, 2, H', W')``: for offset group ``g`` and
    kernel tap ``t = i*kw + j``, the ``[dy, dx]`` displacement in input pixels of that tap's sampling
    point from its regular grid position ``(stride*y - padding + dilation*i, ...)``; ``mask``
    ``(N, G, kh*kw, H', W')``: DCNv2 modulation, the factor each tap's sample is weighted by (a sigmoid in
    (0, 1) in mmcv and torchvision's recipe; some forks use ``2 * sigmoid``), ``None`` for DCNv1.
    Heatmap: mean offset length ``|(dy, dx)|`` over groups and taps, in input pixels."""

    type: ClassVar[str] = "dcn"
    title: ClassVar[str] = "DCN mean offset length"
    meaning: ClassVar[str] = ("mean offset length: how far the deformable sampling points move from the regular grid")
    unit: ClassVar[str] = "input-feature pixels"
    offsets: Tensor
    mask: Tensor | None
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]

    def compute_heatmap(self) -> Tensor:
        dy, dx = self.offsets.float().unbind(dim=3)  # (norm over that size-2, strided axis is ~100x slower)
        return torch.sqrt(dy.square() + dx.square()).mean(dim=(1, 2))

    def summary(self, i: int) -> dict[str, Any]:
        return {"kernel_size": list(self.kernel_size), "stride": list(self.stride), "padding": list(self.padding),
                "dilation": list(self.dilation), "modulated": self.mask is not None}

    def arrays(self, i: int) -> dict[str, Tensor]:
        return {"offsets": self.offsets[i]} | ({} if self.mask is None else {"mask": self.mask[i]})


def _deform_maps(offsets: Tensor, mask: Tensor | None, kernel_size, stride, padding, dilation) -> DeformMaps:
    kernel_size = _pair(kernel_size)
    taps = kernel_size[0] * kernel_size[1]
    n, _, height, width = offsets.shape
    return DeformMaps(offsets=offsets.reshape(n, -1, taps, 2, height, width),
                      mask=None if mask is None else mask.reshape(n, -1, taps, height, width),
                      kernel_size=tuple(kernel_size), stride=tuple(_pair(stride)), padding=tuple(_pair(padding)),
                      dilation=tuple(_pair(dilation)))


def _module_deform_maps(offsets: Tensor, mask: Tensor | None, module: nn.Module) -> DeformMaps:
    return _deform_maps(offsets, mask, module.kernel_size, module.stride, module.padding,
                        getattr(module, "dilation", 1))


class DeformPattern(Pattern):
    """DCN: every ``deform_conv2d`` call (torchvision's op, its ``DeformConv2d`` module, ``torch.ops``): the
    offsets and mask it receives, whatever computed them (one conv or two, any activation of the mask), with
    the kernel size of its weight and the stride, padding and dilation it is given. And deformable sampling
    written by hand (``grid_sample`` on offset-shifted grids, or ``floor`` then gathering the corners): positions
    that are a regular ``kh x kw`` grid plus offsets one of the block's children predicts, found by running the
    call again with that child's output replaced (zeros, ones, each axis's index), once per input shape; the
    mask is the factor that then multiplies the samples, one value per sampling point."""

    kind = "dcn"
    description = ("a torchvision deform_conv2d call (the offsets and mask it is given), or sampling by grid_sample / "
                   "floor at a regular k x k grid plus offsets predicted by one of the block's children")
    OP = "torchvision::deform_conv2d"

    def see(self, op: Op, frames: list[Frame], scratch: dict) -> None:
        if op.name == self.OP:
            frame = self.owner(frames, lambda frame: True)  # the innermost module making the call
            if frame is not None:
                frame.state.setdefault(self.kind, []).append(op.args)
            return
        if op.name in PADS:
            for frame in frames:
                if frame.input is not None and op.args[0] is frame.input:
                    frame.state.setdefault(PADDED, tuple(op.args[1]))
        if op.name in SAMPLERS:
            frame = self.owner(frames, lambda frame: frame.input is not None)
            wanted = None if frame is None or frame.detail is None else frame.detail.get("samplings", {})
            occurrence = None if frame is None else (op.name, frame.counts[op.name])
            if frame is not None and (wanted is None or occurrence in wanted):
                positions = _sampled_positions(op)
                if positions is not None:
                    frame.state.setdefault(SAMPLED, []).append(
                        {"occurrence": occurrence, "positions": positions, "shapes": _shapes(op),
                         "taint": {storage_key(op.out)}, "mask": None})
            return
        for frame in frames:
            for sampled in frame.state.get(SAMPLED, ()):
                _follow_samples(op, sampled)

    def finish(self, frame: Frame) -> list[BlockMaps]:
        records = []
        for args in frame.state.get(self.kind, ()):
            # the op's schema: input, weight, offset, mask, bias, stride, padding, dilation (h, w each), groups,
            # offset groups, use_mask
            _, weight, offset, mask, _, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, *_, use_mask = args
            records.append(_deform_maps(offset, mask if use_mask else None, tuple(weight.shape[-2:]),
                                        (stride_h, stride_w), (pad_h, pad_w), (dil_h, dil_w)))
        samplings = frame.state.get(SAMPLED, ())
        if not samplings:
            return records
        known = frame.detail if frame.detail is not None else {"samplings": {}, "layouts": {}}
        for sampled in samplings:
            layout = _layout_for(frame, sampled, known)
            if layout is None:
                if sampled["occurrence"][0] in GRID_SAMPLERS and frame.detail is None:
                    frame.candidates.append("samples with grid_sample, but not at a regular k x k grid plus offsets "
                                            "that one of its children predicts (not a deformable convolution)")
                continue
            records.append(layout.record(sampled["positions"][0], sampled["mask"]))
        if known["samplings"]:
            frame.detail = known
        return records


SAMPLERS = ("aten::grid_sampler_2d", "aten::cudnn_grid_sampler", "aten::floor")
GRID_SAMPLERS = SAMPLERS[:2]
PADS = ("aten::constant_pad_nd",)
SAMPLED, PADDED = "dcn:sampled", "dcn:padded"  # frame state: sampling operations seen, the padding of the input
MAX_LAYOUTS = 16  # input shapes remembered per block (each new one costs a few runs of the block)


def _shapes(op: Op) -> tuple:
    return tuple(tuple(tensor.shape) for tensor in op.tensors)


def _sampled_positions(op: Op) -> tuple[Tensor, Tensor | None, tuple[int, int] | None] | None:
    """Where a sampling operation reads: every coordinate, flat, in pixels of the tensor it samples (float64);
    which are rows where the operation says (grid_sample's last axis is x, y), and the sampled (H, W). A floor's
    input: positions of the block's (padded) input, rows and columns not told apart."""
    if op.name in GRID_SAMPLERS:
        source, grid = op.args[0], op.args[1]
        if source.dim() != 4 or grid.dim() != 4 or grid.shape[-1] != 2 or not grid.is_floating_point():
            return None
        align_corners = bool(op.args[4]) if op.name == "aten::grid_sampler_2d" else True
        height, width = source.shape[-2:]
        size = torch.tensor([width, height], dtype=torch.float64, device=grid.device)
        normalised = grid.double()
        pixels = (normalised + 1) / 2 * (size - 1) if align_corners else ((normalised + 1) * size - 1) / 2
        rows = torch.tensor([False, True], device=grid.device).repeat(grid.numel() // 2)
        return pixels.flatten(), rows, (height, width)
    positions = op.args[0]
    if not isinstance(positions, Tensor) or not positions.is_floating_point() or positions.dim() < 3:
        return None
    return positions.double().flatten(), None, None


def _follow_samples(op: Op, sampled: dict) -> None:
    """What the samples become: every tensor computed from them; the first factor not computed from them that
    has one value per sampling point (broadcast or repeated over the channels) is the modulation mask."""
    tensors = op.tensors
    taint = sampled["taint"]
    keys = [storage_key(tensor) for tensor in tensors]
    if not any(key in taint for key in keys):
        return
    if sampled["mask"] is None and op.name in ("aten::mul.Tensor", "aten::mul_.Tensor") and len(tensors) == 2:
        factor = tensors[1] if keys[0] in taint else tensors[0]
        if storage_key(factor) not in taint:
            points = sampled["positions"][0].numel() // 2
            sampled["mask"] = _per_point(factor, points)
    if op.out is not None:
        taint.add(storage_key(op.out))


def _per_point(factor: Tensor, points: int) -> Tensor | None:
    """``factor`` flat, one value per sampling point, if it is that (with one axis it is constant along, its
    channels, left out)."""
    if factor.numel() == points:
        return factor.reshape(-1)
    if factor.numel() % points or factor.dim() < 2:
        return None
    copies = factor.numel() // points
    shape = effective_shape(factor)
    for axis, size in enumerate(factor.shape):
        if size == copies and (shape[axis] == 1 or torch.equal(factor, factor.narrow(axis, 0, 1).expand_as(factor))):
            return factor.select(axis, 0).reshape(-1)
    return None


@dataclass(frozen=True)
class _SamplingLayout:
    """How a sampling operation's coordinates are a deformable convolution's taps: ``rows`` / ``columns``
    ``(N, G, kh*kw, H', W')``, the flat index of each tap's row and column coordinate among the operation's
    positions; ``regular``: the positions with zero offsets; ``points``: each row coordinate's rank among the
    row coordinates (the order of one value per sampling point, the mask's)."""

    rows: Tensor
    columns: Tensor
    regular: Tensor
    points: Tensor
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]

    def record(self, positions: Tensor, mask: Tensor | None) -> DeformMaps:
        shift = positions - self.regular
        offsets = torch.stack([shift[self.rows], shift[self.columns]], dim=3).float()
        if mask is not None and mask.numel() == int(self.points.max()) + 1:
            mask = mask[self.points[self.rows]]
        else:
            mask = None
        return DeformMaps(offsets=offsets, mask=mask, kernel_size=self.kernel_size, stride=self.stride,
                          padding=self.padding, dilation=self.dilation)


def _layout_for(frame: Frame, sampled: dict, known: dict) -> _SamplingLayout | None:
    """The layout of one sampling operation at this call's shapes: remembered, else found by running the call
    again (``_find_layout``)."""
    occurrence = sampled["occurrence"]
    key = (occurrence, sampled["shapes"], tuple(frame.input.shape))
    if key in known["layouts"]:
        return known["layouts"][key]
    if frame.replay is None:
        return None
    sources = [known["samplings"][occurrence]] if occurrence in known["samplings"] else None
    found = _find_layout(frame, sampled, sources)
    if found is None:
        return None
    source, layout = found
    known["samplings"][occurrence] = source
    if len(known["layouts"]) >= MAX_LAYOUTS:
        known["layouts"].pop(next(iter(known["layouts"])))
    known["layouts"][key] = layout
    return layout


def _replayed_positions(frame: Frame, occurrence: tuple[str, int], outputs: dict) -> Tensor | None:
    name, count = occurrence
    ops = [op for op in frame.replay(outputs) if op.name == name]
    if len(ops) < count:
        return None
    positions = _sampled_positions(ops[count - 1])
    return None if positions is None else positions[0]


def _find_layout(frame: Frame, sampled: dict, sources: list[str] | None) -> tuple[str, _SamplingLayout] | None:
    """Which child's output the sampling positions add to the regular grid, and how: run the call with that
    output replaced by zeros (the regular grid), ones (each coordinate's scale), then each axis's index (which
    element of the output each coordinate adds)."""
    occurrence, (positions, rows, size) = sampled["occurrence"], sampled["positions"]
    if sources is None:
        seen: dict[str, Tensor] = {}
        spies = {name: (lambda output, name=name: seen.setdefault(name, output))
                 for name, _ in frame.module.named_children()}
        frame.replay(spies)
        sources = [name for name, output in reversed(seen.items())  # the last called first
                   if isinstance(output, Tensor) and output.dim() == 4 and output.is_floating_point()]
    pad = _input_padding(frame, size)
    for source in sources:
        try:
            regular = _replayed_positions(frame, occurrence, {source: torch.zeros_like})
            ones = _replayed_positions(frame, occurrence, {source: torch.ones_like})
            if regular is None or ones is None or regular.shape != positions.shape:
                continue
            scale = ones - regular
            fed = scale.abs() > 1e-3
            if not fed.any():
                continue
            where = []
            shape = None
            for axis in range(4):
                def code(output, axis=axis):
                    nonlocal shape
                    shape = output.shape
                    index = torch.arange(1, output.shape[axis] + 1, dtype=output.dtype, device=output.device)
                    return index.view([-1 if a == axis else 1 for a in range(output.dim())]).expand_as(output).clone()
                coded = _replayed_positions(frame, occurrence, {source: code})
                step = (coded - regular)[fed] / scale[fed]
                index = step.round()
                if (step - index).abs().max() > 0.05 or index.min() < 1 or index.max() > shape[axis]:
                    break
                where.append(index.long() - 1)
            else:
                layout = _fit_taps(torch.stack(where, 1), regular, fed, None if rows is None else rows, shape, pad)
                if layout is not None:
                    return source, layout
        except Exception:  # noqa: BLE001 - a child whose output cannot be replaced so: not the source
            continue
    return None


def _input_padding(frame: Frame, size: tuple[int, int] | None) -> tuple[int, int]:
    """(top, left) padding of the block's input in the tensor sampled: from the sampled size (grid_sample), else
    the block's own padding of its input."""
    x = frame.input
    if size is not None:
        for height, width in ((x.shape[-2], x.shape[-1]), (x.shape[1], x.shape[2])):  # channels first or last
            if size[0] >= height and size[1] >= width and (size[0] - height) % 2 == 0 and (size[1] - width) % 2 == 0:
                return (size[0] - height) // 2, (size[1] - width) // 2
        return 0, 0
    pads = frame.state.get(PADDED, ())
    return (int(pads[2]) if len(pads) >= 4 else 0), (int(pads[0]) if pads else 0)


def _fit_taps(where: Tensor, regular: Tensor, fed: Tensor, rows: Tensor | None, shape: torch.Size,
              pad: tuple[int, int]) -> _SamplingLayout | None:
    """The kernel, stride, dilation and padding for which the fed coordinates at zero offsets are a regular grid:
    each output channel of the source is one coordinate (rows: ``stride*y - padding + dilation*i``, columns the
    same in x) of one tap; row and column channels pair up in their order, taps group by ``kh*kw``. ``where``: the
    source element (4 axes) of each fed coordinate."""
    flat = fed.nonzero()[:, 0]
    values = regular[fed]
    for n_axis, c_axis, y_axis, x_axis in ((0, 1, 2, 3), (0, 3, 1, 2)):  # channels first, channels last
        n, c, height, width = shape[n_axis], shape[c_axis], shape[y_axis], shape[x_axis]
        if height < 2 or width < 2:
            continue
        grid = regular.new_full((n, c, height, width), math.nan)
        index = torch.full((n, c, height, width), -1, dtype=torch.long, device=regular.device)
        spot = (where[:, n_axis], where[:, c_axis], where[:, y_axis], where[:, x_axis])
        grid[spot], index[spot] = values, flat
        used = (index >= 0).flatten(1).any(0).view(c, height, width).any(2).any(1)  # channels that are coordinates
        grid, index = grid[:, used], index[:, used]
        if (index < 0).any() or len(torch.unique(index)) != index.numel():
            continue  # not every position of each coordinate channel, or one coordinate twice
        down, across = grid.diff(dim=2), grid.diff(dim=3)
        is_row = (across.abs() < 1e-3).all(3).all(2).all(0)  # a row coordinate does not change along x
        is_column = (down.abs() < 1e-3).all(3).all(2).all(0)
        if not (is_row ^ is_column).all() or is_row.sum() != is_column.sum() or not is_row.any():
            continue
        if rows is not None and not (rows[index[:, is_row]].all() and not rows[index[:, is_column]].any()):
            continue
        stride_h, stride_w = down[:, is_row].flatten(), across[:, is_column].flatten()
        stride = (round(float(stride_h[0])), round(float(stride_w[0])))
        if min(stride) < 1 or (stride_h - stride[0]).abs().max() > 1e-3 or (stride_w - stride[1]).abs().max() > 1e-3:
            continue
        row_start, column_start = grid[0, is_row, 0, 0], grid[0, is_column, 0, 0]
        row_taps, column_taps = _taps_of(row_start), _taps_of(column_start)
        if row_taps is None or column_taps is None:
            continue
        (i, first_row, dil_h, kh), (j, first_column, dil_w, kw) = row_taps, column_taps
        taps = kh * kw
        if len(i) % taps:
            continue
        groups = len(i) // taps
        tap = (i * kw + j).view(groups, taps)
        if not (tap.sort(dim=1).values == torch.arange(taps, device=tap.device)).all():
            continue
        padding = (pad[0] - first_row, pad[1] - first_column)
        if any(abs(p - round(p)) > 1e-3 for p in padding):
            continue
        order = tap.argsort(dim=1)  # the pairs of each group in tap order t = i * kw + j
        pairs = (order + torch.arange(groups, device=order.device)[:, None] * taps).flatten()
        row_index = index[:, is_row][:, pairs].view(n, groups, taps, height, width)
        column_index = index[:, is_column][:, pairs].view(n, groups, taps, height, width)
        is_row_coordinate = torch.zeros_like(fed)
        is_row_coordinate[index[:, is_row].flatten()] = True
        points = torch.cumsum(is_row_coordinate.long(), 0) - 1
        return _SamplingLayout(row_index, column_index, regular, points, (kh, kw), stride,
                               (round(padding[0]), round(padding[1])), (dil_h, dil_w))
    return None


def _taps_of(starts: Tensor) -> tuple[Tensor, float, int, int] | None:
    """From the regular position of each coordinate channel at output (0, 0): its tap index along the axis, the
    first tap's position, the dilation and the kernel size; None unless they are ``first + dilation * i``."""
    levels = torch.unique((starts * 1000).round()) / 1000
    kernel = len(levels)
    dilation = round(float(levels[1] - levels[0])) if kernel > 1 else 1
    expected = levels[0] + dilation * torch.arange(kernel, dtype=levels.dtype, device=levels.device)
    if dilation < 1 or (levels - expected).abs().max() > 1e-3:
        return None
    taps = ((starts - levels[0]) / dilation).round().long()
    return taps, float(levels[0]), dilation, kernel


OFFSET_CONVS = ("conv_offset", "conv_offset_mask", "conv_offset2d")  # mmcv; CenterNet DCNv2 / YOLO forks; older forks
OFFSET_GROUPS = ("deform_groups", "deformable_groups", "offset_groups")


def _offset_conv(module: nn.Module) -> str:
    """The name of the module's offset conv ("" if none)."""
    return next((name for name in OFFSET_CONVS if isinstance(getattr(module, name, None), nn.Conv2d)), "")


def _is_offset_conv_dcn(module: nn.Module) -> bool:
    """A deformable conv that computes its offsets (and DCNv2 mask) with one conv beside its own ``weight``."""
    return (bool(_offset_conv(module)) and isinstance(getattr(module, "weight", None), nn.Parameter)
            and _has(module, "kernel_size", "stride", "padding"))


def _build_offset_conv_dcn(module: nn.Module, call: Call, parts: Parts) -> DeformMaps:
    """The offset conv's output is ``[offsets | mask logits]``: ``2*G*k*k`` offset channels in torchvision's
    layout (mmcv and the forks' ``o1, o2, mask = chunk(out, 3); offset = cat(o1, o2)`` alike), then, for
    DCNv2, ``G*k*k`` mask logits (sigmoid)."""
    raw = _last_output(parts, _offset_conv(module))
    kernel_size = _pair(module.kernel_size)
    taps = kernel_size[0] * kernel_size[1]
    groups = next((int(getattr(module, name)) for name in OFFSET_GROUPS if hasattr(module, name)), None)
    if groups is None:  # no attribute: DCNv2 when the channels split in thirds, else DCNv1
        modulated = raw.shape[1] % (3 * taps) == 0 and raw.shape[1] % (2 * taps) != 0
        groups = raw.shape[1] // ((3 if modulated else 2) * taps)
    modulated = raw.shape[1] == 3 * groups * taps
    offsets, mask = split_offset_output(raw, groups, tuple(kernel_size), modulated)
    return _module_deform_maps(offsets, mask, module)


def _build_torchvision_deform(module: nn.Module, call: Call, parts: Parts) -> DeformMaps:
    named = dict(zip(("input", "offset", "mask"), call.args)) | call.kwargs
    return _module_deform_maps(named["offset"], named.get("mask"), module)


DCN_READERS = (
    Reader("deformable conv with its offset conv (ours, mmcv DeformConv2dPack / ModulatedDeformConv2dPack, "
           "DCNv2 conv_offset_mask forks, conv_offset2d)", _is_offset_conv_dcn, _build_offset_conv_dcn,
           lambda module: (_offset_conv(module),)),
    Reader("torchvision DeformConv2d fed by any offset conv", lambda module: isinstance(module, DeformConv2d),
           _build_torchvision_deform),
)


# --- SPD ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SpaceToDepthMaps(BlockMaps):
    """Space-to-depth. ``phase_energy`` ``(N, 4, H/2, W/2)``: mean square activation over channels of
    each 2x2 phase, in the official order (row, col) = (0,0), (1,0), (0,1), (1,1); ``phase_detail``
    ``(N, H/2, W/2)``: mean over channels of the variance across the four phases, the detail a plain
    stride-2 sampling would drop and SPD keeps (squared activation units). Heatmap: ``phase_detail``."""

    type: ClassVar[str] = "spd"
    title: ClassVar[str] = "SPD phase detail"
    meaning: ClassVar[str] = ("phase detail: variance across the four 2x2 phases, the detail a stride-2 sampling "
                              "would drop")
    unit: ClassVar[str] = "squared activation"
    phase_energy: Tensor
    phase_detail: Tensor

    def compute_heatmap(self) -> Tensor:
        return self.phase_detail

    def summary(self, i: int) -> dict[str, Any]:
        return {"phase_energy_mean": self.phase_energy[i].mean((1, 2))}

    def arrays(self, i: int) -> dict[str, Tensor]:
        return {"phase_energy": self.phase_energy[i], "phase_detail": self.phase_detail[i]}


def _phase_maps(phases: Tensor) -> SpaceToDepthMaps:
    """``phases`` ``(N, 4, C, H/2, W/2)`` in the official order."""
    phases = phases.float()
    energy = phases.square().mean(dim=2)  # (N, 4, H/2, W/2)
    # variance across phases, mean over channels: E_c[E_p x^2 - (E_p x)^2] (torch.var over dim 1 is slow here)
    detail = energy.mean(dim=1) - phases.mean(dim=1).square().mean(dim=1)
    return SpaceToDepthMaps(phase_energy=energy, phase_detail=detail.clamp_min(0))


def _build_space_to_depth(module: nn.Module, call: Call, parts: Parts) -> SpaceToDepthMaps:
    return _phase_maps(call.output.unflatten(1, (4, -1)))  # official cat order: phase-major channels


PIXEL_UNSHUFFLE_TO_OFFICIAL = [0, 2, 1, 3]  # pixel_unshuffle's phase i*2+j -> official (0,0),(1,0),(0,1),(1,1)


def _build_pixel_unshuffle(module: nn.Module, call: Call, parts: Parts) -> SpaceToDepthMaps:
    phases = call.output.unflatten(1, (-1, 4)).transpose(1, 2)  # channel-major (C, 4) -> (4, C)
    return _phase_maps(phases[:, PIXEL_UNSHUFFLE_TO_OFFICIAL])


def _spd_children(module: nn.Module) -> bool:
    return any(_is_space_to_depth(child) or _is_pixel_unshuffle(child) for child in module.children())


def _is_space_to_depth(module: nn.Module) -> bool:
    return type(module).__name__ in ("space_to_depth", "SpaceToDepth")


def _is_pixel_unshuffle(module: nn.Module) -> bool:
    return isinstance(module, nn.PixelUnshuffle) and module.downscale_factor == 2


def _is_inline_spd_conv(module: nn.Module) -> bool:
    """A fork's ``SPDConv`` that slices ``x[..., ::2, ::2]`` ... in its own forward, then runs ``conv``."""
    return type(module).__name__ == "SPDConv" and isinstance(getattr(module, "conv", None), nn.Module) \
        and not _spd_children(module)


def _build_inline_spd_conv(module: nn.Module, call: Call, parts: Parts) -> SpaceToDepthMaps:
    return _phase_maps(parts["conv"][0].args[0].unflatten(1, (4, -1)))  # what its conv receives


OFFICIAL_PHASES = ((0, 0), (1, 0), (0, 1), (1, 1))  # (row, column) of each 2x2 phase, the official cat order


class SpaceToDepthPattern(Pattern):
    """SPD: a tensor ``(N, 4C, ceil(H/2), ceil(W/2))`` made of the four stride-2 phases of the block's input
    ``(N, C, H, W)`` (odd sizes padded any way), stacked on channels phase by phase or channel by channel, in any
    phase order: slicing and ``cat``, ``pixel_unshuffle``, einops ``rearrange``. Recognition compares values
    (on the probe image) and keeps the operation and the order found; later calls take that operation's output."""

    kind = "spd"
    description = "the four stride-2 phases of the block's input stacked on channels (slicing, pixel_unshuffle, einops)"

    def see(self, op: Op, frames: list[Frame], scratch: dict) -> None:
        out = op.out
        if out is None or out.dim() != 4 or op.name in ("aten::empty.memory_format", "aten::new_empty"):
            return
        for frame in reversed(frames):
            if not frame.reads(self.kind) or frame.input is None or self.kind in frame.state:
                continue
            x = frame.input
            n, c, height, width = x.shape
            if out.shape != (n, 4 * c, (height + 1) // 2, (width + 1) // 2) or out is x:
                continue
            if frame.detail is not None:  # known: the operation and the layout recognition found
                name, occurrence, layout = frame.detail
                if op.name == name and frame.counts[name] == occurrence:
                    frame.state[self.kind] = (op.name, occurrence, layout, _phases_of(out, layout, c))
                return
            layout = _phase_layout(out, x)
            if layout is not None:
                frame.state[self.kind] = (op.name, frame.counts[op.name], layout, _phases_of(out, layout, c))
                return

    def finish(self, frame: Frame) -> list[BlockMaps]:
        found = frame.state.get(self.kind)
        if found is None:
            return []
        frame.detail = found[:3]
        return [_phase_maps(found[3])]


def _phase_layout(out: Tensor, x: Tensor) -> tuple[str, tuple[int, ...]] | None:
    """How ``out`` stacks the phases of ``x``: ``("phase-major" | "channel-major", official phase index of
    each slot)``, or None if it is not made of them."""
    height, width = x.shape[-2:]
    if height < 2 or width < 2:
        return None
    rows, columns = height // 2, width // 2  # what no padding of odd sizes (zeros, replicate, reflect) touches
    phases = [x[..., row::2, column::2][..., :rows, :columns] for row, column in OFFICIAL_PHASES]
    if any(torch.equal(phases[i], phases[j]) for i in range(4) for j in range(i + 1, 4)):
        return None  # phases alike (a flat input): nothing tells them apart
    channels = x.shape[1]
    for layout, slots in (("phase-major", out.unflatten(1, (4, channels)).unbind(1)),
                          ("channel-major", out.unflatten(1, (channels, 4)).unbind(2))):
        order = []
        for slot in slots:
            slot = slot[..., :rows, :columns]
            match = [i for i, phase in enumerate(phases) if i not in order and torch.equal(slot, phase)]
            if not match:
                break
            order.append(match[0])
        if len(order) == 4:
            return layout, tuple(order)
    return None


def _phases_of(out: Tensor, layout: tuple[str, tuple[int, ...]], channels: int) -> Tensor:
    """``(N, 4, C, H/2, W/2)`` in the official phase order, from ``out`` stacked as ``layout`` says."""
    kind, order = layout
    slots = out.unflatten(1, (4, channels)) if kind == "phase-major" else out.unflatten(1, (channels, 4)).transpose(1, 2)
    return slots[:, [order.index(i) for i in range(4)]]


SPD_READERS = (
    Reader("space_to_depth (official, ours)", _is_space_to_depth, _build_space_to_depth),
    Reader("nn.PixelUnshuffle(2)", _is_pixel_unshuffle, _build_pixel_unshuffle),
    Reader("SPDConv slicing in its forward", _is_inline_spd_conv, _build_inline_spd_conv, lambda module: ("conv",)),
)


# --- the table ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Kind:
    """A block kind: its record class (maps, heatmap, title, meaning, unit), the computation it is recognised
    by, and the structures read directly."""

    record: type[BlockMaps]
    pattern: Pattern
    readers: tuple[Reader, ...]


KINDS: dict[str, Kind] = {kind.record.type: kind for kind in (
    Kind(ContextMaps, ContextPattern(), GC_READERS), Kind(CoordMaps, CoordPattern(), CA_READERS),
    Kind(WindowAttentionMaps, WindowAttentionPattern(), ACMIX_READERS), Kind(DeformMaps, DeformPattern(), DCN_READERS),
    Kind(SpaceToDepthMaps, SpaceToDepthPattern(), SPD_READERS))}


def reader_for(module: nn.Module) -> tuple[str, Reader] | None:
    """The kind and reader that recognise ``module``, if any (the first match in ``KINDS`` order)."""
    return next(((name, reader) for name, kind in KINDS.items() for reader in kind.readers
                 if reader.matches(module)), None)
