"""The analysis engine: image -> tensor -> one forward pass under ``blocks.capture`` -> report.

Data flows one way: ``prepare`` (resize, tensor), ``run`` (forward, probabilities, maps), then
``app.report`` turns the result into the JSON of the API and ``app.render`` into pictures.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from attnlens import blocks
from attnlens.blocks.kinds import BlockMaps
from attnlens.models import LoadedModel

from .render import DEFAULT_COLORMAP, colormap_lut
from .report import block_report, prediction_report

__all__ = ["AnalyzeOptions", "Engine", "RunResult", "MAX_ASPECT", "MIN_SIZE", "MAX_SIZE", "PRECISIONS", "resolve_precision"]

MIN_SIZE, MAX_SIZE = 32, 1024
MAX_ASPECT = 4  # long side at most this many times the short side of the model input


@dataclass(frozen=True)
class AnalyzeOptions:
    """size: the short side the image is resized to (default: the model's input size), aspect kept;
    colormap: matplotlib colormap of the heatmap PNGs; include_values: raw heatmap values in the JSON;
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
    """One forward pass: class probabilities ``(N, K)`` and every block's maps (batch of N)."""

    probabilities: Tensor
    maps: dict[str, BlockMaps]
    input_size: tuple[int, int]  # (width, height) of the model input, after resizing
    timings_ms: dict[str, float] = field(default_factory=dict)


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"`` -> bf16 on CUDA (maps stay faithful: heatmap correlation with fp32 >= 0.99, same top-1, see
    tests/app/test_engine.py), fp32 elsewhere; other values are checked."""
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

    def prepare(self, image: Image.Image, size: int | None = None) -> Tensor:
        """Upright RGB image -> ``(1, 3, h, w)`` in [0, 1]: short side ``size``, aspect kept, long side at
        most ``MAX_ASPECT * size`` (so a 2000 x 3 strip does not become a 150,000-pixel-wide tensor)."""
        short = size or self.model.input_size
        width, height = image.size
        scale = min(short / min(width, height), MAX_ASPECT * short / max(width, height))
        resized = image.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.BICUBIC)
        array = np.asarray(resized, dtype=np.float32) / 255.0
        return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)

    def run(self, batch: Tensor) -> RunResult:
        """Forward a batch ``(N, 3, h, w)`` in [0, 1] under capture; maps stay on the model's device."""
        start = time.perf_counter()
        autocast = torch.autocast(self.model.device.type, dtype=PRECISIONS[self.precision],
                                  enabled=self.precision != "fp32")
        with torch.no_grad(), autocast, blocks.capture(self.model.module) as maps:
            logits = self.model.module(self.model.normalize(batch.to(self.model.device)))
            probabilities = logits.float().softmax(dim=-1)
        if self.model.device.type == "cuda":
            torch.cuda.synchronize(self.model.device)
        return RunResult(probabilities, maps, (batch.shape[-1], batch.shape[-2]),
                         {"forward": 1000 * (time.perf_counter() - start)})

    def report(self, result: RunResult, i: int, image_size: tuple[int, int], options: AnalyzeOptions) -> dict:
        """The JSON report of SPEC section 4 for image ``i`` of a run (``image_size``: upright width, height)."""
        start = time.perf_counter()
        report = {
            "image": {"width": image_size[0], "height": image_size[1]},
            "input": {"width": result.input_size[0], "height": result.input_size[1]},
            "predictions": prediction_report(result.probabilities[i].cpu(), self.model.labels),
            "blocks": [block_report(name, record, i, options.colormap, options.include_values, options.include_maps)
                       for name, record in result.maps.items()],
        }
        report["timings_ms"] = {"forward": round(result.timings_ms["forward"], 2),
                                "maps": round(1000 * (time.perf_counter() - start), 2)}
        return report

    def analyze(self, image: Image.Image, options: AnalyzeOptions = AnalyzeOptions()) -> dict:
        """Prepare, run and report one upright RGB image."""
        options.validate()
        start = time.perf_counter()
        batch = self.prepare(image, options.size)
        preprocess_ms = 1000 * (time.perf_counter() - start)
        report = self.report(self.run(batch), 0, image.size, options)
        report["timings_ms"] = {"preprocess": round(preprocess_ms, 2), **report["timings_ms"],
                                "total": round(1000 * (time.perf_counter() - start), 2)}
        return report
