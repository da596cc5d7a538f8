"""Models: backbones, where the blocks go in them, and loading (``loading.load_model``), one file per source
(``builtin`` names, users' ``factories``, ``checkpoints`` and trust; their ``weights`` and ``labels``; the ``probe``
pass that recognises the blocks), with how each model's input is made (``inputs``) and its output read
(``outputs``).

Names are imported on first use, so ``attnlens.models.options`` (the command line's flags) loads without torch.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

_SOURCES = {
    "InputGeometry": "inputs", "InputRecipe": "inputs",
    "BlockInfo": "probe", "LoadedModel": "loading", "ModelLoadError": "boundary", "imagenet_labels": "labels",
    "load_model": "loading", "load_trained_blocks": "weights", "read_state_dict": "weights",
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
