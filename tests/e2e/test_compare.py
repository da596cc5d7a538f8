"""The compare view (issue 14) in real headless Chromium against the real ``attnlens serve``, which offers the
embedded model with trained and with untrained blocks: one image analysed by both, the cards of each block side
by side on one colour range, their difference, clicks echoed to the other side, the Grad-CAM reference cards.

Screenshots go to ``e2e-screenshots/page-compare*.png``, to be looked at.
"""
import json

import httpx
import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import DATA, SHOTS, detectors_file, guarded_page
from tests.serving import running_server

SLOW = 180_000  # ms: two CPU analyses (and their backward passes) on a small machine


@pytest.fixture(scope="module")
def base_url():
    with running_server() as (base, _):
        yield base


def drawn(page, card) -> bool:
    """The card's canvas holds a picture (not blank)."""
    return page.evaluate(
        "(card) => { const c = card.querySelector('canvas.view'); const d = c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data; let s = 0; for (let i = 0; i < d.length; i += 997) s += d[i];"
        " return c.width > 50 && s > 0; }", card.element_handle())


def card_range(card) -> list[float]:
    return [float(v) for v in card.get_attribute("data-range").split(",")]


def value_range(grid) -> list[float]:
    return [min(map(min, grid)), max(map(max, grid))]


def click(card, fx: float, fy: float) -> None:
    canvas = card.locator("canvas.view")
    box = canvas.bounding_box()
    canvas.click(position={"x": box["width"] * fx, "y": box["height"] * fy})


def test_two_models_side_by_side_with_differences_echoed_clicks_and_gradcam(browser, base_url):
    listing = httpx.get(f"{base_url}/api/v1/models").json()
    names = [model["name"] for model in listing["models"]]
    trained, untrained = listing["default"], "efficientnet_lite0_untrained"
    assert trained == "efficientnet_lite0" and untrained in names
    kinds = [block["type"] for block in listing["models"][0]["blocks"]]

    with guarded_page(browser, base_url) as page:
        analyses = []  # the /api/v1/analyze answers, to check the page's arithmetic against
        page.on("response", lambda response: "/api/v1/analyze" in response.url and analyses.append(response))
        page.wait_for_selector("body[data-ready=true]")
        expect(page.locator("#model")).to_have_value(trained)

        # one model, the untrained one: ?model= goes with the analysis, the model line says so
        page.select_option("#model", untrained)
        expect(page.locator("#model-line")).to_contain_text(f"Model {untrained}")
        expect(page.locator("#model-line")).to_contain_text("untrained: their maps show initial weights")
        page.set_input_files("#file-input", str(DATA / "chelsea.jpg"))
        expect(page.locator("#status.done")).to_contain_text("chelsea.jpg:", timeout=SLOW)
        assert f"model={untrained}" in analyses[-1].url and analyses[-1].json()["model"] == untrained
        assert page.locator(".card").count() == len(kinds) and page.locator(".card[data-side]").count() == 0

        # compare: A trained, B untrained, the same image analysed again by both
        page.select_option("#model", trained)
        page.select_option("#compare", untrained)
        expect(page.locator("#model-line")).to_contain_text(f"Compared with {untrained}")
        expect(page.locator("#status.done")).to_contain_text("chelsea.jpg: A ", timeout=SLOW)
        expect(page.locator(".card[data-type=diff]")).to_have_count(len(kinds))
        assert page.locator(".card[data-type=reference]").count() == 0  # no reference by default
        expect(page.locator("#answer-b .answer-model")).to_have_text(f"B · {untrained}")
        reports = {response.json()["model"]: response.json() for response in analyses if response.ok}
        blocks = {side: {b["type"]: b for b in reports[name]["blocks"]} for side, name in (("A", trained),
                                                                                          ("B", untrained))}
        for kind in kinds:
            a = page.locator(f".card[data-side=A][data-type={kind}]")
            b = page.locator(f".card[data-side=B][data-type={kind}]")
            difference = page.locator(f".card[data-type=diff][data-kind={kind}]")
            for card in (a, b, difference):
                assert drawn(page, card), card.locator(".card-title").inner_text()
            # A and B on one colour range: the union of their ranges, stated in both legends
            values_a, values_b = blocks["A"][kind]["heatmap"]["values"], blocks["B"][kind]["heatmap"]["values"]
            union = [min(value_range(values_a)[0], value_range(values_b)[0]),
                     max(value_range(values_a)[1], value_range(values_b)[1])]
            assert card_range(a) == pytest.approx(union) and card_range(b) == pytest.approx(union)
            assert "shared by A and B" in a.locator(".scale").inner_text()
            # the difference: symmetric [-m, m], m = max |B - A|, stated in its legend
            m = max(abs(vb - va) for row_a, row_b in zip(values_a, values_b) for va, vb in zip(row_a, row_b))
            assert difference.locator(".card-title").inner_text().startswith("difference (B − A)")
            if m > 0:
                assert card_range(difference) == pytest.approx([-m, m])
                assert "m = max |B − A|" in difference.locator(".scale").inner_text()
                assert difference.locator(".high").inner_text() != ""
            else:  # SPD reads the image itself: the same in both models
                assert "identical" in difference.locator(".scale").inner_text()
        assert max(abs(v) for v in card_range(page.locator(".card[data-type=diff][data-kind=acmix]"))) > 0

        # a click on one side selects the same cell on the other (ACmix window, DCN sampling points)
        acmix_a = page.locator(".card[data-side=A][data-type=acmix]")
        acmix_b = page.locator(".card[data-side=B][data-type=acmix]")
        click(acmix_a, 0.45, 0.5)
        selected = acmix_a.get_attribute("data-selected")
        assert selected and acmix_b.get_attribute("data-selected") == selected
        assert acmix_b.get_attribute("data-window-centre") == acmix_a.get_attribute("data-window-centre")
        assert "Query (" in acmix_b.locator(".detail").inner_text()
        click(acmix_b, 0.2, 0.3)  # and from B to A
        assert acmix_a.get_attribute("data-selected") == acmix_b.get_attribute("data-selected") != selected
        acmix_b.locator("canvas.view").focus()
        page.keyboard.press("ArrowRight")  # the keyboard too
        row, col = map(int, acmix_b.get_attribute("data-selected").split(","))
        assert acmix_a.get_attribute("data-selected") == f"{row},{col}"
        acmix_a.locator("select[name=head]").select_option("1")  # a head chosen on one side: the other follows
        expect(acmix_b.locator("select[name=head]")).to_have_value("1")
        assert "head 1" in acmix_b.locator(".detail").inner_text()
        dcn_a = page.locator(".card[data-side=A][data-type=dcn]")
        dcn_b = page.locator(".card[data-side=B][data-type=dcn]")
        click(dcn_b, 0.3, 0.6)
        assert dcn_a.get_attribute("data-selected") == dcn_b.get_attribute("data-selected")
        assert dcn_a.get_attribute("data-sampling-centre") == dcn_b.get_attribute("data-sampling-centre")

        # the Grad-CAM reference: a card per side and their difference
        page.select_option("#reference", "gradcam")
        expect(page.locator(".card[data-type=reference]")).to_have_count(2, timeout=SLOW)
        expect(page.locator("#status.done")).to_contain_text("chelsea.jpg: A ", timeout=SLOW)
        assert all("reference=gradcam" in response.url for response in analyses[-2:])
        for side in "AB":
            card = page.locator(f".card[data-side={side}][data-type=reference]")
            assert card.locator(".card-title").inner_text().startswith(f"{side} · Grad-CAM reference (layer ")
            assert "target" in card.locator(".card-title").inner_text() and drawn(page, card)
        reference = page.locator(".card[data-type=diff][data-kind=reference]")
        assert drawn(page, reference) and reference.locator(".scale").inner_text() != ""

        acmix_a.scroll_into_view_if_needed()
        click(acmix_a, 0.45, 0.5)
        page.screenshot(path=str(SHOTS / "page-compare.png"), full_page=True)
        assert page.problems == [] and page.off_loopback == []


def test_two_detectors_a_clicked_detection_is_highlighted_on_both_sides(browser, tmp_path):
    """Two YOLO-style factories from a models file: the detection clicked in A's list is highlighted in A's and,
    matched by overlap, in B's list and on both sides' cards."""
    from PIL import Image, ImageDraw

    image = Image.open(DATA / "chelsea.jpg").convert("RGB")
    ImageDraw.Draw(image).rectangle((200, 100, 259, 149), fill=(255, 255, 255))
    upload = tmp_path / "square.png"
    image.save(upload)
    models = detectors_file(tmp_path / "models.toml", {"yolo-v8": "v8", "yolo-v5": "v5"})
    with running_server(ATTNLENS_MODELS=str(models)) as (base, _), guarded_page(browser, base) as page:
        page.wait_for_selector("body[data-ready=true]")
        page.select_option("#compare", "yolo-v5")
        expect(page.locator("#model-line")).to_contain_text("Compared with yolo-v5")
        page.set_input_files("#file-input", str(upload))
        expect(page.locator("#status.done")).to_contain_text("square.png: A ", timeout=SLOW)
        expect(page.locator("#answer-b .answer-title")).to_have_text("Detections")
        page.locator("#answer-a .detection").first.click()
        expect(page.locator("body")).to_have_attribute("data-highlighted", "0")
        expect(page.locator("#answer-b .detection.on")).to_have_count(1)  # the same square, found by B
        matched = int(page.locator("#answer-b .detection.on").get_attribute("data-index"))
        for side, index in (("A", 0), ("B", matched)):
            card = page.locator(f".card[data-side={side}]").first
            x, y, w, h = json.loads(card.get_attribute("data-boxes"))[index]
            edge = page.evaluate("([c, x, y]) => Array.from(c.querySelector('canvas.view').getContext('2d')"
                                 ".getImageData(x, y, 1, 1).data)", [card.element_handle(), x, y + h // 2])
            assert edge[0] > 180 and edge[0] - edge[1] > 80, side  # the highlighted box's red edge
        page.screenshot(path=str(SHOTS / "page-compare-detectors.png"), full_page=True)
        assert page.problems == [] and page.off_loopback == []
