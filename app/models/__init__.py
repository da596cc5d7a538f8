"""Models: backbones, where the blocks go in them, and loading (built-in names, users' factories and
checkpoints), with how each model's input is made (``inputs``) and its output read (``outputs``).

Names are imported on first use, so ``attnlens.models.options`` (the command line's flags) loads without torch.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

_SOURCES = {
    "InputGeometry": "inputs", "InputRecipe": "inputs",
    "BlockInfo": "loading", "LoadedModel": "loading", "ModelLoadError": "loading", "imagenet_labels": "loading",
    "load_model": "loading", "load_trained_blocks": "loading", "read_state_dict": "loading",
    "resolve_device": "loading",
    "ModelOptions": "options", "ModelSpec": "options",
    "Detections": "outputs",
}
__all__ = sorted(_SOURCES)


def __getattr__(name: str) -> Any:
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_SOURCES[name]}", __name__), name)
    globals()[name] = value
    return value
