"""Are the maps about the object? Pointing game and energy-in-mask on held-out composites (the model card).

The measures are ``attnlens.evaluation.measures``' (the same code ``attnlens eval --data`` scores a user's
dataset with), on the composites' object masks:

* **Pointing game**: a hit when the heatmap's maximum lies within 15 px of the object mask (ties: the
  share of the tied maxima that hit, so a flat map scores the chance level).
* **Energy in mask**: the share of the min-max normalised heatmap's mass on the object (Score-CAM's
  energy-based pointing game); a flat map scores the object's area.

Heatmaps are brought to the composite's pixels as there (bilinear, cell centres on cell centres). Baselines:
a centre prior, a uniform map, the untrained blocks, and Grad-CAM of the plain backbone's last stage for
its top-1 class; beside them, the Grad-CAM reference the server offers for the trained model (its last
stage, its top-1 class).
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from attnlens import blocks
from attnlens.evaluation.measures import centre_map, mask_region, measure, to_image
from attnlens.models import InputGeometry, LoadedModel
from attnlens.models.references import LayerActivations, gradients_of, reference_maps

from .composites import SIZE, CompositeSet

__all__ = ["evaluate", "grad_cam"]

COMPOSITE = InputGeometry(size=(SIZE, SIZE), content=(0, 0, SIZE, SIZE), image_size=(SIZE, SIZE))


def grad_cam(model: LoadedModel, batch: Tensor) -> Tensor:
    """Grad-CAM of the top-1 class at the model's reference layer (Lite0: its last stage): ``(N, h, w)``."""
    with LayerActivations(model.module, model.reference_layers).kept() as layers, torch.enable_grad():
        logits = model.forward(batch)
        score = logits.gather(1, logits.argmax(dim=1, keepdim=True)).sum()
        return reference_maps("gradcam", layers.outputs, gradients_of(score, layers.outputs))


def evaluate(trained: LoadedModel, untrained: LoadedModel, plain: LoadedModel, count: int = 200, seed: int = 1,
             batch_size: int = 16, progress: Callable | None = None, sources: dict[str, Path] | None = None) -> dict:
    """Scores on ``count`` held-out composites: ``{"rows": {name: {"pointing", "energy"}}, "agreement": ...}``."""
    data = CompositeSet("heldout", count, seed=seed, sources=sources)
    scores: dict[str, list[tuple[float, float]]] = defaultdict(list)
    agreements = []
    batches = range(0, count, batch_size)
    prior, flat = centre_map(SIZE, SIZE, "cpu"), torch.ones(SIZE, SIZE)
    for start in progress(batches) if progress else batches:
        items = [data[i] for i in range(start, min(count, start + batch_size))]
        images = torch.stack([item["image"] for item in items])
        teachers = torch.stack([item["teacher"] for item in items])
        maps = {}
        for label, model in (("trained", trained), ("untrained", untrained)):
            with torch.no_grad(), blocks.capture(model.module) as captured:
                model.module(model.normalize(images.to(model.device)))
            for name, record in captured.items():
                maps[f"{label} {record.type} ({name})"] = record.heatmap
        for label, model in (("Grad-CAM, plain backbone last stage", plain),
                             ("Grad-CAM reference, trained model (what include=gradcam serves)", trained)):
            maps[label] = grad_cam(model, images)
        for i, item in enumerate(items):
            region = mask_region(item["mask"] > 0.5)
            on_image = {name: to_image(heatmaps[i].cpu(), COMPOSITE) for name, heatmaps in maps.items()}
            on_image |= {"centre prior": prior, "uniform": flat}
            for name, heatmap in on_image.items():
                scored = measure(heatmap, region)
                scores[name].append((scored["pointing"], scored["energy"]))
        with torch.no_grad():
            student = trained.module(trained.normalize(teachers.to(trained.device))).argmax(1)
            reference = plain.module(plain.normalize(teachers.to(plain.device))).argmax(1)
        agreements += (student == reference).tolist()
    rows = {name: {"pointing": float(np.mean([p for p, _ in values])), "energy": float(np.mean([e for _, e in values]))}
            for name, values in scores.items()}
    return {"rows": rows, "agreement": float(np.mean(agreements)), "count": count}
