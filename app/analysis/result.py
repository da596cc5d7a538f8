"""One image analysed by one model (``Analysis``): its predictions or detections, every block's maps as
tensors, the optional reference map (Grad-CAM, LayerCAM ...), and three renderings of them: the API's JSON (``report``), an
npz file of every full map (``npz``) and a figure (``figure``).

Rendering (PNG encoding, JSON, npz) is separate from the forward pass, so the server does it on the
request's own worker thread, not on the thread that owns the model.
"""
from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch import Tensor

from attnlens.blocks.kinds import BlockMaps
from attnlens.models import InputGeometry, LoadedModel
from attnlens.models.references import METHODS

from .knockout import Knocked, knockout_report
from .options import AnalyzeOptions
from .report import block_report, detection_report, heatmap_report, prediction_report

__all__ = ["Analysis", "Reference"]


TARGET_WORDS = {"class": "the class score", "box": "the box coordinates (their sum)",
                "all": "the class score plus the box coordinates"}


@dataclass(frozen=True)
class Reference:
    """A reference map of one image (``attnlens.models.references``): ``heatmap`` ``(h, w)`` over the model input at
    the finest of ``layers``, by ``method``, of class ``index`` (``label``), of the detection ranked ``rank`` and its
    ``kind`` of score for detectors; ``index`` None for EigenCAM, which has no target."""

    method: str
    layers: tuple[str, ...]
    index: int | None
    label: str | None
    rank: int | None
    kind: str | None
    heatmap: Tensor

    @property
    def title(self) -> str:
        return METHODS[self.method].title

    @property
    def meaning(self) -> str:
        meaning = METHODS[self.method].meaning
        if self.kind is not None and self.rank is not None:
            meaning += f"; target: {TARGET_WORDS[self.kind]} of the detection"
        if len(self.layers) > 1:
            meaning += f"; {len(self.layers)} layers fused (each scaled to [0, 1], on the finest grid, averaged)"
        return meaning

    @property
    def unit(self) -> str:
        if len(self.layers) > 1:
            return "relative, 0 to 1"
        return "activation x gradient" if METHODS[self.method].gradients else "activation (projection)"

    def report(self, colormap: str, include_values: bool) -> dict:
        """The answer's ``reference``: ``method``, ``layers`` (``layer``: them comma-joined, as v1 had one),
        ``target`` (None for EigenCAM), ``heatmap``."""
        target = None if self.index is None else {"index": self.index, "label": self.label, "kind": self.kind} | \
            ({"rank": self.rank} if self.rank is not None else {})
        return {"method": self.method, "layer": ",".join(self.layers), "layers": list(self.layers), "target": target,
                "heatmap": heatmap_report(self.heatmap.float().cpu().numpy(), self.meaning, self.unit, colormap,
                                          include_values)}


@dataclass
class Analysis:
    """Image ``index`` of a batch run by ``model``: ``predictions`` (classify: probabilities ``(K,)``; detect:
    ``Detections`` in input pixels; maps: None), ``maps`` (the batch's records, by block id), ``reference``
    (a reference map, when asked), ``image`` (the upright image, when kept: needed for ``figure``), ``served_as`` (the
    name a server offers the model under)."""

    model: LoadedModel
    geometry: InputGeometry
    input_size: tuple[int, int]
    index: int
    predictions: Any
    maps: dict[str, BlockMaps]
    reference: Reference | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    image: Image.Image | None = None
    served_as: str | None = None  # the name a server offers the model under, if not its own
    knockouts: list[Knocked] | None = None  # the batch's blocks knocked out, when asked

    @property
    def heatmaps(self) -> dict[str, Tensor]:
        """Each block's summary heatmap ``(h, w)``, by block id."""
        return {name: record.heatmap[self.index] for name, record in self.maps.items()}

    def arrays(self) -> dict[str, np.ndarray]:
        """Every full map as float32 arrays named ``<block id>/<map name>`` (``heatmap`` included), and the
        reference map as ``reference/<method>`` (``reference/gradcam`` ...)."""
        arrays = {}
        for name, record in self.maps.items():
            for key, value in {"heatmap": record.heatmap[self.index], **record.arrays(self.index)}.items():
                arrays[f"{name}/{key}"] = value.detach().float().cpu().numpy()
        if self.reference is not None:
            arrays[f"reference/{self.reference.method}"] = self.reference.heatmap.float().cpu().numpy()
        return arrays

    def report(self, options: AnalyzeOptions | None = None) -> dict:
        """The JSON report of SPEC section 4 (PNGs in the colormap of ``options``)."""
        options = options or AnalyzeOptions()
        start = time.perf_counter()
        model, geometry = self.model, self.geometry
        report: dict[str, Any] = {
            "model": self.served_as or model.name,
            "image": {"width": geometry.image_size[0], "height": geometry.image_size[1]},
            "input": {"width": self.input_size[0], "height": self.input_size[1], "content": list(geometry.content)},
            "task": model.task,
        }
        notes = [model.note]
        if model.task == "classify":
            report["predictions"], dropped = prediction_report(self.predictions.cpu(), model.label)
            if dropped:
                notes.append(f"{dropped} of {self.predictions.shape[-1]} class scores are not finite (NaN / inf): left "
                             f"out of the predictions" + ("" if report["predictions"] else ", so there are none"))
        elif model.task == "detect":
            report["detections"], dropped = detection_report(self.predictions, geometry, model.label)
            if dropped:
                notes.append(f"{dropped} candidate detection{'s' * (dropped != 1)} left out: a box or score not finite "
                             f"(NaN / inf), or an empty box")
        if options.reference and self.reference is None:
            notes.append(f"{METHODS[options.reference].title}: no detection to explain")
        report["blocks"] = [block_report(name, record, self.index, options.colormap, options.include_values,
                                         options.include_maps) for name, record in self.maps.items()]
        if self.reference is not None:
            report["reference"] = self.reference.report(options.colormap, options.include_values)
        if self.knockouts is not None:
            report["knockout"] = [knockout_report(knocked, self.index, model.task, self.predictions, geometry,
                                                  model.label) for knocked in self.knockouts]
        masked = [(entry["id"], entry["heatmap"]) for entry in report["blocks"]] + \
            ([(self.reference.title, report["reference"]["heatmap"])] if self.reference is not None else [])
        notes += [f"{name}: {heatmap['masked']} of {heatmap['shape'][0] * heatmap['shape'][1]} heatmap cells are not "
                  f"finite (NaN / inf), masked (grey, null)" for name, heatmap in masked if heatmap.get("masked")]
        if any(notes):
            report["note"] = "; ".join(note for note in notes if note)
        report["timings_ms"] = {key: round(value, 2) for key, value in self.timings_ms.items()} | \
            {"maps": round(1000 * (time.perf_counter() - start), 2)}
        return report

    def npz(self, options: AnalyzeOptions | None = None) -> bytes:
        """An ``.npz`` file: every map (``arrays``) and the JSON report as the string array ``report``."""
        buffer = io.BytesIO()
        np.savez_compressed(buffer, report=np.array(json.dumps(self.report(options))), **self.arrays())
        return buffer.getvalue()

    def _figure_inputs(self, colormap: str) -> tuple[Image.Image, dict, dict[str, int]]:
        if self.image is None:
            raise ValueError("this analysis kept no image to draw the figure on")
        strides = {block.id: block.feature_stride for block in self.model.blocks}
        return self.image, self.report(AnalyzeOptions(colormap=colormap, include_values=True)), strides

    def figure(self, colormap: str = "inferno", boxes: int | None = None):
        """A matplotlib ``Figure``: the image with its best detections and every block's heatmap (and the
        reference map) over it. Needs ``image``."""
        from .figure import make_figure

        image, report, strides = self._figure_inputs(colormap)
        return make_figure(image, report, colormap, strides, boxes)

    def save_figure(self, path: str | Path, colormap: str = "inferno", boxes: int | None = None) -> Path:
        """Write ``figure`` to ``path`` (.png, .pdf or .svg); ``boxes``: the detections drawn (default 5)."""
        from .figure import save_figure

        image, report, strides = self._figure_inputs(colormap)
        return save_figure(image, report, path, colormap, strides, boxes)
