"""From per-image scores to the figures of ``summary.json``: means with bootstrap 95% intervals over images,
per class and per COCO size, and paired comparisons between models.

Interval: ``BOOTSTRAP`` resamples of the images (with replacement, seeded), the 2.5th and 97.5th
percentiles of the resampled means. A comparison of model B with model A on one map and measure takes the
images both scored, the per-image difference B - A, its mean and interval, and the share of images where B
is strictly higher. Maps pair by id, else by kind in execution order; references and baselines by name.
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from .datasets import Dataset
from .measures import SIZES
from .run import Scored

__all__ = ["BOOTSTRAP", "interval", "pair_maps", "summarise"]

BOOTSTRAP = 1000
SUMMARY_MEASURES = ("energy", "lift", "pointing")


def interval(values: Sequence[float], seed: int = 0) -> dict:
    """``{"mean", "ci95": [lo, hi]}`` of ``values`` (a bootstrap over them); empty: nulls."""
    data = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if not data.size:
        return {"mean": None, "ci95": [None, None]}
    means = data[np.random.default_rng(seed).integers(0, data.size, size=(BOOTSTRAP, data.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": float(data.mean()), "ci95": [float(low), float(high)]}


def _figures(rows: list[dict[str, float]], seed: int) -> dict:
    return {name: interval([row[name] for row in rows], seed) for name in SUMMARY_MEASURES}


def summarise(scores: Sequence[Scored], dataset: Dataset, models: Sequence[str], seed: int = 0) -> list[dict]:
    """One row per model x map: images, the measures overall, ``by_class`` and ``by_size``."""
    grouped: dict[tuple[str, str], list[Scored]] = defaultdict(list)
    for scored in scores:
        grouped[(scored.model, scored.map)].append(scored)
    order = {name: i for i, name in enumerate(models)}
    rows = []
    for (model, key), members in sorted(grouped.items(), key=lambda item: order.get(item[0][0], 0)):
        overall = [s.measures["all"] for s in members]
        by_class = {}
        for index, name in enumerate(dataset.classes):
            found = [s.measures[f"class:{index}"] for s in members if f"class:{index}" in s.measures]
            if found:
                by_class[name] = {"images": len(found), **_figures(found, seed)}
        by_size = {}
        for size, _ in SIZES:
            found = [s.measures[f"size:{size}"] for s in members if f"size:{size}" in s.measures]
            if found:
                by_size[size] = {"images": len(found), **_figures(found, seed)}
        rows.append({"model": model, "map": key, "type": members[0].type, "images": len(members),
                     **_figures(overall, seed), "by_class": by_class, "by_size": by_size})
    return rows


def pair_maps(a: list[tuple[str, str]], b: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``(id, kind)`` of A's and B's maps -> pairs ``(A's id, B's id)``: same id first, then the same kind in
    order."""
    pairs, left = [], [key for key, _ in b]
    kinds_b = dict(b)
    for key, _ in a:
        if key in left:
            pairs.append((key, key))
            left.remove(key)
    paired_a = {p for p, _ in pairs}
    for key, kind in a:
        if key in paired_a:
            continue
        match = next((other for other in left if kinds_b[other] == kind), None)
        if match is not None:
            pairs.append((key, match))
            left.remove(match)
    return pairs


def compare(scores: Sequence[Scored], models: Sequence[str], seed: int = 0) -> list[dict]:
    """Paired comparisons of every model with the first, on every map both have."""
    by_model: dict[str, dict[str, dict[str, dict]]] = defaultdict(lambda: defaultdict(dict))
    kinds: dict[str, dict[str, str]] = defaultdict(dict)
    for scored in scores:
        by_model[scored.model][scored.map][scored.image] = scored.measures["all"]
        kinds[scored.model].setdefault(scored.map, scored.type)
    comparisons = []
    first = models[0]
    for other in models[1:]:
        for key_a, key_b in pair_maps(list(kinds[first].items()), list(kinds[other].items())):
            a, b = by_model[first][key_a], by_model[other][key_b]
            common = [image for image in a if image in b]
            for name in SUMMARY_MEASURES:
                diffs = [b[i][name] - a[i][name] for i in common
                         if math.isfinite(a[i][name]) and math.isfinite(b[i][name])]
                figures = interval(diffs, seed)
                comparisons.append({"a": first, "b": other, "map": key_a if key_a == key_b else f"{key_a} ~ {key_b}",
                                    "measure": name, "images": len(diffs), "mean_diff": figures["mean"],
                                    "ci95": figures["ci95"],
                                    "b_higher_share": float(np.mean([d > 0 for d in diffs])) if diffs else None})
    return comparisons


def knockout_agreement(total: Any, models: Sequence[tuple[str, Any]], seed: int = 0) -> dict[str, list[dict]]:
    """Each classifier's blocks knocked out: the share of images whose top-1 class stayed the full model's, with a
    bootstrap interval over images; the blocks whose flat map changes the most answers first. (``total``: a
    ``run.BatchScores``; detectors' knockouts are AP's, in ``detection``.)"""
    found: dict[str, list[dict]] = {}
    for name, model in models:
        if model.task != "classify":
            continue
        entries = []
        for (model_name, block), images in total.knockouts.items():
            if model_name != name:
                continue
            entry = {"block": block, "kind": images.kind, "replaced": images.replaced}
            if images.skipped is not None:
                entries.append(entry | {"skipped": images.skipped})
                continue
            agrees = [float(kept) for kept in images.agrees.values()]
            entries.append(entry | {"images": len(agrees), "top1_agreement": interval(agrees, seed)})
        found[name] = sorted(entries, key=lambda e: (e.get("top1_agreement", {}).get("mean") is None,
                                                     e.get("top1_agreement", {}).get("mean") or 0.0))
    return found
