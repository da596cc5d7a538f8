"""A labelled dataset served for browsing (``attnlens serve --data``): the listing and its boxes against the labels,
the sort against ``per_image.csv``, only the dataset's own images (hostile ids are 404), thumbnails cached with a
bound, and an analysis by id with its ground truth matched to the detections."""
import csv
import io
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

import attnlens
from attnlens.evaluation import read_dataset
from attnlens.evaluation.browse import DatasetBrowser, match_detections
from attnlens.server import create_app
from attnlens.server.settings import Settings
from tests.app.labelled_data import IMAGES, write_dataset

# images for the YOLO-style test detector, which finds the bright square (class 0, "square"): (file, size,
# white squares drawn, labelled boxes [(class, x0, y0, x1, y1)])
SQUARES = [
    ("found.png", (200, 160), [(40, 30, 90, 80)], [(0, (40, 30, 90, 80)), (1, (120, 100, 180, 150))]),
    ("unlabelled.png", (200, 160), [(100, 60, 150, 110)], []),
]


def write_squares(root: Path, images=SQUARES) -> Path:
    """``images`` (as ``SQUARES``) as a YOLO dataset with classes square and other; returns its data.yaml."""
    (root / "images" / "val").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    for name, (width, height), squares, labels in images:
        image = Image.new("RGB", (width, height), (90, 90, 90))
        for x0, y0, x1, y1 in squares:
            ImageDraw.Draw(image).rectangle((x0, y0, x1 - 1, y1 - 1), fill=(255, 255, 255))
        image.save(root / "images" / "val" / name)
        rows = [f"{c} {(x0 + x1) / 2 / width} {(y0 + y1) / 2 / height} {(x1 - x0) / width} {(y1 - y0) / height}"
                for c, (x0, y0, x1, y1) in labels]
        (root / "labels" / "val" / name.replace(".png", ".txt")).write_text("\n".join(rows))
    (root / "data.yaml").write_text(f"path: {root}\nval: images/val\nnames: [square, other]\n")
    return root / "data.yaml"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A server offering the red/blue dataset with its eval results, and the squares dataset (models file)."""
    root = tmp_path_factory.mktemp("served")
    yaml, _ = write_dataset(root / "colours")
    outside = root / "secret.png"
    Image.new("RGB", (8, 8)).save(outside)
    (root / "colours" / "images" / "val" / "link-out.png").symlink_to(outside)  # listed, never served
    (root / "colours" / "images" / "val" / "link-in.png").symlink_to(root / "colours" / "images" / "val" / "a.png")
    results = root / "results"
    red = "tests.app.labelled_data:red_context"
    attnlens.evaluate([("red", red)], yaml, reference="none", workers=0, out=results)
    squares = write_squares(root / "squares")
    models = root / "models.toml"
    models.write_text('[[models]]\nname = "yolo"\nmodel = "tests.app.yolo_models:v8"\ninput_size = 320\n'
                      'resize = "letterbox"\nnormalize = "none"\n\n'
                      f'[[datasets]]\nname = "squares"\ndata = "{squares}"\n')
    settings = Settings(device="cpu", models=models, data=yaml, eval_results=results)
    with TestClient(create_app(settings, load_in_background=False)) as client:
        yield client, yaml, results, root


def test_the_datasets_are_listed(served):
    client, yaml, results, _ = served
    listed = {d["name"]: d for d in client.get("/api/v1/datasets").json()["datasets"]}
    assert set(listed) == {"data", "squares"}
    assert listed["data"]["images"] == len(IMAGES) + 2 and listed["data"]["classes"] == ["red", "blue"]
    assert "0:energy" in listed["data"]["sort_keys"] and "0:pointing" in listed["data"]["sort_keys"]
    assert listed["squares"]["sort_keys"] == []
    # the boxes' area share is the image's, the same for every map: not offered as a sort key of each map
    with open(results / "per_image.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert len({row["map"] for row in rows}) > 1 and all(
        len({row["area"] for row in rows if row["image"] == image}) == 1 for image in {row["image"] for row in rows})
    assert not any(key.endswith(":area") for key in listed["data"]["sort_keys"])


def test_the_listing_and_its_boxes_are_the_labels(served):
    """Boxes in original pixels, as the labels put them (YOLO normalised rows times the image's size)."""
    client, *_ = served
    listing = client.get("/api/v1/datasets/data/images").json()
    assert listing["total"] == len(IMAGES) + 2
    entries = {entry["id"]: entry for entry in listing["images"]}
    for name, (width, height), objects in IMAGES:
        entry = entries[f"images/val/{name}"]
        assert (entry["file"], entry["width"], entry["height"]) == (name, width, height)
        assert [(b["index"], b["label"]) for b in entry["boxes"]] == [(c, ["red", "blue"][c]) for c, _ in objects]
        for box, (_, expected) in zip(entry["boxes"], objects):
            assert box["box"] == pytest.approx(expected, abs=0.02)
    assert entries["images/val/link-out.png"]["width"] is None  # listed, but not the dataset's to open
    blue = client.get("/api/v1/datasets/data/images", params={"class": "blue"}).json()
    assert sorted(e["file"] for e in blue["images"]) == ["b.png", "c.png"]
    assert client.get("/api/v1/datasets/data/images", params={"class": "1"}).json()["total"] == 2
    found = client.get("/api/v1/datasets/data/images", params={"search": "C.PN"}).json()
    assert [e["file"] for e in found["images"]] == ["c.png"]
    page = client.get("/api/v1/datasets/data/images", params={"offset": 2, "limit": 2}).json()
    assert page["total"] == len(IMAGES) + 2 and [e["id"] for e in page["images"]] == \
        [e["id"] for e in listing["images"]][2:4]


def test_the_sort_follows_per_image_csv(served):
    client, _, results, _ = served
    with open(results / "per_image.csv", newline="") as file:
        rows = [row for row in csv.DictReader(file) if row["map"] == "0"]
    for measure in ("energy", "lift", "pointing"):
        expected = sorted(rows, key=lambda row: (-float(row[measure]), row["image"]))
        listing = client.get("/api/v1/datasets/data/images", params={"sort": f"0:{measure}"}).json()
        ids = [entry["id"] for entry in listing["images"]]
        assert ids[:len(expected)] == [row["image"] for row in expected], measure
        assert all(f"0:{measure}" not in entry["scores"] for entry in listing["images"][len(expected):])
        for entry, row in zip(listing["images"], expected):
            assert entry["scores"][f"0:{measure}"] == pytest.approx(float(row[measure]), rel=1e-5)


@pytest.mark.parametrize("params, detail", [({"sort": "0:nope"}, "sort must be MAP:MEASURE"),
                                            ({"class": "green"}, "class must be one of"),
                                            ({"limit": 0}, "limit")])
def test_listing_mistakes_are_400(served, params, detail):
    client, *_ = served
    response = client.get("/api/v1/datasets/data/images", params=params)
    assert response.status_code == 400 and detail in str(response.json()["detail"])
    unsorted = client.get("/api/v1/datasets/squares/images", params={"sort": "0:energy"})
    assert unsorted.status_code == 400 and "--eval-results" in unsorted.json()["detail"]
    assert client.get("/api/v1/datasets/nope/images").status_code == 404


HOSTILE = ["../data.yaml", "images/../data.yaml", "%2e%2e/%2e%2e/secret.png", "%2e%2e%2fsecret.png",
           "/etc/passwd", "images\\val\\a.png", "images/val/link-out.png", "data.yaml", "images/val/nope.png",
           "images/val/a.png/..", "C:\\Windows\\win.ini", "images%2Fval%2F..%2F..%2Fdata.yaml"]


@pytest.mark.parametrize("image_id", HOSTILE)
def test_only_the_datasets_own_images_are_served(served, image_id):
    client, *_ = served
    for prefix in ("images", "thumbnails"):
        response = client.get(f"/api/v1/datasets/data/{prefix}/{image_id}")
        assert response.status_code == 404, (prefix, image_id, response.status_code)
        assert response.headers["content-type"] == "application/json"
    analysed = client.post("/api/v1/analyze", params={"model": "yolo", "dataset": "data", "image": image_id.replace(
        "%2e", ".").replace("%2f", "/").replace("%2F", "/")})
    assert analysed.status_code == 404


def test_the_images_and_their_thumbnails(served):
    client, yaml, _, root = served
    response = client.get("/api/v1/datasets/data/images/images/val/a.png")
    assert response.status_code == 200 and response.content == (root / "colours/images/val/a.png").read_bytes()
    assert client.get("/api/v1/datasets/data/images/images/val/link-in.png").status_code == 200  # a link inside
    thumbnail = client.get("/api/v1/datasets/data/thumbnails/images/val/c.png")
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(thumbnail.content)).size == (120, 160)  # small images stay their size, upright


def test_the_thumbnail_cache_is_bounded(tmp_path):
    yaml, _ = write_dataset(tmp_path / "data")
    browser = DatasetBrowser(read_dataset(yaml), cache_bytes=1500)
    sizes = [len(browser.thumbnail(image.id)) for image in browser.dataset.images]
    assert all(size > 0 for size in sizes) and sum(sizes) > 1500
    assert browser._thumbnail_bytes <= max(1500, max(sizes)) and len(browser._thumbnails) < len(sizes)
    first = browser.dataset.images[-1].id
    assert browser.thumbnail(first) is browser.thumbnail(first)  # a hit: the cached bytes


def test_an_analysis_by_id_answers_its_ground_truth_matched(served):
    """found.png: its labelled square is found (a true positive), its other box missed; unlabelled.png: the
    square found is a false positive."""
    client, *_ = served
    found = client.post("/api/v1/analyze", params={"model": "yolo", "dataset": "squares", "image": "images/val/found.png"})
    assert found.status_code == 200, found.text
    report = found.json()
    (detection,) = report["detections"]
    assert detection["box"] == pytest.approx([40, 30, 90, 80], abs=2)
    assert [(g["label"], g["status"], g.get("detection")) for g in report["ground_truth"]] == \
        [("square", "found", 0), ("other", "missed", None)]
    assert report["ground_truth"][1]["box"] == pytest.approx([120, 100, 180, 150], abs=0.01)
    unlabelled = client.post("/api/v1/analyze", params={"model": "yolo", "dataset": "squares",
                                                        "image": "images/val/unlabelled.png"}).json()
    assert unlabelled["ground_truth"] == [] and len(unlabelled["detections"]) == 1  # a false positive
    upload = client.post("/api/v1/analyze", params={"dataset": "squares", "image": "images/val/found.png"},
                         files={"file": ("x.png", b"x", "image/png")})
    assert upload.status_code == 400 and "not both" in upload.json()["detail"]
    alone = client.post("/api/v1/analyze", params={"dataset": "squares"})
    assert alone.status_code == 400 and "go together" in alone.json()["detail"]
    nothing = client.post("/api/v1/analyze")
    assert nothing.status_code == 400 and "multipart field file" in nothing.json()["detail"]
    assert client.post("/api/v1/analyze", params={"dataset": "nope", "image": "a"}).status_code == 404


def test_matching_by_hand():
    """Best detections first, each takes its class's unmatched box of highest IoU >= 0.5; the model's classes
    mapped to the dataset's by name (case aside), or by index where the names share nothing."""
    truth = [{"box": [0, 0, 10, 10], "index": 0, "label": "Cat"}, {"box": [20, 0, 30, 10], "index": 0, "label": "Cat"},
             {"box": [0, 20, 10, 30], "index": 1, "label": "dog"}]
    labels = [f"class {i}" for i in range(5)] + ["cat", "bird", "Cat"]
    detections = [{"box": [0, 0, 10, 9], "index": 5, "label": "cat"},  # IoU 0.9 with box 0
                  {"box": [1, 0, 11, 10], "index": 5, "label": "cat"},  # box 0 taken; box 1 IoU 0: a false positive
                  {"box": [0, 20, 10, 30], "index": 7, "label": "Cat"},  # the wrong class for box 2
                  {"box": [20, 0, 30, 10], "index": 6, "label": "bird"}]  # a class the dataset lacks
    assert [g["detection"] for g in match_detections(truth, detections, labels, ["cat", "dog"])] == [0, None, None]
    by_index = [{"box": [0, 20, 10, 30], "index": 1, "label": "class 1"}]
    assert [g["detection"] for g in match_detections(truth, by_index, ["a", "b"], ["cat", "dog"])] == [None, None, 0]


def test_serve_refuses_a_dataset_it_cannot_use_in_one_line(tmp_path):
    for args, says in ((["--data", str(tmp_path / "none.yaml")], "dataset not found"),
                       (["--eval-results", str(tmp_path)], "give the dataset too")):
        run = subprocess.run([sys.executable, "-m", "attnlens", "serve", "--port", "0", "--device", "cpu", *args],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 2 and "Traceback" not in run.stderr and says in run.stderr, run.stderr


@pytest.fixture(scope="module")
def detector_results(tmp_path_factory):
    """The red/blue dataset, a detector that misses its 10 px square evaluated on it, and a server offering that
    detector and a classifier."""
    root = tmp_path_factory.mktemp("detector")
    yaml, _ = write_dataset(root / "colours")
    results = root / "results"
    attnlens.evaluate([("small-blind", "tests.app.colour_detectors:misses_small"),
                       ("exact", "tests.app.colour_detectors:exact")], yaml, reference="none", out=results)
    models = root / "models.toml"
    models.write_text('[[models]]\nname = "blind"\nmodel = "tests.app.colour_detectors:misses_small"\n\n'
                      '[[models]]\nname = "red"\nmodel = "tests.app.labelled_data:red_context"\n')
    with TestClient(create_app(Settings(device="cpu", models=models, data=yaml, eval_results=results),
                               load_in_background=False)) as client:
        yield client, yaml, results


def test_the_listing_sorts_and_filters_by_missed_objects(detector_results):
    client, _, _ = detector_results
    keys = client.get("/api/v1/datasets").json()["datasets"][0]["sort_keys"]
    assert keys[:4] == ["exact/objects:found", "exact/objects:missed", "small-blind/objects:found",
                        "small-blind/objects:missed"]
    listing = client.get("/api/v1/datasets/data/images", params={"missed": "1"}).json()
    assert [image["id"] for image in listing["images"]] == ["images/val/d.png"]  # its 10 px square
    assert listing["images"][0]["scores"]["small-blind/objects:missed"] == 1.0
    assert client.get("/api/v1/datasets/data/images", params={"missed": "exact"}).json()["total"] == 0
    ranked = client.get("/api/v1/datasets/data/images", params={"sort": "small-blind/objects:found"}).json()["images"]
    assert ranked[0]["id"] == "images/val/b.png"  # two objects found
    wrong = client.get("/api/v1/datasets/data/images", params={"missed": "nobody"})
    assert wrong.status_code == 400 and "exact, small-blind" in wrong.json()["detail"]


def test_a_classifiers_labelled_boxes_are_not_matched(detector_results):
    """A model that gives no boxes has nothing to match: no found / missed, and the note says why; a detector's are
    matched."""
    client, _, _ = detector_results
    answer = client.post("/api/v1/analyze", params={"dataset": "data", "image": "images/val/b.png", "model": "red"})
    assert answer.status_code == 200, answer.text
    truth = answer.json()["ground_truth"]
    assert len(truth) == 2 and all("status" not in g for g in truth)
    assert "not matched: this model gives no boxes (task classify)" in answer.json()["note"]
    detector = client.post("/api/v1/analyze", params={"dataset": "data", "image": "images/val/d.png", "model": "blind"})
    assert [g["status"] for g in detector.json()["ground_truth"]] == ["missed"]
