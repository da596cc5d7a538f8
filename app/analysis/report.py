"""Captured maps -> the JSON report of the API (SPEC section 4): predictions, per-block heatmaps, maps.

Every block entry carries its summary heatmap (shape, colour-mapped PNG, value range, what it means,
raw values on request) and its maps: the kind's small summaries always, its full arrays (ACmix
attention, DCN offsets, CA weights per channel, SPD phase energies) on request, as plain nested lists.
What each kind reports is declared with the kind (``attnlens.blocks.kinds``).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from attnlens.blocks.kinds import BlockMaps
from attnlens.models import Detections, InputGeometry

from .render import data_url, heatmap_rgb, png_bytes

__all__ = ["block_report", "detection_report", "detections_on_image", "finite_lists", "heatmap_report", "prediction_report"]

DECIMALS = 5  # rounding of values in the JSON


def _plain(value: Any) -> Any:
    """Tensors -> nested lists (rounded), values that are not finite (NaN / inf) as None (JSON's null);
    anything else as it is."""
    if isinstance(value, torch.Tensor):
        return finite_lists(np.round(value.detach().float().cpu().numpy(), DECIMALS))
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def finite_lists(values: np.ndarray) -> Any:
    """An array as nested lists, cells that are not finite as None."""
    finite = np.isfinite(values)
    if finite.all():
        return values.tolist()
    return np.where(finite, values, None).tolist()


def block_report(name: str, record: BlockMaps, i: int, colormap: str, include_values: bool,
                 include_maps: bool) -> dict:
    """The API entry of one block for image ``i`` of the batch; full maps only with ``include_maps``."""
    heatmap = heatmap_report(record.heatmap[i].detach().float().cpu().numpy(), record.meaning, record.unit, colormap,
                             include_values)
    maps = record.summaries[i] | (record.arrays(i) if include_maps else {})
    return {"id": name, "type": record.type, "heatmap": heatmap, "maps": {key: _plain(v) for key, v in maps.items()}}


def heatmap_report(values: np.ndarray, meaning: str, unit: str, colormap: str, include_values: bool) -> dict:
    """A heatmap ``(h, w)`` in the API: shape, colour-mapped PNG, value range, meaning, unit (values on request).
    Cells that are not finite (NaN / inf) are masked: grey in the PNG, null in ``values``, counted in
    ``masked``, left out of ``range``."""
    finite = np.isfinite(values)
    shown = values[finite]
    heatmap = {"shape": list(values.shape), "png": data_url(png_bytes(heatmap_rgb(values, colormap))),
               "range": [float(shown.min()), float(shown.max())] if shown.size else [0.0, 0.0], "meaning": meaning,
               "unit": unit}
    if not finite.all():
        heatmap["masked"] = int((~finite).sum())
    if include_values:
        heatmap["values"] = finite_lists(np.round(values, DECIMALS + 2))
    return heatmap


def prediction_report(probabilities: torch.Tensor, label: Callable[[int], str], top: int = 5) -> tuple[list[dict], int]:
    """Top classes of one image's probabilities ``(K,)`` and how many classes were left out for a score that is
    not finite."""
    finite = torch.isfinite(probabilities)
    scores, indices = probabilities.masked_fill(~finite, -1.0).topk(min(top, int(finite.sum())))
    return ([{"index": int(index), "label": label(int(index)), "score": round(float(score), 6)}
             for score, index in zip(scores.tolist(), indices.tolist())], int((~finite).sum()))


def detections_on_image(detections: Detections, geometry: InputGeometry) -> tuple[Detections, int]:
    """One image's boxes, best first, in upright original-image pixels (the input's resize / letterbox undone,
    clipped to the image; on the CPU), and how many candidates were left out (values not finite, boxes empty, or
    empty once clipped: outside the image)."""
    boxes = geometry.boxes_to_image(detections.boxes.cpu())
    inside = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    kept = Detections(boxes[inside], detections.scores.cpu()[inside], detections.classes.cpu()[inside],
                      detections.rows.cpu()[inside])
    return kept, detections.dropped + int((~inside).sum())


def detection_report(detections: Detections, geometry: InputGeometry,
                     label: Callable[[int], str]) -> tuple[list[dict], int]:
    """``detections_on_image`` as the API's rows: ``box`` (2 decimals), ``index``, ``label``, ``score``."""
    placed, dropped = detections_on_image(detections, geometry)
    rows = [{"box": [round(float(v), 2) for v in box], "index": int(index), "label": label(int(index)),
             "score": round(float(score), 6)}
            for box, index, score in zip(placed.boxes.tolist(), placed.classes.tolist(), placed.scores.tolist())]
    return rows, dropped
