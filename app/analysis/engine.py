"""The analysis engine: image -> tensor -> one forward pass under ``blocks.capture`` -> one ``Analysis`` per image.

Data flows one way: ``prepare`` (the model's input recipe: resize, letterbox), ``run`` (forward, the
model's output read as class probabilities or boxes, every block's maps and, when asked, reference maps
(Grad-CAM, LayerCAM ... from a backward pass; EigenCAM without one)), then ``analyses`` splits the batch into
one ``Analysis`` per image (``attnlens.analysis.result``), which renders itself as the API's JSON, an npz file or a figure.
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
from attnlens.models.outputs import BoxReader, OutputReader, TargetError
from attnlens.models.references import METHODS, LayerActivations, gradients_of, reference_maps

from .knockout import Knocked, run_knockouts
from .options import MAX_SIZE, MIN_SIZE, AnalyzeOptions
from .result import Analysis, Reference

__all__ = ["MAX_SIZE", "MIN_SIZE", "PRECISIONS", "AnalyzeOptions", "Engine", "ReferenceRequest", "RunResult",
           "resolve_precision"]


@dataclass(frozen=True)
class ReferenceRequest:
    """Reference maps asked of a batch: ``methods`` (``attnlens.models.references.METHODS``), one target per image
    (None: its top class or best detection) and, of a detection, the ``kind`` of score the gradient methods explain.
    ``optional``: a reference that cannot be computed costs only itself (None for the batch, the reason in
    ``RunResult.reference_errors``), not the run (``TargetError``)."""

    methods: tuple[str, ...]
    targets: tuple[int | None, ...]
    kind: str = "class"
    optional: bool = False

    @classmethod
    def of(cls, options: AnalyzeOptions, count: int = 1) -> ReferenceRequest | None:
        """What ``options`` ask of each of ``count`` images (None: no reference)."""
        if options.reference is None:
            return None
        return cls((options.reference,), (options.target,) * count, options.target_kind)

@dataclass
class RunResult:
    """One forward pass of a batch of N images: what the output reader gave (``classify``: probabilities
    ``(N, K)``; ``detect``: one ``Detections`` per image, input pixels; ``maps``: None), every block's maps,
    and the reference maps asked for (by method, one per image: None where there is nothing to explain; an optional
    request's methods that could not be computed: None for every image, and why in ``reference_errors``);
    ``scored``: a detector's boxes read at a lower threshold as well (``Engine.run``'s ``scoring``: for AP)."""

    predictions: Any
    maps: dict[str, BlockMaps]
    input_size: tuple[int, int]  # (width, height) of the model input
    timings_ms: dict[str, float] = field(default_factory=dict)
    references: dict[str, list[Reference | None]] = field(default_factory=dict)
    reference_errors: dict[str, str] = field(default_factory=dict)
    scored: Any = None
    knockouts: list[Knocked] | None = None  # each block knocked out (``Engine.run``'s ``knockout``)

    def reference(self, i: int) -> Reference | None:
        """Image ``i``'s reference map of the first method asked (the analysis answers one)."""
        return next((maps[i] for maps in self.references.values()), None)


def _unavailable(methods: Sequence[str], count: int, why: str) -> tuple[dict[str, list[None]], dict[str, str]]:
    """An optional request's ``methods`` that could not be computed: None for each of ``count`` images, and why."""
    return {method: [None] * count for method in methods}, dict.fromkeys(methods, why)


def _detached(predictions: Any, task: str) -> Any:
    """What a reader gave, off any graph (a gradient reference's pass keeps one)."""
    if task == "classify":
        return predictions.detach()
    return [detections.detach() for detections in predictions] if task == "detect" else None


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

    def run(self, batch: Tensor, references: ReferenceRequest | None = None,
            scoring: BoxReader | None = None, knockout: bool = False) -> RunResult:
        """Forward a batch ``(N, 3, h, w)`` in [0, 1] under capture; maps stay on the model's device.

        ``references``: reference maps from the same pass (gradients only for the methods that need them;
        ``no_grad`` otherwise). ``scoring``: a detector's reader at a lower threshold (``RunResult.scored``); the
        model's own detections are then narrowed from what it read where they can be (``BoxReader.narrowed``: one NMS).
        ``knockout``: the batch again with each block's map made flat, one forward per block (``RunResult.knockouts``).
        ``TargetError`` for a target the output lacks (unless the request is ``optional``); ``ModelRunError`` for a
        model that fails on the batch (whatever its code raises)."""
        start = time.perf_counter()
        model = self.model
        autocast = torch.autocast(model.device.type, dtype=PRECISIONS[self.precision], enabled=self.precision != "fp32")
        found: dict[str, list[Reference | None]] = {}
        errors: dict[str, str] = {}
        scored = None
        try:
            layers = None if references is None else self._layers()
        except TargetError as error:
            if not references.optional:
                raise
            (found, errors), references = _unavailable(references.methods, batch.shape[0], str(error)), None
        if references is None:
            with torch.no_grad(), autocast, blocks.capture(model.module) as maps:
                output = self._forward(batch)
                predictions, scored = self._read_both(output, scoring)
        else:
            gradients = any(METHODS[method].gradients for method in references.methods)
            with torch.no_grad(), autocast, blocks.capture(model.module) as maps, layers.kept(gradients):
                output = self._forward(batch)  # any graph starts at the reference layers (LayerActivations.kept)
                predictions, scored = self._read_both(output, scoring)
                scored = None if scored is None else _detached(scored, "detect")
                with users_code(model.name, "in the reference map's backward pass"):
                    try:
                        found, errors = self._references(output, predictions, layers, references)
                    except TargetError as error:
                        if not references.optional:
                            raise
                        found, errors = _unavailable(references.methods, batch.shape[0], str(error))
            predictions = _detached(predictions, model.task)
        if model.device.type == "cuda":
            torch.cuda.synchronize(model.device)
        forward_ms = 1000 * (time.perf_counter() - start)
        knocked, knockout_ms = None, {}
        if knockout:
            with torch.no_grad(), autocast:
                knocked = run_knockouts(model, lambda: self._forward(batch), lambda out: self._read_both(out, scoring))
            if model.device.type == "cuda":
                torch.cuda.synchronize(model.device)
            knockout_ms = {"knockout": 1000 * (time.perf_counter() - start) - forward_ms}
            start += knockout_ms["knockout"] / 1000  # the heatmaps' time below stays their own
        # The reports' torch work (heatmaps, summaries), once per batch, here on the model's thread (cached): a
        # torch op big enough to run in parallel on a request thread gives that thread an OpenMP team of its own,
        # and with two teams on 2 cores every forward ran ~1.5-2x slower (their idle workers sleep at once).
        for record in maps.values():
            record.heatmap, record.summaries  # noqa: B018
        if model.device.type == "cuda":
            torch.cuda.synchronize(model.device)
        return RunResult(predictions, maps, (batch.shape[-1], batch.shape[-2]),
                         {"forward": forward_ms, **knockout_ms,
                          "heatmaps": 1000 * (time.perf_counter() - start) - forward_ms},
                         found, errors, scored, knocked)

    def _layers(self) -> LayerActivations:
        """The model's reference layers, ready to keep; ``TargetError`` where there are none to read."""
        model = self.model
        if isinstance(model.module, torch.jit.ScriptModule):
            raise TargetError(f"{model.name} is TorchScript, which supports no forward hooks: no reference map can "
                              f"read its layers")
        if not model.reference_layers:
            raise TargetError(f"{model.name} has no (N, C, h, w) feature map for a reference map; name layers with "
                              f"--reference-layers")
        try:
            return LayerActivations(model.module, model.reference_layers)
        except ValueError as error:
            raise TargetError(str(error)) from error

    def _forward(self, batch: Tensor) -> Any:
        """The model's raw output: its own code, so whatever it raises is ``ModelRunError``."""
        with users_code(self.model.name):
            return self.model.forward(batch)

    def _read_both(self, output: Any, scoring: BoxReader | None) -> tuple[Any, Any]:
        """The output read by the model's reader, and by ``scoring`` (None without), with one NMS where it can."""
        if scoring is None:
            return self._read(output), None
        scored, reader = self._read(output, scoring), self.model.reader
        return (reader.narrowed(scored) if isinstance(reader, BoxReader) and reader.narrows(scoring) else
                self._read(output)), scored

    def _read(self, output: Any, reader: OutputReader | None = None) -> Any:
        """The output read (by the model's reader, or ``reader``) as the probe pass found it laid out;
        ``ModelRunError`` if it no longer is."""
        reader = reader or self.model.reader
        try:
            return reader.read(output)
        except Exception as error:  # noqa: BLE001 - the model's output changed after the probe
            raise ModelRunError(self.model.name, error, "on this image: its output is not laid out as in the probe "
                                "pass (" + reader.layout + ")") from error

    def _targets(self, predictions: Any, targets: Sequence[int | None]) -> list[int | None]:
        """Each image's target: the one asked, else its top class or best detection (None: nothing detected)."""
        chosen: list[int | None] = []
        for i, target in enumerate(targets):
            if target is None and self.model.task == "detect":
                target = 0 if len(predictions[i].rows) else None  # nothing detected: nothing to explain
            elif target is None and self.model.task == "classify":
                target = int(predictions[i].argmax())
            chosen.append(0 if target is None and self.model.task == "maps" else target)  # maps: the reader refuses
        return chosen

    def _references(self, output: Any, predictions: Any, layers: LayerActivations,
                    request: ReferenceRequest) -> tuple[dict[str, list[Reference | None]], dict[str, str]]:
        """Each method's map of each image at ``layers`` (for the gradient methods, of the image's target), and for
        an optional request the methods that could not be computed, with why (the others are kept)."""
        model, count = self.model, len(request.targets)
        missing = [name for name, kept in zip(layers.names, layers.outputs) if kept is None]
        if missing:
            raise TargetError(f"layer {missing[0]} gives no (N, C, h, w) feature map for a reference map")
        activations, names = layers.outputs, tuple(layers.names)
        found: dict[str, list[Reference | None]] = {}
        for method in request.methods:
            if not METHODS[method].gradients:  # no target: every image gets one
                maps = reference_maps(method, activations)
                found[method] = [Reference(method, names, None, None, None, None, maps[i]) for i in range(count)]
        gradient_methods = [method for method in request.methods if METHODS[method].gradients]
        if not gradient_methods:
            return found, {}
        chosen = self._targets(predictions, request.targets)
        scores = [model.reader.score(output, predictions, i, target, request.kind) for i, target in enumerate(chosen)
                  if target is not None]
        if not scores:
            return found | {method: [None] * count for method in gradient_methods}, {}
        try:
            gradients = gradients_of(torch.stack(scores).float().sum(), activations)
        except ValueError as error:
            why = f"{error} ({', '.join(names)}): {METHODS[gradient_methods[0]].title} has nothing to show"
            if not request.optional:
                raise TargetError(why) from error
            unavailable, errors = _unavailable(gradient_methods, count, why)
            return found | unavailable, errors
        for method in gradient_methods:
            maps = reference_maps(method, activations, gradients)
            found[method] = []
            for i, target in enumerate(chosen):
                if target is None:
                    found[method].append(None)
                    continue
                index = target if model.task == "classify" else int(predictions[i].classes[target])
                rank, kind = (None, "class") if model.task == "classify" else (target, request.kind)
                found[method].append(Reference(method, names, index, model.label(index), rank, kind, maps[i]))
        return found, {}

    def analyses(self, result: RunResult, geometries: Sequence[InputGeometry],
                 images: Sequence[Image.Image | None] | None = None) -> list[Analysis]:
        """One ``Analysis`` per image of a run (cheap: they share the batch's maps; rendering happens later)."""
        images = images or [None] * len(geometries)
        return [Analysis(model=self.model, geometry=geometry, input_size=result.input_size, index=i,
                         predictions=None if result.predictions is None else result.predictions[i],
                         maps=result.maps, reference=result.reference(i), timings_ms=dict(result.timings_ms),
                         image=image, knockouts=result.knockouts)
                for i, (geometry, image) in enumerate(zip(geometries, images))]

    def analysis(self, image: Image.Image, options: AnalyzeOptions | None = None) -> Analysis:
        """Prepare and run one upright RGB image."""
        options = options or AnalyzeOptions()
        options.validate()
        start = time.perf_counter()
        batch, geometry = self.prepare(image, options.size)
        preprocess_ms = 1000 * (time.perf_counter() - start)
        result = self.run(batch, ReferenceRequest.of(options), knockout=options.knockout)
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
