"""The evaluation pass: every image of a dataset through every model, batched, each map scored as it comes.

Images are decoded and prepared in DataLoader worker processes, grouped into batches of equal input shape
(planned from the images' headers), run once per model under capture (``Engine.run``, with reference maps
when asked: one pass serves every method), and each map is brought to the image and scored on the model's device
(``measures``); then the maps are dropped, but for each map's best and worst images, kept for the report.
A detector's boxes are kept twice, in original-image pixels: read at the low threshold AP is computed from
(``coco_ap.AP_CONF``) and at the model's own (``--conf``, as ``analyze`` shows them); each object of a detector's
images is scored alone too (``ObjectScore``), for found / missed (``detection``).
"""
from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from attnlens.analysis.engine import Engine, ReferenceRequest
from attnlens.analysis.imaging import ImageError, decode_image
from attnlens.analysis.report import detections_on_image
from attnlens.models import InputGeometry, LoadedModel
from attnlens.models.boundary import ModelRunError
from attnlens.models.inputs import InputRecipe
from attnlens.models.outputs import Detections, TargetError
from attnlens.models.references import METHODS

from .coco_ap import AP_CONF, AP_MAX_DET
from .datasets import Dataset, LabelledImage, Skipped
from .measures import centre_map, measure_map, regions_of, to_image

__all__ = ["BatchScores", "DetectedBoxes", "ImageDetections", "Kept", "KnockedImages", "ObjectScore", "Scored",
           "evaluate_dataset", "plan_batches", "score_batch", "upright_size"]

BASELINES = ("baseline/uniform", "baseline/centre")
KEEP = 8  # best and worst images kept per map, for the report


@dataclass(frozen=True)
class Scored:
    """One image x model x map: the measures on each region (``all``, ``class:<i>``, ``size:<name>``)."""

    image: str
    model: str
    map: str
    type: str
    measures: dict[str, dict[str, float]]


@dataclass(frozen=True)
class ObjectScore:
    """One labelled object (``object``: its place among the image's labels) x a detector x map: the map's ``energy``
    and ``pointing`` on that object alone."""

    image: str
    model: str
    object: int
    map: str
    type: str
    energy: float
    pointing: float


@dataclass(frozen=True)
class DetectedBoxes:
    """Detections in original-image pixels, best first: ``boxes`` ``(K, 4)`` xyxy, ``scores`` ``(K,)``, ``classes``
    ``(K,)`` (the model's class indices), numpy."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    @classmethod
    def placed(cls, detections: Detections, geometry: InputGeometry) -> DetectedBoxes:
        on_image, _ = detections_on_image(detections, geometry)
        return cls(on_image.boxes.double().numpy(), on_image.scores.double().numpy(), on_image.classes.numpy())


@dataclass(frozen=True)
class ImageDetections:
    """One image's detections by one detector: ``scored`` at the threshold AP is computed from, ``shown`` at the
    model's own (what ``analyze`` answers: found / missed)."""

    scored: DetectedBoxes
    shown: DetectedBoxes


@dataclass(order=True)
class Kept:
    """An image kept for the report: its energy, then where to find it and the map over the model input."""

    energy: float
    order: tuple[int, int]  # (batch, place in it): ties go the same way in a local run and on Ray
    image: LabelledImage = field(compare=False)
    heatmap: torch.Tensor | None = field(compare=False)  # None for the baselines (drawn from the image's size)
    geometry: InputGeometry = field(compare=False)


def upright_size(path: Path) -> tuple[int, int] | None:
    """An image's upright size from its header (EXIF orientation applied), without decoding it."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(274, 1)
    except Exception:  # noqa: BLE001 - any file PIL cannot read (or an Image.open a library patched: ultralytics)
        return None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


class _Prepared(TorchDataset):
    """Worker side: image ``i`` decoded and prepared by each recipe (or why it could not be)."""

    def __init__(self, images: list[LabelledImage], recipes: Sequence[InputRecipe]):
        self.images, self.recipes = images, list(recipes)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        try:
            image = decode_image(self.images[i].path.read_bytes())
        except (OSError, ImageError) as error:
            return i, None, str(getattr(error, "detail", None) or error)
        prepared = [recipe.prepare(image) for recipe in self.recipes]
        return i, [tensor[0] for tensor, _ in prepared], [geometry for _, geometry in prepared]


def plan_batches(images: list[LabelledImage], models: Sequence[LoadedModel], batch_size: int) -> list[list[int]]:
    """Indices grouped by input shapes (for every model), in order, at most ``batch_size`` each."""
    groups: dict[Any, list[int]] = {}
    for i, image in enumerate(images):
        size = upright_size(image.path)
        key = None if size is None else tuple(model.recipe.geometry_for(*size).size for model in models)
        groups.setdefault(key if key is not None else ("alone", i), []).append(i)
    return [members[start:start + batch_size] for members in groups.values()
            for start in range(0, len(members), batch_size)]


def _collate(items):
    return items


@dataclass
class KnockedImages:
    """One model's block knocked out over the images (``--knockout``): its ``kind``, what was ``replaced``, why it
    was ``skipped`` (None: knocked out), and per image id a classifier's top-1 kept (``agrees``) or a detector's
    boxes at the AP threshold (``detections``)."""

    kind: str
    replaced: str
    skipped: str | None = None
    agrees: dict[str, bool] = field(default_factory=dict)
    detections: dict[str, DetectedBoxes] = field(default_factory=dict)

    def add(self, other: KnockedImages) -> None:
        self.agrees.update(other.agrees)
        self.detections.update(other.detections)


@dataclass
class BatchScores:
    """What scoring gives: per-image scores in order, each map's kept best / worst images (``{(model, map): (best
    heap, worst heap)}``, at most ``KEEP`` each, maps on the CPU), what was skipped, with why, each image read's upright
    size (``{image id: (width, height)}``); for detectors, each image's detections (``{(model, image id):
    ImageDetections}``) and each object's scores; with knockout, each block knocked out (``{(model, block):
    KnockedImages}``)."""

    scores: list[Scored] = field(default_factory=list)
    kept: dict[tuple[str, str], tuple[list[Kept], list[Kept]]] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    detections: dict[tuple[str, str], ImageDetections] = field(default_factory=dict)
    objects: list[ObjectScore] = field(default_factory=list)
    knockouts: dict[tuple[str, str], KnockedImages] = field(default_factory=dict)

    def add(self, part: BatchScores) -> None:
        """``part`` (a later batch's) added: the same as if its images had been scored here."""
        self.scores += part.scores
        self.skipped += part.skipped
        self.sizes.update(part.sizes)
        self.detections.update(part.detections)
        self.objects += part.objects
        for key, knocked in part.knockouts.items():
            if key in self.knockouts:
                self.knockouts[key].add(knocked)
            else:
                self.knockouts[key] = knocked
        for key, heaps in part.kept.items():
            for heap, items in zip(self.kept.setdefault(key, ([], [])), heaps):
                for item in items:
                    _offer(heap, item)


def evaluate_dataset(models: Sequence[tuple[str, LoadedModel]], dataset: Dataset,
                     references: Sequence[str] = ("gradcam",), batch_size: int = 8, workers: int = 0,
                     progress: Callable[[int], Any] | None = None,
                     ap: tuple[float, int] = (AP_CONF, AP_MAX_DET), knockout: bool = False) -> BatchScores:
    """Score every map of every model on every labelled image (``BatchScores``: the per-image scores, the kept
    best / worst images, what was skipped: unreadable images, images a model failed on; detectors' boxes and
    objects). ``references``: the reference methods scored beside the blocks, where a model has layers for them
    (the gradient methods: where its output is read). ``ap``: the confidence threshold and cap per image of the
    detections AP is computed from. ``knockout``: each block knocked out too (one forward per block and batch).
    ``progress(total)`` returns an object with ``update(n)`` (tqdm)."""
    engines = [(name, Engine(model)) for name, model in models]
    images = dataset.images
    batches = plan_batches(images, [model for _, model in models], batch_size)
    loader = DataLoader(_Prepared(images, [model.recipe for _, model in models]), batch_sampler=batches,
                        num_workers=workers, collate_fn=_collate, persistent_workers=False)
    total = BatchScores()
    bar = progress(len(images)) if progress else None
    for number, batch in enumerate(loader):
        total.add(score_batch(engines, images, references, number, batch, ap, knockout))
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    return total


def score_batch(engines: Sequence[tuple[str, Engine]], images: Sequence[LabelledImage], references: Sequence[str],
                number: int, batch: Sequence[tuple], ap: tuple[float, int] = (AP_CONF, AP_MAX_DET),
                knockout: bool = False) -> BatchScores:
    """Batch ``number`` of the plan (``plan_batches``): its items ``(i, tensors, geometries)`` (one tensor and
    geometry per model; ``(i, None, why)`` for an unreadable image) run through every engine, every map scored on
    the model's device; a detector's boxes read twice (at ``ap``'s threshold and cap, and at its own). The same for
    a local run and a Ray actor's (``attnlens.evaluation.distributed``). A reference map that cannot be computed
    costs only itself on those images (said, as skipped). ``knockout``: each block knocked out too, its answer kept
    per image (``KnockedImages``)."""
    part = BatchScores()
    readable = []
    for i, tensors, detail in batch:
        if tensors is None:
            part.skipped.append(Skipped(images[i].id, None, f"unreadable image: {detail}", "unreadable image"))
        else:
            readable.append((i, tensors, detail))
            part.sizes[images[i].id] = detail[0].image_size
    counter = itertools.count()
    detectors = any(engine.model.task == "detect" for _, engine in engines)  # only they score objects alone
    # per image and device, shared by the models: its objects in pixels, regions, the baselines' measures on them
    regions: dict[tuple[int, torch.device], dict] = {}
    baselines: dict[tuple[int, torch.device], dict[str, tuple[dict, list]]] = {}
    for position, (name, engine) in enumerate(engines):
        if not readable:
            break
        stacked = torch.stack([tensors[position] for _, tensors, _ in readable])
        model = engine.model
        detector = model.task == "detect"
        methods = tuple(method for method in references if model.reference_layers
                        and (model.task != "maps" or not METHODS[method].gradients))
        request = ReferenceRequest(methods, (None,) * len(readable), optional=True) if methods else None
        scoring = replace(model.reader, conf=ap[0], max_det=max(ap[1], model.reader.max_det)) if detector else None
        try:
            result = engine.run(stacked, request, scoring, knockout=knockout)
        except (ModelRunError, TargetError) as error:
            part.skipped += [Skipped(images[i].id, None, f"model {name}: {error}", "model failed") for i, _, _ in readable]
            continue
        device = engine.model.device
        for knocked in result.knockouts or ():
            part.knockouts[name, knocked.block] = _knocked_images(knocked, result, readable, images, position, detector)
        for row, (i, _, geometries) in enumerate(readable):
            image, geometry = images[i], geometries[position]
            if detector:
                part.detections[name, image.id] = ImageDetections(DetectedBoxes.placed(result.scored[row], geometry),
                                                                  DetectedBoxes.placed(result.predictions[row], geometry))
            if not image.objects:
                continue
            width, height = geometry.image_size
            objects = tuple(obj.in_pixels(width, height) for obj in image.objects)
            if (i, device) not in regions:
                on_image = regions[i, device] = regions_of(objects, height, width, device)
                baselines[i, device] = {key: measure_map(values, on_image, objects if detectors else ()) for key, values in (
                    (BASELINES[0], torch.ones(height, width, device=device)),
                    (BASELINES[1], centre_map(width, height, device)))}
            maps = [(key, record.type, record.heatmap[row]) for key, record in result.maps.items()]
            for method, found in result.references.items():
                if found[row] is not None:
                    maps.append((f"reference/{method}", "reference", found[row].heatmap))
                else:
                    why = result.reference_errors.get(method) or "nothing to explain on this image (no detection " \
                                                                  "above the confidence threshold)"
                    part.skipped.append(Skipped(image.id, None, f"model {name}, map reference/{method}: {why}",
                                                f"reference/{method} of {name}"))
            for key, kind, heatmap in maps:
                if not torch.isfinite(heatmap).all():
                    part.skipped.append(Skipped(image.id, None, f"model {name}, map {key}: not finite (NaN / inf)",
                                                "map not finite"))
                    continue
                measures, per_object = measure_map(to_image(heatmap.to(device), geometry), regions[i, device],
                                                   objects if detector else ())
                _record(part, Scored(image.id, name, key, kind, measures), image, heatmap, geometry,
                        (number, next(counter)))
                if detector:
                    _record_objects(part, image.id, name, key, kind, objects, per_object)
            for key, (measures, per_object) in baselines[i, device].items():
                _record(part, Scored(image.id, name, key, "baseline", measures), image, None, geometry,
                        (number, next(counter)))
                if detector:
                    _record_objects(part, image.id, name, key, "baseline", objects, per_object)
    return part


def _knocked_images(knocked, result, readable: list, images: Sequence[LabelledImage], position: int,
                    detector: bool) -> KnockedImages:
    """One block knocked out on a batch: per image, a detector's boxes at the AP threshold, or whether a classifier's
    top-1 stayed the full model's."""
    entry = KnockedImages(knocked.kind, knocked.replaced, knocked.skipped if knocked.predictions is None else None)
    if knocked.predictions is None:
        return entry
    for row, (i, _, geometries) in enumerate(readable):
        image = images[i].id
        if detector:
            entry.detections[image] = DetectedBoxes.placed(knocked.scored[row], geometries[position])
        elif result.predictions is not None:
            entry.agrees[image] = int(knocked.predictions[row].argmax()) == int(result.predictions[row].argmax())
    return entry


def _record_objects(part: BatchScores, image: str, model: str, key: str, kind: str, objects: Sequence,
                    measured: Sequence[tuple[float, float]]) -> None:
    """Each object's scores on one map; crowd regions are no object to find and are left out."""
    part.objects += [ObjectScore(image, model, j, key, kind, energy, pointing)
                     for j, (obj, (energy, pointing)) in enumerate(zip(objects, measured)) if not obj.crowd]


def _record(part: BatchScores, scored: Scored, image: LabelledImage, heatmap: torch.Tensor | None,
            geometry: InputGeometry, order: tuple[int, int]) -> None:
    """Keep the score, and the image among its map's best and worst (the map copied off the device only then)."""
    part.scores.append(scored)
    energy = scored.measures["all"]["energy"]
    for heap, key in zip(part.kept.setdefault((scored.model, scored.map), ([], [])), (energy, -energy)):
        if len(heap) < KEEP or Kept(key, order, image, None, geometry) > heap[0]:
            _offer(heap, Kept(key, order, image, None if heatmap is None else heatmap.detach().cpu(), geometry))


def _offer(heap: list[Kept], item: Kept) -> None:
    """``item`` into a heap of the ``KEEP`` greatest (by energy, then order: later wins a tie)."""
    if len(heap) < KEEP:
        heapq.heappush(heap, item)
    elif item > heap[0]:
        heapq.heapreplace(heap, item)


def ranked(heaps: tuple[list[Kept], list[Kept]]) -> tuple[list[Kept], list[Kept]]:
    """The kept images, best first and worst first."""
    best, worst = heaps
    return sorted(best, reverse=True), [Kept(-k.energy, k.order, k.image, k.heatmap, k.geometry)
                                        for k in sorted(worst, reverse=True)]

