"""The options that say which model to load and how to feed and read it, declared once.

The same options are the flags of ``attnlens analyze`` and ``attnlens serve``, the ``ATTNLENS_*``
variables of the server and the keys of a models file. ``None`` means the default of the model's form:

| form | input size | resize | normalize | labels |
|---|---|---|---|---|
| built-in name | its own | its own | its own | its own |
| ``package.module:factory`` | 224 | short-side | imagenet | ImageNet's for 1000 classes |
| ``path/to/best.pt`` (whole-model checkpoint) | 640 | letterbox | none | the model's ``names`` |

A factory may also return a ``ModelSpec``: the module with its own defaults for these.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

if TYPE_CHECKING:
    from torch import nn


__all__ = ["EnvironmentModelOptions", "ModelOptions", "ModelSpec", "option_aliases", "parse_named_blocks"]


class ModelOptions(BaseModel):
    """Which model, its weights, where it runs, how images become its input and how its output is read."""

    model: str | None = Field(None, description="efficientnet_lite0 (default), efficientnet_lite0_untrained (its "
                              "blocks at initialisation), efficientnet_lite0_plain, resnet18, "
                              "resnet50, package.module:factory, or path/to/checkpoint.pt (a whole pickled model)")
    weights: str | None = Field(None, description="state_dict file for the model (.pt/.pth read with weights_only, "
                                "or .safetensors)")
    device: str | None = Field(None, description="cpu, cuda, cuda:1 ... (default: CUDA when available)")
    precision: str = Field("auto", description="auto (bf16 autocast on CUDA, fp32 on CPU), fp32, bf16 or fp16")
    task: Literal["auto", "classify", "detect", "maps"] = Field(
        "auto", description="how the output is read: auto (from its layout), classify (class logits), detect (boxes), "
        "maps (not read: maps only)")
    input_size: int | None = Field(None, ge=16, le=4096, description="input size in pixels: the short side "
                                   "(short-side) or the long side (letterbox); default per model form")
    resize: Literal["short-side", "letterbox"] | None = Field(
        None, description="short-side (the short side becomes the input size) or letterbox (YOLO: the long side, "
        "grey padding to a multiple of 32)")
    normalize: str | None = Field(None, description="imagenet, none (YOLO: RGB in [0, 1]), lite (EfficientNet-Lite), "
                                  "or M,M,M/S,S,S")
    labels: str | None = Field(None, description="class names: a file with one per line, or YAML with names as a "
                               "list or dict (YOLO's data.yaml)")
    conf: float = Field(0.25, ge=0, le=1, description="detections: confidence threshold")
    iou: float = Field(0.45, ge=0, le=1, description="detections: IoU threshold of class-wise NMS")
    max_det: int = Field(100, ge=1, description="detections: at most this many per image")
    reference_layers: Annotated[list[str] | None, NoDecode] = Field(
        None, validation_alias=AliasChoices("reference_layers", "gradcam_layer", "ATTNLENS_REFERENCE_LAYERS",
                                            "ATTNLENS_GRADCAM_LAYER"),
        description="the layers reference maps (Grad-CAM, LayerCAM ...) are computed at, comma-separated qualified "
        "module names, fused when several (default: a detector's head inputs, one per scale; a classifier's last "
        "feature stage)", json_schema_extra={"aliases": ["--gradcam-layer"], "metavar": "A,B,..."})
    trust_checkpoint: bool = Field(False, description="allow loading a whole-model checkpoint, a pickle that runs "
                                   "code from the file when loaded (YOLO best.pt); only for files you trust")
    blocks: Annotated[dict[str, str] | None, NoDecode] = Field(
        None, description="MODULE=KIND: read this module as a block of this kind (gc, ca, acmix, dcn, spd) where "
        "recognition misses it; repeatable (--block), comma-separated in ATTNLENS_BLOCKS",
        json_schema_extra={"flag": "--block", "metavar": "MODULE=KIND"})

    @field_validator("normalize")
    @classmethod
    def _known_normalize(cls, value: str | None) -> str | None:
        if value is not None:
            from .inputs import parse_normalize

            parse_normalize(value)
        return value

    @field_validator("reference_layers", mode="before")
    @classmethod
    def _layer_list(cls, value: Any) -> list[str] | None:
        """``"model.15,model.18"`` or a list -> the names (checked against the model when it loads)."""
        if isinstance(value, str):
            value = value.split(",")
        names = [str(name).strip() for name in value or () if str(name).strip()]
        return names or None

    @field_validator("blocks", mode="before")
    @classmethod
    def _named_blocks(cls, value: Any) -> dict[str, str] | None:
        """``{"model.9": "ca"}``, ``["model.9=ca", ...]`` or ``"model.9=ca,model.12=gc"`` -> a dict (the names and
        kinds are checked against the model when it loads)."""
        return parse_named_blocks(value)


def option_aliases() -> dict[str, str]:
    """The old names a models file may still give options by (``gradcam_layer``), to their names."""
    return {alias: name for name, field in ModelOptions.model_fields.items()
            if isinstance(field.validation_alias, AliasChoices)
            for alias in field.validation_alias.choices if isinstance(alias, str) and alias.islower() and alias != name}


class EnvironmentModelOptions(BaseSettings, ModelOptions):
    """``ModelOptions`` read from ``ATTNLENS_<OPTION>`` variables (e.g. ``ATTNLENS_TRUST_CHECKPOINT=1``);
    keyword arguments (command-line flags) win."""

    model_config = SettingsConfigDict(env_prefix="ATTNLENS_", extra="ignore")

    def model_options(self) -> ModelOptions:
        """Just the model options (without what a subclass adds, e.g. the server's settings)."""
        return ModelOptions(**{name: getattr(self, name) for name in ModelOptions.model_fields})


@dataclass
class ModelSpec:
    """What a ``package.module:factory`` may return instead of a bare module: the module and its own
    defaults (any left ``None`` take the factory form's defaults; command-line options still win).
    ``labels``: class names, or a file as ``--labels`` takes."""

    module: nn.Module  # a torch.nn.Module (checked where it is loaded)
    input_size: int | None = None
    resize: str | None = None
    normalize: str | None = None
    labels: list[str] | str | None = None
    task: str | None = None
    reference_layers: list[str] | None = None  # the default layers of reference maps
    blocks_trained: bool | None = None  # known for the built-ins only (the default: its shipped trained blocks)


def parse_named_blocks(value: Any) -> dict[str, str] | None:
    """Blocks the user names: a mapping, a list of ``MODULE=KIND`` or one comma-separated string of them."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    if isinstance(value, Mapping):
        pairs = [(str(name), str(kind)) for name, kind in value.items()]
    elif isinstance(value, (list, tuple)):
        pairs = []
        for item in value:
            name, equals, kind = str(item).partition("=")
            if not equals or not name.strip() or not kind.strip():
                raise ValueError(f"a block is named as MODULE=KIND (e.g. model.9=ca), got {item!r}")
            pairs.append((name.strip(), kind.strip()))
    else:
        raise ValueError(f"blocks: MODULE=KIND pairs, got {type(value).__name__}")
    return dict(pairs)
