"""Inference off the event loop: bounded admission, one worker thread, micro-batches.

Requests are admitted up to a limit (``Admission``; beyond it they are refused at once with 503 and
Retry-After, never left hanging). Admitted jobs go to ``MicroBatcher``: one worker thread owns the
model; it takes the oldest job and, for up to ``window_s``, gathers later jobs with the same batch key
(the input tensor's shape) into one batch of at most ``max_batch``. Jobs with another key wait their
turn in arrival order. Results come back to the event loop through futures.
"""
from __future__ import annotations

import asyncio
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Admission", "MicroBatcher", "Overloaded"]


class Overloaded(Exception):
    """The server cannot take this request now; answer 503 with ``Retry-After``."""

    def __init__(self, detail: str, retry_after_s: float = 1.0):
        super().__init__(detail)
        self.detail = detail
        self.retry_after_s = max(1, math.ceil(retry_after_s))


class Admission:
    """At most ``limit`` requests in flight; used only from the event loop (no locks needed)."""

    def __init__(self, limit: int):
        self.limit, self.in_flight = limit, 0

    @contextmanager
    def slot(self, retry_after_s: float = 1.0) -> Iterator[None]:
        if self.in_flight >= self.limit:
            raise Overloaded(f"busy: {self.in_flight} requests in flight, the limit is {self.limit}", retry_after_s)
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1


@dataclass
class _Job:
    key: Hashable
    payload: Any
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    enqueued: float = field(default_factory=time.perf_counter)

    def settle(self, result: Any = None, error: BaseException | None = None) -> None:
        def apply() -> None:
            if self.future.done():  # cancelled by a timeout meanwhile
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)

        try:
            self.loop.call_soon_threadsafe(apply)
        except RuntimeError:  # the caller's event loop is gone (it stopped waiting); nobody to tell
            pass


_STOP = object()


class MicroBatcher:
    """Runs ``run_batch(payloads) -> results`` (same length, same order) on one worker thread, or hands each
    batch to ``runner`` (an executor several batchers share, so that their batches run on one thread)."""

    def __init__(self, run_batch: Callable[[list[Any]], list[Any]], max_batch: int = 1, window_s: float = 0.0,
                 runner: Executor | None = None):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.run_batch, self.max_batch, self.window_s, self.runner = run_batch, max_batch, window_s, runner
        self._queue: queue.Queue = queue.Queue()
        self._waiting: deque[_Job] = deque()  # jobs passed over because their key differed
        self._thread: threading.Thread | None = None
        self.batch_seconds = 0.0  # moving average of one batch's run time
        self.batch_sizes: deque[int] = deque(maxlen=1000)  # sizes of the latest batches (diagnostics, tests)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="attnlens-inference", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
            self._thread = None

    async def submit(self, key: Hashable, payload: Any, timeout_s: float | None = None) -> Any:
        """Queue one job and wait for its result; ``Overloaded`` if it takes longer than ``timeout_s``."""
        loop = asyncio.get_running_loop()
        job = _Job(key, payload, loop.create_future(), loop)
        self._queue.put(job)
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout_s)
        except TimeoutError:
            job.future.cancel()  # the worker skips it if it has not started
            raise Overloaded(f"the analysis took longer than {timeout_s:g} s and was cut off", timeout_s) from None

    def _take_batch(self) -> list[_Job] | None:
        first = self._waiting.popleft() if self._waiting else self._queue.get()
        if first is _STOP:
            return None
        batch = [first]
        for job in list(self._waiting):
            if len(batch) < self.max_batch and job.key == first.key:
                self._waiting.remove(job)
                batch.append(job)
        deadline = time.perf_counter() + self.window_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.perf_counter()
            try:
                job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is _STOP:
                self._queue.put(_STOP)  # stop after this batch
                break
            (batch if job.key == first.key else self._waiting).append(job)
        return batch

    def _work(self) -> None:
        while (batch := self._take_batch()) is not None:
            batch = [job for job in batch if not job.future.cancelled()]
            if not batch:
                continue
            start = time.perf_counter()
            try:
                payloads = [job.payload for job in batch]
                results = self.run_batch(payloads) if self.runner is None else \
                    self.runner.submit(self.run_batch, payloads).result()
            except BaseException as error:  # noqa: BLE001 - handed to every waiting request
                for job in batch:
                    job.settle(error=error)
                continue
            elapsed = time.perf_counter() - start
            self.batch_seconds = elapsed if not self.batch_sizes else 0.8 * self.batch_seconds + 0.2 * elapsed
            self.batch_sizes.append(len(batch))
            for job, result in zip(batch, results):
                job.settle(result)
        for job in self._waiting:
            job.settle(error=Overloaded("the server is shutting down"))
