"""Labelled datasets as users have them: YOLO ``data.yaml`` (ultralytics / YOLOv5) and COCO detection JSON.

A dataset is its class names, its images (each with its objects: a class and a box, or a polygon, in
original-image pixels once the image's size is known) and what was skipped, with why (a bad label row,
a missing image). YOLO: ``path`` is the root (relative to the YAML's folder), ``train`` / ``val`` /
``test`` a folder, a list of them or a ``.txt`` of image paths; each image's labels are the ``.txt`` found
by replacing its last ``/images/`` with ``/labels/``; a row is ``class cx cy w h`` (normalised) or a
segmentation ``class x1 y1 x2 y2 ...`` (its polygon); an image without a label file is a background.
COCO: ``images`` (``id``, ``file_name``, ``width``, ``height``), ``annotations`` (``bbox`` ``[x, y, w,
h]`` in pixels, ``segmentation`` polygons when given) and ``categories`` (indices follow the sorted ids).
Never a traceback for a user's data: what cannot be read is skipped and named.
"""
from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from attnlens.models.labels import label_list

__all__ = ["DataError", "Dataset", "LabelledImage", "Object", "Skipped", "read_dataset"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")


class DataError(Exception):
    """A dataset that cannot be used at all (no such file, no split, no classes), said in one line."""


@dataclass(frozen=True)
class Object:
    """One labelled object: its class index and its region, a box ``(x0, y0, x1, y1)`` and, for a segmentation
    label, its polygon ``((x, y), ...)``; in pixels of the upright original image, or normalised to [0, 1]
    (YOLO) until ``in_pixels`` knows the image's size."""

    index: int
    box: tuple[float, float, float, float]
    polygon: tuple[tuple[float, float], ...] | None = None
    normalised: bool = False
    crowd: bool = False  # COCO's iscrowd: a crowd region, which detection AP ignores (no object to find)
    bbox: tuple[float, float, float, float] | None = None  # COCO: [x, y, w, h] as the file gives it
    labelled_area: float | None = None  # COCO: the annotation's area (its segment's), which AP's size ranges use

    def in_pixels(self, width: int, height: int) -> Object:
        if not self.normalised:
            return self
        x0, y0, x1, y1 = self.box
        polygon = None if self.polygon is None else tuple((x * width, y * height) for x, y in self.polygon)
        return Object(self.index, (x0 * width, y0 * height, x1 * width, y1 * height), polygon)

    @property
    def xywh(self) -> tuple[float, float, float, float]:
        """``[x, y, w, h]`` in pixels (``in_pixels`` first): the file's own for COCO, else from the box."""
        x0, y0, x1, y1 = self.box
        return self.bbox or (x0, y0, x1 - x0, y1 - y0)

    @property
    def area(self) -> float:
        """Pixels covered: the polygon's area (shoelace) for a segmentation label, else the box's."""
        if self.polygon is not None and len(self.polygon) >= 3:
            points = self.polygon
            return abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1]))) / 2
        x0, y0, x1, y1 = self.box
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)


@dataclass(frozen=True)
class LabelledImage:
    """An image of the split: ``id`` (its path relative to the dataset's root, also its name in results),
    ``path`` and its objects (none: a background)."""

    id: str
    path: Path
    objects: tuple[Object, ...] = ()
    coco_id: Any = None  # COCO: the image's id in the file


@dataclass(frozen=True)
class Skipped:
    """What was not scored: ``file`` and ``line`` (1-based; None for a whole file), why, and the kind of reason
    (the warning counts them by kind)."""

    file: str
    line: int | None
    reason: str
    kind: str = "other"


@dataclass
class Dataset:
    """``root``: the folder image ids are relative to (YOLO: ``path``; COCO: the images folder);
    ``category_ids``: COCO: each class's id in the file; ``counted``: the classes ``--classes`` chose (None: all)."""

    name: str
    classes: list[str]
    images: list[LabelledImage]
    skipped: list[Skipped] = field(default_factory=list)
    root: Path | None = None
    category_ids: list[Any] | None = None
    counted: tuple[int, ...] | None = None

    @property
    def objects(self) -> int:
        return sum(len(image.objects) for image in self.images)

    @property
    def backgrounds(self) -> int:
        return sum(not image.objects for image in self.images)


def _class_names(names: Any, where: str) -> list[str]:
    try:
        return label_list(names)
    except ValueError as error:
        raise DataError(f"{where}: names: {error}") from error


def _yolo_images(entry: Any, root: Path, where: str) -> list[Path]:
    """The images a YOLO split names: folders (searched recursively), ``.txt`` lists, or lists of those."""
    entries = entry if isinstance(entry, list) else [entry]
    found: list[Path] = []
    for item in entries:
        path = Path(str(item))
        path = path if path.is_absolute() else root / path
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif path.suffix == ".txt" and path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    listed = Path(line.strip())
                    found.append(listed if listed.is_absolute() else (root / listed).resolve()
                                 if not line.startswith("./") else (path.parent / listed).resolve())
        elif path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            found.append(path)
        else:
            raise DataError(f"{where}: {item} is no folder, image list (.txt) or image")
    return found


def _label_file(image: Path) -> Path:
    parts = list(image.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _yolo_objects(label: Path, classes: int, name: str, skipped: list[Skipped]) -> tuple[Object, ...]:
    """The rows of one YOLO label file; a bad row is skipped and named."""
    try:
        text = label.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        skipped.append(Skipped(name, None, f"unreadable label file: {error}", "unreadable label file"))
        return ()
    objects = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            values = [float(value) for value in fields]
        except ValueError:
            skipped.append(Skipped(name, number, f"not a number: {line.strip()[:60]!r}", "bad label row"))
            continue
        index = values[0]
        if index != int(index) or not 0 <= index < classes:
            skipped.append(Skipped(name, number, f"unknown class {fields[0]} (the dataset has {classes})", "bad label row"))
            continue
        coordinates = values[1:]
        if not all(math.isfinite(v) for v in coordinates) or not all(0.0 <= v <= 1.0 for v in coordinates):
            skipped.append(Skipped(name, number, "coordinates outside [0, 1] (YOLO rows are normalised)", "bad label row"))
            continue
        if len(coordinates) == 4:
            cx, cy, w, h = coordinates
            if w <= 0 or h <= 0:
                skipped.append(Skipped(name, number, "an empty box (width or height 0)", "bad label row"))
                continue
            objects.append(Object(int(index), (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), normalised=True))
        elif len(coordinates) >= 6 and len(coordinates) % 2 == 0:
            points = tuple(zip(coordinates[0::2], coordinates[1::2]))
            xs, ys = [x for x, _ in points], [y for _, y in points]
            objects.append(Object(int(index), (min(xs), min(ys), max(xs), max(ys)), points, normalised=True))
        else:
            skipped.append(Skipped(name, number, f"{len(fields)} values: a row is class cx cy w h, or class and a "
                                                 f"polygon's x y pairs", "bad label row"))
    return tuple(objects)


def _read_yolo(path: Path, split: str) -> Dataset:
    import yaml

    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        problem = getattr(error, "problem", None)
        raise DataError(f"cannot read {path}: {problem or str(error).splitlines()[0]}") from error
    if not isinstance(config, dict):
        raise DataError(f"{path}: expected a mapping with path, {split} and names")
    root = Path(str(config.get("path") or path.parent))
    root = root if root.is_absolute() else (path.parent / root).resolve()
    if split not in config or config[split] in (None, ""):
        raise DataError(f"{path}: no {split!r} split (it has {', '.join(k for k in ('train', 'val', 'test') if k in config)})")
    classes = _class_names(config.get("names", []), str(path))
    if not classes:
        raise DataError(f"{path}: no class names")
    skipped: list[Skipped] = []
    images = []
    for image in _yolo_images(config[split], root, str(path)):
        name = str(image.relative_to(root)) if image.is_relative_to(root) else str(image)
        label = _label_file(image)
        objects = _yolo_objects(label, len(classes), str(label.relative_to(root)) if label.is_relative_to(root)
                                else str(label), skipped) if label.is_file() else ()
        images.append(LabelledImage(name, image, objects))
    return Dataset(path.stem, classes, images, skipped, root)


def _read_coco(path: Path, images_dir: Path | None) -> Dataset:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"cannot read {path}: {str(error).splitlines()[0]}") from error
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{path}: not a COCO detection file (images, annotations, categories)")
    folder = images_dir or path.parent
    categories = sorted((c for c in data.get("categories", []) if isinstance(c, dict) and "id" in c),
                        key=lambda c: c["id"])
    if not categories:
        raise DataError(f"{path}: no categories")
    index_of = {c["id"]: i for i, c in enumerate(categories)}
    skipped: list[Skipped] = []
    by_image: dict[Any, list[Object]] = {}
    files = {}
    for number, image in enumerate(data["images"], 1):
        if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
            skipped.append(Skipped(path.name, None, f"image entry {number}: needs an id and a file_name", "bad image entry"))
            continue
        files[image["id"]] = image["file_name"]
        by_image[image["id"]] = []
    for number, annotation in enumerate(data.get("annotations", []), 1):
        where = f"annotation {number}" + (f" (id {annotation.get('id')})" if isinstance(annotation, dict) else "")
        if not isinstance(annotation, dict) or annotation.get("image_id") not in by_image:
            skipped.append(Skipped(path.name, None, f"{where}: no image with that image_id", "bad annotation"))
            continue
        if annotation.get("category_id") not in index_of:
            skipped.append(Skipped(path.name, None, f"{where}: unknown category_id {annotation.get('category_id')}",
                                   "bad annotation"))
            continue
        try:
            x, y, w, h = (float(v) for v in annotation["bbox"])
        except (KeyError, TypeError, ValueError):
            skipped.append(Skipped(path.name, None, f"{where}: bbox must be [x, y, w, h] numbers", "bad annotation"))
            continue
        if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
            skipped.append(Skipped(path.name, None, f"{where}: an empty or non-finite bbox", "bad annotation"))
            continue
        polygon = None
        segmentation = annotation.get("segmentation")
        if isinstance(segmentation, list) and segmentation and isinstance(segmentation[0], list) and \
                len(segmentation) == 1 and len(segmentation[0]) >= 6:
            coordinates = segmentation[0]
            polygon = tuple(zip(map(float, coordinates[0::2]), map(float, coordinates[1::2])))
        area = annotation.get("area")
        area = float(area) if isinstance(area, (int, float)) and math.isfinite(area) and area >= 0 else None
        by_image[annotation["image_id"]].append(Object(index_of[annotation["category_id"]], (x, y, x + w, y + h),
                                                       polygon, crowd=bool(annotation.get("iscrowd", 0)),
                                                       bbox=(x, y, w, h), labelled_area=area))
    images = [LabelledImage(files[key], folder / files[key], tuple(objects), key) for key, objects in by_image.items()]
    return Dataset(path.stem, [str(c.get("name", c["id"])) for c in categories], images, skipped, folder,
                   [c["id"] for c in categories])


def read_dataset(data: str | Path, images: str | Path | None = None, split: str = "val", limit: int | None = None,
                 classes: Sequence[str] | None = None, seed: int = 0) -> Dataset:
    """A YOLO ``data.yaml`` (its ``split``) or a COCO JSON (with its ``images`` folder); ``limit``: a seeded
    sample of that many images; ``classes``: only these class names (or indices) count (the others' objects
    are dropped; images left without objects are backgrounds). ``DataError`` for what cannot be used at all."""
    path = Path(data)
    if not path.is_file():
        raise DataError(f"dataset not found: {path}")
    dataset = _read_coco(path, Path(images) if images else None) if path.suffix == ".json" else _read_yolo(path, split)
    if classes:
        wanted = _chosen_classes(classes, dataset.classes)
        dataset.images = [replace(image, objects=tuple(o for o in image.objects if o.index in wanted))
                          for image in dataset.images]
        dataset.counted = tuple(sorted(wanted))
    if limit is not None and limit < len(dataset.images):
        dataset.images = sorted(random.Random(seed).sample(dataset.images, limit), key=lambda image: image.id)
    if not dataset.images:
        raise DataError(f"{path}: no images in {'the ' + split + ' split' if path.suffix != '.json' else 'the file'}")
    return dataset


def _chosen_classes(chosen: Iterable[str], names: list[str]) -> set[int]:
    wanted = set()
    for item in chosen:
        if item in names:
            wanted.add(names.index(item))
        elif item.isdigit() and int(item) < len(names):
            wanted.add(int(item))
        else:
            raise DataError(f"--classes: no class {item!r} (the dataset has {', '.join(names[:10])}"
                            f"{' ...' if len(names) > 10 else ''})")
    return wanted
