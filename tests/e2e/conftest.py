"""Real headless Chromium (Debian's, driven by Playwright), pages that stay on loopback, the /docs check."""
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
SHOTS = ROOT / "e2e-screenshots"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
LOOPBACK = {"127.0.0.1", "localhost", "[::1]"}
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():  # make test installs it (apt); a bare pytest run says what is missing
        pytest.fail(f"{CHROMIUM} is missing: run `make test` (it installs Debian's chromium)", pytrace=False)
    SHOTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@contextmanager
def guarded_page(browser, base_url: str, path: str = "/"):
    """A fresh page at ``base_url + path`` that records console errors (``page.problems``) and every request
    leaving loopback (``page.off_loopback``, aborted)."""
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    page.problems, page.off_loopback = [], []
    page.on("console", lambda message: message.type == "error" and page.problems.append(message.text))
    page.on("pageerror", lambda error: page.problems.append(str(error)))

    def guard(route):
        host = urlparse(route.request.url).hostname
        if route.request.url.startswith(("data:", "blob:")) or host in LOOPBACK:
            route.continue_()
        else:
            page.off_loopback.append(route.request.url)
            route.abort()

    page.route("**/*", guard)
    page.goto(base_url + path)
    try:
        yield page
    finally:
        context.close()


def detectors_file(path: Path, models: dict[str, str]) -> Path:
    """A models file serving ``tests.app.yolo_models`` factories (``{name: factory}``) at letterbox 640, no
    mean / std."""
    path.write_text("".join(f'[[models]]\nname = "{name}"\nmodel = "tests.app.yolo_models:{factory}"\n'
                            'input_size = 640\nresize = "letterbox"\nnormalize = "none"\n\n'
                            for name, factory in models.items()))
    return path


def docs_operations_rendered(page, base_url: str) -> int:
    """Wait until Swagger UI on ``page`` lists every operation of the server's OpenAPI document; return the count."""
    spec = httpx.get(f"{base_url}/openapi.json").json()
    operations = sum(method in HTTP_METHODS for item in spec["paths"].values() for method in item)
    page.wait_for_function("n => document.querySelectorAll('#swagger-ui .opblock').length === n", arg=operations,
                           timeout=20_000)
    assert page.locator("#swagger-ui .information-container .title").inner_text().startswith("attnlens")
    return operations
