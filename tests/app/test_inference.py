"""Micro-batching and admission logic, on CPU, with a recording fake model."""
import asyncio
import threading
import time

import pytest

from attnlens.server.inference import Admission, MicroBatcher, Overloaded


class Recorder:
    def __init__(self, delay=0.0, fail=False):
        self.batches, self.delay, self.fail = [], delay, fail
        self.threads = set()

    def __call__(self, payloads):
        self.threads.add(threading.current_thread().name)
        self.batches.append(list(payloads))
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("model exploded")
        return [payload * 10 for payload in payloads]


async def submit_all(batcher, jobs, timeout=None):
    return await asyncio.gather(*(batcher.submit(key, payload, timeout) for key, payload in jobs),
                                return_exceptions=True)


def run(batcher, jobs, timeout=None):
    batcher.start()
    try:
        return asyncio.run(submit_all(batcher, jobs, timeout))
    finally:
        batcher.stop()


def test_same_key_jobs_are_batched_up_to_max_batch():
    recorder = Recorder()
    results = run(MicroBatcher(recorder, max_batch=4, window_s=0.2), [("a", i) for i in range(6)])
    assert results == [i * 10 for i in range(6)]  # each caller gets its own result
    assert [len(b) for b in recorder.batches] == [4, 2]
    assert recorder.threads == {"attnlens-inference"}  # never the event loop's thread


def test_other_keys_wait_their_turn_in_order():
    recorder = Recorder()
    jobs = [("a", 1), ("b", 2), ("a", 3), ("b", 4), ("c", 5)]
    assert run(MicroBatcher(recorder, max_batch=8, window_s=0.2), jobs) == [10, 20, 30, 40, 50]
    assert recorder.batches == [[1, 3], [2, 4], [5]]


def test_max_batch_one_runs_alone():
    recorder = Recorder()
    run(MicroBatcher(recorder, max_batch=1, window_s=0.2), [("a", i) for i in range(3)])
    assert recorder.batches == [[0], [1], [2]]


def test_errors_reach_every_caller_of_the_batch():
    results = run(MicroBatcher(Recorder(fail=True), max_batch=4, window_s=0.1), [("a", 1), ("a", 2)])
    assert all(isinstance(r, RuntimeError) and "exploded" in str(r) for r in results)


def test_timeout_is_overloaded_and_the_job_is_skipped():
    recorder = Recorder(delay=0.3)
    results = run(MicroBatcher(recorder, max_batch=1), [("a", 1), ("a", 2)], timeout=0.15)
    assert all(isinstance(r, Overloaded) and "cut off" in r.detail for r in results)
    assert recorder.batches == [[1]]  # the second job timed out before it started: never run


def test_admission_refuses_beyond_its_limit():
    admission = Admission(2)
    with admission.slot(), admission.slot():
        with pytest.raises(Overloaded) as error:
            with admission.slot(retry_after_s=2.5):
                pass
        assert error.value.retry_after_s == 3
    assert admission.in_flight == 0
