"""``report.html`` of a detector's evaluation in real Chromium, opened from disk: the detection section (AP per
model and class, found / missed), no request made, and it fits a 390 px phone (wide tables scroll in their box)."""
import attnlens
from tests.app.labelled_data import write_dataset
from tests.e2e.conftest import SHOTS


def test_the_report_opens_offline_and_fits_a_phone(browser, tmp_path):
    yaml, _ = write_dataset(tmp_path / "data")
    attnlens.evaluate([("exact", "tests.app.colour_detectors:exact"),
                       ("small-blind", "tests.app.colour_detectors:misses_small")], yaml, reference="none",
                      out=tmp_path / "eval")
    for width in (1280, 390):
        context = browser.new_context(viewport={"width": width, "height": 900})
        page = context.new_page()
        requests = []
        page.on("request", lambda request: requests.append(request.url))
        page.goto((tmp_path / "eval" / "report.html").as_uri())
        assert page.locator("h2", has_text="Detection").is_visible()
        rows = page.locator("h2:has-text('Detection') + p + .scroll table tr")
        assert rows.count() == 3 and "0.832" in rows.nth(2).inner_text()  # AP of the detector blind to 10 px
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        assert [url for url in requests if not url.startswith(("file:", "data:"))] == []
        page.screenshot(path=str(SHOTS / f"report-{width}.png"), full_page=True)
        context.close()
