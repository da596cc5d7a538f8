"""Block kinds, each declared once, one file per kind (``gc``, ``ca``, ``acmix``, ``dcn``, ``spd``): how ``capture``
recognises it, what it records, what its maps mean.

A kind (``base.Kind``) is a record class (the maps of one block call, with the summary ``heatmap``, its meaning,
unit and title, a few JSON-sized numbers and the full arrays), the ``Pattern`` that recognises a block of that kind
by what it computes (``blocks.observe``: whatever the module and its parts are called), and the ``Reader`` s that
read the modules whose structure is known (ours, the official code's, the variants YOLO forks copy) from their
submodules' outputs: a fast path, used where recognition found that it reads exactly what the module computes.
``capture``, the JSON report, the figure, the npz file and the server's schema read ``KINDS``. A sixth kind is a
new file here with its ``KIND``, listed below.
"""
from __future__ import annotations

from torch import nn

from ..observe import Pattern
from . import acmix, ca, dcn, gc, spd
from .acmix import WindowAttentionMaps
from .base import BlockMaps, Call, Kind, Parts, Reader
from .ca import CoordMaps
from .dcn import DeformMaps
from .gc import ContextMaps
from .spd import SpaceToDepthMaps

__all__ = ["KINDS", "BlockMaps", "Call", "ContextMaps", "CoordMaps", "DeformMaps", "Kind", "Parts", "Pattern",
           "Reader", "SpaceToDepthMaps", "WindowAttentionMaps", "reader_for"]

KINDS: dict[str, Kind] = {module.KIND.record.type: module.KIND for module in (gc, ca, acmix, dcn, spd)}


def reader_for(module: nn.Module) -> tuple[str, Reader] | None:
    """The kind and reader that recognise ``module``, if any (the first match in ``KINDS`` order)."""
    return next(((name, reader) for name, kind in KINDS.items() for reader in kind.readers
                 if reader.matches(module)), None)
