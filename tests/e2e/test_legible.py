"""The page legible on a 390 px phone, and its keys drawn like what they stand for, in real Chromium: a server
offering a dataset and two detectors with their eval results (the Dataset view's ~40 sort keys grouped by model),
the page no wider than the phone; the ground truth's key chips like the boxes on the image, the thumbnails' labelled
boxes in a colour of their own; the CA card's a_h / a_w names where no profile curve runs."""
import json

import pytest
from PIL import Image
from playwright.sync_api import expect

import attnlens
from tests.app.test_datasets import write_squares
from tests.e2e.conftest import SHOTS, guarded_page
from tests.e2e.test_dataset import DETECTOR, IMAGES, SLOW
from tests.serving import running_server

PHONE = {"width": 390, "height": 844}
# two detectors with the long names users give them: their sort keys are MODEL/MAP:MEASURE
MODELS = {"yolo-v8-squares-letterbox-320-with-coordinate-attention": "v8",
          "yolo-v5-squares-letterbox-320-with-coordinate-attention": "v5"}
MARGIN = 44  # the CA card's profile margins, in canvas pixels
BANDS = (5, 41)  # where the profiles run across a margin (band(1) .. band(0), a pixel either side), canvas pixels


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``attnlens serve --data --eval-results`` with both detectors (a models file) and their results."""
    root = tmp_path_factory.mktemp("legible")
    yaml = write_squares(root / "squares", IMAGES)
    loaded = [(name, attnlens.load_model(f"tests.app.yolo_models:{factory}", device="cpu", **DETECTOR))
              for name, factory in MODELS.items()]
    attnlens.evaluate(loaded, yaml, reference="none", workers=0, out=root / "results")
    models = root / "models.toml"
    models.write_text("".join(f'[[models]]\nname = "{name}"\nmodel = "tests.app.yolo_models:{factory}"\n'
                              'input_size = 320\nresize = "letterbox"\nnormalize = "none"\n\n'
                              for name, factory in MODELS.items()))
    with running_server(ATTNLENS_MODELS=str(models), args=("--data", str(yaml), "--eval-results",
                                                            str(root / "results"))) as (base, _):
        yield base, root


def fits(page, width=PHONE["width"]):
    """The page scrolls only down, and the sort select lies within the viewport."""
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    select = page.locator("#dataset-sort").bounding_box()
    assert select["x"] >= 0 and select["x"] + select["width"] <= width, select


def open_image(page, name):
    page.locator("#dataset-view").scroll_into_view_if_needed()
    page.locator(f'.thumb[data-id="images/val/{name}"]').click()
    expect(page.locator("#status.done")).to_contain_text(name, timeout=SLOW)


def test_the_dataset_view_and_its_analyses_fit_a_phone(browser, served):
    base, _ = served
    with guarded_page(browser, base) as page:
        page.set_viewport_size(PHONE)
        page.wait_for_selector("body[data-ready=true]")
        expect(page.locator("#dataset-grid .thumb")).to_have_count(4)
        # the sort keys grouped by model, each named by its map and measure, the objects keys first
        keys = page.request.get(f"{base}/api/v1/datasets").json()["datasets"][0]["sort_keys"]
        groups = page.locator("#dataset-sort optgroup").evaluate_all(
            "gs => gs.map(g => [g.label, [...g.children].map(o => [o.value, o.textContent])])")
        assert [label for label, _ in groups] == sorted(MODELS)
        assert sorted(value for _, options in groups for value, _ in options) == sorted(keys) and len(keys) > 30
        for label, options in groups:
            assert [text for _, text in options[:2]] == ["found objects", "missed objects"]
            for value, text in options:
                assert value.startswith(f"{label}/") and label not in text
                assert value.endswith(text.replace(" · ", ":")) or text in ("found objects", "missed objects")
        fits(page)
        page.select_option("#dataset-sort", max(keys, key=len))
        expect(page.locator("#dataset-grid .thumb").first).to_contain_text(" · ")  # its scores shown
        fits(page)

        open_image(page, "a-found.png")  # one model
        page.wait_for_timeout(300)  # the cards redraw on resize
        fits(page)
        page.screenshot(path=str(SHOTS / "page-dataset-phone.png"), full_page=True)
        page.select_option("#compare", list(MODELS)[1])  # and the compare view
        expect(page.locator("#status.done")).to_contain_text("a-found.png: A ", timeout=SLOW)
        expect(page.locator(".card[data-type=diff]")).to_have_count(3)
        page.wait_for_timeout(300)
        fits(page)
        page.screenshot(path=str(SHOTS / "page-dataset-compare-phone.png"), full_page=True)
        assert page.problems == [] and page.off_loopback == []


def chip(page, key):
    """The computed border and outline of a key's chip (its ::before)."""
    return tuple(page.evaluate("(k) => { const s = getComputedStyle(k, '::before'); return [s.borderTopStyle,"
                               " s.borderTopColor, s.borderTopWidth, s.outlineColor, s.outlineStyle]; }",
                               key.element_handle()))


def dark(colour):
    r, g, b = (int(v) for v in colour[colour.index("(") + 1:colour.index(")")].split(",")[:3])
    return max(r, g, b) < 90


def test_keys_are_drawn_like_their_boxes(browser, served):
    """The ground truth's key: found a solid cyan box, missed a white dashed one, false positives magenta, each on a
    dark ground (a white box on the white page would not show); the thumbnails' labelled boxes amber, not any of
    those, as the Dataset view's own key says."""
    base, _ = served
    with guarded_page(browser, base) as page:
        page.wait_for_selector("body[data-ready=true]")
        first = page.locator('.thumb[data-id="images/val/a-found.png"] canvas')
        expect(first).to_have_attribute("data-boxes", "[[40,30,50,50],[120,100,60,50]]")
        key = page.locator("#dataset-key .key")
        expect(key).to_contain_text("labelled boxes")
        style, colour, _, ground, _ = chip(page, key)
        assert (style, colour) == ("solid", "rgb(255, 196, 0)") and dark(ground)
        for x, y in ((40, 55), (40 + 50, 55), (65, 30), (140, 100)):  # on each edge of the thumbnail's boxes
            r, g, b, a = page.evaluate("([c, x, y]) => Array.from(c.getContext('2d').getImageData(x, y, 1, 1).data)",
                                       [first.element_handle(), x, y])
            assert (r, g, b, a) == (255, 196, 0, 255), (x, y, r, g, b, a)  # the key's amber: not cyan, white, magenta
        assert "amber" in page.locator('.thumb[data-id="images/val/a-found.png"]').get_attribute("title")

        open_image(page, "a-found.png")
        keys = page.locator("#answer-a .truth .key")
        expect(keys).to_have_count(3)
        found, missed, false_positives = (chip(page, keys.nth(i)) for i in range(3))
        assert found[:2] == ("solid", "rgb(0, 229, 255)")
        assert missed[:2] == ("dashed", "rgb(255, 255, 255)")
        assert false_positives[:2] == ("solid", "rgb(255, 61, 242)")
        assert all(float(c[2].removesuffix("px")) >= 2 and dark(c[3]) and c[4] == "solid"
                   for c in (found, missed, false_positives))
        page.locator("#answer-a .truth").screenshot(path=str(SHOTS / "page-truth-key.png"))
        assert page.problems == [] and page.off_loopback == []


# the CA card's margins read back: the names' ink (dark grey, opaque) and the curves (blue), in canvas pixels; the
# names must lie outside the bands the curves run in, with no curve pixel within 2 px of them
PROFILE_NAMES = """([c, margin, [near, far]]) => {
  const { width, height } = c, d = c.getContext('2d').getImageData(0, 0, width, height).data;
  const ink = [], curve = new Set();
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) {
    if (x >= margin && y >= margin) continue;
    const o = 4 * (y * width + x), [r, g, b, a] = [d[o], d[o + 1], d[o + 2], d[o + 3]];
    if (a > 160 && Math.abs(r - g) < 24 && Math.abs(g - b) < 24 && r < 140) ink.push([x, y]);
    else if (a > 40 && b > r + 80) curve.add(y * width + x);
  }
  const inBand = ([x, y]) => (x >= near && x <= far && y >= margin) || (y >= near && y <= far && x >= margin);
  const crossed = ink.filter(([x, y]) => {
    for (let dy = -2; dy <= 2; dy++) for (let dx = -2; dx <= 2; dx++) if (curve.has((y + dy) * width + x + dx)) return true;
    return false;
  });
  const ys = ink.map(([, y]) => y);
  return { ink: ink.length, curve: curve.size, inBand: ink.filter(inBand).length, crossed: crossed.length,
           inkHeight: ink.length ? Math.max(...ys) - Math.min(...ys) + 1 : 0,
           cssScale: c.getBoundingClientRect().width / width };
}"""


def test_the_ca_profile_names_are_clear_of_the_curves(browser, served, tmp_path):
    """An upload with no detection (nothing drawn in the margins but the profiles and their names), at 1280 px and
    at 390 px: the a_h / a_w names in ink no curve crosses, outside the profile bands, legible on the phone."""
    base, _ = served
    upload = tmp_path / "gradient.png"
    Image.frombytes("RGB", (240, 180), bytes((x * 3 // 4 + y // 3) % 200 for y in range(180) for x in range(240)
                                             for _ in range(3))).save(upload)
    with guarded_page(browser, base) as page:
        page.set_viewport_size({"width": 1280, "height": 900})
        page.wait_for_selector("body[data-ready=true]")
        page.set_input_files("#file-input", str(upload))
        expect(page.locator("#status.done")).to_contain_text("gradient.png: no detections", timeout=SLOW)
        canvas = page.locator(".card[data-type=ca] canvas.view")
        for viewport in ({"width": 1280, "height": 900}, PHONE):
            page.set_viewport_size(viewport)
            page.wait_for_timeout(300)  # the cards redraw on resize
            read = page.evaluate(PROFILE_NAMES, [canvas.element_handle(), MARGIN, list(BANDS)])
            assert read["ink"] > 40 and read["curve"] > 100, read  # both names and both curves drawn
            assert read["inBand"] == 0 and read["crossed"] == 0, (viewport, read)
            assert read["inkHeight"] * read["cssScale"] >= 20, read  # two lines of text at least 10 CSS px each
        canvas.screenshot(path=str(SHOTS / "page-ca-phone.png"))
        page.select_option(".card[data-type=ca] select[name=channel]", "3")  # one channel's profiles too
        read = page.evaluate(PROFILE_NAMES, [canvas.element_handle(), MARGIN, list(BANDS)])
        assert read["inBand"] == 0 and read["crossed"] == 0 and read["ink"] > 40, read
        assert json.loads(page.locator(".card[data-type=ca]").get_attribute("data-boxes")) == []
        assert page.problems == [] and page.off_loopback == []
