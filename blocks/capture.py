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
the calling thread (a ``ContextVar``), so concurrent captures on one shared model stay apart; captures
nest (an inner ``capture`` records beside an outer one, it does not silence it). A block called twice
in one pass keeps the maps of its last call. What each kind records, and the structures recognised,
are declared in ``blocks.kinds``.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import fields, replace
from functools import partial
from weakref import WeakKeyDictionary

import torch
from torch import Tensor, nn

from .kinds import BlockMaps, Call, Parts, Reader, reader_for

__all__ = ["capture", "find_blocks"]

# the captures active in this thread (or task): each hook records only for the capture that registered it
_active_captures: ContextVar[tuple[int, ...]] = ContextVar("attnlens_active_captures", default=())


# what reader_for found for each module, with the names of its children then: recognising every module of a
# model anew took ~2 ms per capture (Lite0: 146 modules); a module whose children change is read again
_recognised: WeakKeyDictionary[nn.Module, tuple[tuple[str, ...], tuple[str, Reader] | None]] = WeakKeyDictionary()


def _reader_of(module: nn.Module) -> tuple[str, Reader] | None:
    children = tuple(module._modules)
    known = _recognised.get(module)
    if known is None or known[0] != children:
        known = _recognised[module] = (children, reader_for(module))
    return known[1]


def find_blocks(model: nn.Module) -> dict[str, str]:
    """Qualified name -> kind (``gc, ca, acmix, dcn, spd``) of every block ``capture`` reads, in module order."""
    return {name: found[0] for name, module in model.named_modules() if (found := _reader_of(module))}


def _detached(value):
    return value.detach() if isinstance(value, Tensor) else value


@contextmanager
def capture(model: nn.Module) -> Iterator[dict[str, BlockMaps]]:
    """Record the maps of every recognised block of ``model`` run inside the ``with`` block.

    Yields a dict, filled as the blocks run (so in execution order): qualified module name ->
    record (``blocks.kinds``) with ``.type``, ``.heatmap`` and the block's full maps.
    """
    maps: dict[str, BlockMaps] = {}
    key = id(maps)
    handles = []

    def record_part(parts: Parts, part: str, module, args, output) -> None:
        if key in _active_captures.get():
            parts.setdefault(part, []).append(Call(args, {}, output))

    def record_block(name: str, reader: Reader, parts: Parts, module, args, *rest) -> None:
        # (kwargs, output), or (output,) alone: torch registers a with_kwargs hook in two steps, so a forward
        # running in another thread at that moment (or at removal) calls it without kwargs
        kwargs, output = rest if len(rest) == 2 else ({}, rest[0])
        if key in _active_captures.get():
            try:
                with torch.no_grad():
                    record = reader.build(module, Call(args, kwargs, output), parts)
                    maps[name] = replace(record, **{field.name: _detached(getattr(record, field.name))
                                                    for field in fields(record)})
            finally:
                parts.clear()

    try:
        for name, module in model.named_modules():
            found = _reader_of(module)
            if found is None:
                continue
            reader = found[1]
            parts: Parts = {}
            for part in reader.parts(module):
                submodule = getattr(module, part)
                handles.append(submodule.register_forward_hook(partial(record_part, parts, part)))
            handles.append(module.register_forward_hook(partial(record_block, name, reader, parts), with_kwargs=True))
        token = _active_captures.set((*_active_captures.get(), key))
        try:
            yield maps
        finally:
            _active_captures.reset(token)
    finally:
        for handle in handles:
            handle.remove()
