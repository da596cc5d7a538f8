"""What the server holds: the settings, the models it offers (each with its engine and batcher), readiness.

The models load on a background thread at start-up, so the server is live (``/healthz``) at once and
ready (``/readyz``) once every model is loaded and has run one warm-up image. Each model has its own
batcher (``MicroBatcher``), and all of them run their batches, warm-up included, on one inference
thread: each thread that runs torch gets an OpenMP team of its own, and a server alternating between
two models on two threads ran every forward ~1.5x slower (2 CPU cores). Requests name a model or get
the default (the first). The labelled datasets it serves for browsing (``--data``) are read (their labels,
not their images) when the service is made.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from PIL import Image
from torch import Tensor

from attnlens.analysis.engine import Engine, ReferenceRequest
from attnlens.analysis.imaging import decode_image
from attnlens.analysis.options import AnalyzeOptions
from attnlens.analysis.result import Analysis
from attnlens.evaluation.browse import DatasetBrowser, dataset_sources, open_datasets
from attnlens.models import InputGeometry, LoadedModel, ModelLoadError, ModelOptions, load_model
from attnlens.models.boundary import ModelRunError, what_was_raised
from attnlens.models.catalog import models_to_serve

from .inference import Admission, MicroBatcher, Overloaded
from .settings import Settings

__all__ = ["Served", "Service", "UnknownDataset", "UnknownModel"]

log = logging.getLogger("attnlens")


class UnknownModel(LookupError):
    """A request named a model the server does not offer (404)."""


class UnknownDataset(LookupError):
    """A request named a dataset, or an image of one, the server does not offer (404)."""


@dataclass
class Served:
    """One model the server offers: its options, and once loaded, the model, its engine and its batcher."""

    name: str
    options: ModelOptions
    model: LoadedModel | None = None
    engine: Engine | None = None
    batcher: MicroBatcher | None = None

    @property
    def memory_mb(self) -> float:
        """Parameters and buffers, in MiB, on the model's device."""
        tensors = [*self.model.module.parameters(), *self.model.module.buffers()]
        return round(sum(t.numel() * t.element_size() for t in tensors) / 2**20, 2)


def _out_of_memory() -> Overloaded:
    """The accelerator ran out of memory: its cache freed, the client told to try again (503)."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return Overloaded("the GPU ran out of memory; try again or send a smaller image", 5)


class Service:
    def __init__(self, settings: Settings, on_load_error: Callable[[str], None] | None = None):
        """``on_load_error``: called (on the loading thread) with the message when a model fails to load."""
        self.settings = settings
        self.on_load_error = on_load_error
        self.admission = Admission(settings.queue_size)
        self.served = {name: Served(name, options) for name, options in
                       models_to_serve(settings.model_options(), settings.models)}
        self.datasets = open_datasets(dataset_sources(settings.data, settings.data_images, settings.data_split,
                                                      settings.eval_results, settings.models))
        self.default = next(iter(self.served))
        self.load_error: str | None = None
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._loader: threading.Thread | None = None
        self._inference: ThreadPoolExecutor | None = None  # the one thread all models run on, from start()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def start(self, background: bool = True) -> None:
        self._inference = ThreadPoolExecutor(max_workers=1, thread_name_prefix="attnlens-inference")
        if background:
            self._loader = threading.Thread(target=self._load, name="attnlens-load", daemon=True)
            self._loader.start()
        else:
            self._load()

    def stop(self) -> None:
        """Let a load in progress finish (without starting work), then stop the batchers and the inference thread."""
        self._stopping.set()
        if self._loader is not None:
            self._loader.join()
        for served in self.served.values():
            if served.batcher is not None:
                served.batcher.stop()
        if self._inference is not None:
            self._inference.shutdown()

    def _load(self) -> None:
        for served in self.served.values():
            started = time.perf_counter()
            try:
                model = load_model(served.options)
                engine = Engine(model, served.options.precision)
                warm_up = Image.new("RGB", (model.input_size, model.input_size), (127, 127, 127))
                try:
                    self._inference.submit(engine.analyze, warm_up).result()
                except ModelRunError as error:  # it loaded: requests will say what it raises, the others are served
                    log.warning("%s; serving it anyway", str(error).replace("on this image", "on the warm-up image"))
            except KeyboardInterrupt:
                raise
            except BaseException as error:  # noqa: BLE001 - reported by /readyz and every request, and stops serve
                self.load_error = f"the model {served.name} could not be loaded: " + \
                    (str(error) if isinstance(error, ModelLoadError) else what_was_raised(error))
                log.error(self.load_error)
                if self.on_load_error is not None:
                    self.on_load_error(self.load_error)
                return
            if self._stopping.is_set():
                return
            for warning in model.warnings:
                log.warning("model %s: %s", served.name, warning)
            max_batch = self.settings.max_batch or (8 if model.device.type == "cuda" else 4)
            served.model, served.engine = model, engine
            served.batcher = MicroBatcher(lambda jobs, served=served: self._run_batch(served, jobs), max_batch,
                                          self.settings.batch_window_ms / 1000, runner=self._inference)
            served.batcher.start()
            log.info("model %s (%s) ready on %s (%s, %.1f MiB) in %.1f s (max batch %d)", served.name, model.name,
                     model.device, engine.precision, served.memory_mb, time.perf_counter() - started, max_batch)
        self._ready.set()

    def require_ready(self) -> None:
        if self.load_error:
            raise Overloaded(self.load_error, retry_after_s=60)
        if not self.ready:
            raise Overloaded("the models are still loading", retry_after_s=5)

    def get(self, name: str | None) -> Served:
        """The model named ``name`` (None: the default); ``UnknownModel`` if the server offers none by that name."""
        if name is None:
            return self.served[self.default]
        if name not in self.served:
            raise UnknownModel(f"no model named {name!r}; this server offers {', '.join(map(repr, self.served))}")
        return self.served[name]

    def dataset(self, name: str) -> DatasetBrowser:
        """The served dataset ``name``; ``UnknownDataset`` if there is none by that name."""
        if name not in self.datasets:
            offered = ", ".join(map(repr, self.datasets)) or "none (serve one with --data)"
            raise UnknownDataset(f"no dataset named {name!r}; this server offers {offered}")
        return self.datasets[name]

    def retry_after_s(self) -> float:
        """How long a refused client should wait: the work ahead of it, at the recent batch speed."""
        batchers = [served.batcher for served in self.served.values() if served.batcher is not None]
        if not batchers:
            return 5.0
        return max(b.batch_seconds for b in batchers) * self.admission.in_flight / min(b.max_batch for b in batchers)

    def prepare(self, served: Served, data: bytes, options: AnalyzeOptions) -> tuple[Tensor, InputGeometry]:
        """Bytes -> (input tensor, where the image lies in it); runs on a worker thread of the request."""
        return served.engine.prepare(decode_image(data, self.settings.max_pixels), options.size)

    @staticmethod
    def _run_batch(served: Served, jobs: list[tuple[Tensor, AnalyzeOptions, InputGeometry, float]]) -> list[Analysis]:
        """Inference thread: one forward pass for the batch (with a reference map when asked: such jobs come alone),
        split into one ``Analysis`` per image; the requests render them on their own threads."""
        started = time.perf_counter()
        references = ReferenceRequest.of(jobs[0][1], len(jobs))
        engine = served.engine
        try:
            result = engine.run(torch.cat([tensor for tensor, *_ in jobs]), references, knockout=jobs[0][1].knockout)
        except torch.OutOfMemoryError:  # outside the model's own code (attnlens' work on the batch)
            raise _out_of_memory() from None
        except ModelRunError as error:  # named as the server offers it; an accelerator's memory: try again
            if error.transient:
                raise _out_of_memory() from None
            raise ModelRunError(served.name, error.error, error.during) from error.error
        analyses = engine.analyses(result, [geometry for _, _, geometry, _ in jobs])
        for analysis, (*_, enqueued) in zip(analyses, jobs):
            analysis.timings_ms["queue"] = 1000 * (started - enqueued)
            analysis.served_as = served.name
        return analyses
