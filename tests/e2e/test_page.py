"""The page in real headless Chromium (Debian's, driven by Playwright) against the real server.

Screenshots go to ``e2e-screenshots/`` at the repository root, to be looked at.
"""
import json

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import DATA, SHOTS, detectors_file, docs_operations_rendered, guarded_page
from tests.serving import running_server

SLOW = 120_000  # ms: an analysis on a small CPU machine


@pytest.fixture(scope="module")
def base_url():
    with running_server() as (base, _):
        yield base


@pytest.fixture
def page(browser, base_url):
    """A fresh page on the app that records console errors and every request, and blocks anything off loopback."""
    with guarded_page(browser, base_url) as page:
        page.wait_for_selector("body[data-ready=true]")
        yield page


def block_types(base_url, page) -> list[str]:
    return [b["type"] for b in page.request.get(f"{base_url}/api/v1/model").json()["blocks"]]


def canvas_centre_click(page, kind: str, fx: float, fy: float) -> tuple[float, float]:
    canvas = page.locator(f".card[data-type={kind}] canvas.view")
    box = canvas.bounding_box()
    x, y = box["width"] * fx, box["height"] * fy
    canvas.click(position={"x": x, "y": y})
    scale = page.evaluate("(kind) => { const c = document.querySelector(`.card[data-type=${kind}] canvas.view`);"
                          " return c.width / c.getBoundingClientRect().width; }", kind)
    return x * scale, y * scale  # canvas pixels


def test_upload_every_card_and_click_interactions(page, base_url):
    page.set_input_files("#file-input", str(DATA / "chelsea.jpg"))
    page.wait_for_selector(".card[data-type=gc]")
    cards = page.locator(".card")
    assert [cards.nth(i).get_attribute("data-type") for i in range(cards.count())] == block_types(base_url, page)
    assert "cat" in page.locator("#predictions").inner_text().lower()
    for i in range(cards.count()):  # every card drew its heatmap over the image
        title = cards.nth(i).locator(".card-title").inner_text()
        assert "stride" in title
        drawn = page.evaluate(
            "(card) => { const c = card.querySelector('canvas.view'); const d = c.getContext('2d')"
            ".getImageData(0, 0, c.width, c.height).data; let s = 0; for (let i = 0; i < d.length; i += 997) s += d[i];"
            " return c.width > 50 && s > 0; }", cards.nth(i).element_handle())
        assert drawn, title

    x, y = canvas_centre_click(page, "acmix", 0.45, 0.5)
    acmix = page.locator(".card[data-type=acmix]")
    centre = [float(v) for v in acmix.get_attribute("data-window-centre").split(",")]
    canvas_width = page.evaluate("document.querySelector('.card[data-type=acmix] canvas.view').width")
    cell = 16 * canvas_width / 337  # one stride-16 cell of the 337 x 224 model input, in canvas pixels
    assert abs(centre[0] - x) <= cell and abs(centre[1] - y) <= cell  # the window sits where we clicked
    assert "Query (" in acmix.locator(".detail").inner_text()
    assert float(acmix.get_attribute("data-select-ms")) < 50

    x, y = canvas_centre_click(page, "dcn", 0.3, 0.6)
    dcn = page.locator(".card[data-type=dcn]")
    centre = [float(v) for v in dcn.get_attribute("data-sampling-centre").split(",")]
    assert abs(centre[0] - x) <= cell / 2 and abs(centre[1] - y) <= cell / 2  # stride-8 cells
    assert "sampling points" in dcn.locator(".detail").inner_text()
    assert float(dcn.get_attribute("data-select-ms")) < 50

    before = acmix.get_attribute("data-selected")
    acmix.locator("canvas.view").focus()
    page.keyboard.press("ArrowRight")
    row, col = map(int, before.split(","))
    assert acmix.get_attribute("data-selected") == f"{row},{col + 1}"  # usable by keyboard

    page.select_option("#colormap", "gray")
    page.locator("#opacity").fill("0.3")
    page.screenshot(path=str(SHOTS / "page-cat.png"), full_page=True)
    assert page.problems == [] and page.off_loopback == []


def test_samples_drop_and_paste(page):
    page.get_by_role("button", name="espresso").click()
    expect(page.locator("#predictions")).to_contain_text("espresso")  # locators: no eval under the page's CSP
    for event in ("drop", "paste"):
        page.evaluate("""async (kind) => {
            const blob = await (await fetch('/static/samples/cat.jpg')).blob();
            const data = new DataTransfer();
            data.items.add(new File([blob], 'cat.jpg', {type: 'image/jpeg'}));
            const target = kind === 'drop' ? document.querySelector('#drop-zone') : document;
            const init = {bubbles: true, cancelable: true};
            target.dispatchEvent(kind === 'drop' ? new DragEvent('drop', {...init, dataTransfer: data})
                                                 : new ClipboardEvent('paste', {...init, clipboardData: data}));
        }""", event)
        expected = {"drop": "cat.jpg:", "paste": "pasted image:"}[event]  # the status names the source
        expect(page.locator("#status.done")).to_contain_text(expected)
    page.screenshot(path=str(SHOTS / "page-pasted.png"))
    assert page.problems == [] and page.off_loopback == []


def test_the_predictions_fit_a_phone(page):
    """At 390 px (a phone) the page scrolls only down: the predictions, controls and cards fit its width."""
    page.set_viewport_size({"width": 390, "height": 844})
    page.set_input_files("#file-input", str(DATA / "chelsea.jpg"))
    page.wait_for_selector(".card[data-type=gc]")
    page.wait_for_timeout(300)  # the cards redraw on resize
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    label = page.locator("#predictions li .label").first.bounding_box()
    assert label["x"] + label["width"] <= 390
    page.screenshot(path=str(SHOTS / "page-phone.png"), full_page=True)
    assert page.problems == [] and page.off_loopback == []


def test_server_errors_are_explained(page, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    page.set_input_files("#file-input", str(notes))
    page.wait_for_selector(".status.error")
    assert "not an image type" in page.locator("#status").inner_text()
    page.screenshot(path=str(SHOTS / "page-error.png"))
    assert page.off_loopback == []


def test_docs_render_offline_with_every_operation(browser, base_url):
    with guarded_page(browser, base_url, "/docs") as page:
        assert docs_operations_rendered(page, base_url) >= 5
        page.screenshot(path=str(SHOTS / "docs.png"), full_page=True)
        assert page.problems == [] and page.off_loopback == []


def test_detector_boxes_drawn_where_the_object_is(browser, tmp_path):
    """A YOLO-style factory (letterbox 640, no mean / std): the square's box on every card, clickable."""
    from PIL import Image, ImageDraw

    square = (200, 100, 260, 150)
    image = Image.open(DATA / "chelsea.jpg").convert("RGB")
    ImageDraw.Draw(image).rectangle((square[0], square[1], square[2] - 1, square[3] - 1), fill=(255, 255, 255))
    upload = tmp_path / "square.png"
    image.save(upload)
    settings = {"ATTNLENS_MODEL": "tests.app.yolo_models:v8", "ATTNLENS_INPUT_SIZE": "640",
                "ATTNLENS_RESIZE": "letterbox", "ATTNLENS_NORMALIZE": "none"}
    with running_server(**settings) as (base, _), guarded_page(browser, base) as page:
        page.wait_for_selector("body[data-ready=true]")
        expect(page.locator("#model-line")).to_contain_text("task detect")
        expect(page.locator("#model-line")).to_contain_text("letterbox 640")
        page.set_input_files("#file-input", str(upload))
        expect(page.locator("#answer-title")).to_have_text("Detections")
        expect(page.locator("#predictions")).to_contain_text("square")
        cards = page.locator(".card")
        assert cards.count() == 3
        for i in range(cards.count()):
            card = cards.nth(i)
            ((x, y, w, h),) = json.loads(card.get_attribute("data-boxes"))
            scale = page.evaluate("(c) => c.querySelector('canvas.view').width", card.element_handle())
            margin = 44 if card.get_attribute("data-type") == "ca" else 0
            k = (scale - margin) / image.width  # canvas pixels per image pixel
            assert abs(x - (margin + square[0] * k)) <= 2 and abs(w - (square[2] - square[0]) * k) <= 2
            assert abs(y - (margin + square[1] * k)) <= 2 and abs(h - (square[3] - square[1]) * k) <= 2
            edge = page.evaluate("([c, x, y]) => Array.from(c.querySelector('canvas.view').getContext('2d')"
                                 ".getImageData(x, y, 1, 1).data)", [card.element_handle(), x, y + h // 2])
            assert edge[1] > 150 and edge[1] - edge[0] > 60  # the box's green edge (antialiased)
        page.locator(".detection").first.click()
        expect(page.locator("body")).to_have_attribute("data-highlighted", "0")
        page.screenshot(path=str(SHOTS / "page-detector.png"), full_page=True)
        assert page.problems == [] and page.off_loopback == []


def test_a_model_without_blocks_says_how_to_name_one(browser):
    """A CBAM-only model: the model line and the answer say no block was recognised, and point to --block."""
    with running_server(ATTNLENS_MODEL="tests.app.fork_models:cbam_only") as (base, _), \
            guarded_page(browser, base) as page:
        page.wait_for_selector("body[data-ready=true]")
        expect(page.locator("#model-line")).to_contain_text("no block recognised")
        expect(page.locator("#model-line")).to_contain_text("--block MODULE=KIND")
        page.set_input_files("#file-input", str(DATA / "chelsea.jpg"))
        expect(page.locator("#answer-a .note")).to_contain_text("--block MODULE=KIND")
        assert page.locator(".card").count() == 0
        assert page.problems == [] and page.off_loopback == []


def canvas_pixel(page, card, x, y):
    return page.evaluate("([c, x, y]) => Array.from(c.querySelector('canvas.view').getContext('2d')"
                         ".getImageData(x, y, 1, 1).data)", [card.element_handle(), x, y])


def test_a_crowded_detector_page_stays_legible(browser, tmp_path):
    """90 detections: ten listed (then "show all", in a bounded list), the best 5 drawn on the cards, a hovered
    one alone and red, a clicked one alone; the page about as tall as with one detection, and no wider than a
    390 px phone."""
    from PIL import Image, ImageDraw

    image = Image.open(DATA / "chelsea.jpg").convert("RGB").resize((640, 640))
    ImageDraw.Draw(image).rectangle((200, 100, 259, 149), fill=(255, 255, 255))  # the one detector's square
    upload = tmp_path / "square.png"
    image.save(upload)
    models = detectors_file(tmp_path / "models.toml", {"one": "v8", "crowd": "crowd"})
    with running_server(ATTNLENS_MODELS=str(models)) as (base, _), guarded_page(browser, base) as page:
        page.wait_for_selector("body[data-ready=true]")
        page.set_input_files("#file-input", str(upload))
        expect(page.locator("#status.done")).to_contain_text("1 detection", timeout=SLOW)
        single = page.evaluate("document.documentElement.scrollHeight")
        page.select_option("#model", "crowd")
        expect(page.locator("#status.done")).to_contain_text("90 detections", timeout=SLOW)
        crowded = page.evaluate("document.documentElement.scrollHeight")
        assert crowded <= 1.15 * single, (crowded, single)
        items = page.locator("#predictions li")
        expect(items).to_have_count(10)
        more = page.locator("#answer-a .more-detections")
        expect(more).to_have_text("show all 90")
        cards = page.locator(".card")
        assert cards.count() == 3
        for i in range(cards.count()):
            assert cards.nth(i).get_attribute("data-drawn") == "0,1,2,3,4"  # the best few
            assert len(json.loads(cards.nth(i).get_attribute("data-boxes"))) == 90
        card = cards.nth(0)
        boxes = json.loads(card.get_attribute("data-boxes"))
        items.nth(7).hover()
        expect(card).to_have_attribute("data-drawn", "7")
        x, y, w, h = boxes[7]
        red = canvas_pixel(page, card, x, y + h // 2)
        assert red[0] > 180 and red[0] - red[1] > 80  # the hovered box, red
        page.mouse.move(1, 1)
        expect(card).to_have_attribute("data-drawn", "0,1,2,3,4")
        page.locator("#answer-a .detection").nth(3).click()
        expect(card).to_have_attribute("data-drawn", "3")
        page.select_option("#boxes", "all")
        assert len(card.get_attribute("data-drawn").split(",")) == 90
        more.click()
        expect(items).to_have_count(90)
        expect(more).to_have_text("show the first 10")
        listed = page.locator("#predictions").bounding_box()
        assert listed["height"] <= 18 * 16 + 2  # a scrolling list, not a 90-row page
        page.select_option("#reference", "eigencam")  # no target: the detector's scores need no gradients
        expect(page.locator(".card[data-type=reference]")).to_have_count(1, timeout=SLOW)
        assert page.locator("#target-kind-pick").is_hidden()
        assert "EigenCAM reference" in page.locator(".card[data-type=reference] .card-title").inner_text()
        page.screenshot(path=str(SHOTS / "page-crowded.png"), full_page=True)
        page.set_viewport_size({"width": 390, "height": 844})
        page.wait_for_timeout(300)  # the cards redraw on resize
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.screenshot(path=str(SHOTS / "page-crowded-phone.png"), full_page=True)
        assert page.problems == [] and page.off_loopback == []
