"""A user's model from Python: ``package.module:factory`` (imported and called, whatever it raises said in one line),
or an ``nn.Module`` / ``ModelSpec`` given to ``load_model``, with the factory form's input defaults."""
from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from .boundary import ModelLoadError, one_line, what_was_raised
from .builtin import BUILTIN_MODELS, IMAGENET_RECIPE
from .inputs import InputRecipe
from .options import ModelSpec
from .weights import load_weights, read_state_dict

__all__ = ["takes_image_list", "user_factory", "user_module"]


def user_factory(spec: str, weights: str | None) -> ModelSpec:
    module_name, _, factory_name = spec.partition(":")
    if not module_name or not factory_name:
        raise ModelLoadError(f"--model must be one of {', '.join(sorted(BUILTIN_MODELS))}, 'package.module:factory' "
                             f"or a checkpoint file; got {spec!r}")
    try:
        factory = getattr(importlib.import_module(module_name), factory_name)
    except (ImportError, AttributeError) as error:
        raise ModelLoadError(f"cannot import {spec}: {one_line(error)} (is its folder the working directory or on "
                             f"PYTHONPATH?)") from error
    except KeyboardInterrupt:
        raise
    except BaseException as error:  # noqa: BLE001 - the user's module failed (or exited) while importing
        raise ModelLoadError(f"importing {module_name} for {spec} failed: {what_was_raised(error)}") from error
    try:
        made = factory()
    except KeyboardInterrupt:
        raise
    except BaseException as error:  # noqa: BLE001 - the user's code (sys.exit included): one line saying what it raised
        raise ModelLoadError(f"{spec}() raised {what_was_raised(error)}") from error
    return user_module(made, f"{spec}() returned", weights)


def user_module(made: Any, what: str, weights: str | None) -> ModelSpec:
    """A user's ``nn.Module`` or ``ModelSpec`` (from a factory, or given in Python) with the factory form's
    defaults filled in."""
    built = made if isinstance(made, ModelSpec) else ModelSpec(made)
    if not isinstance(built.module, nn.Module):
        raise ModelLoadError(f"{what} {type(built.module).__name__}, not a torch.nn.Module or attnlens.ModelSpec")
    if weights:
        load_weights(built.module, read_state_dict(weights), weights)
    default = IMAGENET_RECIPE
    if takes_image_list(built.module):  # torchvision detectors normalise and resize inside
        default = InputRecipe(int(built.module.transform.min_size[0]), "short-side", "none")
    return ModelSpec(built.module, built.input_size or default.size, built.resize or default.resize,
                     built.normalize or default.normalize, built.labels, built.task, built.reference_layers)


def takes_image_list(module: nn.Module) -> bool:
    """torchvision detectors (Faster R-CNN, RetinaNet, SSD, FCOS ...): a list of images in, a list of dicts out."""
    return type(getattr(module, "transform", None)).__name__ == "GeneralizedRCNNTransform"
