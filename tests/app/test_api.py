"""The v1 API against the live app (TestClient) on real photos: schema, values, errors."""
import base64
import io
import threading
import time

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from attnlens.server import create_app
from attnlens.server.settings import Settings
from tests.app.conftest import CAT_CLASSES, ESPRESSO


def client_for(**settings) -> TestClient:
    return TestClient(create_app(Settings(device="cpu", **settings), load_in_background=False))


@pytest.fixture(scope="module")
def client():
    with client_for() as client:
        yield client


def post(client, data: bytes, filename="photo.jpg", content_type="image/jpeg", **params):
    return client.post("/api/v1/analyze", params=params, files={"file": (filename, data, content_type)})


def test_health_ready_model(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    model = client.get("/api/v1/model").json()
    assert model["backbone"] == "efficientnet_lite0" and model["device"] == "cpu"
    assert model["input_size"] == 224 and model["num_classes"] == 1000
    assert {b["type"] for b in model["blocks"]} == {"gc", "ca", "acmix", "dcn", "spd"}
    assert set(model["blocks"][0]) == {"id", "type", "feature_stride", "channels", "class_name", "recognised"}
    assert all(block["recognised"].startswith("by names") for block in model["blocks"])  # ours: the fast path
    assert model["blocks_trained"] is True and model["candidates"] == []


def test_analyze_real_photos(client, photos):
    cat = post(client, photos["cat"], include="values")
    assert cat.status_code == 200, cat.text
    report = cat.json()
    assert report["predictions"][0]["index"] in CAT_CLASSES and len(report["predictions"]) == 5
    assert report["image"] == {"width": 451, "height": 300}
    assert set(report["timings_ms"]) >= {"decode", "queue", "forward", "maps", "total"}
    model_blocks = [b["id"] for b in client.get("/api/v1/model").json()["blocks"]]
    assert [b["id"] for b in report["blocks"]] == model_blocks  # a heatmap per block, network order
    for block in report["blocks"]:
        heatmap = block["heatmap"]
        values = np.asarray(heatmap["values"])
        png = Image.open(io.BytesIO(base64.b64decode(heatmap["png"].split(",", 1)[1])))
        assert list(values.shape) == heatmap["shape"] and png.size == (values.shape[1], values.shape[0])
    gc = next(b for b in report["blocks"] if b["type"] == "gc")
    assert np.sum(gc["heatmap"]["values"]) == pytest.approx(1.0, abs=1e-4)
    espresso = post(client, photos["espresso"], filename="../../etc/passwd").json()  # filename is never a path
    assert espresso["predictions"][0]["index"] == ESPRESSO
    assert "values" not in espresso["blocks"][0]["heatmap"]


def test_options(client, photos):
    report = post(client, photos["cat"], include="values,maps", colormap="viridis", size=160).json()
    acmix = next(b for b in report["blocks"] if b["type"] == "acmix")
    assert acmix["heatmap"]["shape"] == [10, 16]  # 160 x 241 input at stride 16, SAME padding: ceil
    assert len(acmix["maps"]["attention"]) == 4
    assert post(client, photos["cat"], include=["values", "maps"]).status_code == 200


@pytest.mark.parametrize("params", [dict(include="everything"), dict(colormap="nope"), dict(size=5),
                                    dict(size="big")])
def test_bad_options_are_400(client, photos, params):
    response = post(client, photos["cat"], **params)
    assert response.status_code == 400 and response.json()["detail"]


@pytest.mark.parametrize("data, filename, status", [
    (b"", "empty.jpg", 400),
    (b"just text", "notes.txt", 415),
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "drawing.svg", 415),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "broken.png", 400),
])
def test_bad_uploads(client, data, filename, status):
    response = post(client, data, filename=filename)
    assert response.status_code == status and response.json()["detail"]


def test_missing_file_is_400(client):
    response = client.post("/api/v1/analyze")
    assert response.status_code == 400 and response.json()["detail"]


def test_limits_are_413(photos):
    with client_for(max_upload_bytes=10_000) as client:
        response = post(client, photos["cat"])
        assert response.status_code == 413 and response.json()["detail"]
    with client_for(max_pixels=10_000) as client:
        response = post(client, photos["cat"])
        assert response.status_code == 413 and "pixels" in response.json()["detail"]


def test_overload_is_503_with_retry_after(client, photos):
    service = client.app.state.service
    service.admission.in_flight = service.admission.limit  # every slot taken
    try:
        response = post(client, photos["cat"])
    finally:
        service.admission.in_flight = 0
    assert response.status_code == 503 and int(response.headers["Retry-After"]) >= 1
    assert "busy" in response.json()["detail"]


def test_not_ready_until_the_model_is_loaded(photos, monkeypatch):
    """The load is held on an event: while it is, the server is live but not ready and refuses work with
    503 + Retry-After; once released, it turns ready and analyses."""
    import attnlens.server.service as service_module

    entered, release = threading.Event(), threading.Event()
    real_load_model = service_module.load_model

    def held_load_model(*args, **kwargs):
        entered.set()
        if not release.wait(60):
            raise RuntimeError("the test never released the model load")
        return real_load_model(*args, **kwargs)

    monkeypatch.setattr(service_module, "load_model", held_load_model)
    with TestClient(create_app(Settings(device="cpu"))) as client:  # loads in the background
        try:
            assert entered.wait(30), "the model load did not start"
            ready = client.get("/readyz")
            assert ready.status_code == 503 and ready.json() == {"status": "loading"}
            assert int(ready.headers["Retry-After"]) >= 1
            assert client.get("/healthz").json() == {"status": "ok"}
            response = post(client, photos["cat"])
            assert response.status_code == 503 and "loading" in response.json()["detail"]
            assert float(response.headers["Retry-After"]) >= 1
            assert client.get("/api/v1/model").status_code == 503
            assert not client.app.state.service.ready  # still held: nothing raced past the event
        finally:
            release.set()
        deadline = time.monotonic() + 120
        while (ready := client.get("/readyz")).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.status_code == 200 and ready.json() == {"status": "ready"}
        assert post(client, photos["cat"]).status_code == 200


def test_load_failure_is_reported(photos):
    with TestClient(create_app(Settings(model="resnet99"), load_in_background=False)) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "resnet99" in ready.json()["status"]
        assert post(client, photos["cat"]).status_code == 503


def test_page_and_openapi(client):
    page = client.get("/")
    assert page.status_code == 200 and "efficientnet_lite0" in page.text
    for asset in ("/static/page.js", "/static/attnlens.css", "/static/samples/cat.jpg"):
        assert asset in page.text and client.get(asset).status_code == 200
    schema = client.get("/openapi.json").json()
    analyze = schema["paths"]["/api/v1/analyze"]["post"]
    assert {"400", "413", "415", "503"} <= set(analyze["responses"])
    assert "AnalysisResult" in schema["components"]["schemas"] and client.get("/docs").status_code == 200
    assert client.get("/static/").status_code == 404  # no directory listing
    assert client.get("/static/../app/server/settings.py").status_code == 404


def test_security_headers_and_no_cors_by_default(client):
    page = client.get("/")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    preflight = client.options("/api/v1/analyze", headers={"Origin": "https://elsewhere.example",
                                                           "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_when_configured():
    with client_for(cors_origins=["https://lab.example"]) as client:
        response = client.get("/healthz", headers={"Origin": "https://lab.example"})
        assert response.headers["access-control-allow-origin"] == "https://lab.example"


def test_out_of_memory_is_503_and_the_server_recovers(client, photos, monkeypatch):
    engine = client.app.state.service.get(None).engine
    real_run = engine.run
    calls = []

    def run_once_out_of_memory(batch, references=None, **options):
        calls.append(1)
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_run(batch, references, **options)

    monkeypatch.setattr(engine, "run", run_once_out_of_memory)
    response = post(client, photos["cat"])
    assert response.status_code == 503 and "out of memory" in response.json()["detail"]
    assert response.headers["Retry-After"]
    assert post(client, photos["cat"]).status_code == 200


def test_a_request_that_runs_too_long_is_cut_off(photos, monkeypatch):
    with client_for(request_timeout_s=0.2) as client:
        engine = client.app.state.service.get(None).engine
        real_run = engine.run

        def slow_run(batch, references=None, **options):
            time.sleep(0.5)
            return real_run(batch, references, **options)

        monkeypatch.setattr(engine, "run", slow_run)
        response = post(client, photos["cat"])
        assert response.status_code == 503 and "cut off" in response.json()["detail"]
        assert client.get("/healthz").status_code == 200
