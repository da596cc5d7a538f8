"""``attnlens figure``: the grid read back (the PDF's page size, text, fonts and rasters; the PNG's size and panel
grid), one colour scale per map family (the same value the same colour in every panel of it), the boxes against a
dataset's, and bad input said in one line with no file written."""
import subprocess
import sys

import matplotlib.colors
import numpy as np
import pypdf
import pytest
from matplotlib.image import AxesImage
from matplotlib.patches import Rectangle
from PIL import Image

import attnlens
from tests.app.conftest import DATA

PHOTOS = [DATA / "chelsea.jpg", DATA / "coffee.jpg"]
MODELS = ("--model", "efficientnet_lite0", "--model", "efficientnet_lite0_untrained")


def figure_cli(*args):
    return subprocess.run([sys.executable, "-m", "attnlens", "figure", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_a_pdf_at_page_width_with_every_panel_a_raster_and_the_names_as_text(tmp_path):
    out = tmp_path / "grid.pdf"
    done = figure_cli(*PHOTOS, *MODELS, "--maps", "gc,ca", "--out", out)
    assert done.returncode == 0, done.stderr
    page = pypdf.PdfReader(out).pages[0]
    assert abs(float(page.mediabox.width) / 72 - 7.16) < 0.01
    assert len(page.images) == 2 * (1 + 2 * 2)  # a raster per panel: rows x (the image + models x maps); bars vector
    text = page.extract_text()
    for name in ("efficientnet_lite0", "efficientnet_lite0_untrained", "GC mask", "CA a_h x a_w", "image"):
        assert name in text
    fonts = {font.get_object()["/Subtype"] for font in page["/Resources"]["/Font"].values()}
    assert "/Type3" not in fonts  # TrueType (Type 0 / CIDFontType2), as IEEE's checker wants


def test_a_png_at_300_dpi_is_7_16_inches_wide_with_its_panels_in_a_grid(tmp_path):
    out = tmp_path / "grid.png"
    done = figure_cli(*PHOTOS, *MODELS, "--maps", "gc,ca", "--out", out)
    assert done.returncode == 0, done.stderr
    pixels = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert pixels.shape[1] == round(7.16 * 300)
    # the panels' columns: runs of non-white pixels across the middle of the first row of panels
    row = pixels[pixels.shape[0] // 3]
    painted = (row < 245).any(axis=1)
    edges = np.flatnonzero(np.diff(painted.astype(int)) == 1)
    assert len(edges) == 1 + 2 * 2 - (1 if painted[0] else 0)  # the image, then 2 models x 2 maps
    widths = np.diff(np.flatnonzero(np.diff(painted.astype(int))))[::2]
    assert widths.max() - widths.min() <= 2  # the same width: they line up


def test_one_scale_per_map_family_and_per_panel_only_when_asked():
    models = [("trained", "efficientnet_lite0"), ("untrained", "efficientnet_lite0_untrained")]
    figure = attnlens.figure(models, PHOTOS, maps=["gc", "ca"])
    overlays = [image for axis in figure.axes for image in axis.get_images() if (image.get_gid() or "").startswith("map")]
    assert len(overlays) == 2 * 2 * 2
    families = {}
    for image in overlays:
        families.setdefault(image.get_gid().split()[-1], []).append(image)
    assert sorted(families) == ["ca", "gc"] and all(len(images) == 4 for images in families.values())
    for images in families.values():
        assert len({(image.norm.vmin, image.norm.vmax) for image in images}) == 1  # one scale over models and images
        value = (images[0].norm.vmin + images[0].norm.vmax) / 2
        assert len({tuple(image.to_rgba(value)) for image in images}) == 1  # the same value, the same colour
    # and the panels are drawn in it: a panel's pixel is the image blended with that colour of its map's value
    first = families["gc"][0]
    pixels = first.get_array().astype(float) / 255
    assert pixels.shape[2] == 3 and pixels.std() > 0.01
    flat = attnlens.figure(models, PHOTOS, maps=["gc"], scale="per-panel")
    ranges = {(image.norm.vmin, image.norm.vmax) for axis in flat.axes for image in axis.get_images()
              if (image.get_gid() or "").startswith("map")}
    assert len(ranges) == 4 and any("own range" in text.get_text() for text in flat.texts)


def test_the_pdf_holds_each_panel_as_drawn_and_each_colour_bar_as_one_shading():
    import io

    from attnlens.evaluation.paper import paper_figure_bytes

    models = [("trained", "efficientnet_lite0"), ("untrained", "efficientnet_lite0_untrained")]
    figure = attnlens.figure(models, PHOTOS[:1], maps=["gc", "ca"])
    drawn = sorted(np.asarray(image.get_array()).tobytes() for axis in figure.axes for image in axis.get_images())
    page = pypdf.PdfReader(io.BytesIO(paper_figure_bytes(figure, "pdf"))).pages[0]
    # matplotlib's PDF writer stores an image's rows bottom up (and draws it flipped back)
    embedded = sorted(np.asarray(image.image.convert("RGB"))[::-1].tobytes() for image in page.images)
    assert len(drawn) == 1 + 2 * 2 and embedded == drawn  # every raster losslessly the pixels drawn, and no other
    assert len(page["/Resources"]["/Shading"]) == 2  # a colour bar per map family, each one vector shading
    bars = [artist for axis in figure.axes for artist in axis.collections if artist.get_gid()]
    assert sorted(artist.get_visible() for artist in bars) == [False, False, True, True]  # as it was: cells shown


def test_a_map_one_model_lacks_is_an_empty_panel_saying_so():
    figure = attnlens.figure([("blocks", "efficientnet_lite0"), ("plain", "efficientnet_lite0_plain")], PHOTOS[:1],
                             maps=["gc"])
    said = [text.get_text() for axis in figure.axes for text in axis.texts]
    assert any(t.replace("\n", "").startswith("no GC in efficientnet_lite0_plain") for t in said)
    assert sum(isinstance(image, AxesImage) for axis in figure.axes for image in axis.get_images()) == 2


def test_boxes_against_a_datasets_are_cyan_found_and_white_dashed_missed(tmp_path):
    from tests.app.labelled_data import write_dataset

    yaml, _ = write_dataset(tmp_path / "data")
    out = tmp_path / "boxes.png"
    done = figure_cli("a", "b", "--data", yaml, "--model", "tests.app.colour_detectors:misses_small", "--maps", "gc",
                      "--boxes", "5", "--out", out)
    assert done.returncode == 0, done.stderr
    from attnlens.evaluation import read_dataset
    from attnlens.evaluation.browse import DatasetBrowser
    from attnlens.evaluation.paper import PaperImage, paper_figure

    browser = DatasetBrowser(read_dataset(yaml))
    rows = []
    for name in ("a", "b"):
        entry = next(image for image in browser.dataset.images if image.path.stem == name)
        picture = Image.open(entry.path).convert("RGB")
        rows.append(PaperImage(picture, name, browser.ground_truth(entry, picture.size)))
    model = attnlens.load_model("tests.app.colour_detectors:misses_small", device="cpu")
    figure = paper_figure([("m", model)], rows, maps=["gc"], boxes=5)
    edges = [(matplotlib.colors.to_hex(patch.get_edgecolor()), patch.get_linestyle()) for axis in figure.axes
             for patch in axis.patches if isinstance(patch, Rectangle) and not patch.get_fill()]
    assert ("#00e5ff", "-") in edges  # a found object's detection
    assert ("#ffffff", "--") in edges  # the small object it misses


@pytest.mark.parametrize("args, said", [
    (["--maps", "gc,nope"], "unknown map 'nope'"),
    (["--width", "wide"], "--width must be inches or one of column, page"),
    ([], "unreadable"),
])
def test_bad_input_is_one_line_and_no_file(tmp_path, args, said):
    out = tmp_path / "grid.pdf"
    broken = tmp_path / "unreadable.jpg"
    broken.write_bytes(b"not an image")
    images = [broken] if said == "unreadable" else PHOTOS[:1]
    done = figure_cli(*images, "--model", "efficientnet_lite0", *args, "--out", out)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and (said in done.stderr or said == "unreadable")
    assert not out.exists() and not list(tmp_path.glob(".*partial"))


def test_a_models_file_titles_the_columns(tmp_path):
    models = tmp_path / "models.toml"
    models.write_text('[[models]]\nname = "a"\nmodel = "efficientnet_lite0"\ntitle = "Ours (GC+CA)"\n\n'
                      '[[models]]\nname = "b"\nmodel = "efficientnet_lite0_untrained"\n')
    out = tmp_path / "grid.svg"
    done = figure_cli(PHOTOS[0], "--models", models, "--maps", "gc", "--out", out)
    assert done.returncode == 0, done.stderr
    svg = out.read_text()
    assert "Ours (GC+CA)" in svg and ">b<" in svg.replace(" ", "")


def test_the_server_draws_the_figure_of_uploads_and_says_what_is_wrong(photos):
    import io

    from tests.app.test_api import client_for

    with client_for() as client:
        names = [m["name"] for m in client.get("/api/v1/models").json()["models"]]
        files = [("files", ("cat.jpg", photos["cat"], "image/jpeg")), ("files", ("cup.jpg", photos["espresso"],
                                                                                  "image/jpeg"))]
        answer = client.post("/api/v1/figure", params={"model": names[:2], "maps": "gc,ca"}, files=files)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "application/pdf"
        page = pypdf.PdfReader(io.BytesIO(answer.content)).pages[0]
        assert abs(float(page.mediabox.width) / 72 - 7.16) < 0.01 and len(page.images) == 2 * (1 + 2 * 2)
        assert all(name in page.extract_text() for name in names[:2])
        wrong = client.post("/api/v1/figure", params={"maps": "nope"}, files=files[:1])
        assert wrong.status_code == 400 and "unknown map" in wrong.json()["detail"]
        png = client.post("/api/v1/figure", params={"format": "png", "width": "column", "maps": "gc"}, files=files[:1])
        assert png.status_code == 200 and Image.open(io.BytesIO(png.content)).size[0] == round(3.5 * 300)
