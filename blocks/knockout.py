"""Knockout: a model run with one block's map made flat, so that the block no longer prefers any place.

    with knockout(model, "plugins.gc") as done:
        output = model(x)
    done.flattened  # how many maps were made flat in that pass (0: the block computed none)

Each kind declares its flat map with itself (``blocks.kinds``: ``Kind.flat``, the sentence; ``Kind.flatten``, how):
GC's context mask uniform over positions, CA's gates their means over their rows and columns, ACmix's window
attention uniform over the taps, DCN's offsets zero (the mask kept); SPD has none. A block recognised by what it
computes is knocked out at the very tensor that was read (the operations of its call are rewritten as they run);
one of ours or a known structure where its parts make the map. This is an inference-time ablation of one trained
model, not a model trained without the block.

Like ``capture``, the hooks act only for the knockout active in the calling thread (a ``ContextVar``), so other
threads running the same model are untouched.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import partial

from torch import Tensor, nn

from .capture import reading_of
from .kinds import KINDS
from .observe import Frame, Rewriter, first_image_tensor

__all__ = ["Knockout", "knockout"]

_active: ContextVar[tuple[int, ...]] = ContextVar("attnlens_active_knockouts", default=())


@dataclass
class Knockout:
    """One knockout: the ``block`` (module name), its ``kind``, what is ``replaced`` (the kind's sentence), and once
    the model ran, how many maps were made ``flattened`` and in how many ``calls`` of the block."""

    block: str
    kind: str
    replaced: str
    flattened: int = 0
    calls: int = 0
    _stacks: list[ExitStack] = field(default_factory=list, repr=False)


@contextmanager
def knockout(model: nn.Module, block: str) -> Iterator[Knockout]:
    """Inside the ``with``: ``model``'s module ``block`` (as recognised, by ``recognise`` or a first ``capture``)
    runs with its map made flat. ``ValueError`` for a module that is no recognised block, or of a kind with no flat
    map (SPD)."""
    try:
        module = model.get_submodule(block)
    except AttributeError as error:
        raise ValueError(f"the model has no module {block!r}") from error
    reading = reading_of(module)
    if reading is None:
        raise ValueError(f"{block} is no block recognised in this model")
    kind = KINDS[reading.kind]
    if kind.flatten is None:
        raise ValueError(f"{block} ({reading.kind}): {kind.flat}")
    flattening = kind.flatten(module, reading.reader, reading.detail)
    state = Knockout(block, reading.kind, kind.flat)
    key = id(state)
    handles = [module.register_forward_pre_hook(partial(_enter, key, state, flattening), with_kwargs=True),
               module.register_forward_hook(partial(_leave, key, state), always_call=True)]
    for name, answer in flattening.outputs.items():
        handles.append(module.get_submodule(name).register_forward_hook(partial(_replace, key, state, answer)))
    token = _active.set((*_active.get(), key))
    try:
        yield state
    finally:
        _active.reset(token)
        for handle in handles:
            handle.remove()
        while state._stacks:
            state._stacks.pop().close()


def _enter(key: int, state: Knockout, flattening, module, args, kwargs) -> None:
    if key not in _active.get():
        return
    state.calls += 1
    stack = ExitStack()
    if flattening.within is not None:
        stack.enter_context(flattening.within())
        state.flattened += 1
    if flattening.rewrite is not None:
        frame = Frame(type(module).__name__, module, first_image_tensor(args, kwargs))

        def rewrite(name, op_args, op_kwargs, run):
            return flattening.rewrite(name, op_args, op_kwargs, run, frame)

        stack.callback(lambda: setattr(state, "flattened", state.flattened + frame.state.get("flattened", 0)))
        stack.enter_context(Rewriter(rewrite))
    state._stacks.append(stack)


def _leave(key: int, state: Knockout, module, args, output) -> None:
    if key in _active.get() and state._stacks:
        state._stacks.pop().close()


def _replace(key: int, state: Knockout, answer, module, args, output):
    if key not in _active.get() or not isinstance(output, Tensor):
        return None
    flat = answer(output)
    if flat is not output:
        state.flattened += 1
    return flat
