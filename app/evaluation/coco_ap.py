"""Detection quality as COCO measures it, computed here (numpy) to equal what pycocotools' ``COCOeval`` gives for
``iouType="bbox"`` from the files ``attnlens eval`` writes; and each labelled object found or missed.

COCO's definitions, kept exactly (pycocotools 2.0, ``cocoeval.py``): ten IoU thresholds 0.50:0.05:0.95; 101
recall points 0:0.01:1; area ranges all [0, 1e10], small [0, 32²], medium [32², 96²], large [96², 1e10] (by
the annotation's ``area``, bounds inclusive); at most 1, 10, 100 detections per image and category (the best by
score). Per image and category, detections best first (ties: in file order) each take the ground-truth box of the
highest IoU >= the threshold (ties: the last) that no earlier detection took, boxes outside the area range or
crowds only when no other is left (a crowd can be taken many times, its IoU is the intersection over the
detection's area); a detection that takes an ignored box, or none while itself outside the area range, is
ignored. Precision over the detections of all images (sorted by score, ties in image order), made monotone
from the right and read at each recall point (0 past the last); AP is its mean over thresholds, recall points
and the categories that have boxes, AR the mean recall at the last detection; -1 where no category has one
(pycocotools' convention).

The same arrays, weighted by how often each image is drawn, give the bootstrap
(an image drawn twice counts its boxes and detections twice), for intervals and paired comparisons:
``Evaluation.per_class(weights)``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["AP_CONF", "AP_MAX_DET", "AREAS", "MATCH_IOU", "STATS", "Boxes", "Evaluation", "class_mapping", "iou",
           "match", "matched"]

AP_CONF, AP_MAX_DET = 0.001, 300  # the detections AP is computed from: as detector validation (YOLO val) runs
MATCH_IOU = 0.5  # an object is found by a detection of its class at IoU >= 0.5 (above the display threshold)
IOU_THRESHOLDS = np.linspace(.5, 0.95, int(np.round((0.95 - .5) / .05)) + 1, endpoint=True)  # as pycocotools
RECALL_POINTS = np.linspace(.0, 1.00, int(np.round((1.00 - .0) / .01)) + 1, endpoint=True)
AREAS = {"all": (0.0, 1e5 ** 2), "small": (0.0, 32.0 ** 2), "medium": (32.0 ** 2, 96.0 ** 2),
         "large": (96.0 ** 2, 1e5 ** 2)}
MAX_DETS = (1, 10, 100)
# summary.json's names of COCOeval.stats, in its order: (name, AP or AR, IoU threshold index, area, max detections)
STATS = (("AP", True, None, "all", 100), ("AP50", True, 0, "all", 100), ("AP75", True, 5, "all", 100),
         ("APs", True, None, "small", 100), ("APm", True, None, "medium", 100), ("APl", True, None, "large", 100),
         ("AR1", False, None, "all", 1), ("AR10", False, None, "all", 10), ("AR100", False, None, "all", 100),
         ("ARs", False, None, "small", 100), ("ARm", False, None, "medium", 100), ("ARl", False, None, "large", 100))


@dataclass(frozen=True)
class Boxes:
    """One image's boxes as COCO holds them: ``bbox`` ``(K, 4)`` ``[x, y, width, height]`` in original-image pixels,
    ``category`` ``(K,)`` (the dataset's class index); ground truth adds ``area`` and ``crowd``, detections
    ``score``. Detections are in the order they are written (best first)."""

    bbox: np.ndarray
    category: np.ndarray
    score: np.ndarray | None = None
    area: np.ndarray | None = None
    crowd: np.ndarray | None = None

    @classmethod
    def empty(cls, truth: bool) -> Boxes:
        zeros = np.zeros(0)
        return cls(np.zeros((0, 4)), np.zeros(0, dtype=np.int64), None if truth else zeros,
                   zeros if truth else None, np.zeros(0, dtype=bool) if truth else None)


def iou(detections: np.ndarray, truth: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """``(D, G)`` IoU of ``[x, y, w, h]`` boxes as pycocotools' ``maskUtils.iou`` computes it (the same float
    operations); against a crowd box, the intersection over the detection's area."""
    dx, dy, dw, dh = (detections[:, None, i] for i in range(4))
    gx, gy, gw, gh = (truth[None, :, i] for i in range(4))
    w = np.minimum(dx + dw, gx + gw) - np.maximum(dx, gx)
    h = np.minimum(dy + dh, gy + gh) - np.maximum(dy, gy)
    inter = np.where((w > 0) & (h > 0), w * h, 0.0)
    union = np.where(crowd[None, :], dw * dh, dw * dh + gw * gh - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(inter > 0, inter / union, 0.0)


def match(overlaps: np.ndarray, ignored: np.ndarray, crowd: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """COCO's greedy matching of one image and category: ``overlaps`` ``(D, G)`` (detections best first),
    ``ignored`` ``(A, G)`` (per area range), ``crowd`` ``(G,)``; returns ``(A, T, D)``: the box each detection
    takes at each threshold (-1: none)."""
    areas, (count, boxes) = ignored.shape[0], overlaps.shape
    taken_by = np.full((areas, len(thresholds), count), -1)
    if not count or not boxes:
        return taken_by
    taken = np.zeros((areas, len(thresholds), boxes), dtype=bool)
    threshold = np.minimum(thresholds, 1 - 1e-10)[None, :, None]
    plain, ignored_any = ~ignored[:, None, :], ignored[:, None, :]
    for d in np.flatnonzero(overlaps.max(axis=1) >= thresholds[0]):  # the others take nothing
        row = overlaps[d][None, None, :]
        open_ = (~taken | crowd[None, None, :]) & (row >= threshold)
        first = open_ & plain  # boxes that count; the ignored ones only where none of those is open
        chosen = np.where(first.any(axis=2, keepdims=True), first, open_ & ignored_any)
        best = np.where(chosen, row, -1.0)
        # the last box of the highest IoU (pycocotools' loop keeps the later of equal ones), -1 where none
        last = boxes - 1 - np.argmax(best[..., ::-1], axis=2)
        hit = chosen.any(axis=2)
        taken_by[:, :, d] = np.where(hit, last, -1)
        a, t = np.nonzero(hit)
        taken[a, t, last[a, t]] = True
    return taken_by


def matched(truth: Boxes, found: Boxes, threshold: float = MATCH_IOU) -> dict[int, tuple[int, float]]:
    """COCO's matching at one IoU ``threshold``, class by class: box place -> (place in ``found`` of the detection
    that takes it, their IoU). Detections best first by score (ties in their order), crowds (``truth.crowd``) taken
    only when no other box is open and never reported. ``found``: detections in the dataset's classes."""
    taken: dict[int, tuple[int, float]] = {}
    crowd = truth.crowd if truth.crowd is not None else np.zeros(len(truth.category), dtype=bool)
    for k in np.unique(truth.category):
        g, d = np.flatnonzero(truth.category == k), np.flatnonzero(found.category == k)
        if not len(d):
            continue
        d = d[np.argsort(-found.score[d], kind="mergesort")]
        overlaps = iou(found.bbox[d], truth.bbox[g], crowd[g])
        for place, box in enumerate(match(overlaps, crowd[g][None, :], crowd[g], np.array([threshold]))[0, 0]):
            if box >= 0 and not crowd[g[box]]:
                taken[int(g[box])] = (int(d[place]), float(overlaps[place, box]))
    return taken


def class_mapping(model_labels: Sequence[str], dataset_classes: Sequence[str]) -> tuple[dict[int, int], str]:
    """Model class index -> the dataset's, and how: ``by name`` (case aside) where the two share a name, else ``by
    index``. Model classes the dataset lacks are left out."""
    names = {name.lower(): i for i, name in reversed(list(enumerate(dataset_classes)))}
    by_name = {i: names[label.lower()] for i, label in enumerate(model_labels) if label.lower() in names}
    if by_name:
        return by_name, "by name"
    return {i: i for i in range(min(len(model_labels), len(dataset_classes)))}, "by index"


@dataclass
class _Sorted:
    """All (image, category) detections of one area range and detection cap, sorted by category, then score (ties
    in image order, then file order), with their matches; ``truths`` ``(I, K)`` the boxes that count."""

    category: np.ndarray  # (D,)
    image: np.ndarray  # (D,)
    positive: np.ndarray  # (T, D) matched to a box that counts
    negative: np.ndarray  # (T, D) matched to none and not ignored
    truths: np.ndarray  # (I, K)


class Evaluation:
    """COCO's bbox evaluation of one model's detections (``Boxes`` per image, in the ground truth's image order)
    against the ground truth, over ``categories`` classes. ``stats()``: ``COCOeval.stats`` by name;
    ``per_class(weights)``: AP and AP50 overall and of each class, each image weighted by its count (a bootstrap
    draw; None: each once)."""

    def __init__(self, truth: Sequence[Boxes], detections: Sequence[Boxes], categories: int):
        self.categories, self.images = categories, len(truth)
        areas = list(AREAS.values())
        low = np.array([a for a, _ in areas])[:, None]
        high = np.array([b for _, b in areas])[:, None]
        parts: dict[tuple[int, int], list] = {(a, m): [] for a in range(len(areas)) for m in range(len(MAX_DETS))}
        truths = np.zeros((len(areas), self.images, categories))
        for i, (gt, dt) in enumerate(zip(truth, detections)):
            for k in np.union1d(np.unique(gt.category), np.unique(dt.category)).astype(int):
                g, d = np.flatnonzero(gt.category == k), np.flatnonzero(dt.category == k)
                ignored = gt.crowd[g][None, :] | (gt.area[g][None, :] < low) | (gt.area[g][None, :] > high)  # (A, G)
                truths[:, i, k] = (~ignored).sum(axis=1)
                d = d[np.argsort(-dt.score[d], kind="mergesort")][:MAX_DETS[-1]]
                taken_by = match(iou(dt.bbox[d], gt.bbox[g], gt.crowd[g]), ignored, gt.crowd[g], IOU_THRESHOLDS)
                matched = taken_by >= 0
                # of each match, whether the box taken is ignored (-1, no match, reads the False column added)
                ignored_padded = np.concatenate([ignored, np.zeros((len(areas), 1), bool)], 1)[:, None, :]
                ignored_match = np.take_along_axis(ignored_padded.repeat(len(IOU_THRESHOLDS), 1), taken_by, 2)
                area = dt.bbox[d, 2] * dt.bbox[d, 3]
                outside = ((area[None, :] < low) | (area[None, :] > high))[:, None, :]  # (A, 1, D)
                skip = np.where(matched, ignored_match, outside)  # (A, T, D)
                for a in range(len(areas)):
                    for m, cap in enumerate(MAX_DETS):
                        parts[a, m].append((k, i, dt.score[d][:cap], matched[a, :, :cap], skip[a, :, :cap]))
        self._sorted = {key: self._sort(members, truths[key[0]]) for key, members in parts.items()}

    def _sort(self, members: list, truths: np.ndarray) -> _Sorted:
        if not members:
            empty = np.zeros((len(IOU_THRESHOLDS), 0), dtype=bool)
            return _Sorted(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), empty, empty, truths)
        category = np.concatenate([np.full(len(s), k) for k, _, s, _, _ in members])
        image = np.concatenate([np.full(len(s), i) for _, i, s, _, _ in members])
        score = np.concatenate([s for _, _, s, _, _ in members])
        matched = np.concatenate([m for *_, m, _ in members], axis=1)
        skip = np.concatenate([s for *_, s in members], axis=1)
        # members come in image order, each image's detections in file order; lexsort is stable
        order = np.lexsort((-score, category))
        category, image = category[order], image[order]
        positive, negative = (matched & ~skip)[:, order], (~matched & ~skip)[:, order]
        # Left out, as they change no figure: detections ignored at every threshold (a point equal to the one before
        # it) and those after a category's last true positive (points at its final recall with lower precision).
        place = np.arange(len(category))
        last = np.full(self.categories, -1)
        np.maximum.at(last, category, np.where(positive.any(axis=0), place, -1))
        keep = (positive | negative).any(axis=0) & (place <= last[category])
        return _Sorted(category[keep], image[keep], positive[:, keep], negative[:, keep], truths)

    def _curves(self, key: tuple[int, int], weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Precision ``(B, T, R, K)`` at the recall points and recall ``(B, T, K)`` for each row of ``weights``
        ``(B, I)`` (each image's count in a draw); -1 for a category without boxes."""
        s, K, R = self._sorted[key], self.categories, len(RECALL_POINTS)
        draws, thresholds = weights.shape[0], len(IOU_THRESHOLDS)
        truths = weights @ s.truths  # (B, K)
        precision = np.zeros((draws, thresholds, R, K))
        recall = np.zeros((draws, thresholds, K))
        if len(s.category):
            starts = np.searchsorted(s.category, np.arange(K))
            ends = np.searchsorted(s.category, np.arange(K), side="right")
            has = ends > starts
            w = weights[:, s.image]  # (B, D)
            denominator = np.where(truths > 0, truths, 1.0)[:, s.category]  # a category without boxes: -1 below
            offsets = (np.arange(draws)[:, None] * K + s.category[None, :]) * (R + 1)  # each draw's keys apart
            for t in range(thresholds):
                tp = self._group_cumsum(s.positive[t] * w, starts, s.category)
                fp = self._group_cumsum(s.negative[t] * w, starts, s.category)
                rc = tp / denominator
                pr = tp / (fp + tp + np.spacing(1))
                recall[:, t, has] = rc[:, ends[has] - 1]
                # precision at recall point r: the best precision of the detections whose recall reaches it; the
                # keys (draw, category, points reached) rise along the flattened array, so runs of one key are
                # contiguous and their maxima one reduceat
                reached = np.searchsorted(RECALL_POINTS, rc, side="right")  # points r < reached count this one
                key_of = (offsets + reached).ravel()
                runs = np.flatnonzero(np.r_[True, key_of[1:] != key_of[:-1]])
                grid = np.zeros(draws * K * (R + 1))
                grid[key_of[runs]] = np.maximum.reduceat(pr.ravel(), runs)
                grid = np.maximum.accumulate(grid.reshape(draws, K, R + 1)[..., ::-1], axis=2)[..., ::-1]
                precision[:, t] = grid[..., 1:].transpose(0, 2, 1)
        missing = truths == 0  # (B, K)
        precision[np.broadcast_to(missing[:, None, None, :], precision.shape)] = -1
        recall[np.broadcast_to(missing[:, None, :], recall.shape)] = -1
        return precision, recall

    @staticmethod
    def _group_cumsum(values: np.ndarray, starts: np.ndarray, category: np.ndarray) -> np.ndarray:
        """Running sums along the last axis, restarting where each category's run starts."""
        total = np.cumsum(values, axis=-1)
        before = np.concatenate([np.zeros(values.shape[:-1] + (1,)), total], axis=-1)[..., starts]
        return total - before[..., category]

    @staticmethod
    def _mean(values: np.ndarray) -> float:
        valid = values[values > -1]
        return float(valid.mean()) if valid.size else -1.0

    def stats(self) -> dict[str, float]:
        """``COCOeval.stats``, named as ``STATS``."""
        curves: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        result = {}
        areas = list(AREAS)
        once = np.ones((1, self.images))
        for name, is_ap, t, area, cap in STATS:
            key = (areas.index(area), MAX_DETS.index(cap))
            if key not in curves:
                curves[key] = self._curves(key, once)
            precision, recall = curves[key]
            values = (precision if is_ap else recall)[0]
            result[name] = self._mean(values if t is None else values[t:t + 1])
        return result

    def per_class(self, weights: np.ndarray | None = None, chunk: int = 4_000_000) -> dict[str, np.ndarray]:
        """``{"AP", "AP50", "AP75": (K,)}`` per class (-1 where a class has no box), and overall under ``AP_all``,
        ``AP50_all`` (-1: no class has one); ``weights`` ``(B, I)``: each image's count in B bootstrap draws, which
        gives each figure a leading axis of B (None: each image once, no such axis). Draws are taken ``chunk``
        detections x draws at a time."""
        single = weights is None
        weights = np.ones((1, self.images)) if single else np.asarray(weights, dtype=np.float64)
        per_draw = max(1, chunk // max(1, len(self._sorted[0, len(MAX_DETS) - 1].image)))
        parts = [self._figures(weights[start:start + per_draw]) for start in range(0, len(weights), per_draw)]
        figures = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
        return {name: value[0] for name, value in figures.items()} if single else figures

    def _figures(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        precision, _ = self._curves((0, len(MAX_DETS) - 1), weights)  # (B, T, R, K)
        valid = precision[:, 0, 0] > -1  # (B, K)
        with np.errstate(invalid="ignore"):
            def overall(values: np.ndarray) -> np.ndarray:  # (B, t, R, K) -> the mean over the valid classes
                total = (values.mean(axis=(1, 2)) * valid).sum(axis=1) / valid.sum(axis=1)
                return np.where(valid.any(axis=1), total, -1.0)

            return {"AP": np.where(valid, precision.mean(axis=(1, 2)), -1.0),
                    "AP50": np.where(valid, precision[:, 0].mean(axis=1), -1.0),
                    "AP75": np.where(valid, precision[:, 5].mean(axis=1), -1.0),
                    "AP_all": overall(precision), "AP50_all": overall(precision[:, :1])}
