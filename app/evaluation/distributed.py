"""The dataset evaluation on a Ray cluster (``attnlens eval --ray``): the same batches, the same scoring code
(``run.score_batch``), the same results as a local run.

The driver plans the batches as a local run does (``run.plan_batches``: by input shape, from the image headers),
and Ray Data runs them: a CPU stage decodes and prepares each batch's images, then an actor pool (each actor
loads the models once; a GPU each where the cluster has them) runs forward, capture and the per-image measures
and hands back the batch's scores and its best / worst images per map. The driver adds the batches up in plan
order (``BatchScores.add``), so ``summary.json``, ``per_image.csv`` and ``report.html`` are a local run's.

The workers import the models' code from the folder attnlens runs in, shipped to them as the job's
``working_dir``; the dataset's files must be readable on the workers under the same paths (a shared disk).
"""
from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .datasets import DataError, Dataset
from .run import BatchScores, _Prepared, plan_batches, score_batch

__all__ = ["RayError", "evaluate_on_ray"]

INSTALL = "pip install 'attnlens[ray]'"
PREFLIGHT_TIMEOUT_S = 120  # for the workers to import and load every model once, before the run
SHIPPED_EXCLUDES = [".git", ".venv", "venv", "__pycache__", "*.pt", "*.pth", "*.safetensors", "runs", "build", "dist",
                    "e2e-screenshots"]  # besides what .gitignore leaves out


class RayError(DataError):
    """Ray is missing, the cluster cannot be reached, or the workers cannot load a model: one line."""


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as error:
        raise RayError(f"--ray needs Ray (Ray Data): {INSTALL}") from error
    return ray


def _first_line(error: BaseException) -> str:
    """A worker's error as one line: what the user's code raised, not Ray's wrapping of it."""
    cause = getattr(error, "cause", None) or error
    lines = [line for line in str(cause).strip().splitlines() if line.strip()]
    text = lines[-1] if lines and "Traceback" in lines[0] else lines[0] if lines else type(cause).__name__
    return text.strip()


def _load_all(options: Sequence[tuple[str, Any]], threads: int) -> list[tuple[str, Any]]:
    """On a worker: each model loaded once (``ModelLoadError`` in one line for one that does not), torch on
    ``threads`` threads (Ray gives a worker one by default)."""
    import torch

    from attnlens.analysis.engine import Engine
    from attnlens.models import load_model

    torch.set_num_threads(threads)
    return [(name, Engine(load_model(model))) for name, model in options]


def _check_models(options: Sequence[tuple[str, Any]], threads: int) -> list[str]:
    """The preflight task: load every model as an actor will, say what each loaded as."""
    return [f"{name}: {engine.model.task}" for name, engine in _load_all(options, threads)]


class _Decode:
    """CPU stage: a planned batch's images decoded and prepared by every model's recipe (a local run's
    DataLoader workers do the same)."""

    def __init__(self, images, recipes, plan):
        self.prepared, self.plan = _Prepared(images, recipes), plan

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        numbers = [int(n) for n in batch["batch"]]
        items = [pickle.dumps([self.prepared[i] for i in self.plan[n]]) for n in numbers]
        return {"batch": np.array(numbers), "items": np.array(items, dtype=object)}


class _Score:
    """Actor stage: the models loaded once; each planned batch run and scored (``run.score_batch``)."""

    def __init__(self, options, images, references, threads):
        self.engines, self.images, self.references = _load_all(options, threads), images, references

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        numbers = [int(n) for n in batch["batch"]]
        parts = [pickle.dumps(score_batch(self.engines, self.images, self.references, n, pickle.loads(items)))
                 for n, items in zip(numbers, batch["items"])]
        return {"batch": np.array(numbers), "scores": np.array(parts, dtype=object)}


def _connect(ray, address: str) -> None:
    """``local``: a cluster of this machine for the run (loopback, no dashboard); ``auto`` (or ``RAY_ADDRESS``) or
    an address: join that cluster. The current folder goes to the workers as the job's ``working_dir``."""
    runtime_env = {"working_dir": os.getcwd(), "excludes": SHIPPED_EXCLUDES,
                   "env_vars": {"YOLO_AUTOINSTALL": "False", "YOLOv5_AUTOINSTALL": "False"}}
    quiet = {"runtime_env": runtime_env, "log_to_driver": False, "logging_level": logging.WARNING}
    try:
        if address == "local":
            ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1", **quiet)
        else:
            ray.init(address=address, **quiet)
        ray.data.DataContext.get_current().enable_progress_bars = False  # attnlens shows its own
    except Exception as error:  # noqa: BLE001 - Ray's own errors (no cluster there, a working_dir too large ...)
        raise RayError(f"cannot start or join the Ray cluster ({address}): {_first_line(error)}") from error


def evaluate_on_ray(options: Sequence[tuple[str, Any]], models: Sequence[tuple[str, Any]], dataset: Dataset,
                    references: Sequence[str], batch_size: int, address: str = "local", actors: int | None = None,
                    progress: Callable[[int], Any] | None = None) -> BatchScores:
    """``run.evaluate_dataset``'s results, computed on a Ray cluster. ``options``: each model as ``load_model``
    takes it (what the workers load), ``models``: the same loaded here (their input recipes plan the batches);
    ``address``: ``local``, ``auto`` or a cluster's; ``actors``: the pool's size (default: one per GPU, else
    one). ``RayError`` in one line for what does not work; the cluster this started is always shut down."""
    ray = _ray()
    if ray.is_initialized():
        raise RayError("Ray is already initialised in this process: attnlens connects by itself (--ray ADDRESS)")
    images = [replace(image, path=Path(image.path).resolve()) for image in dataset.images]
    recipes = [model.recipe for _, model in models]
    plan = plan_batches(images, [model for _, model in models], batch_size)
    _connect(ray, address)
    try:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        size = actors or max(1, gpus)
        cpus = max(1, int(resources.get("CPU", 1)))
        threads = max(1, (cpus - 1) // size) if not gpus else 1  # a CPU left for decoding
        remote_args = {"num_gpus": 1 if gpus else 0, "num_cpus": 1 if gpus else threads}
        check = ray.remote(_check_models).options(**remote_args)
        try:
            ray.get(check.remote(options, threads), timeout=PREFLIGHT_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError as error:
            raise RayError(f"the Ray workers did not load the models within {PREFLIGHT_TIMEOUT_S} s (is there a "
                           f"free {'GPU' if gpus else 'CPU'} in the cluster?)") from error
        except Exception as error:  # noqa: BLE001 - the user's model failing to import or load on a worker
            raise RayError(f"the Ray workers cannot load the models: {_first_line(error)} (they import your code "
                           f"from the folder attnlens runs in, shipped as the job's working_dir)") from error
        stream = (ray.data.from_items([{"batch": n} for n in range(len(plan))], override_num_blocks=max(1, len(plan)))
                  .map_batches(_Decode, fn_constructor_args=(images, recipes, plan), batch_size=1, num_cpus=1,
                               compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, cpus - size)))
                  .map_batches(_Score, fn_constructor_args=(options, images, tuple(references), threads),
                               batch_size=1, compute=ray.data.ActorPoolStrategy(size=size), **remote_args))
        bar = progress(len(images)) if progress else None
        parts: dict[int, BatchScores] = {}
        try:
            for row in stream.iter_rows():
                number = int(row["batch"])
                parts[number] = pickle.loads(row["scores"])
                if bar is not None:
                    bar.update(len(plan[number]))
        except Exception as error:  # noqa: BLE001 - a worker died, or the user's model raised outside its batch
            raise RayError(f"the Ray run failed: {_first_line(error)}") from error
        finally:
            if bar is not None:
                bar.close()
    finally:
        ray.shutdown()
    total = BatchScores()
    for number in range(len(plan)):  # in plan order: the local run's order
        total.add(parts[number])
    return total
