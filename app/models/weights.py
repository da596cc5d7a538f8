"""State dicts: read from a file (``.safetensors``, or ``.pt`` / ``.pth`` without unpickling code) and fitted to a
module, with an error naming the missing, unexpected and misshapen keys."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from .boundary import ModelLoadError, one_line

__all__ = ["load_trained_blocks", "load_weights", "read_state_dict"]


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a ``.safetensors`` file, or of a ``.pt`` / ``.pth`` file read with ``weights_only=True``.

    A checkpoint dict holding the weights under ``"state_dict"`` or ``"model"`` is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file becomes one clear message
        raise ModelLoadError(f"cannot read weights from {path}: {one_line(error)}") from error
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ModelLoadError(f"{path} holds no state_dict (a mapping of names to tensors)")
    return dict(state)


def _listed(keys, limit: int = 8) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:limit]) + (f" ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def _misfits(module: nn.Module, state: Mapping[str, Tensor]) -> tuple[set[str], set[str], list[str]]:
    """Keys of ``module`` missing from ``state``, keys ``state`` has beyond them, and shape mismatches."""
    expected = module.state_dict()
    misshapen = [f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}"
                 for k in set(expected) & set(state) if state[k].shape != expected[k].shape]
    return set(expected) - set(state), set(state) - set(expected), misshapen


def _refuse(what: str, missing: set[str], unexpected: set[str], misshapen: list[str]) -> None:
    problems = [f"missing keys: {_listed(missing)}" if missing else "",
                f"unexpected keys: {_listed(unexpected)}" if unexpected else "",
                f"shape mismatches: {_listed(misshapen)}" if misshapen else ""]
    if any(problems):
        raise ModelLoadError(f"{what}: " + "; ".join(p for p in problems if p))


def load_weights(module: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with an error naming the missing, unexpected and misshapen keys."""
    _refuse(f"weights in {source} do not fit {type(module).__name__}", *_misfits(module, state))
    module.load_state_dict(state, strict=True)


def load_trained_blocks(module: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Load a file of trained block parameters (a subset of the model's keys; every key must fit)."""
    _, unexpected, misshapen = _misfits(module, state)
    _refuse(f"trained blocks in {source} do not fit", set(), unexpected, misshapen)
    module.load_state_dict(state, strict=False)
