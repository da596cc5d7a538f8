"""Hostile and unusual uploads against the live app: the right answer for each, never a 5xx."""
import os
import tempfile
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from attnlens.analysis.imaging import ImageError, decode_image
from attnlens.server import create_app
from attnlens.server.app import IMAGE_ERROR_STATUS
from attnlens.server.settings import Settings
from tests.helpers import encode


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(Settings(device="cpu"), load_in_background=False)) as client:
        yield client


def photo(size=(64, 48)) -> Image.Image:
    gradient = np.linspace(0, 255, size[0] * size[1] * 3).reshape(size[1], size[0], 3).astype(np.uint8)
    return Image.fromarray(gradient)


def rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 270 degrees to display
    return encode(photo((80, 30)), "JPEG", exif=exif)


def multi_frame(format: str) -> bytes:
    frames = [photo(), Image.new("RGB", (64, 48), (0, 0, 255))]
    return encode(frames[0], format, save_all=True, append_images=frames[1:])


GOOD = {  # name: (bytes, upright width, height)
    "jpeg": (encode(photo(), "JPEG"), 64, 48),
    "cmyk jpeg": (encode(photo().convert("CMYK"), "JPEG"), 64, 48),
    "png 16-bit grey": (encode(Image.fromarray(np.full((48, 64), 900, dtype="<u2")), "PNG"), 64, 48),
    "png LA": (encode(photo().convert("LA"), "PNG"), 64, 48),
    "png palette transparency": (encode(photo().convert("P"), "PNG", transparency=0), 64, 48),
    "png 1-bit": (encode(photo().convert("1"), "PNG"), 64, 48),
    "png RGBA": (encode(photo().convert("RGBA"), "PNG"), 64, 48),
    "webp": (encode(photo(), "WEBP"), 64, 48),
    "gif animated": (multi_frame("GIF"), 64, 48),
    "tiff multi-page": (multi_frame("TIFF"), 64, 48),
    "bmp": (encode(photo(), "BMP"), 64, 48),
    "exif rotated": (rotated_jpeg(), 30, 80),
    "1x1": (encode(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"), 1, 1),
    "extreme aspect": (encode(Image.new("RGB", (4000, 2), (9, 90, 9)), "PNG"), 4000, 2),
}

BAD = {  # name: (bytes, status)
    "empty": (b"", 400),
    "text as png": (b"hello world, not an image", 415),
    "svg as png": (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', 415),
    "html as jpeg": (b"<!doctype html><script>alert(1)</script>", 415),
    "truncated jpeg": (encode(photo((300, 300)), "JPEG")[:600], 400),
    "truncated png": (encode(photo((300, 300)), "PNG")[:300], 400),
    "png header only": (b"\x89PNG\r\n\x1a\n", 400),
    "decompression bomb": (encode(Image.new("1", (20_000, 20_000)), "PNG"), 413),
}


@pytest.mark.parametrize("name", GOOD)
def test_good_uploads_are_analysed_upright(client, name):
    data, width, height = GOOD[name]
    response = client.post("/api/v1/analyze", files={"file": ("upload.png", data, "image/png")})
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["image"] == {"width": width, "height": height}
    assert len(report["blocks"]) == 5 and len(report["predictions"]) == 5


@pytest.mark.parametrize("name", BAD)
def test_bad_uploads_get_clear_4xx(client, name):
    data, status = BAD[name]
    response = client.post("/api/v1/analyze", files={"file": ("upload.png", data, "image/png")})
    assert response.status_code == status, response.text
    assert isinstance(response.json()["detail"], str) and response.json()["detail"]


def test_server_alive_after_the_corpus(client):
    assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200


def test_chunked_upload_over_the_limit_is_413():
    with TestClient(create_app(Settings(device="cpu", max_upload_bytes=50_000), load_in_background=False)) as client:
        def chunks():
            for _ in range(100):
                yield b"x" * 4096
        response = client.post("/api/v1/analyze", content=chunks(),
                               headers={"content-type": "multipart/form-data; boundary=abc"})
        assert response.status_code == 413 and response.json()["detail"]


def temp_descriptors(folder) -> dict[str, str]:
    """This process's open descriptors on files in ``folder`` or on deleted files: fd -> link target."""
    found = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile (e.g. the descriptor listdir itself used)
            continue
        if target.startswith(str(folder)) or target.endswith("(deleted)"):
            found[fd] = target
    return found


def test_uploads_spooled_to_disk_are_closed_after_every_request(client, tmp_path, monkeypatch):
    """Starlette spools file parts over 1 MB to an unlinked temporary file, so no name is ever left in the
    temp folder: what would leak is an open descriptor. Every spooled file is seen being made (in
    ``tmp_path``), and none may still be open once the requests are answered, whatever the answer. (The
    TestClient hands the app the whole body at once, so uploads cut off mid-way are tested on the real
    server, in test_server_process.py.)"""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # TemporaryFile() without dir= goes here
    spooled, make_temporary_file = [], tempfile.TemporaryFile

    def recording_temporary_file(*args, **kwargs):
        file = make_temporary_file(*args, **kwargs)
        spooled.append(os.readlink(f"/proc/self/fd/{file.fileno()}"))
        return file

    monkeypatch.setattr(tempfile, "TemporaryFile", recording_temporary_file)  # SpooledTemporaryFile.rollover's
    big = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (900, 900, 3), dtype=np.uint8)), "PNG")
    noise = b"noise" + np.random.default_rng(1).integers(0, 256, 1_500_000, dtype=np.uint8).tobytes()
    uploads = [(big, 200), (noise, 415), (big[:1_500_000], 400)]  # analysed, refused type, undecodable
    assert all(len(data) > 1_400_000 for data, _ in uploads)
    before = temp_descriptors(tmp_path)
    for _ in range(2):
        for data, status in uploads:
            response = client.post("/api/v1/analyze", files={"file": ("big.png", data, "image/png")})
            assert response.status_code == status, response.text
    assert len(spooled) == 6 and all(target.startswith(str(tmp_path)) for target in spooled), spooled
    deadline = time.monotonic() + 5  # the files are closed as the responses finish: allow a moment
    while (left := {fd: t for fd, t in temp_descriptors(tmp_path).items() if before.get(fd) != t}) and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"temporary files still open after the requests: {left}"
    assert list(tmp_path.iterdir()) == []


VALID = [data for data, _, _ in GOOD.values()][:8]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.binary(max_size=2048),
    st.tuples(st.sampled_from(VALID), st.integers(0, 4000), st.binary(min_size=1, max_size=16)).map(
        lambda t: t[0][: t[1] % len(t[0])] + t[2] + t[0][t[1] % len(t[0]) + len(t[2]):]),  # corrupt a window
    st.tuples(st.sampled_from(VALID), st.integers(1, 4000)).map(lambda t: t[0][: t[1]]),  # truncate
))
def test_decode_fuzz_raises_only_image_errors(data):
    try:
        image = decode_image(data, max_pixels=4_000_000)
    except ImageError as error:
        assert type(error) in IMAGE_ERROR_STATUS and error.detail
    else:
        assert image.mode == "RGB" and image.width * image.height <= 4_000_000
