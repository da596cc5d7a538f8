"""The real ``attnlens serve`` process on a free port, over HTTP."""
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.app.conftest import CAT_CLASSES, DATA
from tests.helpers import encode
from tests.serving import running_server

MAX_UPLOAD = 3_000_000


@pytest.fixture(scope="module")
def server_tmp(tmp_path_factory):
    """The server's TMPDIR: where Starlette spools uploads over 1 MB."""
    return tmp_path_factory.mktemp("server-tmp")


@pytest.fixture(scope="module")
def server(server_tmp):
    with running_server(ATTNLENS_QUEUE_SIZE="2", ATTNLENS_MAX_UPLOAD_BYTES=str(MAX_UPLOAD),
                        TMPDIR=str(server_tmp)) as (base, process):
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


def open_files(pid: int, folder) -> dict[str, str]:
    """Descriptors of process ``pid`` on files in ``folder`` or on deleted files: fd -> link target."""
    found = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(folder)) or target.endswith("(deleted)"):
            found[fd] = target
    return found


def eventually(condition, seconds: float = 10.0):
    """Poll ``condition`` until it is truthy (returned) or ``seconds`` pass (its last value returned)."""
    deadline = time.monotonic() + seconds
    while not (value := condition()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


class GaveUp(Exception):
    """The client stops sending mid-upload."""


def test_spooled_uploads_never_outlive_their_request(server, server_tmp):
    """An upload over 1 MB is spooled to an unlinked file in TMPDIR (seen open in /proc/<pid>/fd while the
    body streams in); once the request ends (answered, refused over the size limit, or abandoned by the
    client mid-way) no descriptor on such a file may remain, and nothing is left in TMPDIR."""
    base, process = server
    pid = process.pid
    boundary = "spoolboundary"
    big = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (900, 900, 3), dtype=np.uint8)), "PNG")
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n'
            "Content-Type: image/png\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    before = open_files(pid, server_tmp)
    spooled = []

    def spooling() -> list[str]:
        return [target for fd, target in open_files(pid, server_tmp).items()
                if target.startswith(str(server_tmp)) and before.get(fd) != target]

    def leaked() -> dict[str, str]:
        return {fd: target for fd, target in open_files(pid, server_tmp).items() if before.get(fd) != target}

    def body(data: bytes, give_up: bool = False):
        yield head + data[:1_500_000]
        spooled.append(eventually(spooling))  # the server holds the part on disk now
        if give_up:
            raise GaveUp
        for start in range(1_500_000, len(data), 65536):
            yield data[start:start + 65536]
        yield tail

    def post(data: bytes, give_up: bool = False) -> httpx.Response:
        return httpx.post(f"{base}/api/v1/analyze", content=body(data, give_up), timeout=60,
                          headers={"content-type": f"multipart/form-data; boundary={boundary}"})

    assert len(big) < MAX_UPLOAD - 1000 < 2 * len(big)
    assert post(big).status_code == 200
    assert eventually(lambda: not leaked()), leaked()
    with pytest.raises((GaveUp, httpx.TransportError)):
        post(big, give_up=True)
    assert eventually(lambda: not leaked()), leaked()
    try:  # streamed past the limit: refused mid-upload (the server may answer, or cut the connection)
        assert post(big + big).status_code == 413
    except httpx.TransportError:
        pass
    assert eventually(lambda: not leaked()), leaked()
    assert len(spooled) == 3 and all(spooled), spooled  # each upload was on disk mid-way
    assert list(server_tmp.iterdir()) == []


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
