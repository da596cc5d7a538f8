"""COCO's bbox AP written out plainly, from the definitions (the COCO detection evaluation page and the
pycocotools documentation), for the tests: one image, category and area range at a time, one detection at a
time, lists and loops. Slow and obvious; ``attnlens.evaluation.coco_ap`` must agree with it and with pycocotools."""
import numpy as np

THRESHOLDS = [0.5 + 0.05 * i for i in range(10)]
RECALLS = [i / 100 for i in range(101)]
AREAS = {"all": (0, 1e10), "small": (0, 32 ** 2), "medium": (32 ** 2, 96 ** 2), "large": (96 ** 2, 1e10)}


def box_iou(d, g, crowd):
    """[x, y, w, h] boxes; against a crowd, the intersection over the detection's area."""
    w = min(d[0] + d[2], g[0] + g[2]) - max(d[0], g[0])
    h = min(d[1] + d[3], g[1] + g[3]) - max(d[1], g[1])
    if w <= 0 or h <= 0:
        return 0.0
    union = d[2] * d[3] if crowd else d[2] * d[3] + g[2] * g[3] - w * h
    return w * h / union


def evaluate(truth, detections, area="all", max_det=100):
    """``truth``: [{"image", "category", "bbox", "area", "crowd"}]; ``detections``: [{"image", "category", "bbox",
    "score"}] in file order. Returns (precision [t][k][r], recall [t][k]) with None where a category has no box."""
    low, high = AREAS[area]
    categories = sorted({t["category"] for t in truth} | {d["category"] for d in detections})
    images = sorted({t["image"] for t in truth} | {d["image"] for d in detections})
    precision = {t: {} for t in range(len(THRESHOLDS))}
    recall = {t: {} for t in range(len(THRESHOLDS))}
    for k in categories:
        for t, threshold in enumerate(THRESHOLDS):
            ranked = []  # (score, image order, file order, counts, true positive)
            boxes_that_count = 0
            for image_order, image in enumerate(images):
                gts = [g for g in truth if g["image"] == image and g["category"] == k]
                ignored = [g["crowd"] or not low <= g["area"] <= high for g in gts]
                boxes_that_count += sum(not i for i in ignored)
                dts = [(n, d) for n, d in enumerate(detections) if d["image"] == image and d["category"] == k]
                dts = sorted(dts, key=lambda pair: -pair[1]["score"])[:max_det]  # sorted() is stable
                taken = [False] * len(gts)
                for n, d in dts:
                    best, chosen = threshold, None
                    # first the boxes that count, then (only if none is open) the ignored ones
                    for wanted in (False, True):
                        for j, g in enumerate(gts):
                            if ignored[j] != wanted or (taken[j] and not g["crowd"]):
                                continue
                            overlap = box_iou(d["bbox"], g["bbox"], g["crowd"])
                            if overlap >= best:  # a later box of equal IoU wins, as in COCO's loop
                                best, chosen = overlap, j
                        if chosen is not None:
                            break
                    if chosen is not None:
                        taken[chosen] = True
                        ranked.append((d["score"], image_order, n, not ignored[chosen], not ignored[chosen]))
                    else:
                        outside = not low <= d["bbox"][2] * d["bbox"][3] <= high
                        ranked.append((d["score"], image_order, n, not outside, False))
            if not boxes_that_count:
                precision[t][k] = recall[t][k] = None
                continue
            ranked.sort(key=lambda item: (-item[0], item[1]))  # ties in image order, then file order (stable)
            true, false, points = 0, 0, []
            for _, _, _, counts, positive in ranked:
                if counts:
                    true += positive
                    false += not positive
                points.append((true / boxes_that_count, true / (true + false + np.spacing(1))))
            recall[t][k] = points[-1][0] if points else 0.0
            precision[t][k] = [max([p for r, p in points if r >= point], default=0.0) for point in RECALLS]
    return precision, recall


def stats(truth, detections):
    """AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl (-1 where undefined)."""
    def mean_ap(area, thresholds=None):
        precision, _ = evaluate(truth, detections, area)
        values = [p for t in (thresholds or range(10)) for p in precision[t].values() if p is not None]
        return float(np.mean([x for p in values for x in p])) if values else -1.0

    def mean_ar(area, max_det):
        _, recall = evaluate(truth, detections, area, max_det)
        values = [r for t in range(10) for r in recall[t].values() if r is not None]
        return float(np.mean(values)) if values else -1.0

    return {"AP": mean_ap("all"), "AP50": mean_ap("all", [0]), "AP75": mean_ap("all", [5]), "APs": mean_ap("small"),
            "APm": mean_ap("medium"), "APl": mean_ap("large"), "AR1": mean_ar("all", 1), "AR10": mean_ar("all", 10),
            "AR100": mean_ar("all", 100), "ARs": mean_ar("small", 100), "ARm": mean_ar("medium", 100),
            "ARl": mean_ar("large", 100)}
