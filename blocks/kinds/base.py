"""What every block kind is made of (``blocks.kinds``): the record base class ``BlockMaps`` (a kind's maps of one
block call, with the summary ``heatmap``, its meaning, unit and title, a few JSON-sized numbers and the full arrays),
the ``Reader`` of a module whose structure is known, the ``Call`` s a reader builds a record from, ``Kind`` (a record
class, its ``Pattern``, its readers and its flat map: ``Flattening``, for a knockout), and the softmaxes two kinds
recognise (GC's over positions, ACmix's over window taps).

Every record has ``type`` (the kind's short name) and ``heatmap``: a tensor ``(N, H, W)`` at the block's feature
resolution, computed once per record. Tensors are detached and stay on the model's device; ``N`` is the batch.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

from torch import Tensor, nn

from ..observe import Frame, Op, Pattern, shares_storage, storage_key


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


def has_all(module: nn.Module, *names: str) -> bool:
    return all(hasattr(module, name) for name in names)


def last_output(parts: Parts, part: str) -> Tensor:
    return parts[part][-1].output


SOFTMAX = "aten::_softmax"
def softmax_call(op: Op, scratch: dict) -> tuple[Tensor, int, Tensor] | None:
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


Rewrite = Callable[[str, tuple, dict, Callable[[tuple, dict], Any], Frame], Any]


@dataclass(frozen=True)
class Flattening:
    """How one block runs with its map made flat (a knockout). ``rewrite(name, args, kwargs, run, frame)``: every
    operation of its call, answering its output (``run(args, kwargs)`` with other arguments, or another output;
    ``frame`` the call, its ``state`` the rewrite's notes); ``outputs``: children whose outputs are replaced (name ->
    function of the real output); ``within``: a context each call runs in (a block of ours that has a flat mode)."""

    rewrite: Rewrite | None = None
    outputs: dict[str, Callable[[Tensor], Tensor]] = field(default_factory=dict)
    within: Callable[[], AbstractContextManager] | None = None


def flattened(frame: Frame) -> None:
    """Counts one map made flat in a knocked-out call (``blocks.knockout`` reads the count)."""
    frame.state["flattened"] = frame.state.get("flattened", 0) + 1


@dataclass(frozen=True)
class Kind:
    """A block kind: its record class (maps, heatmap, title, meaning, unit), the computation it is recognised
    by, the structures read directly, and its flat map: ``flat`` says in one sentence what a knockout replaces,
    ``flatten(module, reader, detail)`` how (None: the kind has no preference to remove, ``flat`` says why)."""

    record: type[BlockMaps]
    pattern: Pattern
    readers: tuple[Reader, ...]
    flat: str
    flatten: Callable[[nn.Module, Reader | None, Any], Flattening] | None = None
