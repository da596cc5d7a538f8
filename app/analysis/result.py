"""One image analysed by one model (``Analysis``): its predictions or detections, every block's maps as
tensors, the optional Grad-CAM reference, and three renderings of them: the API's JSON (``report``), an
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
from typing import Any, ClassVar

import numpy as np
from PIL import Image
from torch import Tensor

from attnlens.blocks.kinds import BlockMaps
from attnlens.models import InputGeometry, LoadedModel

from .options import AnalyzeOptions
from .report import block_report, detection_report, heatmap_report, prediction_report

__all__ = ["Analysis", "Reference"]


@dataclass(frozen=True)
class Reference:
    """A Grad-CAM reference of one image: ``heatmap`` ``(h, w)`` at ``layer``'s resolution over the model input,
    for class ``index`` (``label``), of the detection ranked ``rank`` for detectors."""

    method: ClassVar[str] = "gradcam"
    meaning: ClassVar[str] = ("Grad-CAM: where the layer's features raise the target's score (ReLU of the "
                              "activations weighted by their mean gradient)")
    unit: ClassVar[str] = "activation x gradient"
    layer: str
    index: int
    label: str
    rank: int | None
    heatmap: Tensor


@dataclass
class Analysis:
    """Image ``index`` of a batch run by ``model``: ``predictions`` (classify: probabilities ``(K,)``; detect:
    ``Detections`` in input pixels; maps: None), ``maps`` (the batch's records, by block id), ``reference``
    (Grad-CAM, when asked), ``image`` (the upright image, when kept: needed for ``figure``), ``served_as`` (the
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

    @property
    def heatmaps(self) -> dict[str, Tensor]:
        """Each block's summary heatmap ``(h, w)``, by block id."""
        return {name: record.heatmap[self.index] for name, record in self.maps.items()}

    def arrays(self) -> dict[str, np.ndarray]:
        """Every full map as float32 arrays named ``<block id>/<map name>`` (``heatmap`` included), and the
        Grad-CAM reference as ``reference/gradcam``."""
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
        if options.gradcam and self.reference is None:
            notes.append("Grad-CAM: no detection to explain.")
        report["blocks"] = [block_report(name, record, self.index, options.colormap, options.include_values,
                                         options.include_maps) for name, record in self.maps.items()]
        if self.reference is not None:
            reference = self.reference
            target = {"index": reference.index, "label": reference.label} | \
                ({"rank": reference.rank} if reference.rank is not None else {})
            report["reference"] = {"method": reference.method, "layer": reference.layer, "target": target,
                                   "heatmap": heatmap_report(reference.heatmap.float().cpu().numpy(), reference.meaning,
                                                             reference.unit, options.colormap, options.include_values)}
        masked = [(entry["id"], entry["heatmap"]) for entry in report["blocks"]] + \
            ([("Grad-CAM", report["reference"]["heatmap"])] if "reference" in report else [])
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

    def figure(self, colormap: str = "inferno"):
        """A matplotlib ``Figure``: the image with its detections and every block's heatmap (and the Grad-CAM
        reference) over it. Needs ``image``."""
        from .figure import make_figure

        image, report, strides = self._figure_inputs(colormap)
        return make_figure(image, report, colormap, strides)

    def save_figure(self, path: str | Path, colormap: str = "inferno") -> Path:
        """Write ``figure`` to ``path`` (.png, .pdf or .svg)."""
        from .figure import save_figure

        image, report, strides = self._figure_inputs(colormap)
        return save_figure(image, report, path, colormap, strides)
