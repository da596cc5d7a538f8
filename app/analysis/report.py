"""Captured maps -> the JSON report of the API (SPEC section 4): predictions, per-block heatmaps, maps.

Every block entry carries its summary heatmap (shape, colour-mapped PNG, value range, what it means,
raw values on request) and its maps: the kind's small summaries always, its full arrays (ACmix
attention, DCN offsets, CA weights per channel, SPD phase energies) on request, as plain nested lists.
What each kind reports is declared with the kind (``attnlens.blocks.kinds``).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from attnlens.blocks.kinds import BlockMaps
from attnlens.models import Detections, InputGeometry

from .render import data_url, heatmap_rgb, png_bytes

__all__ = ["block_report", "detection_report", "heatmap_report", "prediction_report"]

DECIMALS = 5  # rounding of values in the JSON


def _plain(value: Any) -> Any:
    """Tensors -> nested lists (rounded); anything else as it is."""
    if isinstance(value, torch.Tensor):
        return np.round(value.detach().float().cpu().numpy(), DECIMALS).tolist()
    return value


def block_report(name: str, record: BlockMaps, i: int, colormap: str, include_values: bool,
                 include_maps: bool) -> dict:
    """The API entry of one block for image ``i`` of the batch; full maps only with ``include_maps``."""
    heatmap = heatmap_report(record.heatmap[i].detach().float().cpu().numpy(), record.meaning, record.unit, colormap,
                             include_values)
    maps = record.summaries[i] | (record.arrays(i) if include_maps else {})
    return {"id": name, "type": record.type, "heatmap": heatmap, "maps": {key: _plain(v) for key, v in maps.items()}}


def heatmap_report(values: np.ndarray, meaning: str, unit: str, colormap: str, include_values: bool) -> dict:
    """A heatmap ``(h, w)`` in the API: shape, colour-mapped PNG, value range, meaning, unit (values on request)."""
    heatmap = {"shape": list(values.shape), "png": data_url(png_bytes(heatmap_rgb(values, colormap))),
               "range": [float(values.min()), float(values.max())], "meaning": meaning, "unit": unit}
    if include_values:
        heatmap["values"] = np.round(values, DECIMALS + 2).tolist()
    return heatmap


def prediction_report(probabilities: torch.Tensor, labels: list[str], top: int = 5) -> list[dict]:
    """Top classes of one image's probabilities ``(K,)``."""
    scores, indices = probabilities.topk(min(top, probabilities.shape[-1]))
    return [{"index": int(index), "label": labels[int(index)], "score": round(float(score), 6)}
            for score, index in zip(scores.tolist(), indices.tolist())]


def detection_report(detections: Detections, geometry: InputGeometry, label: Callable[[int], str]) -> list[dict]:
    """One image's boxes, best first, in upright original-image pixels (the input's resize / letterbox undone)."""
    boxes = geometry.boxes_to_image(detections.boxes.cpu())
    return [{"box": [round(float(v), 2) for v in box], "index": int(index), "label": label(int(index)),
             "score": round(float(score), 6)}
            for box, index, score in zip(boxes.tolist(), detections.classes.tolist(), detections.scores.tolist())]
