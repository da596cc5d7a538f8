"""Class names: ImageNet's, a list or YOLO's dict of index -> name (models' and datasets' alike), a model's own
``names``, and a labels file (one per line, or YAML with ``names``)."""
from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from torch import nn

from .boundary import ModelLoadError, one_line

__all__ = ["checked_labels", "imagenet_labels", "label_list", "names_of", "read_labels"]


@cache
def imagenet_labels() -> tuple[str, ...]:
    text = resources.files("attnlens").joinpath("data/imagenet_classes.txt").read_text(encoding="utf-8")
    return tuple(text.splitlines())


def label_list(names: Any) -> list[str]:
    """Class names given as a list, or as YOLO's dict of index -> name (a missing index is named ``class N``);
    ``ValueError`` for anything else (models' labels and datasets' names alike)."""
    if isinstance(names, Mapping):
        try:
            by_index = {int(index): str(name) for index, name in names.items()}
        except (TypeError, ValueError) as error:
            raise ValueError(f"a dict of names needs class indices as keys ({one_line(error)})") from error
        if not by_index or min(by_index) < 0:
            raise ValueError("a dict of names needs class indices 0, 1, ... as keys")
        return [by_index.get(i, f"class {i}") for i in range(max(by_index) + 1)]
    if isinstance(names, (list, tuple)):
        return [str(name) for name in names]
    raise ValueError(f"expected a list of names or a dict of index: name, got {type(names).__name__}")


def checked_labels(names: Any, what: str) -> list[str]:
    try:
        return label_list(names)
    except ValueError as error:
        raise ModelLoadError(f"{what}: {error}") from error


def names_of(module: nn.Module) -> list[str] | None:
    """Class names a model carries (YOLO's ``names``: a list or a dict index -> name)."""
    names = getattr(module, "names", None)
    if not isinstance(names, (Mapping, list, tuple)) or not names:
        return None
    try:
        return checked_labels(names, "the model's names")
    except ModelLoadError:
        return None


def read_labels(path: str) -> list[str]:
    """Class names from a file: one per line, or YAML whose ``names`` is a list or a dict (YOLO's data.yaml)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as error:
        raise ModelLoadError(f"cannot read labels from {path}: {error}") from error
    if file.suffix in (".yaml", ".yml") or text.lstrip().startswith("names"):
        import yaml

        try:
            names = (yaml.safe_load(text) or {}).get("names")
        except (yaml.YAMLError, AttributeError) as error:
            raise ModelLoadError(f"{path}: not YAML with a 'names' list or dict ({one_line(error)})") from error
        if isinstance(names, (dict, list)) and names:
            return checked_labels(names, path)
        raise ModelLoadError(f"{path}: 'names' must be a list or a dict of index: name")
    return [line.strip() for line in text.splitlines() if line.strip()]
