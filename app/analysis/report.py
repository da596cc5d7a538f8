"""Captured maps -> the JSON report of the API (SPEC section 4): predictions, per-block heatmaps, maps.

Every block entry carries its summary heatmap (shape, colour-mapped PNG, value range, what it means,
raw values on request) and its maps: small summaries always, the full arrays (ACmix attention, DCN
offsets, CA weights per channel, SPD phase energies) on request, as plain nested lists.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from attnlens.blocks.maps import (BlockMaps, ContextMaps, CoordMaps, DeformMaps, SpaceToDepthMaps,
                         WindowAttentionMaps)

from .render import data_url, heatmap_rgb, png_bytes

__all__ = ["HEATMAP_MEANING", "block_report", "prediction_report"]

DECIMALS = 5  # rounding of values in the JSON

HEATMAP_MEANING = {
    "gc": ("context mask: where the block pools its global context from (softmax weights over positions, "
           "summing to 1)", "share of context"),
    "ca": ("mean over channels of a_h x a_w: the factor by which the block keeps each position", "factor in (0, 1)"),
    "acmix": ("attention received: window-attention weight each position gets from all queries that look at it, "
              "mean over heads", "sum of weights"),
    "dcn": ("mean offset length: how far the deformable sampling points move from the regular grid",
            "input-feature pixels"),
    "spd": ("phase detail: variance across the four 2x2 phases, the detail a stride-2 sampling would drop",
            "squared activation"),
}


def _plain(tensor: torch.Tensor) -> list:
    return np.round(tensor.detach().float().cpu().numpy(), DECIMALS).tolist()


def _gc(record: ContextMaps, i: int, full: bool) -> dict:
    return {}  # the heatmap is the context mask itself


def _ca(record: CoordMaps, i: int, full: bool) -> dict:
    maps = {"a_h_mean": _plain(record.a_h[i].mean(0)), "a_w_mean": _plain(record.a_w[i].mean(0))}
    return maps | ({"a_h": _plain(record.a_h[i]), "a_w": _plain(record.a_w[i])} if full else {})


def _acmix(record: WindowAttentionMaps, i: int, full: bool) -> dict:
    maps = {"rate1": record.rate1, "rate2": record.rate2, "kernel_size": record.kernel_size,
            "stride": record.stride, "dilation": record.dilation, "heads": record.attention.shape[1],
            "input_size": list(record.input_size)}
    return maps | ({"attention": _plain(record.attention[i])} if full else {})


def _dcn(record: DeformMaps, i: int, full: bool) -> dict:
    maps = {"kernel_size": list(record.kernel_size), "stride": list(record.stride),
            "padding": list(record.padding), "dilation": list(record.dilation), "modulated": record.mask is not None}
    if full:
        maps |= {"offsets": _plain(record.offsets[i]), "mask": None if record.mask is None else _plain(record.mask[i])}
    return maps


def _spd(record: SpaceToDepthMaps, i: int, full: bool) -> dict:
    maps = {"phase_energy_mean": _plain(record.phase_energy[i].mean((1, 2)))}
    return maps | ({"phase_energy": _plain(record.phase_energy[i])} if full else {})


MAPS_JSON: dict[str, Callable[[BlockMaps, int, bool], dict]] = {"gc": _gc, "ca": _ca, "acmix": _acmix, "dcn": _dcn,
                                                          "spd": _spd}


def block_report(name: str, record: BlockMaps, i: int, colormap: str, include_values: bool,
                 include_maps: bool) -> dict:
    """The API entry of one block for image ``i`` of the batch; full maps only with ``include_maps``."""
    values = record.heatmap[i].detach().float().cpu().numpy()
    meaning, unit = HEATMAP_MEANING[record.type]
    heatmap = {"shape": list(values.shape), "png": data_url(png_bytes(heatmap_rgb(values, colormap))),
               "range": [float(values.min()), float(values.max())], "meaning": meaning, "unit": unit}
    if include_values:
        heatmap["values"] = np.round(values, DECIMALS + 2).tolist()
    return {"id": name, "type": record.type, "heatmap": heatmap, "maps": MAPS_JSON[record.type](record, i, include_maps)}


def prediction_report(probabilities: torch.Tensor, labels: list[str], top: int = 5) -> list[dict]:
    """Top classes of one image's probabilities ``(K,)``."""
    scores, indices = probabilities.topk(min(top, probabilities.shape[-1]))
    return [{"index": int(index), "label": labels[int(index)], "score": round(float(score), 6)}
            for score, index in zip(scores.tolist(), indices.tolist())]
