"""A labelled dataset served for browsing (``attnlens serve --data``): its images by id, their boxes, sorted by
how well a map attends to them (an ``attnlens eval`` results folder), and ground truth matched to detections.

Only the dataset's own images are ever opened: an id is looked up among the dataset's (never read as a path),
and the file it names must lie, once links are resolved, in the dataset's folders (its root, and the folders
its listed images are in). Nothing is read up front: an image's size comes from its header the first time
its boxes are asked for (YOLO labels are normalised), thumbnails are made on request and kept in a cache
bounded in bytes.
"""
from __future__ import annotations

import csv
import io
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from .coco_ap import MATCH_IOU, Boxes, class_mapping, matched
from .datasets import DataError, Dataset, LabelledImage, read_dataset
from .measures import MEASURES
from .run import upright_size

__all__ = ["DatasetBrowser", "DatasetSource", "dataset_sources", "match_detections", "open_datasets"]

THUMBNAIL_SIDE = 256  # px, the long side of a listing's thumbnail
THUMBNAIL_CACHE_BYTES = 64 * 1024 * 1024
OBJECT_KEYS = ("objects:missed", "objects:found")  # a detector's labelled objects per image (per_object.csv)


@dataclass(frozen=True)
class DatasetSource:
    """Where a served dataset comes from: a YOLO ``data.yaml`` (its ``split``) or a COCO JSON (``images``: its
    folder), ``results``: an ``attnlens eval --out`` folder whose ``per_image.csv`` the listing sorts by;
    ``name``: what the API calls it (default: the file's stem)."""

    data: Path
    images: Path | None = None
    split: str = "val"
    results: Path | None = None
    name: str | None = None

    def open(self) -> DatasetBrowser:
        """Read the labels (not the images); ``DataError`` in one line for what cannot be used."""
        dataset = read_dataset(self.data, self.images, self.split)
        return DatasetBrowser(dataset, read_scores(self.results, dataset) if self.results else {}, self.name)


DATASET_KEYS = ("name", "data", "images", "split", "eval_results")  # of a models file's [[datasets]] tables


def dataset_sources(data: Path | None = None, images: Path | None = None, split: str = "val",
                    results: Path | None = None, models_file: Path | None = None) -> list[DatasetSource]:
    """The datasets a server offers: ``--data`` (with ``--data-images``, ``--data-split``, ``--eval-results``) and
    the ``[[datasets]]`` tables of a models file (keys ``DATASET_KEYS``, ``data`` required)."""
    if results is not None and data is None:
        raise DataError("--eval-results scores the images of --data: give the dataset too")
    sources = [DatasetSource(Path(data), images and Path(images), split, results and Path(results))] if data else []
    if models_file is None:
        return sources
    import tomllib

    try:
        tables = tomllib.loads(Path(models_file).read_text(encoding="utf-8")).get("datasets", [])
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise DataError(f"cannot read the models file {models_file}: {error}") from error
    if not isinstance(tables, list) or not all(isinstance(table, dict) for table in tables):
        raise DataError(f"{models_file}: datasets must be [[datasets]] tables")
    for number, table in enumerate(tables, 1):
        table = {key.replace("-", "_"): value for key, value in table.items()}
        if unknown := set(table) - set(DATASET_KEYS):
            raise DataError(f"{models_file}: [[datasets]] table {number}: unknown keys {', '.join(sorted(unknown))} "
                            f"(known: {', '.join(DATASET_KEYS)})")
        if not isinstance(table.get("data"), str) or not all(isinstance(v, str) for v in table.values()):
            raise DataError(f"{models_file}: [[datasets]] table {number} needs data = \"path/to/data.yaml\" (strings)")
        sources.append(DatasetSource(Path(table["data"]), Path(table["images"]) if "images" in table else None,
                                     table.get("split", "val"),
                                     Path(table["eval_results"]) if "eval_results" in table else None, table.get("name")))
    return sources


def open_datasets(sources: Sequence[DatasetSource]) -> dict[str, DatasetBrowser]:
    """Each source opened, by name; ``DataError`` for one that cannot be used or two of one name."""
    browsers: dict[str, DatasetBrowser] = {}
    for source in sources:
        browser = source.open()
        if browser.name in browsers:
            raise DataError(f"two datasets are named {browser.name!r}: name them apart in [[datasets]] tables")
        browsers[browser.name] = browser
    return browsers


def read_scores(results: Path, dataset: Dataset) -> dict[str, dict[str, float]]:
    """Per image id, its scores from ``results/per_image.csv``: ``"MAP:MEASURE"`` (``"MODEL/MAP:MEASURE"`` when the
    results hold several models) -> value; rows of images the dataset lacks are left out."""
    path = Path(results) / "per_image.csv" if Path(results).is_dir() else Path(results)
    try:
        with open(path, newline="", encoding="utf-8") as file:
            rows = list(csv.DictReader(file))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"cannot read the eval results {path}: {error}") from error
    if rows and not {"image", "model", "map", *MEASURES} <= set(rows[0]):
        raise DataError(f"{path}: not an attnlens eval per_image.csv (columns image, model, map, "
                        f"{', '.join(MEASURES)})")
    several = len({row["model"] for row in rows}) > 1
    known = {image.id for image in dataset.images}
    scores: dict[str, dict[str, float]] = {}
    for row in rows:
        if row["image"] not in known:
            continue
        key = f"{row['model']}/{row['map']}" if several else row["map"]
        for measure in MEASURES:
            try:
                value = float(row[measure])
            except (TypeError, ValueError):
                continue
            if math.isfinite(value):
                scores.setdefault(row["image"], {})[f"{key}:{measure}"] = value
    for image, counts in _object_counts(path.with_name("per_object.csv"), known, several).items():
        scores.setdefault(image, {}).update(counts)
    return scores


def _sortable(scores: dict[str, dict[str, float]]) -> set[str]:
    """The keys worth sorting by: all but a measure that is the same for every map of each image (``area``, the
    boxes' share of the image, is the image's own), where an image has several maps to tell."""
    keys = {key for values in scores.values() for key in values}
    by_measure: dict[str, set[str]] = {}
    for key in keys:
        if not key.endswith(OBJECT_KEYS):
            by_measure.setdefault(key.rsplit(":", 1)[1], set()).add(key)
    for measured in by_measure.values():
        per_image = [{value for key, value in values.items() if key in measured} for values in scores.values()]
        told = [found for found, values in zip(per_image, scores.values())
                if sum(key in measured for key in values) > 1]
        if told and all(len(found) == 1 for found in told):
            keys -= measured
    return keys


def _object_counts(path: Path, known: set[str], several: bool) -> dict[str, dict[str, float]]:
    """Per image id, its detectors' objects found and missed from ``per_object.csv`` (``OBJECT_KEYS``, after
    ``MODEL/`` when the results hold several models); none without the file."""
    if not path.is_file():
        return {}
    try:
        with open(path, newline="", encoding="utf-8") as file:
            rows = list(csv.DictReader(file))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"cannot read the eval results {path}: {error}") from error
    if rows and not {"image", "model", "object", "found"} <= set(rows[0]):
        raise DataError(f"{path}: not an attnlens eval per_object.csv (columns image, model, object, found, ...)")
    status: dict[tuple[str, str], dict[str, bool]] = {}
    for row in rows:
        if row["image"] in known and row["found"] in ("0", "1"):
            status.setdefault((row["image"], row["model"]), {})[row["object"]] = row["found"] == "1"
    counts: dict[str, dict[str, float]] = {}
    for (image, model), objects in status.items():
        prefix = f"{model}/" if several else ""
        found = sum(objects.values())
        counts.setdefault(image, {}).update({f"{prefix}{OBJECT_KEYS[0]}": float(len(objects) - found),
                                             f"{prefix}{OBJECT_KEYS[1]}": float(found)})
    return counts


def match_detections(ground_truth: list[dict], detections: list[dict], model_labels: Sequence[str],
                     classes: Sequence[str], iou: float = MATCH_IOU) -> list[dict]:
    """``ground_truth`` (``box``, ``index``, ``label``) with ``status`` (``found`` or ``missed``) and ``detection``
    (the rank of the detection matched to it; None: missed), as ``attnlens eval`` decides found / missed: the
    model's classes mapped to the dataset's ``classes`` (``coco_ap.class_mapping``: by name, else by index), then
    per class COCO's matching (best detections first, each taking the unmatched box of the highest IoU >= ``iou``).
    A detection no box takes is a false positive."""
    mapping, _ = class_mapping(model_labels, classes)
    ranks = [rank for rank, d in enumerate(detections) if d["index"] in mapping]
    xywh = lambda box: [box[0], box[1], box[2] - box[0], box[3] - box[1]]
    truth = Boxes(np.array([xywh(g["box"]) for g in ground_truth], dtype=np.float64).reshape(-1, 4),
                  np.array([g["index"] for g in ground_truth], dtype=np.int64))
    found = Boxes(np.array([xywh(detections[r]["box"]) for r in ranks], dtype=np.float64).reshape(-1, 4),
                  np.array([mapping[detections[r]["index"]] for r in ranks], dtype=np.int64),
                  score=np.array([-rank for rank in ranks], dtype=np.float64))  # best first, as they are ranked
    taken = {box: ranks[place] for box, (place, _) in matched(truth, found, iou).items()}
    return [{**g, "status": "found" if i in taken else "missed", "detection": taken.get(i)}
            for i, g in enumerate(ground_truth)]


class DatasetBrowser:
    """One served dataset: ``listing`` (a page of images, filtered and sorted), ``path_of`` (an id's file, only
    when it is the dataset's own), ``ground_truth`` (an image's boxes in original pixels) and ``thumbnail``."""

    def __init__(self, dataset: Dataset, scores: dict[str, dict[str, float]] | None = None, name: str | None = None,
                 cache_bytes: int = THUMBNAIL_CACHE_BYTES):
        self.dataset, self.name, self.cache_bytes = dataset, name or dataset.name, cache_bytes
        self.scores = scores or {}
        self.by_id = {image.id: image for image in dataset.images}
        folders = {image.path.parent for image in dataset.images} | ({dataset.root} if dataset.root else set())
        self.folders = tuple({folder.resolve() for folder in folders})
        self.sort_keys = sorted(_sortable(self.scores),
                                key=lambda key: (not key.endswith(OBJECT_KEYS), "baseline/" in key, "reference/" in key,
                                                 key))  # objects missed / found, then blocks first
        self._sizes: dict[str, tuple[int, int] | None] = {}
        self._thumbnails: OrderedDict[str, bytes] = OrderedDict()
        self._thumbnail_bytes = 0
        self._lock = threading.Lock()

    def describe(self) -> dict:
        return {"name": self.name, "images": len(self.dataset.images), "classes": self.dataset.classes,
                "sort_keys": self.sort_keys}

    def path_of(self, image_id: str) -> Path | None:
        """The file of the dataset's image ``image_id``; None for an id the dataset lacks, a file that is gone, or
        one whose resolved path (links followed) leaves the dataset's folders."""
        image = self.by_id.get(image_id)
        if image is None:
            return None
        try:
            resolved = image.path.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if not resolved.is_file() or not any(resolved.is_relative_to(folder) for folder in self.folders):
            return None
        return resolved

    def size_of(self, image: LabelledImage) -> tuple[int, int] | None:
        """The upright (EXIF-oriented) size, from the file's header, read once; None where it cannot be read."""
        if image.id not in self._sizes:
            path = self.path_of(image.id)
            self._sizes[image.id] = None if path is None else upright_size(path)
        return self._sizes[image.id]

    def ground_truth(self, image: LabelledImage, size: tuple[int, int] | None = None) -> list[dict]:
        """The image's boxes, ``[x0, y0, x1, y1]`` in upright original-image pixels, with class index and label
        (none for normalised YOLO boxes of an image whose size cannot be read). ``size``: the upright size when
        the caller decoded the image (else read from its header)."""
        if size is None and any(obj.normalised for obj in image.objects):
            size = self.size_of(image)
        boxes = []
        for obj in image.objects:
            if obj.normalised and size is None:
                continue
            placed = obj.in_pixels(*size) if obj.normalised else obj
            boxes.append({"box": [round(v, 2) for v in placed.box], "index": obj.index,
                          "label": self.dataset.classes[obj.index] if obj.index < len(self.dataset.classes) else
                          f"class {obj.index}"})
        return boxes

    def _class_index(self, chosen: str) -> int:
        classes = self.dataset.classes
        if chosen in classes:
            return classes.index(chosen)
        if chosen.isdigit() and int(chosen) < len(classes):
            return int(chosen)
        raise ValueError(f"class must be one of the dataset's ({', '.join(classes[:20])}"
                         f"{', ...' if len(classes) > 20 else ''}) or an index below {len(classes)}; got {chosen!r}")

    def listing(self, offset: int = 0, limit: int = 100, sort: str | None = None, cls: str | None = None,
                search: str | None = None, missed: str | None = None) -> dict[str, Any]:
        """``{"total", "images": [...]}``: the images having an object of class ``cls`` and ``search`` in their
        path (case aside), where ``missed`` a detector missed an object (``1``: any detector of the results; or a
        model's name), by ``sort`` (``MAP:MEASURE``, high to low; images without that score last) or else by id,
        from ``offset``. ``ValueError`` for a class, sort key or model the dataset or its results lack."""
        images = self.dataset.images
        if cls is not None and cls != "":
            index = self._class_index(cls)
            images = [image for image in images if any(obj.index == index for obj in image.objects)]
        if missed:
            keys = self._missed_keys(missed)
            images = [image for image in images if any(self.scores.get(image.id, {}).get(key, 0) > 0 for key in keys)]
        if search:
            needle = search.lower()
            images = [image for image in images if needle in image.id.lower()]
        if sort:
            if sort not in self.sort_keys:
                raise ValueError(f"sort must be MAP:MEASURE from the eval results ({', '.join(self.sort_keys[:12])}"
                                 f"{', ...' if len(self.sort_keys) > 12 else ''})" if self.sort_keys else
                                 "sort needs eval results: serve the dataset with --eval-results DIR (attnlens eval "
                                 "--out DIR)")
            scored = [image for image in images if sort in self.scores.get(image.id, {})]
            unscored = [image for image in images if sort not in self.scores.get(image.id, {})]
            images = sorted(scored, key=lambda image: (-self.scores[image.id][sort], image.id)) + unscored
        page = images[offset:offset + limit]
        return {"total": len(images), "offset": offset, "images": [self.entry(image) for image in page]}

    def _missed_keys(self, missed: str) -> list[str]:
        """The ``objects:missed`` keys ``missed`` names: ``1`` every detector's, else that model's."""
        keys = [key for key in self.sort_keys if key.endswith(OBJECT_KEYS[0])]
        if not keys:
            raise ValueError("missed needs a detector's eval results: serve the dataset with --eval-results DIR "
                             "(attnlens eval --out DIR of a detector, which writes per_object.csv)")
        if missed in ("1", "true", "any"):
            return keys
        chosen = [key for key in keys if key == f"{missed}/{OBJECT_KEYS[0]}"]
        if not chosen:
            models = [key.rsplit("/", 1)[0] for key in keys if "/" in key]
            raise ValueError(f"missed must be 1 (any detector) or one of the results' models ({', '.join(models)}); "
                             f"got {missed!r}" if models else "missed must be 1: the results hold one model")
        return chosen

    def entry(self, image: LabelledImage) -> dict[str, Any]:
        size = self.size_of(image)
        return {"id": image.id, "file": image.path.name, "width": size[0] if size else None,
                "height": size[1] if size else None, "boxes": self.ground_truth(image),
                "scores": self.scores.get(image.id, {})}

    def thumbnail(self, image_id: str, side: int = THUMBNAIL_SIDE) -> bytes | None:
        """A JPEG of the upright image, its long side at most ``side``; cached (least recently used out past
        ``cache_bytes``). None for an id ``path_of`` refuses or a file that cannot be decoded."""
        key = f"{side}/{image_id}"
        with self._lock:
            if key in self._thumbnails:
                self._thumbnails.move_to_end(key)
                return self._thumbnails[key]
        path = self.path_of(image_id)
        if path is None:
            return None
        try:
            with Image.open(path) as opened:
                opened.draft("RGB", (side, side))  # JPEG: decode at a fraction of the size
                image = ImageOps.exif_transpose(opened).convert("RGB")
            image.thumbnail((side, side))
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=85)
        except Exception:  # noqa: BLE001 - a user's file PIL cannot decode: no thumbnail
            return None
        data = buffer.getvalue()
        with self._lock:
            self._thumbnails[key] = data
            self._thumbnail_bytes += len(data)
            while self._thumbnail_bytes > self.cache_bytes and len(self._thumbnails) > 1:
                _, dropped = self._thumbnails.popitem(last=False)
                self._thumbnail_bytes -= len(dropped)
        return data
