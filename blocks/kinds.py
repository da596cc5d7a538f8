"""Block kinds, each declared once: how ``capture`` recognises it, what it records, what its maps mean.

A kind is a record class (the maps of one block call, with the summary ``heatmap``, its meaning, unit
and title, a few JSON-sized numbers and the full arrays) plus the ``Reader`` s that recognise modules of
that kind by structure: ours, the official code's, and the variants YOLO forks copy. Adding a kind or a
fork variant means adding a record class or a ``Reader`` here; ``capture``, the JSON report, the
figure, the npz file and the server's schema read this table.

Every record has ``type`` (the kind's short name) and ``heatmap``: a tensor ``(N, H, W)`` at the
block's feature resolution, computed once per record. Tensors are detached and stay on the model's
device; ``N`` is the batch.
"""
from __future__ import annotations

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

__all__ = ["KINDS", "BlockMaps", "Kind", "ContextMaps", "CoordMaps", "DeformMaps", "Reader", "SpaceToDepthMaps",
           "WindowAttentionMaps", "reader_for"]


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


CA_READERS = (Reader("CA / CoordAtt (official, pools made in forward, any activation or gate module)",
                     lambda module: _has(module, "conv1", "bn1", "conv_h", "conv_w"), _build_ca, _ca_parts),)


# --- ACmix ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WindowAttentionMaps(BlockMaps):
    """ACmix. ``attention`` ``(N, heads, k*k, H', W')``: for each query position, the softmax weights
    over its ``k x k`` window (tap ``t = i*k + j``, window row ``i``, column ``j``; the window of query
    ``(y, x)`` is centred on input position ``(stride*y, stride*x)``, taps ``dilation`` apart);
    ``rate1`` / ``rate2``: the weights of the attention and convolution paths in the output.
    ``input_size``: ``(H, W)`` of the block's input. Heatmap: attention each input position receives
    (``attention_received``), mean over heads: ``(N, H, W)``, mean ``1/stride**2``."""

    type: ClassVar[str] = "acmix"
    title: ClassVar[str] = "ACmix attention received"
    meaning: ClassVar[str] = ("attention received: window-attention weight each position gets from all queries that "
                              "look at it, mean over heads")
    unit: ClassVar[str] = "sum of weights"
    attention: Tensor
    rate1: float
    rate2: float
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
    ``(N, G, kh*kw, H', W')``: DCNv2 modulation in (0, 1), ``None`` for DCNv1.
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


def _deform_maps(offsets: Tensor, mask: Tensor | None, module: nn.Module) -> DeformMaps:
    kernel_size = _pair(module.kernel_size)
    taps = kernel_size[0] * kernel_size[1]
    n, _, height, width = offsets.shape
    return DeformMaps(offsets=offsets.reshape(n, -1, taps, 2, height, width),
                      mask=None if mask is None else mask.reshape(n, -1, taps, height, width),
                      kernel_size=tuple(kernel_size), stride=tuple(_pair(module.stride)),
                      padding=tuple(_pair(module.padding)), dilation=tuple(_pair(getattr(module, "dilation", 1))))


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
    return _deform_maps(offsets, mask, module)


def _build_torchvision_deform(module: nn.Module, call: Call, parts: Parts) -> DeformMaps:
    named = dict(zip(("input", "offset", "mask"), call.args)) | call.kwargs
    return _deform_maps(named["offset"], named.get("mask"), module)


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


SPD_READERS = (
    Reader("space_to_depth (official, ours)", _is_space_to_depth, _build_space_to_depth),
    Reader("nn.PixelUnshuffle(2)", _is_pixel_unshuffle, _build_pixel_unshuffle),
    Reader("SPDConv slicing in its forward", _is_inline_spd_conv, _build_inline_spd_conv, lambda module: ("conv",)),
)


# --- the table ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Kind:
    """A block kind: its record class (maps, heatmap, title, meaning, unit) and the structures it is read from."""

    record: type[BlockMaps]
    readers: tuple[Reader, ...]


KINDS: dict[str, Kind] = {kind.record.type: kind for kind in (
    Kind(ContextMaps, GC_READERS), Kind(CoordMaps, CA_READERS), Kind(WindowAttentionMaps, ACMIX_READERS),
    Kind(DeformMaps, DCN_READERS), Kind(SpaceToDepthMaps, SPD_READERS))}


def reader_for(module: nn.Module) -> tuple[str, Reader] | None:
    """The kind and reader that recognise ``module``, if any (the first match in ``KINDS`` order)."""
    return next(((name, reader) for name, kind in KINDS.items() for reader in kind.readers
                 if reader.matches(module)), None)
