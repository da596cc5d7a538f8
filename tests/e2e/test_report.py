"""``report.html`` of a detector's evaluation in real Chromium, opened from disk: the detection section (AP per
model and class, found / missed, by class and size), no request made, and it fits a 390 px phone (wide tables scroll
in their box, thumbnails in rows of the same length, charts with their values written)."""
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
        # the breakdowns summary.json keeps, the baselines and the box colours explained
        for heading in ("By class", "By size"):
            assert page.locator("h4", has_text=heading).is_visible()
        assert "baseline/centre" in page.locator("h2:has-text('Maps') ~ p").first.inner_text()
        assert "white and dashed" in page.locator("h2:has-text('best and worst') + p").inner_text()
        # a gallery strip (up to 8) never wraps as 7 + 1: as many columns as divide 8, rows of the same length
        strip = page.locator(".strip").first
        columns = strip.evaluate("s => getComputedStyle(s).gridTemplateColumns.split(' ').length")
        assert columns in ((2,) if width < 480 else (4, 8))
        tops = strip.locator("figure").evaluate_all("fs => fs.map(f => Math.round(f.getBoundingClientRect().top))")
        rows = [tops.count(top) for top in sorted(set(tops))]
        assert len(tops) == 4 and len(set(rows)) == 1, rows
        # the charts say their values: an axis and each bar's mean as text, not only on hover
        texts = page.locator(".charts svg").first.locator("text").all_text_contents()
        assert "0.00" in texts and sum("." in text for text in texts) >= 4
        assert [url for url in requests if not url.startswith(("file:", "data:"))] == []
        page.screenshot(path=str(SHOTS / f"report-{width}.png"), full_page=True)
        context.close()
