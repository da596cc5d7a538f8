"""Where attnlens calls a user's code: their factories, their checkpoints' code, their models' forward.

User code is hostile by accident: it raises, exits (``sys.exit``), raises ``BaseException`` subclasses (a
watchdog's), runs out of memory, prints. ``users_code`` turns whatever it raises into one exception that
names the model and says what was raised, in one line (``ModelRunError``); ``one_line`` makes any error
message one line (torch's state_dict and ``weights_only`` messages, PyYAML's parser errors are summarised).
Only ``KeyboardInterrupt`` passes through. An accelerator's out-of-memory (``torch.OutOfMemoryError``; the CPU
allocator raises a ``RuntimeError``) is a ``ModelRunError`` that is ``transient``: the memory other work holds,
so the server answers 503 and "try again" where a model's own failure answers 502.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["ModelLoadError", "ModelRunError", "is_memory_error", "one_line", "users_code", "what_was_raised"]


def is_memory_error(error: BaseException) -> bool:
    """A Python ``MemoryError``, torch's out-of-memory error, or the CPU allocator's refusal (a ``RuntimeError``)."""
    return isinstance(error, (MemoryError, torch.OutOfMemoryError)) or (
        isinstance(error, RuntimeError) and "can't allocate memory" in str(error))


_STATE_DICT_PARTS = (("missing", r"Missing key\(s\) in state_dict: (.*?)\.\s*$"),
                     ("unexpected", r"Unexpected key\(s\) in state_dict: (.*?)\.\s*$"))
_SIZE_MISMATCH = re.compile(r"size mismatch for ([^:]+):")
_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
_ALLOCATION = re.compile(r"tried to allocate (\d+) bytes")


def _size(count: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count} bytes"


def _state_dict_summary(text: str) -> str | None:
    """torch's strict ``load_state_dict`` error (one line per kind of problem) as counts and the first of each."""
    if "Error(s) in loading state_dict" not in text:
        return None
    module = re.search(r"state_dict for (\w+)", text)
    parts = []
    for label, pattern in _STATE_DICT_PARTS:
        found = re.search(pattern, text, re.MULTILINE)
        if found:
            keys = re.findall(r'"([^"]+)"', found[1])
            parts.append(f"{len(keys)} {label} (first {keys[0]})" if keys else "")
    misshapen = _SIZE_MISMATCH.findall(text)
    if misshapen:
        parts.append(f"{len(misshapen)} misshapen (first {misshapen[0].strip()})")
    return (f"the weights do not fit {module[1] if module else 'the model'}: "
            + "; ".join(part for part in parts if part) + " keys")


def one_line(error: BaseException | str) -> str:
    """An error as one line: ``Type: message`` for exceptions (their own text only for attnlens' own), long
    library messages summarised, anything else cut at its first line (with where, for YAML)."""
    text = error if isinstance(error, str) else str(error)
    summary = _state_dict_summary(text)
    if summary is not None:
        return summary
    if "Weights only load failed" in text:
        found = _UNSUPPORTED_GLOBAL.search(text)
        return ("the file holds Python objects besides tensors (loading it would run code)"
                + (f": {found[1]}" if found else ""))
    allocation = _ALLOCATION.search(text)
    if allocation and "can't allocate memory" in text:  # the CPU allocator's refusal
        return f"out of memory on the CPU (it tried to allocate {_size(int(allocation[1]))})"
    mark = getattr(error, "problem_mark", None)  # PyYAML: where the parser stopped
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    first = lines[0] if lines else (type(error).__name__ if not isinstance(error, str) else "")
    if mark is not None and getattr(error, "problem", None):
        first = f"{error.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return first


def what_was_raised(error: BaseException) -> str:
    """What a user's code raised, in one line: the exception's type and the first line of its message."""
    if isinstance(error, SystemExit):
        return f"SystemExit({error.code!r}): its code called sys.exit"
    return f"{type(error).__name__}: {one_line(error)}" if str(error).strip() else type(error).__name__


class ModelLoadError(Exception):
    """A model or checkpoint that cannot be used, with a message that says what to do."""


class ModelRunError(Exception):
    """A loaded model failed on an input: what it raised (type, first line), said in one line that names the
    model. ``memory``: it ran out of memory; ``transient``: of an accelerator's (``torch.OutOfMemoryError``), which
    may pass once other work frees it."""

    def __init__(self, model: str, error: BaseException, during: str = "on this image"):
        self.model, self.error, self.during = model, error, during
        self.memory = is_memory_error(error)
        self.transient = isinstance(error, torch.OutOfMemoryError)
        self.raised = what_was_raised(error)
        what = "ran out of memory" if self.memory else "failed"
        super().__init__(f"the model {model} {what} {during}: {self.raised}")


@contextmanager
def users_code(model: str, during: str = "on this image") -> Iterator[None]:
    """Run a model's own code: anything it raises (``SystemExit`` and ``BaseException`` subclasses included, an
    accelerator's out-of-memory too: ``ModelRunError.transient``) becomes ``ModelRunError``; ``KeyboardInterrupt``
    and attnlens' own ``ModelRunError`` pass through."""
    from .outputs import TargetError  # attnlens' own: the Grad-CAM target asked for

    try:
        yield
    except (KeyboardInterrupt, ModelRunError, TargetError):
        raise
    except BaseException as error:  # noqa: BLE001 - the user's code: said in one line
        raise ModelRunError(model, error, during) from error
