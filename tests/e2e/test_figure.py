"""The page's "Download figure" (the grid ``attnlens figure`` draws, from POST /api/v1/figure) in real headless
Chromium against the real ``attnlens serve``: outside compare the one model's figure, in the compare view A's and
B's in column order, the page's reference method as a column, PDF or PNG at page or column width, saved under the
server's file name; the control fits a 390 px phone and works from the keyboard; a failed figure explained.

Screenshots go to ``e2e-screenshots/page-figure*.png``, to be looked at.
"""
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import DATA, SHOTS, guarded_page
from tests.serving import running_server

SLOW = 180_000  # ms: two CPU analyses on a small machine
FIGURE = 60_000  # ms: one figure drawn on the CPU


@pytest.fixture(scope="module")
def base_url():
    with running_server() as (base, _):
        yield base


def query(request) -> dict[str, list[str]]:
    return parse_qs(urlparse(request.url).query)


def download_figure(page, figures: list, press: bool = False) -> tuple[bytes, str, dict[str, list[str]]]:
    """Click (or focus and press Enter on) Download figure: the saved file's bytes, its name and the query of the
    request that drew it."""
    asked = len(figures)
    with page.expect_download(timeout=FIGURE) as download:
        if press:
            page.locator("#download-figure").focus()
            page.keyboard.press("Enter")
        else:
            page.locator("#download-figure").click()
    saved = download.value
    assert len(figures) == asked + 1  # one request per click
    expect(page.locator("#status.done")).to_contain_text(f"saved as {saved.suggested_filename}")
    with open(saved.path(), "rb") as file:
        return file.read(), saved.suggested_filename, query(figures[-1])


def test_download_figure_of_one_model_then_of_both_compared(browser, base_url):
    listing = httpx.get(f"{base_url}/api/v1/models").json()
    trained, untrained = listing["default"], "efficientnet_lite0_untrained"
    assert untrained in [model["name"] for model in listing["models"]]

    with guarded_page(browser, base_url) as page:
        figures = []  # the POST /api/v1/figure requests
        page.on("request", lambda request: "/api/v1/figure" in request.url and figures.append(request))
        page.wait_for_selector("body[data-ready=true]")
        page.evaluate("() => { window.statuses = []; const status = document.getElementById('status');"
                      " new MutationObserver(() => window.statuses.push(status.textContent))"
                      ".observe(status, { childList: true, characterData: true, subtree: true }); }")

        # one model: the control draws its figure (one column group), the image the page shows sent with it
        page.set_input_files("#file-input", str(DATA / "chelsea.jpg"))
        expect(page.locator("#status.done")).to_contain_text("chelsea.jpg:", timeout=SLOW)
        expect(page.locator("#download-figure")).to_be_visible()
        content, name, asked = download_figure(page, figures)
        assert content.startswith(b"%PDF") and name == "attnlens-figure.pdf"
        assert asked["model"] == [trained] and asked["format"] == ["pdf"] and asked["width"] == ["page"]
        assert "reference" not in asked
        # the upload under field `files` (Playwright leaves a blob's bytes out of post_data; the server read them)
        assert b'name="files"; filename="chelsea.jpg"' in figures[-1].post_data_buffer
        assert "chelsea.jpg: drawing the figure…" in page.evaluate("window.statuses")

        # compare: A trained, B untrained: both models' names, A's first
        page.select_option("#compare", untrained)
        expect(page.locator("#status.done")).to_contain_text("chelsea.jpg: A ", timeout=SLOW)
        expect(page.locator(".card[data-type=diff]").first).to_be_visible()
        content, name, asked = download_figure(page, figures)
        assert content.startswith(b"%PDF") and name == "attnlens-figure.pdf"
        assert asked["model"] == [trained, untrained]
        expect(page.locator("#status")).to_contain_text(f"the figure of {trained} and {untrained} saved as")

        # PNG at column width, from the keyboard, on a 390 px phone
        page.set_viewport_size({"width": 390, "height": 844})
        page.wait_for_timeout(300)  # the cards redraw on resize
        page.locator("#download-figure").scroll_into_view_if_needed()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        for control in ("#download-figure", "#figure-format", "#figure-width"):
            box = page.locator(control).bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, control
        page.select_option("#figure-format", "png")
        page.select_option("#figure-width", "column")
        page.screenshot(path=str(SHOTS / "page-figure-phone.png"), full_page=True)
        content, name, asked = download_figure(page, figures, press=True)
        assert content.startswith(b"\x89PNG\r\n\x1a\n") and name == "attnlens-figure.png"
        assert asked["model"] == [trained, untrained] and asked["format"] == ["png"] and asked["width"] == ["column"]
        assert page.evaluate("document.documentElement.scrollWidth") <= 390

        # the page's reference method goes with it (EigenCAM: no backward pass)
        page.set_viewport_size({"width": 1366, "height": 900})
        page.select_option("#reference", "eigencam")
        expect(page.locator(".card[data-type=reference]")).to_have_count(2, timeout=SLOW)
        expect(page.locator("#status.done")).to_contain_text("chelsea.jpg: A ", timeout=SLOW)
        page.select_option("#figure-format", "svg")
        content, name, asked = download_figure(page, figures)
        assert b"<svg" in content[:1000] and name == "attnlens-figure.svg"
        assert asked["reference"] == ["eigencam"] and asked["model"] == [trained, untrained]
        page.screenshot(path=str(SHOTS / "page-figure.png"))
        assert page.problems == [] and page.off_loopback == []

        # a figure the server refuses: its answer explained in the status line
        page.route("**/api/v1/figure*", lambda route: route.fulfill(
            status=400, content_type="application/json", body='{"detail": "unknown map \'zzz\'"}'))
        page.locator("#download-figure").click()
        expect(page.locator("#status.error")).to_have_text("The figure could not be drawn: unknown map 'zzz'.")
        assert all("status of 400" in problem for problem in page.problems)  # Chromium logs the failed answer
        assert page.off_loopback == []
