"""``attnlens eval``'s report.html in real headless Chromium: it opens from disk with no request leaving the file
(no CDN, no server), and shows its tables, charts and thumbnails."""
import attnlens
from tests.app.labelled_data import write_dataset
from tests.e2e.conftest import SHOTS


def test_the_report_opens_offline_from_disk(browser, tmp_path):
    data, _ = write_dataset(tmp_path / "data")
    out = tmp_path / "eval"
    attnlens.evaluate([("flat", "tests.app.labelled_data:flat_context"), ("red", "tests.app.labelled_data:red_context")],
                      data, reference="none", out=out, workers=0)
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    requests, problems = [], []
    page.on("console", lambda message: message.type == "error" and problems.append(message.text))

    def guard(route):
        url = route.request.url
        if url.startswith(("data:", "file://")):
            route.continue_()
        else:
            requests.append(url)
            route.abort()

    page.route("**/*", guard)
    page.goto((out / "report.html").as_uri())
    page.wait_for_load_state("load")
    assert page.locator("table").first.locator("tr").count() == 1 + 2 * 3  # header, 2 models x (GC + 2 baselines)
    assert page.locator("svg rect").count() >= 6
    thumbnails = page.locator("section img")
    assert thumbnails.count() == 2 * 2 * 4
    assert page.evaluate("() => Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    assert "red vs flat" in page.locator("body").inner_text()
    page.screenshot(path=str(SHOTS / "eval-report.png"), full_page=True)
    context.close()
    assert requests == [] and problems == []
