"""``capture``: read every block's maps during a forward pass, whatever the block's code is called.

    with capture(model) as maps:
        model(x)
    maps["layer3.1.gc"].heatmap  # (N, H, W)

**Recognition by computation.** A block is recognised by what it computes (``blocks.kinds``: each kind's
``Pattern``): a softmax over a module's H*W positions whose weights pool (GC), gates broadcast along rows
and columns that multiply its input (CA), a softmax over ``k*k`` window taps (ACmix), a ``deform_conv2d``
call (DCN), the four stride-2 phases of its input stacked on channels (SPD). The block is the innermost
module that computes it. Recognition watches every operation of one pass (``blocks.observe``), once per
model: the first ``capture`` of a model, or ``recognise(model, example_input)`` (``attnlens.load_model``
does it on its probe image). What it found is remembered per module, so later captures cost nothing
where nothing was found.

**Reading.** Where a module's structure is known (ours, the official code's, the forks' copies:
``blocks.kinds`` ``Reader`` s) and recognition found that reading its submodules' outputs gives exactly
what it computes, its maps are read that way, by hooks (no cost for the rest of the model). Anything
else recognised by computation is read by watching that module's own operations. A module the user
names (``blocks={"model.9": "ca"}``) is read as that kind: what it computes inside it, at any depth.

**Every call.** A block called several times in one pass keeps every call: the first under its module
name, the next as ``name#2``, ``name#3`` ...; calls inside one call that gate separate channel groups of
its input (a CA run on channel groups) are joined along the input's channels.

Hooks exist only inside the ``with`` block and are removed on exit, exceptions included. Each hook records
only for the capture active in the calling thread (a ``ContextVar``), so concurrent captures on one shared
model stay apart; captures nest (an inner ``capture`` records beside an outer one).
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, fields, replace
from functools import partial
from typing import Any
from weakref import WeakKeyDictionary

import torch
from torch import Tensor, nn

from .kinds import KINDS, BlockMaps, Call, Parts, Reader, reader_for
from .observe import Frame, Observer, Op, Pattern, Recorder, first_image_tensor

__all__ = ["Candidate", "FoundBlock", "Reading", "Recognition", "capture", "find_blocks", "reading_of", "recognise",
           "recognition_of"]

# the captures active in this thread (or task): each hook records only for the capture that registered it
_active_captures: ContextVar[tuple[int, ...]] = ContextVar("attnlens_active_captures", default=())


@dataclass(frozen=True)
class Reading:
    """How ``capture`` reads one module: its ``kind``, ``how`` it was recognised (in words), the structure
    ``reader`` used (None: its own operations are watched), what the kind's pattern learned about it
    (``detail``), and whether the user named it (then it keeps what it computes inside it, at any depth, in every
    later capture too)."""

    kind: str
    how: str
    reader: Reader | None = None
    detail: Any = None
    named: bool = False


@dataclass(frozen=True)
class FoundBlock:
    """A recognised block: module name, class, kind, how it was recognised, the records one pass gave
    (``name``, ``name#2`` ... for a block called several times)."""

    id: str
    class_name: str
    kind: str
    how: str
    records: tuple[str, ...]


@dataclass(frozen=True)
class Candidate:
    """A module seen but not read, and why."""

    id: str
    class_name: str
    why: str


@dataclass(frozen=True)
class Recognition:
    """What one observed pass found: the blocks, in execution order, and the candidates not read."""

    blocks: tuple[FoundBlock, ...]
    candidates: tuple[Candidate, ...]


# per module: the names of its children when it was recognised, and how it is read (None: not a block); a
# module whose children change is recognised again
_readings: WeakKeyDictionary[nn.Module, tuple[tuple[str, ...], Reading | None]] = WeakKeyDictionary()
_recognitions: WeakKeyDictionary[nn.Module, Recognition] = WeakKeyDictionary()
# the structure reader of each module, by the same rule (looking at every module anew took ~2 ms a capture)
_structures: WeakKeyDictionary[nn.Module, tuple[tuple[str, ...], tuple[str, Reader] | None]] = WeakKeyDictionary()

# what in a class name names a plug-in block (anywhere in it, or as a word of a CamelCase / snake_case name): such a
# module that computes none of the kinds is said to be a candidate
ATTENTION_PARTS = ("attention", "deform", "dcn", "acmix", "cbam", "coord", "context", "spd")
ATTENTION_WORDS = {"att", "attn", "gc", "se", "eca", "ema", "ca", "simam"}


def _attention_like(class_name: str) -> bool:
    words = re.findall(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+", class_name)
    return any(part in class_name.lower() for part in ATTENTION_PARTS) or \
        any(word.lower() in ATTENTION_WORDS for word in words)


def _structure_of(module: nn.Module) -> tuple[str, Reader] | None:
    children = tuple(module._modules)
    known = _structures.get(module)
    if known is None or known[0] != children:
        known = _structures[module] = (children, reader_for(module))
    return known[1]


def _current_readings(modules: list[tuple[str, nn.Module]]) -> dict[str, Reading] | None:
    """Name -> how each block among ``modules`` is read; None if any module was not recognised as it is now
    (never, or with other children since)."""
    readings = {}
    for name, module in modules:
        known = _readings.get(module)
        if known is None or known[0] != tuple(module._modules):
            return None
        if known[1] is not None:
            readings[name] = known[1]
    return readings


def reading_of(module: nn.Module) -> Reading | None:
    """How ``capture`` reads ``module`` as recognised (None: not a block, or not recognised as it is now)."""
    known = _readings.get(module)
    return known[1] if known is not None and known[0] == tuple(module._modules) else None


def recognition_of(model: nn.Module) -> Recognition | None:
    """What the last recognition of ``model`` found (None if it was never recognised as a whole)."""
    if isinstance(model, torch.jit.ScriptModule):
        return _unhookable(type(model).__name__)
    return _recognitions.get(model) if _current_readings(list(model.named_modules())) is not None else None


def _unhookable(class_name: str) -> Recognition:
    return Recognition((), (Candidate("", class_name, "a TorchScript module: its parts' calls cannot be hooked, so "
                                      "no block can be read (use the Python model)"),))


def recognise(model: nn.Module, *example_args: Any, blocks: Mapping[str, str] | None = None,
              **example_kwargs: Any) -> Recognition:
    """Run ``model(*example_args, **example_kwargs)`` once (no gradients) and recognise its blocks by what they
    compute; later ``capture`` s read them (a model that builds modules in that pass runs twice, so they are read
    too). ``blocks``: modules the user names, qualified name -> kind. A
    TorchScript module has no forward hooks to watch its parts by: nothing is recognised, the candidates say so."""
    if isinstance(model, torch.jit.ScriptModule):
        return _unhookable(type(model).__name__)
    for _ in range(2):  # again if the pass built modules (a child made in the first forward): they are read too
        modules = sum(1 for _ in model.modules())
        with torch.no_grad(), capture(model, blocks=blocks, observe=True):
            model(*example_args, **example_kwargs)
        if sum(1 for _ in model.modules()) == modules:
            break
    recognition = _recognitions.get(model)
    if recognition is None:
        raise RuntimeError("the example pass did not run the model")
    return recognition


def find_blocks(model: nn.Module, example_input: Any = None, blocks: Mapping[str, str] | None = None) -> dict[str, str]:
    """Qualified name -> kind (``gc, ca, acmix, dcn, spd``) of every block ``capture`` reads, in module order.

    With ``example_input``, the model runs on it once and its blocks are recognised by what they compute
    (``recognise``); without it, what an earlier recognition found, or for a model never recognised, the
    blocks whose structure is known (ours, the official code's, the forks' copies)."""
    if isinstance(model, torch.jit.ScriptModule):
        return {}
    if example_input is not None:
        recognise(model, example_input, blocks=blocks)
    elif blocks:
        raise ValueError("naming blocks needs an example input to check them on")
    readings = _current_readings(list(model.named_modules()))
    if readings is not None:
        return {name: reading.kind for name, reading in readings.items()}
    return {name: found[0] for name, module in model.named_modules() if (found := _structure_of(module))}


def _replay(module: nn.Module, args: tuple, kwargs: dict,
            outputs: Mapping[str, Callable[[Tensor], Tensor]] | None = None, input: Tensor | None = None) -> list[Op]:
    """``Frame.replay``: ``module(*args, **kwargs)`` again, under no capture, with ``outputs`` replacing the
    named children's outputs and ``input`` the block's input; its buffers (batch-norm statistics) as they were
    before."""
    if input is not None:
        x = first_image_tensor(args, kwargs)
        args = tuple(input if value is x else value for value in args)
        kwargs = {key: input if value is x else value for key, value in kwargs.items()}
    buffers = [(buffer, buffer.clone()) for buffer in module.buffers()]
    handles = [module.get_submodule(name).register_forward_hook(lambda _, __, output, answer=answer: answer(output))
               for name, answer in (outputs or {}).items()]
    token = _active_captures.set(())
    try:
        with torch.no_grad(), Recorder() as recorder:
            module(*args, **kwargs)
        return recorder.ops
    finally:
        _active_captures.reset(token)
        for handle in handles:
            handle.remove()
        for buffer, saved in buffers:
            buffer.copy_(saved)


def _detached(value):
    return value.detach() if isinstance(value, Tensor) else value


def _checked_names(model: nn.Module, blocks: Mapping[str, str] | None) -> dict[str, str]:
    """The user's ``name -> kind``, checked: every name a module of ``model``, every kind known."""
    named = dict(blocks or {})
    if not named:
        return named
    modules = dict(model.named_modules())
    for name, kind in named.items():
        if kind not in KINDS:
            raise ValueError(f"block {name}={kind}: the kind must be one of {', '.join(KINDS)}")
        if name not in modules:
            names = [m for m in modules if m]
            nearest = difflib.get_close_matches(name, names, n=3, cutoff=0.5) or \
                [m for m in names if name.endswith("." + m) or m.endswith("." + name.rsplit(".", 1)[-1])][:3]
            hint = f"; nearest: {', '.join(nearest)}" if nearest else ""
            raise ValueError(f"block {name}={kind}: the model has no module {name!r}{hint}")
    return named


def _finished(pattern: Pattern, frame: Frame) -> list[BlockMaps]:
    """The pattern's records of one call; none (said in the candidates) if it cannot read them: reading must
    never break the model's own forward."""
    try:
        return pattern.finish(frame)
    except Exception as error:  # noqa: BLE001
        frame.candidates.append(f"computes what looks like {pattern.kind}, but reading it failed: "
                                f"{type(error).__name__}: {error}")
        return []


def _same_maps(ours: list[BlockMaps], theirs: list[BlockMaps]) -> bool:
    """Whether two readings of one call agree (same records, heatmaps equal to float precision)."""
    if len(ours) != len(theirs):
        return False
    for a, b in zip(ours, theirs):
        if a.type != b.type or a.heatmap.shape != b.heatmap.shape:
            return False
        scale = float(b.heatmap.abs().max()) if b.heatmap.numel() else 0.0
        if not torch.allclose(a.heatmap.float(), b.heatmap.float(), rtol=1e-4, atol=1e-6 * max(scale, 1.0)):
            return False
    return True


@dataclass
class _Seen:
    """What observation saw of one module over a pass (several calls possibly)."""

    module: nn.Module
    structure: tuple[str, Reader] | None
    named: str | None
    kinds: list[str] = field(default_factory=list)  # per call, the kind read
    by_structure: list[bool] = field(default_factory=list)  # per call, whether its names read it exactly
    records: list[str] = field(default_factory=list)
    candidates: list[str] = field(default_factory=list)
    structure_error: str | None = None
    names_differ: bool = False  # its names are a known structure's, but reading them gives other maps
    detail: Any = None
    called: bool = False


class _Capture:
    """One ``capture``: its hooks, its records, the observation when it recognises."""

    def __init__(self, model: nn.Module, named: dict[str, str], observe: bool):
        self.model, self.named, self.observing = model, named, observe
        self.maps: dict[str, BlockMaps] = {}
        self.key = id(self.maps)
        self.handles: list = []
        self.calls: dict[str, int] = {}
        self.seen: dict[str, _Seen] = {}
        self.completed = False
        self.observer: Observer | None = None

    # --- recording -------------------------------------------------------------------------------------

    def active(self) -> bool:
        return self.key in _active_captures.get()

    def put(self, name: str, records: list[BlockMaps]) -> list[str]:
        keys = []
        for record in records:
            count = self.calls[name] = self.calls.get(name, 0) + 1
            key = name if count == 1 else f"{name}#{count}"
            self.maps[key] = replace(record, **{f.name: _detached(getattr(record, f.name)) for f in fields(record)})
            keys.append(key)
        return keys

    def new_pass(self, module, args) -> None:
        if self.active():
            self.calls.clear()

    def pass_done(self, module, args, output) -> None:
        if self.active():
            self.completed = True

    def record_part(self, parts: Parts, part: str, module, args, output) -> None:
        if self.active():
            parts.setdefault(part, []).append(Call(args, {}, output))

    def structure_records(self, reader: Reader, parts: Parts, module, args, kwargs, output) -> list[BlockMaps]:
        try:
            with torch.no_grad():
                return [reader.build(module, Call(args, kwargs, output), parts)]
        finally:
            parts.clear()

    def record_block(self, name: str, reader: Reader, parts: Parts, module, args, *rest) -> None:
        # (kwargs, output), or (output,) alone: torch registers a with_kwargs hook in two steps, so a forward
        # running in another thread at that moment (or at removal) calls it without kwargs
        kwargs, output = rest if len(rest) == 2 else ({}, rest[0])
        if self.active():
            self.put(name, self.structure_records(reader, parts, module, args, kwargs, output))

    # --- watching operations -----------------------------------------------------------------------------

    def enter(self, name: str, reading: Reading | None, module, args, kwargs) -> None:
        if not self.active():
            return
        forced = self.named.get(name) or (reading.kind if reading is not None and reading.named else None)
        frame = Frame(name, module, first_image_tensor(args, kwargs), only=None if reading is None else reading.kind,
                      forced=forced, detail=None if reading is None else reading.detail,
                      replay=partial(_replay, module, args, kwargs))
        module_frames = self.frames.setdefault(name, [])
        module_frames.append(frame)
        self.observer.push(frame)

    def leave(self, name: str, reading: Reading | None, parts: Parts | None, module, args, kwargs, output) -> None:
        if not self.active() or not self.frames.get(name):
            return
        frame = self.frames[name].pop()
        observer = self.observer
        if not observer.pop(frame):
            return
        if output is None:  # the call raised: nothing to read
            if parts is not None:
                parts.clear()
            return
        observer.paused += 1
        try:
            with torch.no_grad():
                if self.observing:
                    self.observe_call(name, frame, parts, module, args, kwargs, output)
                else:
                    self.put(name, _finished(KINDS[reading.kind].pattern, frame))
        finally:
            observer.paused -= 1

    def observe_call(self, name: str, frame: Frame, parts: Parts | None, module, args, kwargs, output) -> None:
        """One call seen while recognising: its records by computation and, where its structure is known, by
        names; which one is kept, and what was seen but not read."""
        seen = self.seen[name]
        seen.called = True
        computed: dict[str, list[BlockMaps]] = {}
        details: dict[str, Any] = {}  # what each kind's pattern learned of the module
        for kind_name, kind in KINDS.items():
            if frame.forced in (None, kind_name):
                frame.detail = None
                records = _finished(kind.pattern, frame)
                if records:
                    computed[kind_name] = records
                    details[kind_name] = frame.detail
        by_names: list[BlockMaps] = []
        if seen.structure is not None and parts is not None:
            try:
                by_names = self.structure_records(seen.structure[1], parts, module, args, kwargs, output)
            except Exception as error:  # noqa: BLE001 - a module with familiar names that reads otherwise
                seen.structure_error = f"{type(error).__name__}: {error}"
        structure_kind = seen.structure[0] if seen.structure and by_names else None
        preferred = frame.forced or (structure_kind if structure_kind in computed or not computed else None) or \
            next(iter(computed), None) or structure_kind
        if preferred is None or preferred not in computed and preferred != structure_kind:
            seen.candidates.extend(frame.candidates)
            return
        for other in computed:
            if other != preferred:
                seen.candidates.append(f"also computes {other} ({KINDS[other].pattern.description}), not read: one "
                                       f"kind per module; name a submodule with --block")
        exact = structure_kind == preferred and (preferred not in computed or _same_maps(by_names, computed[preferred]))
        seen.names_differ = seen.names_differ or (structure_kind == preferred and not exact)
        seen.kinds.append(preferred)
        seen.by_structure.append(exact)
        seen.detail = details.get(preferred, seen.detail)
        seen.records.extend(self.put(name, by_names if exact else computed[preferred]))

    # --- set-up and result -------------------------------------------------------------------------------

    def install(self, modules: list[tuple[str, nn.Module]], readings: dict[str, Reading]) -> None:
        """Hooks: on every module when observing, else on the blocks ``readings`` name (how each is read)."""
        model = self.model
        self.frames: dict[str, list[Frame]] = {}
        watched = sorted({reading.kind for reading in readings.values() if reading.reader is None})
        if self.observing or watched:
            self.observer = Observer([KINDS[kind].pattern for kind in (KINDS if self.observing else watched)])
        self.handles.append(model.register_forward_pre_hook(self.new_pass))
        self.handles.append(model.register_forward_hook(self.pass_done))
        if self.observing:
            for name, module in modules:
                structure = _structure_of(module)
                self.seen[name] = _Seen(module, structure, self.named.get(name))
                parts = self.hook_parts(module, structure[1]) if structure else None
                self.watch(name, module, None, parts)
            return
        modules_by_name = dict(modules)
        for name, reading in readings.items():
            module = modules_by_name[name]
            if reading.reader is None:
                self.watch(name, module, reading, None)
            else:
                parts = self.hook_parts(module, reading.reader)
                self.handles.append(module.register_forward_hook(partial(self.record_block, name, reading.reader, parts),
                                                                 with_kwargs=True))

    def hook_parts(self, module: nn.Module, reader: Reader) -> Parts:
        parts: Parts = {}
        for part in reader.parts(module):
            submodule = getattr(module, part)
            self.handles.append(submodule.register_forward_hook(partial(self.record_part, parts, part)))
        return parts

    def watch(self, name: str, module: nn.Module, reading: Reading | None, parts: Parts | None) -> None:
        self.handles.append(module.register_forward_pre_hook(partial(self.enter, name, reading), with_kwargs=True))
        self.handles.append(module.register_forward_hook(partial(self.leave, name, reading, parts), with_kwargs=True,
                                                         always_call=True))

    def conclude(self) -> None:
        """After a pass that recognised: remember how each module is read, and what was found."""
        found, candidates = [], []
        read = {name for name, seen in self.seen.items() if seen.kinds}
        for name, seen in self.seen.items():
            module, class_name = seen.module, type(seen.module).__name__
            reading = None
            if seen.kinds:
                kind = max(set(seen.kinds), key=seen.kinds.count)
                exact = all(seen.by_structure)
                reader = seen.structure[1] if exact and seen.structure else None
                how = ("named by the user, " if seen.named else "") + (
                    f"by names: {reader.description} (checked against what it computes)" if reader else
                    f"by computation: {KINDS[kind].pattern.description}")
                if seen.names_differ:
                    how += f" (its names are those of {seen.structure[1].description}, but reading them gives " \
                           f"other maps than it computes)"
                reading = Reading(kind, how, reader, seen.detail, named=bool(seen.named))
                found.append(FoundBlock(name, class_name, kind, how, tuple(seen.records)))
            why = list(dict.fromkeys(seen.candidates))
            if seen.named and not seen.kinds:
                why.insert(0, f"named as {seen.named}, but it did not run in this pass" if not seen.called else
                              f"named as {seen.named}, but it computes nothing read as {seen.named} (looked for "
                              f"{KINDS[seen.named].pattern.description})")
            elif seen.structure and not seen.kinds:
                why.append(f"its names are those of {seen.structure[1].description}, but "
                           + (f"reading them failed ({seen.structure_error})" if seen.structure_error else
                              "it did not run in this pass" if not seen.called else "it computed no maps"))
            elif not seen.kinds and not why and name and _attention_like(class_name) and seen.called and \
                    not any(other.startswith(name + ".") or name.startswith(other + ".") for other in read):
                why.append("named like an attention block, but it computes none of the kinds attnlens reads")
            if why:
                candidates.extend(Candidate(name, class_name, reason) for reason in why)
            _readings[module] = (tuple(module._modules), reading)
        order = {key: i for i, key in enumerate(self.maps)}
        found.sort(key=lambda block: min((order.get(key, len(order)) for key in block.records), default=len(order)))
        _recognitions[self.model] = Recognition(tuple(found), tuple(candidates))

    def close(self) -> None:
        if self.observer is not None:
            self.observer.close()
        for handle in self.handles:
            handle.remove()


@contextmanager
def capture(model: nn.Module, *, blocks: Mapping[str, str] | None = None,
            observe: bool | None = None) -> Iterator[dict[str, BlockMaps]]:
    """Record the maps of every block of ``model`` run inside the ``with`` block.

    Yields a dict, filled as the blocks run (so in execution order): record key (the module's qualified
    name; ``name#2`` ... for its later calls in one pass) -> record (``blocks.kinds``) with ``.type``,
    ``.heatmap`` and the block's full maps. ``blocks``: modules the user names as a kind (name -> kind; a
    new recognition). ``observe``: recognise in this pass (default: when the model was never recognised).
    ``ValueError`` for a named module the model lacks or an unknown kind. A TorchScript module is run
    unread (TorchScript supports no forward hooks): the dict stays empty.
    """
    if isinstance(model, torch.jit.ScriptModule):  # TorchScript supports no forward hooks: nothing to read
        yield {}
        return
    named = _checked_names(model, blocks)
    modules = list(model.named_modules())
    readings = _current_readings(modules)
    observing = observe if observe is not None else bool(named) or readings is None
    state = _Capture(model, named, observing)
    try:
        state.install(modules, {} if observing or readings is None else readings)
        token = _active_captures.set((*_active_captures.get(), state.key))
        try:
            yield state.maps
        finally:
            _active_captures.reset(token)
        if observing and state.completed:
            state.conclude()
    finally:
        state.close()
