"""What the server holds: the settings, the loaded model, the batcher, and whether it is ready.

The model loads on a background thread at start-up, so the server is live (``/healthz``) at once and
ready (``/readyz``) once the model is loaded and has run one warm-up image.
"""
from __future__ import annotations

import logging
import threading
import time

import torch
from PIL import Image
from torch import Tensor

from attnlens.analysis.engine import AnalyzeOptions, Engine
from attnlens.analysis.imaging import decode_image
from attnlens.models import InputGeometry, LoadedModel, load_model

from .inference import Admission, MicroBatcher, Overloaded
from .settings import Settings

__all__ = ["Service"]

log = logging.getLogger("attnlens")


class Service:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.admission = Admission(settings.queue_size)
        self.model: LoadedModel | None = None
        self.engine: Engine | None = None
        self.batcher: MicroBatcher | None = None
        self.load_error: str | None = None
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._loader: threading.Thread | None = None

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def start(self, background: bool = True) -> None:
        if background:
            self._loader = threading.Thread(target=self._load, name="attnlens-load", daemon=True)
            self._loader.start()
        else:
            self._load()

    def stop(self) -> None:
        """Let a load in progress finish (without starting work), then stop the inference thread."""
        self._stopping.set()
        if self._loader is not None:
            self._loader.join()
        if self.batcher is not None:
            self.batcher.stop()

    def _load(self) -> None:
        started = time.perf_counter()
        try:
            model = load_model(self.settings.model_options())
            engine = Engine(model, self.settings.precision)
            engine.analyze(Image.new("RGB", (model.input_size, model.input_size), (127, 127, 127)))  # warm-up
        except Exception as error:  # noqa: BLE001 - reported by /readyz and every request
            self.load_error = f"the model could not be loaded: {error}"
            log.error(self.load_error)
            return
        if self._stopping.is_set():
            return
        max_batch = self.settings.max_batch or (8 if model.device.type == "cuda" else 1)
        self.model, self.engine = model, engine
        self.batcher = MicroBatcher(self._run_batch, max_batch, self.settings.batch_window_ms / 1000)
        self.batcher.start()
        self._ready.set()
        log.info("model %s ready on %s (%s) in %.1f s (max batch %d)", model.name, model.device, engine.precision,
                 time.perf_counter() - started, max_batch)

    def require_ready(self) -> None:
        if self.load_error:
            raise Overloaded(self.load_error, retry_after_s=60)
        if not self.ready:
            raise Overloaded("the model is still loading", retry_after_s=5)

    def retry_after_s(self) -> float:
        """How long a refused client should wait: the work ahead of it, at the recent batch speed."""
        if self.batcher is None:
            return 5.0
        return self.batcher.batch_seconds * self.admission.in_flight / self.batcher.max_batch

    def prepare(self, data: bytes, options: AnalyzeOptions) -> tuple[InputGeometry, Tensor]:
        """Bytes -> (where the image lies in the input, input tensor); runs on a worker thread of the request."""
        image = decode_image(data, self.settings.max_pixels)
        tensor, geometry = self.engine.prepare(image, options.size)
        return geometry, tensor

    def _run_batch(self, jobs: list[tuple[Tensor, InputGeometry, AnalyzeOptions, float]]) -> list[dict]:
        """Worker thread: one forward pass for the batch, then one report per image."""
        started = time.perf_counter()
        try:
            result = self.engine.run(torch.cat([tensor for tensor, *_ in jobs]))
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            raise Overloaded("the GPU ran out of memory; try again or send a smaller image", 5) from None
        reports = []
        for i, (_, geometry, options, enqueued) in enumerate(jobs):
            report = self.engine.report(result, i, geometry, options)
            report["timings_ms"]["queue"] = round(1000 * (started - enqueued), 2)
            reports.append(report)
        return reports
