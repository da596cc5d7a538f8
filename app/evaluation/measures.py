"""Does a map attend to the labelled objects? Four measures per image and map, in original-image pixels.

A map ``(h, w)`` over the model input is first brought to the image: each original pixel's centre is mapped
through the input recipe (the resize, and the letterbox padding undone) into the model input, where the
map is sampled bilinearly (cell centres on cell centres, edges clamped). Then, for a region (the union of
the image's boxes, or of one class's, or of one COCO size's):

* ``energy``: the share of the min-max normalised map's mass inside the region (a flat map, range below
  ``FLAT`` of its magnitude: ``area``);
* ``area``: the share of the image the region covers (pixels whose centre lies in it);
* ``lift``: ``energy / area``: how much more of the map falls on the region than a uniform map puts there
  (1 = no better than uniform);
* ``pointing``: 1 when the map's maximum lies within 15 px (``TOLERANCE_PX``, Euclidean, from the region)
  of the region, else 0; a maximum shared by several pixels scores the share of them that are near (so a
  flat map scores chance).

A region is the union of its objects' boxes, or of their polygons for segmentation labels (rasterised by
Pillow). COCO sizes, by the object's area in pixels: small < 32², medium < 96², large otherwise.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import Tensor

from attnlens.models import InputGeometry

from .datasets import Object

__all__ = ["MEASURES", "SIZES", "TOLERANCE_PX", "Region", "centre_map", "mask_region", "measure", "measure_map",
           "region_of", "regions_of", "size_of", "to_image"]

TOLERANCE_PX = 15
FLAT = 1e-5  # a map whose range is below this share of its magnitude is flat (float noise is not a pattern)
MEASURES = ("energy", "area", "lift", "pointing")
SIZES = (("small", 32 ** 2), ("medium", 96 ** 2), ("large", math.inf))


def size_of(obj: Object) -> str:
    return next(name for name, limit in SIZES if obj.area < limit)


@dataclass(frozen=True)
class Region:
    """Where objects are (``inside``: pixel centres in their union) and what is near them (``near``: within
    ``TOLERANCE_PX``), both ``(H, W)`` bool."""

    inside: Tensor
    near: Tensor


def _box_window(box: tuple[float, float, float, float], height: int, width: int,
                device) -> tuple[tuple[slice, slice], Region] | None:
    """A box's region within the window it can reach (the box and ``TOLERANCE_PX`` around it, on the image):
    the window's ``(rows, columns)`` slices and the region over it; None where the window is off the image."""
    x0, y0, x1, y1 = box
    top, bottom = max(0, math.floor(y0 - TOLERANCE_PX)), min(height, math.ceil(y1 + TOLERANCE_PX) + 1)
    left, right = max(0, math.floor(x0 - TOLERANCE_PX)), min(width, math.ceil(x1 + TOLERANCE_PX) + 1)
    if top >= bottom or left >= right:
        return None
    ys = torch.arange(top, bottom, device=device, dtype=torch.float32)[:, None] + 0.5
    xs = torch.arange(left, right, device=device, dtype=torch.float32)[None, :] + 0.5
    dy = (y0 - ys).clamp_min(0) + (ys - y1).clamp_min(0)
    dx = (x0 - xs).clamp_min(0) + (xs - x1).clamp_min(0)
    return ((slice(top, bottom), slice(left, right)),
            Region((ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1), dy ** 2 + dx ** 2 <= TOLERANCE_PX ** 2))


def _box_masks(boxes: Iterable[tuple[float, float, float, float]], height: int, width: int, device) -> Region:
    inside = torch.zeros(height, width, dtype=torch.bool, device=device)
    near = torch.zeros_like(inside)
    for box in boxes:
        if (found := _box_window(box, height, width, device)) is not None:
            window, region = found
            near[window] |= region.near
            inside[window] |= region.inside
    return Region(inside, near)


def _polygon_masks(polygons: list[tuple[tuple[float, float], ...]], height: int, width: int, device) -> Region:
    inside, near = Image.new("1", (width, height)), Image.new("1", (width, height))
    draw_inside, draw_near = ImageDraw.Draw(inside), ImageDraw.Draw(near)
    for points in polygons:
        draw_inside.polygon(points, fill=1)
        draw_near.polygon(points, fill=1)
        draw_near.line([*points, points[0]], fill=1, width=2 * TOLERANCE_PX + 1, joint="curve")
    return Region(torch.from_numpy(np.array(inside, dtype=bool)).to(device),
                  torch.from_numpy(np.array(near, dtype=bool)).to(device))


def mask_region(mask: Tensor) -> Region:
    """A region given as a mask ``(H, W)`` (the composites' object masks): ``near`` is the mask dilated by a
    disk of radius ``TOLERANCE_PX`` (pixel to pixel, Euclidean)."""
    radius = int(TOLERANCE_PX)
    axis = torch.arange(-radius, radius + 1, dtype=torch.float32, device=mask.device)
    disk = ((axis[:, None] ** 2 + axis[None, :] ** 2) <= TOLERANCE_PX ** 2).float()[None, None]
    near = F.conv2d(mask.float()[None, None], disk, padding=radius)[0, 0] > 0.5
    return Region(mask.bool(), near)


def region_of(objects: list[Object], height: int, width: int, device) -> Region:
    """The union of ``objects`` (in pixels): boxes exactly, polygons rasterised."""
    boxes = _box_masks([o.box for o in objects if o.polygon is None], height, width, device)
    polygons = [o.polygon for o in objects if o.polygon is not None]
    if not polygons:
        return boxes
    drawn = _polygon_masks(polygons, height, width, device)
    return Region(boxes.inside | drawn.inside, boxes.near | drawn.near)


def regions_of(objects: tuple[Object, ...], height: int, width: int, device) -> dict[str, Region]:
    """The regions an image is scored on: ``all`` (every object), ``class:<index>``, ``size:<name>``."""
    groups: dict[str, list[Object]] = {"all": list(objects)}
    for obj in objects:
        groups.setdefault(f"class:{obj.index}", []).append(obj)
        groups.setdefault(f"size:{size_of(obj)}", []).append(obj)
    return {key: region_of(members, height, width, device) for key, members in groups.items()}


def to_image(heatmap: Tensor, geometry: InputGeometry) -> Tensor:
    """A map ``(h, w)`` over the model input -> ``(H, W)`` over the original image (see the module docstring)."""
    width, height = geometry.image_size
    x0, y0, x1, y1 = geometry.content
    input_w, input_h = geometry.size
    device = heatmap.device
    xs = x0 + (torch.arange(width, device=device, dtype=torch.float32) + 0.5) * (x1 - x0) / width
    ys = y0 + (torch.arange(height, device=device, dtype=torch.float32) + 0.5) * (y1 - y0) / height
    grid = torch.stack(torch.broadcast_tensors(2 * xs[None, :] / input_w - 1, 2 * ys[:, None] / input_h - 1), -1)
    return F.grid_sample(heatmap.float()[None, None], grid[None], mode="bilinear", padding_mode="border",
                         align_corners=False)[0, 0]


def centre_map(width: int, height: int, device) -> Tensor:
    """The centre-prior baseline: a Gaussian at the image's centre, sigma a quarter of each side."""
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5 - width / 2) / (width / 4)
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5 - height / 2) / (height / 4)
    return torch.exp(-(xs[None, :] ** 2 + ys[:, None] ** 2) / 2)


def _normalised(heatmap: Tensor) -> tuple[Tensor, Tensor]:
    """The map min-max normalised (float64; all ones when flat) and where its maximum is (all pixels when flat)."""
    heatmap = heatmap.double()
    low, high = heatmap.min(), heatmap.max()
    if float(high - low) <= FLAT * max(abs(float(high)), abs(float(low)), 1e-30):
        return torch.ones_like(heatmap), torch.ones_like(heatmap, dtype=torch.bool)
    return (heatmap - low) / (high - low), heatmap >= high


def _measured(normalised: Tensor, maxima: Tensor, total: Tensor, peaks: Tensor, region: Region) -> dict[str, float]:
    energy = float((normalised * region.inside).sum() / total)
    area = float(region.inside.double().mean())
    pointing = float((region.near & maxima).sum().double() / peaks)
    return {"energy": energy, "area": area, "lift": energy / area if area > 0 else math.nan, "pointing": pointing}


def measure(heatmap: Tensor, region: Region) -> dict[str, float]:
    """``energy``, ``area``, ``lift`` and ``pointing`` of one map ``(H, W)`` (image pixels) on one region (sums
    in float64)."""
    return measure_map(heatmap, {"region": region})[0]["region"]


def measure_map(heatmap: Tensor, regions: dict[str, Region],
                objects: Sequence[Object] = ()) -> tuple[dict[str, dict[str, float]], list[tuple[float, float]]]:
    """``measure`` of one map ``(H, W)`` (image pixels) on each of ``regions``, and ``(energy, pointing)`` on each of
    ``objects`` (in pixels) alone (``measure`` on ``region_of([object])``, computed within the window each object
    reaches); the map normalised once for all."""
    normalised, maxima = _normalised(heatmap)
    total, peaks = normalised.sum(), maxima.sum().double()
    measured = {key: _measured(normalised, maxima, total, peaks, region) for key, region in regions.items()}
    height, width = heatmap.shape
    alone = []
    for obj in objects:
        if obj.polygon is not None:
            region = region_of([obj], height, width, heatmap.device)
            scored = _measured(normalised, maxima, total, peaks, region)
            alone.append((scored["energy"], scored["pointing"]))
            continue
        window = _box_window(obj.box, height, width, heatmap.device)
        if window is None:
            alone.append((0.0, 0.0))
            continue
        place, region = window
        alone.append((float((normalised[place] * region.inside).sum() / total),
                      float((maxima[place] & region.near).sum().double() / peaks)))
    return measured, alone
