"""Watching what modules compute: every tensor operation of a forward pass, with the module calls it runs in.

``Observer`` is a ``TorchDispatchMode``: while it is active, every ATen (or torchvision) operation reaches
it after it ran, as an ``Op`` (normalised name, inputs, output), together with the stack of the module calls
(``Frame`` s) it happened in. The block kinds' ``Pattern`` s (``blocks.kinds``) read the operations to
recognise a block by what it computes (a softmax over a module's H*W positions that pools, gates broadcast
along rows and columns that multiply its input, a ``deform_conv2d`` call ...) and build the kind's record
when the call ends. Dispatch-level names are normalised: ``F.softmax``, ``Tensor.softmax`` and
``nn.Softmax`` all arrive as ``aten::_softmax``; slicing as ``aten::slice``; ``torchvision.ops.deform_conv2d``
and the ``DeformConv2d`` module as ``torchvision::deform_conv2d``.

The mode is thread-local and costs one Python call per operation while active, so ``capture`` keeps it
on for a whole pass only once per model (recognition), and afterwards only inside the modules recognised
by computation.
"""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

log = logging.getLogger("attnlens")

__all__ = ["Frame", "Observer", "Op", "Pattern", "Recorder", "Rewriter", "effective_shape", "first_image_tensor",
           "shares_storage", "storage_key"]


@dataclass
class Op:
    """One operation: ``name`` as ``aten::mul.Tensor`` (the overload) or ``aten::_softmax``; positional
    ``args`` and ``kwargs`` as dispatched; ``output`` (a tensor, or a tuple of them)."""

    name: str
    args: tuple
    kwargs: dict
    output: Any

    @property
    def tensors(self) -> list[Tensor]:
        """The tensor inputs, in order (also those inside lists, as ``cat`` takes them)."""
        return [leaf for leaf in tree_leaves((self.args, self.kwargs)) if isinstance(leaf, Tensor)]

    @property
    def out(self) -> Tensor | None:
        """The output tensor (the first one, for operations that give several)."""
        if isinstance(self.output, Tensor):
            return self.output
        return next((leaf for leaf in tree_leaves(self.output) if isinstance(leaf, Tensor)), None)


@dataclass(eq=False)
class Frame:
    """One module call being watched: ``input`` is its first 4-D floating-point tensor argument (None if it
    has none). ``only``: the one kind read in it (a module recognised before), None: every kind.
    ``forced``: the kind the user named it as (``--block``). ``state`` holds each pattern's findings of this
    call, ``candidates`` what was seen but not read (with why), ``counts`` the operations seen by name.
    ``replay(outputs, input=None)``: the same call run again on the same inputs (``input`` in place of
    ``input``), without gradients, recorded by no capture, its buffers restored afterwards, each child named in
    ``outputs`` (name -> function of its real output) answering what the function gives; returns the operations
    it ran, in order."""

    name: str
    module: nn.Module
    input: Tensor | None
    only: str | None = None
    forced: str | None = None
    detail: Any = None  # what recognition learned about this module (a pattern's own)
    replay: Callable[..., list[Op]] | None = None  # run this call again, unrecorded (``capture`` sets it)
    state: dict[str, Any] = field(default_factory=dict)
    candidates: list[str] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)

    def reads(self, kind: str) -> bool:
        """Whether operations of ``kind`` may belong to this call."""
        return self.only in (None, kind) and self.forced in (None, kind)


class Pattern(ABC):
    """How a block kind is recognised by what a module computes, operation by operation.

    ``see`` looks at one operation (with the stack of watched calls, innermost last) and keeps what it
    finds in the state of the call it belongs to (``owner``); ``finish`` turns one call's findings into
    the kind's records (several calls joined where they belong together) when the call ends.
    ``description``: what it looks for, in words (``attnlens blocks`` prints it)."""

    kind: str
    description: str

    @abstractmethod
    def see(self, op: Op, frames: list[Frame], scratch: dict) -> None:
        """Examine ``op``; ``scratch``: this pattern's notes across the calls of one pass."""

    @abstractmethod
    def finish(self, frame: Frame) -> list:
        """The records of ``frame``'s call (a list of ``BlockMaps``); may add to ``frame.candidates``."""

    def owner(self, frames: list[Frame], accepts: Callable[[Frame], bool]) -> Frame | None:
        """The call an operation of this kind belongs to: the innermost one the user named as this kind,
        else the innermost that ``accepts`` it (the block is the innermost module that computes it)."""
        forced = [frame for frame in frames if frame.forced == self.kind]
        if forced:
            return forced[-1]
        return next((frame for frame in reversed(frames) if frame.reads(self.kind) and accepts(frame)), None)


def storage_key(tensor: Tensor) -> int | None:
    """The address of the memory a tensor views (views of one tensor share it); None where there is none."""
    try:
        pointer = tensor.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return None
    return pointer or None


def shares_storage(a: Tensor, b: Tensor) -> bool:
    key = storage_key(a)
    return key is not None and key == storage_key(b)


def effective_shape(tensor: Tensor) -> tuple[int, ...]:
    """The shape with broadcast (``expand`` ed, stride-0) axes as 1: what a gate really varies along."""
    return tuple(1 if stride == 0 else size for size, stride in zip(tensor.shape, tensor.stride()))


def _name(func: Any) -> str:
    name = getattr(func, "name", None)
    return name() if callable(name) else str(func)


class Recorder(TorchDispatchMode):
    """Keeps every operation run while it is active (``ops``), in order."""

    def __init__(self):
        super().__init__()
        self.ops: list[Op] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        output = func(*args, **kwargs)
        self.ops.append(Op(_name(func), args, kwargs, output))
        return output


class Rewriter(TorchDispatchMode):
    """Hands every operation run while it is active to ``rewrite(name, args, kwargs, run)``, whose answer is the
    operation's output: ``run(args, kwargs)`` with other arguments, or another tensor (a knockout's flat map)."""

    def __init__(self, rewrite: Callable[[str, tuple, dict, Callable[[tuple, dict], Any]], Any]):
        super().__init__()
        self.rewrite = rewrite

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return self.rewrite(_name(func), args, kwargs or {}, lambda args, kwargs: func(*args, **kwargs))


class Observer(TorchDispatchMode):
    """Hands every operation run while it is active to ``patterns``, with the watched calls (``frames``)."""

    def __init__(self, patterns: list[Pattern]):
        super().__init__()
        self.patterns = patterns
        self.frames: list[Frame] = []
        self.scratch: dict[str, dict] = {pattern.kind: {} for pattern in patterns}
        self.entered = 0
        self.paused = 0  # > 0 while attnlens itself computes (records, comparisons): those are not the model's

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        output = func(*args, **kwargs)
        if self.frames and not self.paused:
            op = Op(_name(func), args, kwargs, output)
            for frame in self.frames:
                frame.counts[op.name] += 1
            for pattern in self.patterns:
                try:
                    pattern.see(op, self.frames, self.scratch[pattern.kind])
                except Exception:  # noqa: BLE001 - watching must never break the model's own forward
                    log.debug("pattern %s could not read %s", pattern.kind, op.name, exc_info=True)
        return output

    def push(self, frame: Frame) -> None:
        """A watched call begins (the mode is entered with the first one, unless it is on already)."""
        self.frames.append(frame)
        if self.entered == 0:
            self.__enter__()
        self.entered += 1

    def pop(self, frame: Frame) -> bool:
        """A watched call ends; False if it was not the innermost one (a call that failed left others open)."""
        if not self.frames or self.frames[-1] is not frame:
            return False
        self.frames.pop()
        self.entered -= 1
        if self.entered == 0:
            self.__exit__(None, None, None)
            for notes in self.scratch.values():
                notes.clear()
        return True

    def close(self) -> None:
        """Leave the mode whatever was left open (a forward that raised)."""
        while self.frames:
            self.pop(self.frames[-1])


def first_image_tensor(args: tuple, kwargs: dict) -> Tensor | None:
    """A module call's first 4-D floating-point tensor argument (``x`` of a block), if any."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, Tensor) and value.dim() == 4 and value.is_floating_point():
            return value
    return None
