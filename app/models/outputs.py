"""How a model's output is read: class logits, boxes in one of the YOLO / torchvision layouts, or nothing.

``infer_reader(output, ...)`` looks at the output of one probe pass and picks the reader (``task auto``),
or checks that an explicit task fits. Layouts (SPEC section 7, checked in the public code):

* class logits ``(N, K)`` -> softmax, top 5;
* ultralytics v8 / 11 ``Detect``: ``(y, feats)``, ``y`` ``(N, 4 + nc [+ extra], A)``: xywh in input pixels,
  sigmoid class scores, no objectness;
* YOLOv5 / v7: ``(y, feats)``, ``y`` ``(N, A, 5 + nc [+ extra])``: xywh, objectness, class scores
  (confidence = objectness x class score);
* end-to-end heads (YOLOv10, YOLO26): ``(N, K, 6 [+ extra])`` = x1, y1, x2, y2, score, class;
* torchvision detectors: a list of dicts ``boxes`` (xyxy, input pixels), ``labels``, ``scores``.

Extra channels after the classes (segmentation mask coefficients, pose keypoints, an OBB angle) are
named as ignored. Box outputs are decoded with a confidence threshold, class-wise NMS
(``torchvision.ops.batched_nms``) and ``max_det``; boxes stay in input pixels here (the analysis maps
them back onto the image). Any other output reads as task ``maps``, with the reason.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torchvision.ops import batched_nms

__all__ = ["TASKS", "BoxReader", "ClassReader", "Detections", "MapsOnly", "OutputError", "OutputReader", "TargetError",
           "infer_reader"]

TASKS = ("auto", "classify", "detect", "maps")
END_TO_END_MAX_COLUMNS = 6 + 57  # x1 y1 x2 y2 score class + at most a pose head's extras
END_TO_END_MAX_ROWS = 1000  # end-to-end heads return a few hundred final boxes; dense heads thousands of anchors
EXTRA_NAMES = {32: "32 segmentation mask coefficients", 51: "17 pose keypoints (x, y, visibility)",
               1: "1 oriented-box angle"}


class OutputError(ValueError):
    """The output cannot be read as the task asked for."""


@dataclass(frozen=True)
class Detections:
    """One image's boxes, best first: ``boxes`` ``(K, 4)`` xyxy in input pixels, ``scores`` ``(K,)``,
    ``classes`` ``(K,)`` (int), ``rows`` ``(K,)``: where each came from in the raw output (anchor / row index)."""

    boxes: Tensor
    scores: Tensor
    classes: Tensor
    rows: Tensor
    dropped: int = 0  # candidates left out: a box or score not finite (NaN / inf), or an empty box

    def detach(self) -> Detections:
        return Detections(self.boxes.detach(), self.scores.detach(), self.classes, self.rows, self.dropped)

    def confident(self, conf: float, max_det: int) -> Detections:
        """The best ``max_det`` of those scoring at least ``conf``."""
        keep = torch.nonzero(self.scores >= conf)[:max_det, 0]
        return Detections(self.boxes[keep], self.scores[keep], self.classes[keep], self.rows[keep])


class OutputReader(ABC):
    """Reads a batch's raw output. ``task``: what it gives; ``layout``: the layout, in words; ``note``: what
    was ignored, or why there are no predictions."""

    task: str
    layout: str = ""
    note: str = ""

    @abstractmethod
    def read(self, output: Any) -> Any:
        """``classify``: probabilities ``(N, K)``; ``detect``: a ``Detections`` per image; ``maps``: None."""

    def score(self, output: Any, predictions: Any, i: int, target: int, kind: str = "class") -> Tensor:
        """The differentiable score of ``target`` in image ``i`` that a reference map explains (``predictions``:
        what ``read`` gave; ``kind``: of a detection, its ``class`` score, ``box`` coordinates or ``all``, both);
        ``TargetError`` if there is none."""
        raise TargetError(f"task {self.task}: the output is not read, so there is no score for a reference map to "
                          f"explain (eigencam needs none)")


class TargetError(ValueError):
    """A reference map's target the model's output does not have."""


@dataclass(frozen=True)
class ClassReader(OutputReader):
    num_classes: int
    task: str = "classify"
    layout: str = "class logits (N, K)"
    note: str = ""

    def read(self, output: Any) -> Tensor:
        """Softmax probabilities over the finite logits; a class whose logit is not finite (NaN / inf) gets NaN
        (left out of the predictions and said), the others share the probability."""
        logits = _primary(output).float()
        finite = torch.isfinite(logits)
        return logits.masked_fill(~finite, float("-inf")).softmax(dim=-1).masked_fill(~finite, float("nan"))

    def score(self, output: Any, predictions: Tensor, i: int, target: int, kind: str = "class") -> Tensor:
        """The logit of class ``target``."""
        if kind != "class":
            raise TargetError(f"target_kind {kind} is for detectors: a classifier's target is its class score")
        if not 0 <= target < self.num_classes:
            raise TargetError(f"target must be a class index from 0 to {self.num_classes - 1}, got {target}")
        return _primary(output)[i, target]


@dataclass(frozen=True)
class MapsOnly(OutputReader):
    note: str
    task: str = "maps"
    layout: str = "not read"

    def read(self, output: Any) -> None:
        return None


@dataclass(frozen=True)
class BoxReader(OutputReader):
    """``kind``: ``ultralytics``, ``yolov5``, ``end2end`` or ``torchvision``; ``num_classes``: classes read
    (the channels after them are ignored)."""

    kind: str
    num_classes: int
    conf: float = 0.25
    iou: float = 0.45
    max_det: int = 100
    layout: str = ""
    note: str = ""
    task: str = "detect"

    def read(self, output: Any) -> list[Detections]:
        if self.kind == "torchvision":
            return [self._keep(item["boxes"].float(), item["scores"].float(), item["labels"].long(), nms=False)
                    for item in output]
        y = _primary(output).float()
        if self.kind == "ultralytics":
            y = y.transpose(1, 2)  # (N, A, C)
        results = []
        for rows in y:
            if self.kind == "end2end":
                boxes, scores, classes = rows[:, :4], rows[:, 4], rows[:, 5].round().long()
                results.append(self._keep(boxes, scores, classes, nms=False))
                continue
            first = 5 if self.kind == "yolov5" else 4
            class_scores = rows[:, first:first + self.num_classes]
            if self.kind == "yolov5":
                class_scores = class_scores * rows[:, 4:5]  # objectness x class score
            scores, classes = class_scores.max(dim=1)
            results.append(self._keep(_xywh_to_xyxy(rows[:, :4]), scores, classes, nms=True))
        return results

    def narrows(self, reader: OutputReader) -> bool:
        """Whether ``narrowed`` can take what ``reader`` read: the same layout and NMS, a threshold no higher, a cap
        no smaller."""
        return isinstance(reader, BoxReader) and (reader.kind, reader.iou) == (self.kind, self.iou) and \
            reader.conf <= self.conf and reader.max_det >= self.max_det

    def narrowed(self, read: list[Detections]) -> list[Detections]:
        """What this reader reads, from what a reader it ``narrows`` read of the same output, without a second NMS:
        NMS keeps a box unless a better one it kept overlaps it, so the boxes above ``conf`` it keeps are the same
        whatever the boxes below (ties in score aside)."""
        return [detections.confident(self.conf, self.max_det) for detections in read]

    def _keep(self, boxes: Tensor, scores: Tensor, classes: Tensor, nms: bool) -> Detections:
        """Confident candidates with finite, non-empty boxes (corners put in order), after NMS, best first;
        ``dropped`` counts those left out for a value that is not finite or an empty box."""
        finite = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores)
        candidates = ~(scores < self.conf)  # NaN scores included: they are not finite, not unconfident
        boxes = torch.cat([torch.minimum(boxes[:, :2], boxes[:, 2:]), torch.maximum(boxes[:, :2], boxes[:, 2:])], 1)
        nonempty = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        keep = candidates & finite & nonempty
        dropped = int((candidates & ~keep).sum())
        boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
        if nms:
            order = batched_nms(boxes, scores, classes, self.iou)
        else:
            order = scores.argsort(descending=True)
        order = order[: self.max_det]
        return Detections(boxes[order], scores[order], classes[order], keep.nonzero()[:, 0][order], dropped)

    def score(self, output: Any, predictions: list[Detections], i: int, target: int, kind: str = "class") -> Tensor:
        """Of the detection ranked ``target`` in image ``i``, recomputed from the raw output: its confidence
        (``class``), the sum of its four box coordinates as the output gives them (``box``: xywh or xyxy, input
        pixels), or both added (``all``), as the community YOLO heatmap scripts' ``backward_type``."""
        found = predictions[i]
        if not 0 <= target < len(found.rows):
            raise TargetError(f"target must be a detection's rank from 0 to {len(found.rows) - 1}, got {target}"
                              if len(found.rows) else "there is no detection above the confidence threshold to explain")
        row, cls = int(found.rows[target]), int(found.classes[target])
        if self.kind == "torchvision":
            confidence, box = output[i]["scores"][row], output[i]["boxes"][row]
        else:
            y = _primary(output)
            rows = y[i].transpose(0, 1) if self.kind == "ultralytics" else y[i]  # (A, C)
            box = rows[row, :4]
            confidence = rows[row, 4 + cls] if self.kind == "ultralytics" else \
                rows[row, 4] * rows[row, 5 + cls] if self.kind == "yolov5" else rows[row, 4]  # end-to-end
        return confidence if kind == "class" else box.sum() if kind == "box" else confidence + box.sum()


def _xywh_to_xyxy(boxes: Tensor) -> Tensor:
    centre, size = boxes[:, :2], boxes[:, 2:4]
    return torch.cat([centre - size / 2, centre + size / 2], dim=1)


def leading_output(output: Any) -> Any:
    """What a model's output leads with: the output itself, or the first element of nested tuples / lists
    (YOLO's ``(y, feats)``, a segmentation head's ``((y, protos), ...)``); torchvision's list of dicts whole."""
    while isinstance(output, (tuple, list)) and output and not isinstance(output[0], dict):
        output = output[0]
    return output


def _primary(output: Any) -> Any:
    """The tensor a model's output leads with (``leading_output``); None if it leads with none."""
    output = leading_output(output)
    return output if isinstance(output, Tensor) else None


def _is_torchvision_detections(output: Any) -> bool:
    return (isinstance(output, list) and bool(output) and all(isinstance(item, dict) for item in output)
            and {"boxes", "labels", "scores"} <= set(output[0]))


def _describe(output: Any) -> str:
    if isinstance(output, Tensor):
        return f"a tensor of shape {tuple(output.shape)}"
    if isinstance(output, (tuple, list)):
        return f"a {type(output).__name__} of {len(output)} ({', '.join(_describe(o) for o in output[:3])}" + \
            (", ..." if len(output) > 3 else "") + ")"
    if isinstance(output, dict):
        return f"a dict with keys {', '.join(map(str, list(output)[:6]))}"
    return f"a {type(output).__name__}"


def _extra_note(extra: int) -> str:
    if extra <= 0:
        return ""
    return f"ignored: {EXTRA_NAMES.get(extra, f'{extra} channels')} after the classes"


def _boxes(output: Any, batch: int, num_classes: int | None, conf: float, iou: float,
           max_det: int) -> BoxReader | str:
    """The box reader for ``output``, or a sentence saying why it is not a box layout we read."""
    if _is_torchvision_detections(output):
        return BoxReader("torchvision", num_classes or 0, conf, iou, max_det,
                         layout="torchvision detector: list of dicts boxes / labels / scores")
    y = _primary(output)
    if y is None or y.dim() != 3 or y.shape[0] != batch:
        return f"the output is {_describe(output)}, not boxes"
    rows, columns = y.shape[1], y.shape[2]
    class_column = y[..., 5] if 6 <= columns <= END_TO_END_MAX_COLUMNS else None
    if rows <= END_TO_END_MAX_ROWS and class_column is not None and torch.equal(class_column, class_column.round()) \
            and (num_classes is None or int(class_column.max()) < num_classes):  # x1 y1 x2 y2 score class-id
        return BoxReader("end2end", num_classes or 0, conf, iou, max_det, note=_extra_note(columns - 6),
                         layout=f"end-to-end (N, {rows} boxes, x1 y1 x2 y2 score class)")
    channel_first = columns > rows  # ultralytics: (N, 4 + nc, A), A in the thousands; YOLOv5: (N, A, 5 + nc)
    if num_classes is not None:  # with the class count known, the layout whose channels add up wins
        fits_ultralytics = rows - 4 - num_classes in EXTRA_NAMES or rows == 4 + num_classes
        fits_yolov5 = columns - 5 - num_classes in EXTRA_NAMES or columns == 5 + num_classes
        if fits_ultralytics != fits_yolov5:
            channel_first = fits_ultralytics
    if channel_first:
        classes = num_classes if num_classes is not None else rows - 4
        if rows < 4 + max(classes, 1):
            return f"{rows} channels cannot hold 4 box coordinates and {classes} classes"
        return BoxReader("ultralytics", classes, conf, iou, max_det, note=_extra_note(rows - 4 - classes),
                         layout=f"ultralytics (N, 4 + {classes} classes, {columns} anchors)")
    classes = num_classes if num_classes is not None else columns - 5
    if columns < 5 + max(classes, 1):
        return f"{columns} columns cannot hold 4 box coordinates, objectness and {classes} classes"
    return BoxReader("yolov5", classes, conf, iou, max_det, note=_extra_note(columns - 5 - classes),
                     layout=f"YOLOv5 / v7 (N, {rows} anchors, 5 + {classes} classes)")


def infer_reader(output: Any, batch: int, task: str = "auto", num_classes: int | None = None, conf: float = 0.25,
                 iou: float = 0.45, max_det: int = 100) -> OutputReader:
    """The reader of ``output`` (one probe pass of ``batch`` images) for ``task``; ``num_classes``: known from the
    model's ``names`` / ``nc`` or labels, else inferred from the layout. ``OutputError`` when an explicit task
    does not fit the output."""
    if task not in TASKS:
        raise OutputError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if task == "maps":
        return MapsOnly("task maps: the output is not read (maps only)")
    primary = _primary(output)
    is_logits = primary is not None and primary.dim() == 2 and primary.shape[0] == batch and primary.shape[1] >= 2 \
        and not _is_torchvision_detections(output)
    if task == "classify" or (task == "auto" and is_logits):
        if not is_logits:
            raise OutputError(f"task classify needs class logits (N, K); the model returns {_describe(output)}")
        return ClassReader(primary.shape[1])
    boxes = _boxes(output, batch, num_classes, conf, iou, max_det)
    if isinstance(boxes, BoxReader):
        return boxes
    if task == "detect":
        raise OutputError(f"task detect: {boxes}; readable layouts: ultralytics (N, 4+nc, A), YOLOv5 (N, A, 5+nc), "
                          f"end-to-end (N, K, 6), torchvision list of dicts")
    return MapsOnly(f"no predictions: {boxes}, and not class logits (N, K) either: maps only")
