"""The probe pass: a model run once on a seeded noise image while ``attnlens.blocks`` recognises its blocks (twice for
a model that builds modules in its forward), giving each block's id, kind, feature stride and channels, the raw
output (from which the output reader is inferred) and the last feature stage (for reference maps)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from torch import Tensor, nn

from attnlens import blocks

from .boundary import ModelLoadError, what_was_raised
from .references import ReferenceLayers, find_reference_layers

if TYPE_CHECKING:
    from .loading import LoadedModel

__all__ = ["BlockInfo", "probe_image", "probe_pass"]


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


def probe_pass(model: LoadedModel, named_blocks: Mapping[str, str]) -> tuple[list[BlockInfo], Any, ReferenceLayers]:
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
