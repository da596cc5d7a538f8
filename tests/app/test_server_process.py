"""The real ``attnlens serve`` process on a free port, over HTTP."""
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.app.conftest import CAT_CLASSES, DATA
from tests.serving import running_server


@pytest.fixture(scope="module")
def server():
    with running_server(ATTNLENS_QUEUE_SIZE="2") as (base, process):
        yield base, process


def test_serves_the_v1_contract(server):
    base, _ = server
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
    model = httpx.get(f"{base}/api/v1/model").json()
    response = httpx.post(f"{base}/api/v1/analyze", files={"file": ("cat.jpg", (DATA / "chelsea.jpg").read_bytes())},
                          timeout=60)
    assert response.status_code == 200
    report = response.json()
    assert report["predictions"][0]["index"] in CAT_CLASSES
    assert [b["id"] for b in report["blocks"]] == [b["id"] for b in model["blocks"]]


def test_overload_answers_503_fast_and_health_stays_fast(server):
    base, _ = server
    data = (DATA / "coffee.jpg").read_bytes()

    def post(_):
        started = time.perf_counter()
        response = httpx.post(f"{base}/api/v1/analyze", params={"size": 1024}, files={"file": ("c.jpg", data)},
                              timeout=120)
        return response.status_code, response.headers.get("retry-after"), time.perf_counter() - started

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(post, i) for i in range(8)]
        time.sleep(0.3)
        started = time.perf_counter()
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
        health_s = time.perf_counter() - started
        results = [future.result() for future in futures]
    statuses = [status for status, _, _ in results]
    assert set(statuses) <= {200, 503} and 200 in statuses and 503 in statuses
    assert all(retry and int(retry) >= 1 and elapsed < 2 for status, retry, elapsed in results if status == 503)
    assert health_s < 0.5  # liveness is not stuck behind inference


def test_sigterm_finishes_in_flight_requests_then_stops(server):
    base, process = server
    data = (DATA / "coffee.jpg").read_bytes()
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(httpx.post, f"{base}/api/v1/analyze", params={"size": 1024},
                                files={"file": ("c.jpg", data)}, timeout=120)
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        assert in_flight.result().status_code == 200
    assert process.wait(timeout=60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after shutting down
    output = process.stdout.read()
    assert "Application shutdown complete" in output and "Traceback" not in output
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{base}/healthz", timeout=2)
