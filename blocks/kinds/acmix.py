"""ACmix (``blocks.acmix``): its record (the window attention), how a block is recognised as one by what it
computes (a softmax over the k*k taps of a window at each position, in any layout, checked to be local where the
layout alone does not say) and the structures read by their names (the official ACmix, YOLOAir's).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..acmix import ACmix, attention_received, uniform_attention
from ..observe import Frame, Op, Pattern, shares_storage
from .base import BlockMaps, Call, Flattening, Kind, Parts, Reader, flattened, has_all, last_output, softmax_call


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
    return WindowAttentionMaps(attention=last_output(parts, "softmax").unflatten(0, (x.shape[0], module.head)),
                               rate1=float(module.rate1), rate2=float(module.rate2),
                               input_size=(x.shape[-2], x.shape[-1]), stride=int(module.stride),
                               dilation=int(getattr(module, "dilation", 1)))


def window_softmax(logits: Tensor, dim: int) -> bool:
    """A softmax over a square number of taps laid out ``(.., k*k, H', W')`` (ACmix's window attention)."""
    taps = logits.shape[dim]
    return logits.dim() >= 4 and dim == logits.dim() - 3 and taps >= 4 and math.isqrt(taps) ** 2 == taps


class WindowAttentionPattern(Pattern):
    """ACmix: a softmax over the ``k*k`` window taps of logits laid out ``(N*heads, k*k, H', W')`` (or with
    heads as their own axis), ``H', W'`` the block's input rows and columns over an integer stride; or kept
    another way, taps last (``(.., H', W', k*k)``, ``(.., H'*W', k*k)``) or positions flattened
    (``(.., k*k, H'*W')``), checked once to be local: moving one input position changes the weights of the
    queries around it only (a global attention over pooled keys changes them all)."""

    kind = "acmix"
    description = "a softmax over the k*k window taps of (N*heads, k*k, H', W') logits computed from the block's input"

    def see(self, op: Op, frames: list[Frame], scratch: dict) -> None:
        softmax = softmax_call(op, scratch)
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
                        lambda module: has_all(module, "conv1", "conv2", "conv3", "conv_p", "fc", "dep_conv", "softmax",
                                            "rate1"),
                        _build_acmix, lambda module: ("softmax",)),)


def _flatten_acmix(module: nn.Module, reader: Reader | None, detail: Any) -> Flattening:
    """Ours: its uniform mode (``blocks.acmix.uniform_attention``); any other: every softmax over window taps at
    the call's positions answers ``1 / (k*k)``."""
    if isinstance(module, ACmix):
        return Flattening(within=lambda: uniform_attention(module))

    def rewrite(name: str, args: tuple, kwargs: dict, run, frame: Frame):
        output = run(args, kwargs)
        softmax = softmax_call(Op(name, args, kwargs, output), frame.state)
        if softmax is None or frame.input is None:
            return output
        weights, dim, _ = softmax
        if _window_layout(weights.shape, dim, frame.input.shape[-2:]) is None:
            return output
        flattened(frame)
        return torch.full_like(output, 1.0 / weights.shape[dim])

    return Flattening(rewrite=rewrite)


KIND = Kind(WindowAttentionMaps, WindowAttentionPattern(), ACMIX_READERS,
            "the window attention made uniform, 1/(k*k) on every tap: each query takes the mean of its window's values",
            _flatten_acmix)
