"""Are the maps about the object? Pointing game and energy-in-mask on held-out composites.

* **Pointing game**: a hit when the heatmap's maximum lies within 15 px of the object mask (ties: the
  share of the tied maxima that hit, so a flat map scores the chance level).
* **Energy in mask**: the share of the min-max normalised heatmap's mass on the object (Score-CAM's
  energy-based pointing game); a flat map scores the object's area.

Heatmaps are stretched from their cells to image pixels (a map of ``h x w`` cells at stride ``s``
covers ``h*s x w*s`` input pixels) before scoring. Baselines: a centre prior, a uniform map, the
untrained blocks, and Grad-CAM of the plain backbone's last stage for its top-1 class; beside them,
the Grad-CAM reference the server offers for the trained model (its last stage, its top-1 class).
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from attnlens import blocks
from attnlens.models import LoadedModel
from attnlens.models.gradcam import LayerActivation, grad_cam_map

from .composites import SIZE, CompositeSet

__all__ = ["TOLERANCE_PX", "energy_in_mask", "evaluate", "grad_cam", "near_mask", "pointing_hit", "stretch"]

TOLERANCE_PX = 15


def near_mask(mask: np.ndarray, tolerance: float = TOLERANCE_PX) -> np.ndarray:
    """Pixels within ``tolerance`` (Euclidean) of the mask: the mask dilated by a disk."""
    radius = int(tolerance)
    axis = torch.arange(-radius, radius + 1, dtype=torch.float32)
    disk = ((axis[:, None] ** 2 + axis[None, :] ** 2) <= tolerance ** 2).float()[None, None]
    hits = F.conv2d(torch.from_numpy(mask.astype(np.float32))[None, None], disk, padding=radius)
    return hits[0, 0].numpy() > 0.5


def pointing_hit(heatmap: np.ndarray, mask: np.ndarray, tolerance: float = TOLERANCE_PX,
                 near: np.ndarray | None = None) -> float:
    """1 if the maximum of ``heatmap`` is within ``tolerance`` pixels of ``mask``, else 0 (ties: the share).

    ``near``: ``near_mask(mask, tolerance)``, when already computed.
    """
    near = near_mask(mask, tolerance) if near is None else near
    return float(near[heatmap >= heatmap.max()].mean())


def energy_in_mask(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Share of the min-max normalised heatmap's mass inside ``mask`` (a flat map: the mask's area share)."""
    low, high = float(heatmap.min()), float(heatmap.max())
    normalised = (heatmap - low) / (high - low) if high > low else np.ones_like(heatmap)
    return float((normalised * mask).sum() / normalised.sum())


def stretch(heatmap: Tensor, stride: int, size: tuple[int, int]) -> np.ndarray:
    """Cells ``(h, w)`` at ``stride`` -> image pixels ``size`` (bilinear, cell centres on cell centres)."""
    h, w = heatmap.shape
    full = F.interpolate(heatmap.float()[None, None], size=(h * stride, w * stride), mode="bilinear",
                         align_corners=False)[0, 0]
    return full[: size[0], : size[1]].cpu().numpy()


def grad_cam(model: LoadedModel, batch: Tensor) -> Tensor:
    """Grad-CAM of the top-1 class at the model's Grad-CAM layer (Lite0: its last stage): ``(N, h, w)``."""
    with LayerActivation(model.module, model.gradcam_layer).kept() as layer, torch.enable_grad():
        logits = model.forward(batch)
        score = logits.gather(1, logits.argmax(dim=1, keepdim=True)).sum()
        return grad_cam_map(layer.output, score)


def centre_prior(size: int = SIZE) -> np.ndarray:
    axis = np.arange(size) - (size - 1) / 2
    return np.exp(-(axis[:, None] ** 2 + axis[None, :] ** 2) / (2 * (size / 4) ** 2))


def evaluate(trained: LoadedModel, untrained: LoadedModel, plain: LoadedModel, count: int = 200, seed: int = 1,
             batch_size: int = 16, progress: Callable | None = None, sources: dict[str, Path] | None = None) -> dict:
    """Scores on ``count`` held-out composites: ``{"rows": {name: {"pointing", "energy"}}, "agreement": ...}``."""
    data = CompositeSet("heldout", count, seed=seed, sources=sources)
    strides = {block.id: block.feature_stride for block in trained.blocks}
    scores: dict[str, list[tuple[float, float]]] = defaultdict(list)
    agreements = []
    batches = range(0, count, batch_size)
    for start in progress(batches) if progress else batches:
        items = [data[i] for i in range(start, min(count, start + batch_size))]
        images = torch.stack([item["image"] for item in items])
        teachers = torch.stack([item["teacher"] for item in items])
        masks = [item["mask"].numpy() > 0.5 for item in items]
        maps = {}
        for label, model in (("trained", trained), ("untrained", untrained)):
            with torch.no_grad(), blocks.capture(model.module) as captured:
                model.module(model.normalize(images.to(model.device)))
            for name, record in captured.items():
                maps[f"{label} {record.type} ({name})"] = (record.heatmap, strides[name])
        for label, model in (("Grad-CAM, plain backbone last stage", plain),
                             ("Grad-CAM reference, trained model (what include=gradcam serves)", trained)):
            cams = grad_cam(model, images)
            maps[label] = (cams, math.ceil(SIZE / cams.shape[-1]))
        for i, mask in enumerate(masks):
            near = near_mask(mask)
            stretched = {name: stretch(heatmaps[i], stride, (SIZE, SIZE)) for name, (heatmaps, stride) in maps.items()}
            stretched |= {"centre prior": centre_prior(), "uniform": np.ones((SIZE, SIZE))}
            for name, heatmap in stretched.items():
                scores[name].append((pointing_hit(heatmap, mask, near=near), energy_in_mask(heatmap, mask)))
        with torch.no_grad():
            student = trained.module(trained.normalize(teachers.to(trained.device))).argmax(1)
            reference = plain.module(plain.normalize(teachers.to(plain.device))).argmax(1)
        agreements += (student == reference).tolist()
    rows = {name: {"pointing": float(np.mean([p for p, _ in values])), "energy": float(np.mean([e for _, e in values]))}
            for name, values in scores.items()}
    return {"rows": rows, "agreement": float(np.mean(agreements)), "count": count}
