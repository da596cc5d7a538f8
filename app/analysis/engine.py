"""The analysis engine: image -> tensor -> one forward pass under ``blocks.capture`` -> one ``Analysis`` per image.

Data flows one way: ``prepare`` (the model's input recipe: resize, letterbox), ``run`` (forward, the
model's output read as class probabilities or boxes, every block's maps and, when asked, a Grad-CAM
reference from a backward pass), then ``analyses`` splits the batch into one ``Analysis`` per image
(``attnlens.analysis.result``), which renders itself as the API's JSON, an npz file or a figure.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from attnlens import blocks
from attnlens.blocks.kinds import BlockMaps
from attnlens.models import InputGeometry, LoadedModel
from attnlens.models.boundary import ModelRunError, users_code
from attnlens.models.gradcam import LayerActivation, grad_cam_map
from attnlens.models.outputs import TargetError

from .options import MAX_SIZE, MIN_SIZE, AnalyzeOptions
from .result import Analysis, Reference

__all__ = ["MAX_SIZE", "MIN_SIZE", "PRECISIONS", "AnalyzeOptions", "Engine", "RunResult", "resolve_precision"]

@dataclass
class RunResult:
    """One forward pass of a batch of N images: what the output reader gave (``classify``: probabilities
    ``(N, K)``; ``detect``: one ``Detections`` per image, input pixels; ``maps``: None), every block's maps,
    and the Grad-CAM references (one per image, None where not asked or nothing to explain)."""

    predictions: Any
    maps: dict[str, BlockMaps]
    input_size: tuple[int, int]  # (width, height) of the model input
    timings_ms: dict[str, float] = field(default_factory=dict)
    references: list[Reference | None] = field(default_factory=list)


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"`` -> bf16 on CUDA (maps stay faithful: heatmap correlation with fp32 >= 0.99, same top-1, see
    tests/app/test_gpu.py), fp32 elsewhere; other values are checked."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be auto, {', '.join(PRECISIONS)}; got {precision!r}")
    return precision


class Engine:
    """Runs a loaded model on images and captures its blocks' maps, in fp32 or under bf16 / fp16 autocast."""

    def __init__(self, model: LoadedModel, precision: str = "fp32"):
        self.model = model
        self.precision = resolve_precision(precision, model.device)

    def prepare(self, image: Image.Image, size: int | None = None) -> tuple[Tensor, InputGeometry]:
        """Upright RGB image -> ``(1, 3, h, w)`` in [0, 1] by the model's input recipe, and its geometry."""
        return self.model.recipe.prepare(image, size)

    def run(self, batch: Tensor, gradcam: Sequence[int | None] | None = None) -> RunResult:
        """Forward a batch ``(N, 3, h, w)`` in [0, 1] under capture; maps stay on the model's device.

        ``gradcam``: one target per image (None: the top one) for Grad-CAM references, computed from the same
        pass (gradients only then; ``no_grad`` otherwise). ``TargetError`` for a target the output lacks;
        ``ModelRunError`` for a model that fails on the batch (whatever its code raises)."""
        start = time.perf_counter()
        model = self.model
        autocast = torch.autocast(model.device.type, dtype=PRECISIONS[self.precision], enabled=self.precision != "fp32")
        references: list[Reference | None] = [None] * batch.shape[0]
        if gradcam is None:
            with torch.no_grad(), autocast, blocks.capture(model.module) as maps:
                predictions = self._read(self._forward(batch))
        else:
            if isinstance(model.module, torch.jit.ScriptModule):
                raise TargetError(f"{model.name} is TorchScript, which supports no forward hooks: Grad-CAM cannot "
                                  f"read its layers")
            if model.gradcam_layer is None:
                raise TargetError(f"{model.name} has no (N, C, h, w) feature map for Grad-CAM; name a layer with "
                                  f"--gradcam-layer")
            try:
                layer = LayerActivation(model.module, model.gradcam_layer)
            except ValueError as error:
                raise TargetError(str(error)) from error
            with torch.no_grad(), autocast, blocks.capture(model.module) as maps, layer.kept(graph_from_here=True):
                output = self._forward(batch)  # the graph starts at the Grad-CAM layer (LayerActivation.kept)
                predictions = self._read(output)
                with users_code(model.name, model.device, "in Grad-CAM's backward pass"):
                    references = self._grad_cam(output, predictions, layer, gradcam)
            predictions = predictions.detach() if model.task == "classify" else \
                [found.detach() for found in predictions] if model.task == "detect" else None
        if model.device.type == "cuda":
            torch.cuda.synchronize(model.device)
        forward_ms = 1000 * (time.perf_counter() - start)
        # The reports' torch work (heatmaps, summaries), once per batch, here on the model's thread (cached): a
        # torch op big enough to run in parallel on a request thread gives that thread an OpenMP team of its own,
        # and with two teams on 2 cores every forward ran ~1.5-2x slower (their idle workers sleep at once).
        for record in maps.values():
            record.heatmap, record.summaries  # noqa: B018
        if model.device.type == "cuda":
            torch.cuda.synchronize(model.device)
        return RunResult(predictions, maps, (batch.shape[-1], batch.shape[-2]),
                         {"forward": forward_ms, "heatmaps": 1000 * (time.perf_counter() - start) - forward_ms},
                         references)

    def _forward(self, batch: Tensor) -> Any:
        """The model's raw output: its own code, so whatever it raises is ``ModelRunError``."""
        with users_code(self.model.name, self.model.device):
            return self.model.forward(batch)

    def _read(self, output: Any) -> Any:
        """The output read as the probe pass found it laid out; ``ModelRunError`` if it no longer is."""
        try:
            return self.model.reader.read(output)
        except Exception as error:  # noqa: BLE001 - the model's output changed after the probe
            raise ModelRunError(self.model.name, error, "on this image: its output is not laid out as in the probe "
                                "pass (" + self.model.reader.layout + ")") from error

    def _grad_cam(self, output: Any, predictions: Any, layer: LayerActivation,
                  targets: Sequence[int | None]) -> list[Reference | None]:
        """Grad-CAM of each image's target (its top class, or best detection, by default) at ``layer``."""
        model = self.model
        chosen: list[int | None] = []
        for i, target in enumerate(targets):
            if target is None and model.task == "detect":
                target = 0 if len(predictions[i].rows) else None  # nothing detected: nothing to explain
            elif target is None and model.task == "classify":
                target = int(predictions[i].argmax())
            chosen.append(0 if target is None and model.task == "maps" else target)  # maps: the reader refuses
        scores = [model.reader.score(output, predictions, i, target) for i, target in enumerate(chosen)
                  if target is not None]
        if layer.output is None:
            raise TargetError(f"layer {layer.name} gives no (N, C, h, w) feature map for Grad-CAM")
        if not scores:
            return [None] * len(targets)
        try:
            cams = grad_cam_map(layer.output, torch.stack(scores).float().sum())
        except ValueError as error:
            raise TargetError(f"{error} ({layer.name}): Grad-CAM has nothing to show") from error
        references: list[Reference | None] = []
        for i, target in enumerate(chosen):
            if target is None:
                references.append(None)
                continue
            index = target if model.task == "classify" else int(predictions[i].classes[target])
            rank = None if model.task == "classify" else target
            references.append(Reference(layer.name, index, model.label(index), rank, cams[i]))
        return references

    def analyses(self, result: RunResult, geometries: Sequence[InputGeometry],
                 images: Sequence[Image.Image | None] | None = None) -> list[Analysis]:
        """One ``Analysis`` per image of a run (cheap: they share the batch's maps; rendering happens later)."""
        images = images or [None] * len(geometries)
        return [Analysis(model=self.model, geometry=geometry, input_size=result.input_size, index=i,
                         predictions=None if result.predictions is None else result.predictions[i],
                         maps=result.maps, reference=result.references[i], timings_ms=dict(result.timings_ms),
                         image=image)
                for i, (geometry, image) in enumerate(zip(geometries, images))]

    def analysis(self, image: Image.Image, options: AnalyzeOptions | None = None) -> Analysis:
        """Prepare and run one upright RGB image."""
        options = options or AnalyzeOptions()
        options.validate()
        start = time.perf_counter()
        batch, geometry = self.prepare(image, options.size)
        preprocess_ms = 1000 * (time.perf_counter() - start)
        result = self.run(batch, [options.target] if options.gradcam else None)
        (analysis,) = self.analyses(result, [geometry], [image])
        analysis.timings_ms = {"preprocess": round(preprocess_ms, 2), **analysis.timings_ms}
        return analysis

    def analyze(self, image: Image.Image, options: AnalyzeOptions | None = None) -> dict:
        """The JSON report of one upright RGB image (SPEC section 4)."""
        options = options or AnalyzeOptions()
        start = time.perf_counter()
        report = self.analysis(image, options).report(options)
        report["timings_ms"]["total"] = round(1000 * (time.perf_counter() - start), 2)
        return report
