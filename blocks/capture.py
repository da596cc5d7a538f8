"""``capture``: read every block's maps during a forward pass, for our blocks and the official ones.

    with capture(model) as maps:
        model(x)
    maps["layer3.1.gc"].heatmap  # (N, H, W)

Blocks are recognised by structure (the submodules and attributes their official code defines), so
modules written with the official code are read too: ACmix, GCNet ``CB2d`` / mmcv ``ContextBlock``,
``CoordAtt`` / ``CA``, mmcv-style ``*DeformConv2dPack`` (a ``conv_offset`` beside a ``weight``),
torchvision ``DeformConv2d`` fed by any offset conv, and ``space_to_depth``.

Maps are read from outputs the forward pass computes anyway (the ACmix ``softmax``, GC ``conv_mask``,
CA ``conv_h`` / ``conv_w``, DCN ``conv_offset`` or the offsets handed to ``DeformConv2d``), so
capturing costs no second pass. Hooks exist only inside the ``with`` block (no cost otherwise) and
are removed on exit, exceptions included. Each hook records only for the capture that is active in
the calling thread (a ``ContextVar``), so concurrent captures on one shared model stay apart. A block
called twice in one pass keeps the maps of its last call.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.ops import DeformConv2d

from .context import context_mask
from .deform import split_offset_output
from .maps import BlockMaps, ContextMaps, CoordMaps, DeformMaps, SpaceToDepthMaps, WindowAttentionMaps

__all__ = ["capture", "find_blocks"]

Parts = dict[str, Tensor]
_active_maps: ContextVar[dict[str, BlockMaps] | None] = ContextVar("attnlens_active_maps", default=None)


@dataclass(frozen=True)
class _Reader:
    """How to read one block kind: which submodule outputs it needs and how they become maps."""

    kind: str
    matches: Callable[[nn.Module], bool]
    parts: Callable[[nn.Module], tuple[str, ...]]
    build: Callable[[nn.Module, tuple, dict, Any, Parts], BlockMaps]


def _has(module: nn.Module, *names: str) -> bool:
    return all(hasattr(module, name) for name in names)


def _build_acmix(module, args, kwargs, output, parts: Parts) -> WindowAttentionMaps:
    x = args[0]
    return WindowAttentionMaps(attention=parts["softmax"].unflatten(0, (x.shape[0], module.head)),
                               rate1=float(module.rate1), rate2=float(module.rate2),
                               input_size=tuple(x.shape[-2:]), stride=module.stride, dilation=module.dilation)


def _build_gc(module, args, kwargs, output, parts: Parts) -> ContextMaps:
    if "conv_mask" in parts:
        mask = context_mask(parts["conv_mask"])  # the block's own definition, from conv_mask's output
    else:  # average pooling: every position weighs the same
        n, _, height, width = args[0].shape
        mask = args[0].new_full((n, height, width), 1.0 / (height * width))
    return ContextMaps(context_mask=mask)


def _build_ca(module, args, kwargs, output, parts: Parts) -> CoordMaps:
    return CoordMaps(a_h=parts["conv_h"].sigmoid()[..., 0], a_w=parts["conv_w"].sigmoid()[:, :, 0, :])


def _deform_maps(offsets: Tensor, mask: Tensor | None, module) -> DeformMaps:
    kernel_size = tuple(module.kernel_size)
    taps = kernel_size[0] * kernel_size[1]
    n, _, height, width = offsets.shape
    return DeformMaps(offsets=offsets.reshape(n, -1, taps, 2, height, width),
                      mask=None if mask is None else mask.reshape(n, -1, taps, height, width),
                      kernel_size=kernel_size, stride=tuple(module.stride), padding=tuple(module.padding),
                      dilation=tuple(module.dilation))


def _build_deform_pack(module, args, kwargs, output, parts: Parts) -> DeformMaps:
    raw = parts["conv_offset"]
    taps = module.kernel_size[0] * module.kernel_size[1]
    modulated = raw.shape[1] == 3 * module.deform_groups * taps
    offsets, mask = split_offset_output(raw, module.deform_groups, tuple(module.kernel_size), modulated)
    return _deform_maps(offsets, mask, module)


def _build_torchvision_deform(module, args, kwargs, output, parts: Parts) -> DeformMaps:
    named = dict(zip(("input", "offset", "mask"), args)) | kwargs
    return _deform_maps(named["offset"], named.get("mask"), module)


def _build_spd(module, args, kwargs, output, parts: Parts) -> SpaceToDepthMaps:
    phases = output.unflatten(1, (4, -1))  # (N, 4, C, H/2, W/2)
    energy = phases.square().mean(dim=2)  # (N, 4, H/2, W/2)
    # variance across phases, mean over channels: E_c[E_p x^2 - (E_p x)^2] (torch.var over dim 1 is slow here)
    detail = energy.mean(dim=1) - phases.mean(dim=1).square().mean(dim=1)
    return SpaceToDepthMaps(phase_energy=energy, phase_detail=detail.clamp_min(0))


_READERS = (
    _Reader("acmix", lambda m: _has(m, "conv1", "conv2", "conv3", "conv_p", "fc", "dep_conv", "softmax", "rate1"),
            lambda m: ("softmax",), _build_acmix),
    _Reader("gc", lambda m: _has(m, "channel_add_conv", "channel_mul_conv")
            and (isinstance(getattr(m, "conv_mask", None), nn.Conv2d) or hasattr(m, "avg_pool")
                 or getattr(m, "pool", getattr(m, "pooling_type", None)) == "avg"),
            lambda m: ("conv_mask",) if hasattr(m, "conv_mask") else (), _build_gc),
    _Reader("ca", lambda m: _has(m, "conv1", "bn1", "conv_h", "conv_w"), lambda m: ("conv_h", "conv_w"), _build_ca),
    _Reader("dcn", lambda m: isinstance(getattr(m, "conv_offset", None), nn.Conv2d)
            and isinstance(getattr(m, "weight", None), nn.Parameter)
            and _has(m, "kernel_size", "stride", "padding", "dilation", "deform_groups"),
            lambda m: ("conv_offset",), _build_deform_pack),
    _Reader("dcn", lambda m: isinstance(m, DeformConv2d), lambda m: (), _build_torchvision_deform),
    _Reader("spd", lambda m: type(m).__name__ in ("space_to_depth", "SpaceToDepth"), lambda m: (), _build_spd),
)


def _reader_for(module: nn.Module) -> _Reader | None:
    return next((reader for reader in _READERS if reader.matches(module)), None)


def find_blocks(model: nn.Module) -> dict[str, str]:
    """Qualified name -> kind (``gc, ca, acmix, dcn, spd``) of every block ``capture`` reads, in module order."""
    return {name: reader.kind for name, module in model.named_modules() if (reader := _reader_for(module))}


@contextmanager
def capture(model: nn.Module) -> Iterator[dict[str, BlockMaps]]:
    """Record the maps of every recognised block of ``model`` run inside the ``with`` block.

    Yields a dict, filled as the blocks run (so in execution order): qualified module name ->
    record (``blocks.maps``) with ``.type``, ``.heatmap`` and the block's full maps.
    """
    maps: dict[str, BlockMaps] = {}
    handles = []

    def record_part(scratch: Parts, part: str, module, args, output) -> None:
        if _active_maps.get() is maps:
            scratch[part] = output.detach()

    def record_block(name: str, reader: _Reader, scratch: Parts, module, args, *rest) -> None:
        # (kwargs, output), or (output,) alone: torch registers a with_kwargs hook in two steps, so a forward
        # running in another thread at that moment (or at removal) calls it without kwargs
        kwargs, output = rest if len(rest) == 2 else ({}, rest[0])
        if _active_maps.get() is maps:
            with torch.no_grad():
                detached = tuple(a.detach() if isinstance(a, Tensor) else a for a in args)
                maps[name] = reader.build(module, detached, kwargs, output.detach(), dict(scratch))
            scratch.clear()

    try:
        for name, module in model.named_modules():
            reader = _reader_for(module)
            if reader is None:
                continue
            scratch: Parts = {}
            for part in reader.parts(module):
                submodule = getattr(module, part)
                handles.append(submodule.register_forward_hook(partial(record_part, scratch, part)))
            handles.append(module.register_forward_hook(partial(record_block, name, reader, scratch),
                                                        with_kwargs=True))
        token = _active_maps.set(maps)
        try:
            yield maps
        finally:
            _active_maps.reset(token)
    finally:
        for handle in handles:
            handle.remove()
