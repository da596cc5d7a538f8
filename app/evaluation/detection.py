"""Detection quality beside attention: for every detector, COCO AP on the dataset's boxes (``coco_ap``), each
labelled object found or missed, and where each map looked on the objects found and on those missed.

* The ground truth (``ground_truth.json``, COCO format): the images scored (unreadable ones left out), in dataset
  order, with the classes counted; a COCO dataset keeps its file's image and category ids, a YOLO one gets image
  ids 1, 2, ... (its images in order) and category id = class index + 1. ``bbox`` ``[x, y, w, h]`` in
  original-image pixels (YOLO: 3 decimals), ``area`` (COCO: the file's, else the box's; YOLO: the box's or the
  polygon's), ``iscrowd``.
* A detector's detections (``detections/<model>.json``, COCO results): its boxes read at the low threshold
  (``AP_CONF``, at most ``AP_MAX_DET`` per image), classes mapped to the dataset's (``coco_ap.class_mapping``),
  ``bbox`` with 2 decimals, ``score`` with 5. AP is computed from exactly these numbers.
* Found / missed: the detections above the model's own threshold (``--conf``, what ``analyze`` shows), matched
  to the objects of their class as COCO matches (best first, each taking the unmatched box of the highest IoU),
  at IoU >= ``MATCH_IOU``; crowd regions are no object to find.
* Intervals: a bootstrap over images (``summary.BOOTSTRAP`` draws, seeded, the same draws for every model, so
  comparisons are paired): AP of the images drawn (an image drawn twice counts twice), and for found / missed the
  mean over the objects of the images drawn.
"""
from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attnlens.models import LoadedModel

from .coco_ap import AP_CONF, AP_MAX_DET, MATCH_IOU, Boxes, Evaluation, class_mapping, matched
from .datasets import Dataset, LabelledImage
from .measures import SIZES
from .run import BatchScores, DetectedBoxes, KnockedImages, ObjectScore
from .summary import BOOTSTRAP

__all__ = ["PER_OBJECT_COLUMNS", "DetectionResults", "evaluate_detections", "file_name"]

PER_OBJECT_COLUMNS = ("image", "model", "object", "class", "size", "x0", "y0", "x1", "y1", "found", "iou", "score",
                      "map", "type", "energy", "pointing")
ATTENTION_MEASURES = ("energy", "pointing")


def file_name(model: str) -> str:
    """A model's name as a file name: the name itself, but for ``/``, ``\\`` and control characters (``_``); a
    name of dots only is ``model``."""
    name = re.sub(r"[/\\\x00-\x1f]", "_", model)
    return "model" if not name.strip(".") else name


@dataclass
class DetectionResults:
    """What ``evaluate_detections`` gives: ``summary`` (``summary.json``'s ``detection``), ``comparisons`` (AP and
    AP50 entries of ``comparisons``), ``files`` (relative path -> JSON content: ground truth, detections),
    ``per_object`` (``PER_OBJECT_COLUMNS`` rows), ``status`` (``{(model, image id): {object: found}}``) and with
    knockout, ``knockout`` (``{model: [each block's AP with its map flat, and the change]}``)."""

    summary: dict
    comparisons: list[dict]
    files: dict[str, Any]
    per_object: list[tuple]
    status: dict[tuple[str, str], dict[int, bool]]
    knockout: dict[str, list[dict]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Truth:
    images: list[LabelledImage]
    boxes: list[Boxes]
    objects: list[list[int]]  # per image, the object index of each box
    coco: dict


def _ground_truth(dataset: Dataset, sizes: dict[str, tuple[int, int]]) -> _Truth:
    """The images read (``sizes``: each one's upright size, from the scoring), in dataset order, as COCO holds them."""
    counted = list(dataset.counted if dataset.counted is not None else range(len(dataset.classes)))
    category_ids = dataset.category_ids or [k + 1 for k in range(len(dataset.classes))]
    coco: dict[str, Any] = {"info": {"description": f"attnlens eval: the ground truth of {dataset.name}"},
                            "images": [], "annotations": [],
                            "categories": [{"id": category_ids[k], "name": dataset.classes[k]} for k in counted]}
    images, boxes, objects = [], [], []
    for number, image in enumerate(dataset.images, 1):
        if image.id not in sizes:
            continue  # unreadable: not scored
        width, height = sizes[image.id]
        image_id = image.coco_id if image.coco_id is not None else number
        coco["images"].append({"id": image_id, "file_name": image.id, "width": width, "height": height})
        rows, places = [], []
        for j, obj in enumerate(image.objects):
            placed = obj.in_pixels(width, height)
            bbox = placed.bbox or tuple(round(v, 3) for v in placed.xywh)
            area = placed.labelled_area if placed.labelled_area is not None else \
                (placed.area if placed.polygon is not None else bbox[2] * bbox[3])
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": image_id,
                                        "category_id": category_ids[obj.index], "bbox": list(bbox), "area": area,
                                        "iscrowd": int(obj.crowd)})
            rows.append((obj.index, *bbox, area, obj.crowd))
            places.append(j)
        table = np.array(rows, dtype=np.float64).reshape(-1, 7)
        boxes.append(Boxes(table[:, 1:5], table[:, 0].astype(np.int64), area=table[:, 5], crowd=table[:, 6] > 0))
        images.append(image)
        objects.append(places)
    return _Truth(images, boxes, objects, coco)


def _coco_detections(found: DetectedBoxes | None, mapping: dict[int, int]) -> tuple[Boxes, list[dict]]:
    """A model's detections of one image in the dataset's classes, as written (2 decimals, scores 5)."""
    if found is None:
        return Boxes.empty(truth=False), []
    rows = []
    for (x0, y0, x1, y1), score, cls in zip(found.boxes.tolist(), found.scores.tolist(), found.classes.tolist()):
        if int(cls) in mapping:
            rows.append((mapping[int(cls)], round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2),
                         round(score, 5)))
    table = np.array(rows, dtype=np.float64).reshape(-1, 6)
    return Boxes(table[:, 1:5], table[:, 0].astype(np.int64), score=table[:, 5]), rows


def _draws(images: int, seed: int) -> np.ndarray:
    """``(BOOTSTRAP, images)``: how often each image is drawn in each bootstrap draw."""
    counts = np.zeros((BOOTSTRAP, images))
    if images:
        picks = np.random.default_rng(seed).integers(0, images, size=(BOOTSTRAP, images))
        np.add.at(counts, (np.arange(BOOTSTRAP)[:, None], picks), 1)
    return counts


def _interval(value: float | None, draws: np.ndarray) -> dict:
    """``{"mean", "ci95"}``: ``value`` and the 2.5th / 97.5th percentiles of its bootstrap ``draws`` (those defined)."""
    finite = draws[np.isfinite(draws)]
    if value is None or not np.isfinite(value):
        return {"mean": None, "ci95": [None, None]}
    if not finite.size:
        return {"mean": float(value), "ci95": [None, None]}
    low, high = np.percentile(finite, [2.5, 97.5])
    return {"mean": float(value), "ci95": [float(low), float(high)]}


def _size(area: float) -> str:
    return next(name for name, limit in SIZES if area < limit)


@dataclass(frozen=True)
class _Labelled:
    """One object of the ground truth as a detector saw it: where it is, and the detection that found it."""

    place: int  # the image's place in the ground truth
    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    cls: str
    size: str
    hit: tuple[float, float] | None  # (IoU, score) of the shown detection that found it; None: missed


def _attention(scores: list[ObjectScore], labelled: dict[tuple[str, int], _Labelled], counts: np.ndarray) -> dict:
    """Per map: its energy and pointing on the objects found and on those missed (``{"found", "missed": {"objects",
    "energy", "pointing"}, "found_minus_missed": {"energy", "pointing"}}``), overall, ``by_class`` and ``by_size``;
    each a mean over objects, its draws the mean over the objects of the images drawn (one product for all)."""
    grouped: dict[tuple[str, str, str], list[tuple[int, float, float, bool]]] = defaultdict(list)
    for scored in scores:
        obj = labelled.get((scored.image, scored.object))
        if obj is not None:
            for kind, group in (("all", ""), ("class", obj.cls), ("size", obj.size)):
                grouped[scored.map, kind, group].append((obj.place, scored.energy, scored.pointing, obj.hit is not None))
    # one column per (map, group, found or missed, measure): each image's sum of the objects' values, and count
    columns = [(key, status, name) for key in grouped for status in (True, False) for name in ATTENTION_MEASURES]
    sums, numbers = np.zeros((counts.shape[1], len(columns))), np.zeros((counts.shape[1], len(columns)))
    for column, (key, status, name) in enumerate(columns):
        chosen = [(place, energy if name == "energy" else pointing)
                  for place, energy, pointing, found in grouped[key] if found == status]
        if chosen:
            places, values = np.array(chosen).T
            np.add.at(sums[:, column], places.astype(int), values)
            np.add.at(numbers[:, column], places.astype(int), 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        means = sums.sum(axis=0) / numbers.sum(axis=0)
        drawn = (counts @ sums) / (counts @ numbers)  # (draws, columns)
    index = {column: i for i, column in enumerate(columns)}

    def entry_of(key: tuple[str, str, str]) -> dict:
        entry: dict[str, Any] = {}
        for status, found in (("found", True), ("missed", False)):
            entry[status] = {"objects": sum(f == found for *_, f in grouped[key])}
            for name in ATTENTION_MEASURES:
                i = index[key, found, name]
                entry[status][name] = _interval(means[i], drawn[:, i])
        entry["found_minus_missed"] = {}
        for name in ATTENTION_MEASURES:
            a, b = index[key, True, name], index[key, False, name]
            entry["found_minus_missed"][name] = _interval(means[a] - means[b], drawn[:, a] - drawn[:, b])
        return entry

    attention = {}
    for key in grouped:
        if key[1] == "all":
            attention[key[0]] = entry_of(key) | {
                title: {group: entry_of((key[0], kind, group)) for (map_key, group_kind, group) in grouped
                        if map_key == key[0] and group_kind == kind}
                for kind, title in (("class", "by_class"), ("size", "by_size"))}
    return attention


def _model_entry(name: str, model: LoadedModel, stats: dict, per_class: dict, draws: dict[str, np.ndarray],
                 labelled: dict[tuple[str, int], _Labelled], classes: list[str], counted: list[int], how: str,
                 mapping: dict[int, int], detections: int, images: int, ap: tuple[float, int]) -> dict:
    entry: dict[str, Any] = dict(stats)
    entry["ci95"] = {key: _interval(float(per_class[f"{key}_all"]) if per_class[f"{key}_all"] >= 0 else None,
                                    np.where(draws[f"{key}_all"] >= 0, draws[f"{key}_all"], np.nan))["ci95"]
                     for key in ("AP", "AP50")}
    found = sum(obj.hit is not None for obj in labelled.values())
    reader = model.reader
    entry |= {"images": images, "objects": len(labelled), "found": found, "missed": len(labelled) - found,
              "detections": detections, "classes_matched": how,
              "classes_left_out": [model.label(i) for i in range(model.num_classes) if i not in mapping],
              "thresholds": {"ap_conf": ap[0], "ap_max_det": max(ap[1], reader.max_det), "conf": reader.conf,
                             "max_det": reader.max_det, "nms_iou": reader.iou, "match_iou": MATCH_IOU}}
    entry["by_class"] = {}
    for k in counted:
        of_class = [obj for obj in labelled.values() if obj.cls == classes[k]]
        entry["by_class"][classes[k]] = {"AP": float(per_class["AP"][k]), "AP50": float(per_class["AP50"][k]),
                                         "AP75": float(per_class["AP75"][k]), "objects": len(of_class),
                                         "found": sum(obj.hit is not None for obj in of_class)}
    return entry


def evaluate_detections(models: Sequence[tuple[str, LoadedModel]], dataset: Dataset, total: BatchScores, seed: int = 0,
                        ap: tuple[float, int] = (AP_CONF, AP_MAX_DET)) -> DetectionResults:
    """The detection section of the summary, its comparisons, files and per-object rows, for the detectors among
    ``models`` (the others have none)."""
    detectors = [(name, model) for name, model in models if model.task == "detect"]
    result = DetectionResults({}, [], {}, [], {})
    if not detectors:
        return result
    truth = _ground_truth(dataset, total.sizes)
    result.files["ground_truth.json"] = truth.coco
    counted = list(dataset.counted if dataset.counted is not None else range(len(dataset.classes)))
    category_ids = dataset.category_ids or [k + 1 for k in range(len(dataset.classes))]
    image_ids = [entry["id"] for entry in truth.coco["images"]]
    counts = _draws(len(truth.images), seed)
    scores_of: dict[str, list[ObjectScore]] = defaultdict(list)
    for scored in total.objects:
        scores_of[scored.model].append(scored)
    per_class: dict[str, dict] = {}
    draws: dict[str, dict[str, np.ndarray]] = {}
    for name, model in detectors:
        mapping, how = class_mapping([model.label(i) for i in range(model.num_classes)], dataset.classes)
        mapping = {m: d for m, d in mapping.items() if d in counted}
        scored, shown, rows = [], [], []
        for image, image_id in zip(truth.images, image_ids):
            found = total.detections.get((name, image.id))
            boxes, written = _coco_detections(found.scored if found else None, mapping)
            scored.append(boxes)
            shown.append(_coco_detections(found.shown if found else None, mapping)[0])
            rows += [{"image_id": image_id, "category_id": category_ids[cls], "bbox": [x, y, w, h], "score": score}
                     for cls, x, y, w, h, score in written]
        path = f"detections/{file_name(name)}.json"
        while path in result.files:  # two names made one by file_name
            path = path.removesuffix(".json") + "-2.json"
        result.files[path] = rows
        evaluation = Evaluation(truth.boxes, scored, len(dataset.classes))
        per_class[name] = evaluation.per_class()
        draws[name] = evaluation.per_class(counts)
        labelled: dict[tuple[str, int], _Labelled] = {}
        for place, image in enumerate(truth.images):
            gt = truth.boxes[place]
            taken = {box: (hit_iou, float(shown[place].score[d])) for box, (d, hit_iou) in matched(gt, shown[place]).items()}
            result.status[name, image.id] = {}
            for b, j in enumerate(truth.objects[place]):
                if not gt.crowd[b]:
                    x, y, w, h = gt.bbox[b].tolist()
                    labelled[image.id, j] = _Labelled(place, (x, y, x + w, y + h), dataset.classes[int(gt.category[b])],
                                                      _size(float(gt.area[b])), taken.get(b))
                    result.status[name, image.id][j] = b in taken
        entry = _model_entry(name, model, evaluation.stats(), per_class[name], draws[name], labelled, dataset.classes,
                             counted, how, mapping, len(rows), len(truth.images), ap)
        entry["file"] = path
        entry["attention"] = _attention(scores_of[name], labelled, counts)
        result.summary[name] = entry
        knocked = [(block, entry) for (model_name, block), entry in total.knockouts.items() if model_name == name]
        if knocked:
            result.knockout[name] = _knockout_ap(knocked, truth, mapping, len(dataset.classes), per_class[name],
                                                 draws[name], counts)
        for scored_object in scores_of[name]:
            obj = labelled.get((scored_object.image, scored_object.object))
            if obj is not None:
                result.per_object.append((scored_object.image, name, scored_object.object, obj.cls, obj.size, *obj.box,
                                          int(obj.hit is not None), *(obj.hit or (None, None)), scored_object.map,
                                          scored_object.type, scored_object.energy, scored_object.pointing))
    first = detectors[0][0]
    for other, _ in detectors[1:]:
        result.comparisons += _compare_ap(first, other, per_class, draws, dataset.classes, counted, len(truth.images))
    return result


def _knockout_ap(knocked: list[tuple[str, KnockedImages]], truth: _Truth, mapping: dict[int, int], classes: int,
                 full: dict, full_draws: dict, counts: np.ndarray) -> list[dict]:
    """Each block knocked out: AP and AP50 from its boxes, and their change from the full model's, paired on the
    same bootstrap draws; the blocks whose flat map costs the most AP first."""
    entries = []
    for block, images in knocked:
        entry: dict[str, Any] = {"block": block, "kind": images.kind, "replaced": images.replaced}
        if images.skipped is not None:
            entries.append(entry | {"skipped": images.skipped})
            continue
        scored = [_coco_detections(images.detections.get(image.id), mapping)[0] for image in truth.images]
        evaluation = Evaluation(truth.boxes, scored, classes)
        figures, draws = evaluation.per_class(), evaluation.per_class(counts)
        for key in ("AP", "AP50"):
            value, before = float(figures[f"{key}_all"]), float(full[f"{key}_all"])
            defined = value >= 0 and before >= 0
            entry[key] = value if value >= 0 else None
            differences = np.where((draws[f"{key}_all"] >= 0) & (full_draws[f"{key}_all"] >= 0),
                                   draws[f"{key}_all"] - full_draws[f"{key}_all"], np.nan)
            entry[f"{key}_change"] = _interval(value - before if defined else None, differences)
        entries.append(entry)
    return sorted(entries, key=lambda e: (e.get("AP_change", {}).get("mean") is None, e.get("AP_change", {}).get("mean")
                                          or 0.0))


def _compare_ap(first: str, other: str, per_class: dict[str, dict], draws: dict[str, dict[str, np.ndarray]],
                classes: list[str], counted: list[int], images: int) -> list[dict]:
    """B - A of AP and AP50, overall and per class, with the paired bootstrap's interval (the same draws)."""
    comparisons = []

    def value(figures: dict, key: str, k: int | None) -> np.ndarray:
        found = np.asarray(figures[key] if k is None else figures[key][..., k], dtype=np.float64)
        return np.where(found >= 0, found, np.nan)  # -1: no box of the class (in this draw)

    for measure in ("AP", "AP50"):
        for k in [None, *counted]:
            key = f"{measure}_all" if k is None else measure
            a, b = float(value(per_class[first], key, k)), float(value(per_class[other], key, k))
            if not (np.isfinite(a) and np.isfinite(b)):
                continue
            differences = value(draws[other], key, k) - value(draws[first], key, k)
            entry = {"a": first, "b": other, "map": None, "measure": measure, "images": images, "a_value": a,
                     "b_value": b, "mean_diff": b - a, "ci95": _interval(b - a, differences)["ci95"],
                     "b_higher_share": None}
            if k is not None:
                entry["class"] = classes[k]
            comparisons.append(entry)
    return comparisons
