"""GC, the global context block (GCNet; ``blocks.context``): its record (the context mask), how a block is
recognised as one by what it computes (a softmax over the input's H*W positions whose weights pool a tensor) and
the structures read by their names (GCNet, mmcv).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..context import context_mask
from ..observe import Frame, Op, Pattern, storage_key
from .acmix import window_softmax
from .base import BlockMaps, Call, Flattening, Kind, Parts, Reader, flattened, has_all, last_output, softmax_call


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
        mask = context_mask(last_output(parts, "conv_mask"))  # the block's own definition, from conv_mask's output
    else:  # average pooling: every position weighs the same
        n, _, height, width = call.args[0].shape
        mask = call.args[0].new_full((n, height, width), 1.0 / (height * width))
    return ContextMaps(context_mask=mask)


def _is_gc(module: nn.Module) -> bool:
    """GCNet ``CB2d`` / ``ContextBlock2d``, mmcv ``ContextBlock``: both fusion attributes (either may be None)
    and attention pooling (``conv_mask``) or average pooling."""
    return (has_all(module, "channel_add_conv", "channel_mul_conv")
            and (isinstance(getattr(module, "conv_mask", None), nn.Conv2d) or hasattr(module, "avg_pool")
                 or getattr(module, "pool", getattr(module, "pooling_type", None)) == "avg"))


PRODUCTS = ("aten::bmm", "aten::mm", "aten::mul.Tensor", "aten::mul_.Tensor", "aten::baddbmm", "aten::matmul",
            "aten::addmm")
COPIES = ("aten::clone", "aten::_to_copy", "aten::_unsafe_view", "aten::contiguous", "aten::copy_")


class ContextPattern(Pattern):
    """GC: a softmax over the H*W positions of the block's input, whose weights then pool a tensor (enter a
    matrix product or a product with one): the context mask. Any name for the mask conv, either fusion."""

    kind = "gc"
    description = "a softmax over the H*W positions of the block's input whose weights pool a tensor"

    def see(self, op: Op, frames: list[Frame], scratch: dict) -> None:
        softmax = softmax_call(op, scratch)
        if softmax is not None:
            weights, dim, logits = softmax
            if window_softmax(weights, dim):
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


def _flatten_gc(module: nn.Module, reader: Reader | None, detail: Any) -> Flattening:
    """Every softmax over the call's H*W positions answers ``1 / (H*W)`` everywhere."""

    def rewrite(name: str, args: tuple, kwargs: dict, run, frame: Frame):
        output = run(args, kwargs)
        softmax = softmax_call(Op(name, args, kwargs, output), frame.state)
        x = frame.input
        if softmax is None or x is None:
            return output
        weights, dim, _ = softmax
        positions = x.shape[-2] * x.shape[-1]
        if weights.shape[dim] != positions or window_softmax(weights, dim):
            return output
        flattened(frame)
        return torch.full_like(output, 1.0 / positions)

    return Flattening(rewrite=rewrite)


KIND = Kind(ContextMaps, ContextPattern(), GC_READERS,
            "the context mask made uniform, 1/(H*W) at every position: the block pools its context by plain average",
            _flatten_gc)
