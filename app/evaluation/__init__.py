"""Evidence on the user's own data: every block of any model scored against the boxes of a labelled dataset.

``evaluate(models, data)`` reads the dataset (``datasets``), runs every image through every model (``run``),
scores each map on the objects (``measures``), and sums it up with bootstrap intervals and paired
comparisons (``summary``); for detectors also COCO AP (``coco_ap``) and each object found or missed with where
the maps looked (``detection``); with ``out``, writes ``summary.json``, ``per_image.csv``, ``report.html``, the
figure and, for detectors, ``ground_truth.json``, ``detections/<model>.json``, ``per_object.csv`` (``outputs``).
``attnlens eval --data ...`` is this function; with ``ray``, the same on a Ray cluster (``distributed``).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .coco_ap import AP_CONF, AP_MAX_DET
from .datasets import DataError, Dataset, read_dataset
from .detection import evaluate_detections
from .run import evaluate_dataset
from .summary import compare, knockout_agreement, summarise

__all__ = ["DataError", "Dataset", "evaluate", "read_dataset"]


def evaluate(models: Sequence[tuple[str, Any]], data: str | Path | Dataset, images: str | Path | None = None,
             split: str = "val", limit: int | None = None, classes: Sequence[str] | None = None,
             reference: str | Sequence[str] = "gradcam", out: str | Path | None = None, batch_size: int = 8,
             workers: int = 0, seed: int = 0, progress: Callable[[int], Any] | None = None, ray: str | bool | None = None,
             ray_actors: int | None = None, ap_conf: float = AP_CONF, ap_max_det: int = AP_MAX_DET,
             knockout: bool = False, ray_stall_s: float | None = None) -> dict:
    """The summary (``summary.json``'s content) of ``models`` (``(name, LoadedModel)`` pairs, or ``(name,
    what load_model takes)``) on a dataset (a YOLO ``data.yaml``, a COCO JSON with its ``images`` folder, or a
    ``Dataset``). ``reference``: reference methods scored beside the blocks (``gradcam``, ``gradcam++``,
    ``layercam``, ``eigencam``; a list or comma-separated), where a model has layers for them, or ``none``.
    ``ray``: score on a Ray cluster (``local``: one started for the run; ``auto``: the running one, or
    ``RAY_ADDRESS``'s; or an address; ``True``: ``auto`` where ``RAY_ADDRESS`` is set, else ``local``) with
    ``ray_actors`` model actors (default: one per GPU, else one); the workers load each model again from the
    options it was loaded from (so not a module built in Python). ``ap_conf``, ``ap_max_det``: the confidence
    threshold and the cap per image of the detections a detector's AP is computed from (its own ``conf`` and
    ``max_det`` decide found / missed, as ``analyze`` shows them). ``knockout``: each block of each model knocked
    out too (its map made flat, one forward per block and batch): per block, the change of AP (detectors) or the
    top-1 agreement with the full model (classifiers), with paired bootstrap intervals, in ``knockout``.
    ``ray_stall_s``: with ray, no batch finished for this long ends the run (default 300 s): what was scored is
    summarised (and written) with ``incomplete`` saying so, then ``RayStall`` is raised."""
    from attnlens.models import LoadedModel, load_model
    from attnlens.models.references import METHODS

    methods = [m.strip() for m in (reference.split(",") if isinstance(reference, str) else reference) if m.strip()]
    methods = [] if methods == ["none"] else methods
    if unknown := [m for m in methods if m not in METHODS]:
        raise ValueError(f"reference must be none or among {', '.join(METHODS)} (comma-separated), got "
                         f"{', '.join(unknown)}")
    on_ray = ray not in (None, False)
    if on_ray:
        from .distributed import ray_module

        ray_module()  # before the models load: Ray missing is said at once
    dataset = data if isinstance(data, Dataset) else read_dataset(data, images, split, limit, classes, seed)
    names = [name for name, _ in models]
    if len(set(names)) != len(names):
        raise ValueError(f"two models share a name: {names}")
    loaded = [(name, model if isinstance(model, LoadedModel) else load_model(model)) for name, model in models]
    if on_ray and (given := [name for name, model in loaded if model.options is None]):
        raise ValueError(f"with ray, the workers load each model again from its options: give {', '.join(given)} as "
                         f"load_model's options (a ModelOptions or a --model string), not as a module")
    if not 0 <= ap_conf <= 1 or ap_max_det < 1:
        raise ValueError(f"the AP threshold (--ap-conf, ap_conf) must be in [0, 1] and its cap (--ap-max-det, "
                         f"ap_max_det) at least 1; got {ap_conf} and {ap_max_det}")
    methods = tuple(dict.fromkeys(methods))
    ap = (ap_conf, ap_max_det)
    stalled = None
    if on_ray:
        from .distributed import STALL_S, RayStall, evaluate_on_ray

        try:
            total = evaluate_on_ray(loaded, dataset, methods, batch_size, ray, ray_actors, progress, ap, knockout,
                                    STALL_S if ray_stall_s is None else ray_stall_s)
        except RayStall as stall:
            total, stalled = stall.partial, stall
    else:
        total = evaluate_dataset(loaded, dataset, methods, batch_size, workers, progress, ap, knockout)
    scores, kept, skipped = total.scores, total.kept, total.skipped
    dropped = {s.file for s in skipped if s.kind == "unreadable image"}
    detection = evaluate_detections(loaded, dataset, total, seed, ap)
    summary = {
        "models": names,
        "dataset": {"name": dataset.name, "images": len(dataset.images) - len(dropped),
                    "objects": sum(len(i.objects) for i in dataset.images if i.id not in dropped),
                    "backgrounds": sum(not i.objects for i in dataset.images if i.id not in dropped),
                    "classes": dataset.classes,
                    "skipped": [vars(s) for s in [*dataset.skipped, *skipped]]},
        "rows": summarise(scores, dataset, names, seed),
        "comparisons": (compare(scores, names, seed) if len(names) > 1 else []) + detection.comparisons,
    }
    if detection.summary:
        summary["detection"] = detection.summary
    if knockout:
        summary["knockout"] = detection.knockout | knockout_agreement(total, loaded, seed)
    if stalled is not None:
        summary["incomplete"] = f"{stalled}: this summary covers the {stalled.done} batches scored"
    if out is not None:
        from .outputs import write_outputs

        write_outputs(Path(out), summary, scores, kept, detection)
    if stalled is not None:
        raise stalled
    return summary
