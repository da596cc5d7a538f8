"""The analysis engine: image -> tensor -> one forward pass under ``blocks.capture`` -> report.

Data flows one way: ``prepare`` (the model's input recipe: resize, letterbox), ``run`` (forward, the
model's output read as class probabilities or boxes, every block's maps), then ``report`` turns one
image of the result into the JSON of the API (``attnlens.analysis.report``) with its pictures
(``attnlens.analysis.render``). Boxes are mapped back onto the upright original image here.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from attnlens import blocks
from attnlens.blocks.kinds import BlockMaps
from attnlens.models import InputGeometry, LoadedModel

from .render import DEFAULT_COLORMAP, colormap_lut
from .report import block_report, detection_report, prediction_report

__all__ = ["MAX_SIZE", "MIN_SIZE", "PRECISIONS", "AnalyzeOptions", "Engine", "RunResult", "resolve_precision"]

MIN_SIZE, MAX_SIZE = 32, 1024


@dataclass(frozen=True)
class AnalyzeOptions:
    """size: the input size (short side, or long side for letterbox; default: the model's); colormap:
    matplotlib colormap of the heatmap PNGs; include_values: raw heatmap values in the JSON;
    include_maps: the full maps (ACmix attention, DCN offsets, ...) in the JSON."""

    size: int | None = None
    colormap: str = DEFAULT_COLORMAP
    include_values: bool = False
    include_maps: bool = False

    def validate(self) -> None:
        if self.size is not None and not MIN_SIZE <= self.size <= MAX_SIZE:
            raise ValueError(f"size must be between {MIN_SIZE} and {MAX_SIZE}, got {self.size}")
        colormap_lut(self.colormap)


@dataclass
class RunResult:
    """One forward pass of a batch of N images: what the output reader gave (``classify``: probabilities
    ``(N, K)``; ``detect``: one ``Detections`` per image, input pixels; ``maps``: None) and every block's maps."""

    predictions: Any
    maps: dict[str, BlockMaps]
    input_size: tuple[int, int]  # (width, height) of the model input
    timings_ms: dict[str, float] = field(default_factory=dict)


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

    def run(self, batch: Tensor) -> RunResult:
        """Forward a batch ``(N, 3, h, w)`` in [0, 1] under capture; maps stay on the model's device."""
        start = time.perf_counter()
        autocast = torch.autocast(self.model.device.type, dtype=PRECISIONS[self.precision],
                                  enabled=self.precision != "fp32")
        with torch.no_grad(), autocast, blocks.capture(self.model.module) as maps:
            predictions = self.model.reader.read(self.model.forward(batch))
        if self.model.device.type == "cuda":
            torch.cuda.synchronize(self.model.device)
        return RunResult(predictions, maps, (batch.shape[-1], batch.shape[-2]),
                         {"forward": 1000 * (time.perf_counter() - start)})

    def report(self, result: RunResult, i: int, geometry: InputGeometry, options: AnalyzeOptions) -> dict:
        """The JSON report of SPEC section 4 for image ``i`` of a run."""
        start = time.perf_counter()
        model = self.model
        report: dict[str, Any] = {
            "image": {"width": geometry.image_size[0], "height": geometry.image_size[1]},
            "input": {"width": result.input_size[0], "height": result.input_size[1], "content": list(geometry.content)},
            "task": model.task,
        }
        if model.task == "classify":
            report["predictions"] = prediction_report(result.predictions[i].cpu(), model.labels)
        elif model.task == "detect":
            report["detections"] = detection_report(result.predictions[i], geometry, model.label)
        if model.reader.note:
            report["note"] = model.reader.note
        report["blocks"] = [block_report(name, record, i, options.colormap, options.include_values, options.include_maps)
                            for name, record in result.maps.items()]
        report["timings_ms"] = {"forward": round(result.timings_ms["forward"], 2),
                                "maps": round(1000 * (time.perf_counter() - start), 2)}
        return report

    def analyze(self, image: Image.Image, options: AnalyzeOptions | None = None) -> dict:
        """Prepare, run and report one upright RGB image."""
        options = options or AnalyzeOptions()
        options.validate()
        start = time.perf_counter()
        batch, geometry = self.prepare(image, options.size)
        preprocess_ms = 1000 * (time.perf_counter() - start)
        report = self.report(self.run(batch), 0, geometry, options)
        report["timings_ms"] = {"preprocess": round(preprocess_ms, 2), **report["timings_ms"],
                                "total": round(1000 * (time.perf_counter() - start), 2)}
        return report
