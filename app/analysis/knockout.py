"""Knockout: does a prediction depend on a block's map? The model run again with each block's map made flat
(``attnlens.blocks.knockout``), one extra forward per block, and what changed.

For a classifier, ``change`` says whether the top class stayed and how its probability moved; for a detector,
which detections were lost and gained (matched by class at IoU >= 0.5, best first, in original-image pixels) and
how the scores of the kept ones moved. It is an inference-time ablation of this trained model, not a model
trained without the block.
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch
from torchvision.ops import box_iou

from attnlens import blocks
from attnlens.blocks.knockout import knockout
from attnlens.models import LoadedModel
from attnlens.models.inputs import InputGeometry
from attnlens.models.outputs import Detections

from .report import detection_report, detections_on_image, prediction_report

__all__ = ["MATCH_IOU", "Knocked", "knockout_report", "knocked_modules"]

MATCH_IOU = 0.5


@dataclass(frozen=True)
class Knocked:
    """One block knocked out over a batch: its module ``block``, ``kind``, what was ``replaced`` (the kind's
    sentence), the answer read from the model with that map flat (``predictions`` as ``RunResult`` has them, and a
    detector's ``scored`` at the scoring threshold when asked; None for a block not knocked out: ``skipped`` says
    why), and how many maps were ``flattened``."""

    block: str
    kind: str
    replaced: str
    predictions: Any = None
    scored: Any = None
    flattened: int = 0
    skipped: str | None = None


def knocked_modules(model: LoadedModel) -> list[tuple[str, str]]:
    """The model's blocks as modules (a module called twice is one block), ``(module name, kind)``, in order."""
    seen: dict[str, str] = {}
    for block in model.blocks:
        seen.setdefault(block.id.split("#")[0], block.type)
    return list(seen.items())


def run_knockouts(model: LoadedModel, forward: Callable[[], Any],
                  read: Callable[[Any], tuple[Any, Any]]) -> list[Knocked]:
    """Each block of ``model`` knocked out in turn: ``forward()`` the model's raw output on the batch, ``read`` it
    (the predictions, and a detector's boxes at the scoring threshold or None)."""
    done = []
    for name, kind in knocked_modules(model):
        flat = blocks.KINDS[kind]
        if flat.flatten is None:
            done.append(Knocked(name, kind, flat.flat, skipped=flat.flat))
            continue
        with ExitStack() as stack:
            try:
                state = stack.enter_context(knockout(model.module, name))
            except ValueError as error:  # no longer a block as recognised (its module changed since): said, not run
                done.append(Knocked(name, kind, flat.flat, skipped=str(error)))
                continue
            predictions, scored = read(forward())
        done.append(Knocked(name, kind, flat.flat, predictions, scored, state.flattened,
                            None if state.flattened else "the block computed no map in this pass: nothing was made flat"))
    return done


def knockout_report(knocked: Knocked, i: int, task: str, before: Any, geometry: InputGeometry,
                    label: Callable[[int], str]) -> dict:
    """Image ``i``'s entry: ``block``, ``kind``, ``replaced``, the answer with that map flat in the main answer's form
    (``predictions`` or ``detections``) and its ``change``; a block not knocked out has ``skipped`` (why)."""
    entry: dict[str, Any] = {"block": knocked.block, "kind": knocked.kind, "replaced": knocked.replaced}
    if knocked.skipped is not None:
        entry["skipped"] = knocked.skipped
    if knocked.predictions is None:
        return entry
    after = knocked.predictions[i]
    if task == "classify":
        entry["predictions"], _ = prediction_report(after.cpu(), label)
        entry["change"] = _class_change(before.cpu(), after.cpu(), label)
    elif task == "detect":
        entry["detections"], _ = detection_report(after, geometry, label)
        entry["change"] = _detection_change(before, after, geometry)
    return entry


def _class_change(before: torch.Tensor, after: torch.Tensor, label: Callable[[int], str]) -> dict:
    top = int(torch.nan_to_num(before, nan=-1.0).argmax())
    new_top = int(torch.nan_to_num(after, nan=-1.0).argmax())
    return {"top_kept": top == new_top, "top": {"index": top, "label": label(top)},
            "new_top": {"index": new_top, "label": label(new_top)},
            "probability": round(float(before[top]), 6), "probability_after": round(float(after[top]), 6),
            "probability_change": round(float(after[top] - before[top]), 6)}


def _detection_change(before: Detections, after: Detections, geometry: InputGeometry) -> dict:
    """The detections lost (indices into the model's own list) and gained (into the knocked-out list), and the kept
    ones' score changes: each of the model's detections, best first, takes the best unmatched knocked-out detection
    of its class at IoU >= 0.5."""
    first, _ = detections_on_image(before, geometry)
    second, _ = detections_on_image(after, geometry)
    overlaps = box_iou(first.boxes.float(), second.boxes.float()) if len(first.boxes) and len(second.boxes) else \
        torch.zeros(len(first.boxes), len(second.boxes))
    taken, kept, lost = set(), [], []
    for i in range(len(first.boxes)):
        candidates = [(float(overlaps[i, j]), j) for j in range(len(second.boxes)) if j not in taken and
                      int(second.classes[j]) == int(first.classes[i]) and float(overlaps[i, j]) >= MATCH_IOU]
        if not candidates:
            lost.append(i)
            continue
        iou, j = max(candidates)
        taken.add(j)
        kept.append({"index": i, "matched": j, "iou": round(iou, 4),
                     "score_change": round(float(second.scores[j] - first.scores[i]), 6)})
    gained = [j for j in range(len(second.boxes)) if j not in taken]
    changes = [k["score_change"] for k in kept]
    return {"lost": lost, "gained": gained, "kept": kept,
            "mean_score_change": round(sum(changes) / len(changes), 6) if changes else None}
