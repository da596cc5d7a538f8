"""The Dataset view in real Chromium (``attnlens serve --data --eval-results``): browse, filter, search, sort by
a map's score, open an image; its labelled boxes drawn where the labels put them, and the detections matched to
them in the true positive / false positive / missed colours."""
import json
import time

import httpx
from playwright.sync_api import expect

import attnlens
from tests.app.test_datasets import write_squares
from tests.e2e.conftest import SHOTS, guarded_page
from tests.serving import running_server

SLOW = 120_000
IMAGES = [  # (file, size, white squares the test detector finds, labels)
    ("a-found.png", (200, 160), [(40, 30, 90, 80)], [(0, (40, 30, 90, 80)), (1, (120, 100, 180, 150))]),
    ("b-corner.png", (200, 160), [(150, 110, 190, 150)], [(0, (150, 110, 190, 150))]),
    ("c-middle.png", (160, 200), [(60, 80, 110, 130)], [(0, (60, 80, 110, 130))]),
    ("d-unlabelled.png", (200, 160), [(100, 60, 150, 110)], []),
]
DETECTOR = {"input_size": 320, "resize": "letterbox", "normalize": "none"}


def pixel(page, card, x, y):
    return page.evaluate("([c, x, y]) => Array.from(c.querySelector('canvas.view').getContext('2d')"
                         ".getImageData(x, y, 1, 1).data)", [card.element_handle(), x, y])


def edge_colours(page, card, x, y, wanted, timeout=5.0):
    """The pixels ``x - 1 .. x + 1`` on a box's vertical edge (it may fall between pixels, its antialiased halves
    blended with the map beneath), once one of them is ``wanted(r, g, b)`` (the card may still be drawing), or
    as read after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        colours = [tuple(pixel(page, card, x + dx, y)[:3]) for dx in (-1, 0, 1)]
        if any(wanted(*colour) for colour in colours) or time.monotonic() > deadline:
            return colours
        time.sleep(0.1)


def test_browse_filter_sort_and_open_with_ground_truth(browser, tmp_path):
    yaml = write_squares(tmp_path / "squares", IMAGES)
    results = tmp_path / "results"
    attnlens.evaluate([("yolo", attnlens.load_model("tests.app.yolo_models:v8", device="cpu", **DETECTOR))], yaml,
                      reference="none", workers=0, out=results)
    settings = {"ATTNLENS_MODEL": "tests.app.yolo_models:v8", "ATTNLENS_INPUT_SIZE": "320",
                "ATTNLENS_RESIZE": "letterbox", "ATTNLENS_NORMALIZE": "none"}
    with running_server(args=("--data", str(yaml), "--eval-results", str(results)), **settings) as (base, _), \
            guarded_page(browser, base) as page:
        page.wait_for_selector("body[data-ready=true]")
        view = page.locator("#dataset-view")
        expect(view).to_be_visible()
        thumbs = page.locator("#dataset-grid .thumb")
        expect(thumbs).to_have_count(4)
        expect(page.locator("#dataset-count")).to_have_text("1–4 of 4 images")
        # the labelled boxes over a thumbnail, where the labels put them (thumbnails of small images: their size)
        first = page.locator('.thumb[data-id="images/val/a-found.png"] canvas')
        expect(first).to_have_attribute("data-boxes", "[[40,30,50,50],[120,100,60,50]]")
        page.select_option("#dataset-class", label="other")
        expect(thumbs).to_have_count(1)
        page.select_option("#dataset-class", "")
        page.fill("#dataset-search", "unlab")
        expect(thumbs).to_have_count(1)
        expect(thumbs.first).to_have_attribute("data-id", "images/val/d-unlabelled.png")
        page.fill("#dataset-search", "")
        expect(thumbs).to_have_count(4)
        page.check("#dataset-missed")  # the detector's per_object.csv: only a-found.png has an object it missed
        expect(thumbs).to_have_count(1)
        expect(thumbs.first).to_have_attribute("data-id", "images/val/a-found.png")
        page.uncheck("#dataset-missed")
        expect(thumbs).to_have_count(4)
        keys = [o for o in page.locator("#dataset-sort option").evaluate_all("os => os.map(o => o.value)") if o]
        key = next(k for k in keys if k.endswith(":energy"))
        page.select_option("#dataset-sort", key)
        expected = [e["id"] for e in httpx.get(f"{base}/api/v1/datasets/data/images",
                                                params={"sort": key}).json()["images"]]
        page.wait_for_function("ids => [...document.querySelectorAll('#dataset-grid .thumb')].map(t => t.dataset.id)"
                               ".join() === ids.join()", arg=expected)
        assert expected[-1] == "images/val/d-unlabelled.png"  # no score: last

        # open one: every card draws its labelled boxes, the detection matched (cyan), the box missed (white)
        page.locator('.thumb[data-id="images/val/a-found.png"]').click()
        expect(page.locator("#status.done")).to_contain_text("images/val/a-found.png", timeout=SLOW)
        truth = page.locator("#answer-a .truth")
        expect(truth).to_have_attribute("data-found", "1")
        assert truth.get_attribute("data-missed") == "1" and truth.get_attribute("data-false-positives") == "0"
        cards = page.locator(".card")
        assert cards.count() == 3
        for i in range(cards.count()):
            card = cards.nth(i)
            placed = json.loads(card.get_attribute("data-ground-truth"))
            width = page.evaluate("(c) => c.querySelector('canvas.view').width", card.element_handle())
            margin = 44 if card.get_attribute("data-type") == "ca" else 0
            k = (width - margin) / 200  # canvas pixels per image pixel
            for (x, y, w, h, status), (x0, y0, x1, y1), want in zip(placed, ((40, 30, 90, 80), (120, 100, 180, 150)),
                                                                    ("found", "missed")):
                assert status == want
                assert abs(x - (margin + x0 * k)) <= 1 and abs(w - (x1 - x0) * k) <= 1
                assert abs(y - (margin + y0 * k)) <= 1 and abs(h - (y1 - y0) * k) <= 1
            x, y, w, h, _ = placed[1]
            assert min(pixel(page, card, x + 2, y)[:3]) > 200  # the missed box's white dash
            ((dx, dy, dw, dh),) = json.loads(card.get_attribute("data-boxes"))
            cyan = lambda r, g, b: g > 150 and b > 150 and r < 120
            colours = edge_colours(page, card, dx, dy + dh // 2, cyan)
            assert any(cyan(*colour) for colour in colours), colours  # the true positive, cyan
        page.screenshot(path=str(SHOTS / "page-dataset.png"), full_page=True)

        # an unlabelled square: a false positive (magenta)
        page.locator("#dataset-view").scroll_into_view_if_needed()
        page.locator('.thumb[data-id="images/val/d-unlabelled.png"]').click()
        expect(page.locator("#status.done")).to_contain_text("d-unlabelled.png", timeout=SLOW)
        expect(truth).to_have_attribute("data-false-positives", "1")
        card = cards.first
        ((dx, dy, dw, dh),) = json.loads(card.get_attribute("data-boxes"))
        magenta = lambda r, g, b: r > 200 and b > 150 and g < 130  # antialiased, not the red highlight
        colours = edge_colours(page, card, dx, dy + dh // 2, magenta)
        assert any(magenta(*colour) for colour in colours), colours
        assert page.problems == [] and page.off_loopback == []
