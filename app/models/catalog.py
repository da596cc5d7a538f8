"""Which models a server offers: a models file (TOML), one ``--model``, or the default pair.

A models file holds ``[[models]]`` tables, each with a ``name`` and the keys of ``ModelOptions`` (``model``,
``weights``, ``task``, ``input_size``, ``resize``, ``normalize``, ``labels``, ``trust_checkpoint``, ...)::

    [[models]]
    name = "lite0"

    [[models]]
    name = "my-yolo"
    model = "runs/train/exp/weights/best.pt"
    trust_checkpoint = true
    labels = "data.yaml"

Without a file or ``--model``, the server offers the default model and the same model with its blocks
untrained, so that a newcomer can compare them at once.
"""
from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import ValidationError

from .boundary import ModelLoadError
from .builtin import DEFAULT_MODEL
from .options import ModelOptions, option_aliases

__all__ = ["DEFAULT_PAIR", "models_to_serve", "read_models_file"]

DEFAULT_PAIR = (DEFAULT_MODEL, "efficientnet_lite0_untrained")


def read_models_file(path: str | Path, base: ModelOptions | None = None) -> list[tuple[str, ModelOptions]]:
    """``(name, options)`` of each ``[[models]]`` table; keys a table leaves out come from ``base`` (the
    server's own options, e.g. ``device``). ``ModelLoadError`` with the table and key for anything wrong."""
    path = Path(path)
    try:
        tables = tomllib.loads(path.read_text(encoding="utf-8")).get("models")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ModelLoadError(f"cannot read the models file {path}: {error}") from error
    if not isinstance(tables, list) or not tables or not all(isinstance(table, dict) for table in tables):
        raise ModelLoadError(f"{path}: expected one or more [[models]] tables, each with a name")
    # the modules --block names are one model's, as are its weights
    inherited = base.model_dump(exclude_unset=True, exclude={"model", "weights", "blocks"}) if base else {}
    models: list[tuple[str, ModelOptions]] = []
    aliases = option_aliases()
    for number, table in enumerate(tables, 1):
        table = {key.replace("-", "_"): value for key, value in table.items()}
        table = {aliases.get(key, key): value for key, value in table.items()}  # gradcam_layer: reference_layers
        name = table.pop("name", None)
        title = table.pop("title", "")  # a paper figure's column title (model_titles)
        if not isinstance(title, str):
            raise ModelLoadError(f"{path}: [[models]] table {number}: title must be a string")
        if not isinstance(name, str) or not name.strip():
            raise ModelLoadError(f"{path}: [[models]] table {number} needs a name")
        if name in dict(models):
            raise ModelLoadError(f"{path}: two models are named {name!r}")
        if unknown := set(table) - set(ModelOptions.model_fields):
            raise ModelLoadError(f"{path}: model {name!r}: unknown keys {', '.join(sorted(unknown))} (known: name, title, "
                                 f"{', '.join(ModelOptions.model_fields)})")
        try:
            models.append((name, ModelOptions(**(inherited | table))))
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
            raise ModelLoadError(f"{path}: model {name!r}: {problems}") from error
    return models


def models_to_serve(options: ModelOptions, models_file: str | Path | None = None) -> list[tuple[str, ModelOptions]]:
    """The models a server offers, the default first: a models file's, the one ``options.model``, or the
    default pair (the default model, and the same with untrained blocks)."""
    if models_file is not None:
        if options.model is not None:
            raise ModelLoadError("give either --model or --models (a models file), not both")
        return read_models_file(models_file, options)
    if options.model is not None:
        return [(options.model, options)]
    return [(name, options.model_copy(update={"model": name})) for name in DEFAULT_PAIR]


def model_titles(path: str | Path) -> dict[str, str]:
    """Each model's ``title`` in a models file (``attnlens figure``'s column titles), by name; read after
    ``read_models_file`` checked the file."""
    with open(path, "rb") as file:
        tables = tomllib.load(file).get("models", [])
    return {table["name"]: table["title"] for table in tables if isinstance(table, dict) and table.get("title")}
