"""SPD, space-to-depth (``blocks.spd``): its record (the four phases' energy and detail), how a block is
recognised as one by what it computes (the four stride-2 phases of its input stacked on channels, any order) and
the structures read by their names (the official space_to_depth, PixelUnshuffle, the forks' SPDConv).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..observe import Frame, Op, Pattern
from .base import BlockMaps, Call, Kind, Parts, Reader


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


KIND = Kind(SpaceToDepthMaps, SpaceToDepthPattern(), SPD_READERS,
            "nothing: space-to-depth rearranges every pixel into channels and weighs none, so it has no preference to "
            "remove (not knocked out)")
