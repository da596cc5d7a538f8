"""The "without its preference" button (a knockout) on the page, in real headless Chromium against the real
server: a card's button asks once for include=knockout (one answer for every card, asked again only for a new
analysis) and says what was made flat and what changed; a detector's lost detections struck out in the list and
dashed on the card; each side of the compare view asks its own model.

Screenshots go to ``e2e-screenshots/page-knockout*.png``, to be looked at.
"""
import json
from urllib.parse import parse_qs, urlparse

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import DATA, SHOTS, guarded_page
from tests.serving import running_server

SLOW = 120_000  # ms: analyses on a small CPU machine
# a detector whose red object is reported only while its GC-like pooling ("pool") finds the red: knocked out, lost
GATED = "tests.app.colour_detectors:context_gated"


@pytest.fixture(scope="module")
def base_url():
    with running_server() as (base, _):
        yield base


def analyses(page) -> list[dict]:
    """Every /api/v1/analyze request the page makes, as its query (name -> value), in order."""
    asked = []
    page.on("request", lambda request: "/api/v1/analyze" in request.url and asked.append(
        {key: values[-1] for key, values in parse_qs(urlparse(request.url).query).items()}))
    return asked


def knockouts(asked: list[dict]) -> list[dict]:
    return [query for query in asked if "knockout" in query.get("include", "").split(",")]


def percent(p: float) -> str:
    return f"{100 * p:.1f}%"


def test_one_knockout_request_answers_every_card(browser, base_url):
    with guarded_page(browser, base_url) as page:
        asked = analyses(page)
        page.wait_for_selector("body[data-ready=true]")
        page.set_input_files("#file-input", str(DATA / "chelsea.jpg"))
        page.wait_for_selector(".card[data-type=gc]")
        cards = page.locator(".card")
        assert page.locator(".card .knockout-toggle").count() == cards.count() == 5  # every block's card has one
        assert knockouts(asked) == []  # not asked for until used: it costs a forward per block

        gc = page.locator(".card[data-type=gc]")
        with page.expect_response(lambda r: "include=knockout" in r.url) as answered:
            gc.get_by_role("button", name="Without its preference").click()
        entries = {entry["block"]: entry for entry in answered.value.json()["knockout"]}
        expect(gc).to_have_attribute("data-knockout", "shown")
        panel = gc.locator(".knockout")
        expect(panel).to_contain_text("Made flat: the context mask made uniform")
        change = entries["plugins.gc"]["change"]
        expect(panel).to_contain_text(f"{change['top']['label']} {percent(change['probability'])} → "
                                      f"{percent(change['probability_after'])}")
        expect(panel).to_contain_text("Top class kept" if change["top_kept"] else "Top class changed to")
        expect(gc.locator(".knockout-toggle")).to_have_attribute("aria-pressed", "true")
        expect(page.locator("#status.done")).to_contain_text("run again with each of 5 blocks' maps made flat")
        (query,) = knockouts(asked)
        assert query["include"] == "knockout"  # the maps are on the page already
        assert query.get("model") == asked[0].get("model")  # the model of the analysis shown

        ca = page.locator(".card[data-type=ca]")
        ca.locator(".knockout-toggle").click()  # answered from the one request
        expect(ca.locator(".knockout")).to_contain_text("each gate replaced by its mean")
        expect(ca.locator(".knockout")).to_contain_text(percent(entries["plugins.ca"]["change"]["probability_after"]))
        spd = page.locator(".card[data-type=spd]")
        spd.locator(".knockout-toggle").focus()
        page.keyboard.press("Enter")  # a real button: the keyboard uses it too
        expect(spd).to_have_attribute("data-knockout", "skipped")
        expect(spd.locator(".knockout")).to_contain_text("not knocked out")
        assert len(knockouts(asked)) == 1
        assert page.locator("#answer-a .knockout-key").is_hidden()  # a classifier: no detections to strike out

        gc.locator(".knockout-toggle").click()  # and hidden again
        expect(gc.locator(".knockout")).to_be_hidden()
        expect(gc.locator(".knockout-toggle")).to_have_attribute("aria-pressed", "false")
        gc.locator(".knockout-toggle").click()
        expect(gc.locator(".knockout")).to_contain_text("→")
        assert len(knockouts(asked)) == 1

        page.set_viewport_size({"width": 390, "height": 844})
        page.wait_for_timeout(300)  # the cards redraw on resize
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        button = gc.locator(".knockout-toggle").bounding_box()
        assert button["x"] + button["width"] <= 390
        page.screenshot(path=str(SHOTS / "page-knockout-phone.png"), full_page=True)

        page.get_by_role("button", name="espresso").click()  # a new analysis: its own knockout, asked again
        expect(page.locator("#status.done")).to_contain_text("espresso:", timeout=SLOW)
        gc.locator(".knockout-toggle").click()
        expect(gc.locator(".knockout")).to_contain_text("→", timeout=SLOW)
        assert len(knockouts(asked)) == 2
        assert page.problems == [] and page.off_loopback == []


def test_a_failed_knockout_is_explained_and_asked_again(browser, base_url):
    with guarded_page(browser, base_url) as page:
        asked = analyses(page)
        page.wait_for_selector("body[data-ready=true]")
        page.set_input_files("#file-input", str(DATA / "chelsea.jpg"))
        page.wait_for_selector(".card[data-type=gc]")
        busy = lambda route: route.fulfill(status=503, json={"detail": "every slot taken"}, headers={"Retry-After": "2"})
        page.route("**/api/v1/analyze?include=knockout*", busy)
        gc = page.locator(".card[data-type=gc]")
        gc.locator(".knockout-toggle").click()
        expect(page.locator("#status.error")).to_have_text("The server is busy: every slot taken (try again in 2 s).")
        expect(gc.locator(".knockout")).to_contain_text("The server is busy")
        expect(gc).to_have_attribute("data-knockout", "error")
        expect(gc.locator(".knockout-toggle")).to_have_attribute("aria-pressed", "false")
        page.unroute("**/api/v1/analyze?include=knockout*", busy)
        gc.locator(".knockout-toggle").click()  # not cached: asked again
        expect(gc.locator(".knockout")).to_contain_text("→")
        assert len(knockouts(asked)) == 2
        # the browser logs the 503 itself; nothing else went wrong
        assert [p for p in page.problems if "status of 503" not in p] == [] and page.off_loopback == []


def test_compare_asks_each_sides_model(browser, base_url):
    with guarded_page(browser, base_url) as page:
        asked = analyses(page)
        page.wait_for_selector("body[data-ready=true]")
        page.select_option("#compare", "efficientnet_lite0_untrained")
        page.set_input_files("#file-input", str(DATA / "chelsea.jpg"))
        page.wait_for_selector(".card[data-type=diff]", timeout=SLOW)
        assert page.locator(".card[data-type=diff] .knockout-toggle").count() == 0  # a difference has no block
        for side in ("A", "B"):
            card = page.locator(f".card[data-type=gc][data-side={side}]")
            card.locator(".knockout-toggle").click()
            expect(card.locator(".knockout")).to_contain_text("→", timeout=SLOW)
        models = [query.get("model") for query in knockouts(asked)]
        assert models == ["efficientnet_lite0", "efficientnet_lite0_untrained"]
        page.locator(".card[data-type=ca][data-side=B] .knockout-toggle").click()
        expect(page.locator(".card[data-type=ca][data-side=B] .knockout")).to_contain_text("→")
        assert len(knockouts(asked)) == 2
        page.screenshot(path=str(SHOTS / "page-knockout-compare.png"), full_page=True)
        assert page.problems == [] and page.off_loopback == []


def orange_on_edge(page, card, box) -> bool:
    """Any pixel of the box's top edge orange (the lost boxes' colour, dashed)."""
    x, y, w, _ = box
    return page.evaluate("""([c, x, y, w]) => {
        const d = c.querySelector('canvas.view').getContext('2d').getImageData(x, y - 1, w, 3).data;
        for (let i = 0; i < d.length; i += 4) if (d[i] > 200 && d[i + 1] > 110 && d[i + 1] < 200 && d[i + 2] < 90)
          return true;
        return false; }""", [card.element_handle(), x, y, w])


def test_a_detectors_lost_detections_struck_out_and_dashed(browser, tmp_path):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (160, 120), (128, 128, 128))
    draw = ImageDraw.Draw(image)
    draw.rectangle((100, 10, 149, 59), fill=(230, 30, 30))  # red: found only while "pool" finds the red
    draw.rectangle((10, 80, 39, 109), fill=(30, 30, 230))  # blue: found either way
    upload = tmp_path / "red-blue.png"
    image.save(upload)
    with running_server(ATTNLENS_MODEL=GATED) as (base, _), guarded_page(browser, base) as page:
        asked = analyses(page)
        page.wait_for_selector("body[data-ready=true]")
        page.set_input_files("#file-input", str(upload))
        expect(page.locator("#status.done")).to_contain_text("2 detections", timeout=SLOW)
        items = page.locator("#predictions li")
        red = next(i for i in range(items.count()) if "red" in items.nth(i).locator(".label").inner_text())
        pool = page.locator(".card[data-block-id=pool]")
        pool.locator(".knockout-toggle").click()
        expect(pool.locator(".knockout")).to_contain_text("1 lost (struck out in the list, dashed on this card), "
                                                          "0 gained, 1 kept")
        expect(items.nth(red)).to_have_class("lost")
        expect(page.locator("#answer-a")).to_have_attribute("data-lost", str(red))
        assert "lost" not in (items.nth(1 - red).get_attribute("class") or "")
        key = page.locator("#answer-a .knockout-key")
        expect(key).to_have_text("struck out: lost without pool's preference (1 of 2; dashed on its card)")
        expect(pool).to_have_attribute("data-lost", str(red))
        assert str(red) in pool.get_attribute("data-drawn").split(",")
        assert orange_on_edge(page, pool, json.loads(pool.get_attribute("data-boxes"))[red])

        gc = page.locator(".card[data-block-id=gc]")
        gc.locator(".knockout-toggle").click()  # the card last shown marks the list: gc loses nothing
        expect(gc.locator(".knockout")).to_contain_text("0 lost, 0 gained, 2 kept")
        expect(key).to_have_text("none lost without gc's preference")
        expect(items.nth(red)).not_to_have_class("lost")
        assert not orange_on_edge(page, gc, json.loads(gc.get_attribute("data-boxes"))[red])
        pool.hover()  # hovering a card with its knockout shown: the list marks its lost ones again
        expect(items.nth(red)).to_have_class("lost")
        expect(key).to_contain_text("lost without pool's preference")
        assert len(knockouts(asked)) == 1
        page.screenshot(path=str(SHOTS / "page-knockout-detector.png"), full_page=True)
        page.set_viewport_size({"width": 390, "height": 844})
        page.wait_for_timeout(300)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        assert page.problems == [] and page.off_loopback == []
