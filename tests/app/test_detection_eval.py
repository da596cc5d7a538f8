"""``attnlens eval`` on detectors: COCO AP against pycocotools (on the very files eval writes) and against the plain
evaluation kept in the tests (``coco_reference``), hand-computed cases, the same figures from YOLO labels and from
a COCO JSON, each object found or missed as the detectors' known behaviour says (``colour_detectors``), each
map's energy on each object against the map computed here, and paired AP intervals; through the real CLI."""
import contextlib
import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from attnlens.evaluation.coco_ap import STATS, Boxes, Evaluation
from tests.app import coco_reference
from tests.app.labelled_data import IMAGES, write_dataset

DETECTORS = ["exact", "exact_again", "false_positive_first", "shifted", "misses_small"]
NAMES = [f"tests.app.colour_detectors:{name}" for name in DETECTORS]


def pycocotools_stats(truth: dict, detections: list[dict]) -> dict[str, float]:
    """``COCOeval(...).stats`` by name, for a ground truth dict and a results list."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = json.loads(json.dumps(truth))
        coco.createIndex()
        evaluation = COCOeval(coco, coco.loadRes(json.loads(json.dumps(detections))), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return {name: float(value) for (name, *_), value in zip(STATS, evaluation.stats)}


def as_coco(truth: list[Boxes], detections: list[Boxes]) -> tuple[dict, list[dict]]:
    coco = {"images": [{"id": i + 1} for i in range(len(truth))], "annotations": [],
            "categories": [{"id": k + 1} for k in range(3)]}
    results = []
    for i, (gt, dt) in enumerate(zip(truth, detections)):
        for box, k, area, crowd in zip(gt.bbox.tolist(), gt.category.tolist(), gt.area.tolist(), gt.crowd.tolist()):
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": i + 1, "category_id": k + 1,
                                        "bbox": box, "area": area, "iscrowd": int(crowd)})
        results += [{"image_id": i + 1, "category_id": k + 1, "bbox": box, "score": score}
                    for box, k, score in zip(dt.bbox.tolist(), dt.category.tolist(), dt.score.tolist())]
    return coco, results


def as_reference(truth: list[Boxes], detections: list[Boxes]) -> tuple[list[dict], list[dict]]:
    gts = [{"image": i, "category": k, "bbox": box, "area": area, "crowd": crowd}
           for i, gt in enumerate(truth)
           for box, k, area, crowd in zip(gt.bbox.tolist(), gt.category.tolist(), gt.area.tolist(), gt.crowd.tolist())]
    dts = [{"image": i, "category": k, "bbox": box, "score": score}
           for i, dt in enumerate(detections)
           for box, k, score in zip(dt.bbox.tolist(), dt.category.tolist(), dt.score.tolist())]
    return gts, dts


def truth_of(*boxes, crowd=None, category=None) -> Boxes:
    bbox = np.array(boxes, dtype=float).reshape(-1, 4)
    return Boxes(bbox, np.array(category or [0] * len(bbox)), area=bbox[:, 2] * bbox[:, 3],
                 crowd=np.array(crowd or [False] * len(bbox)))


def found_of(*rows, category=None) -> Boxes:
    """``rows``: ``(x, y, w, h, score)``, in file order."""
    table = np.array(rows, dtype=float).reshape(-1, 5)
    return Boxes(table[:, :4], np.array(category or [0] * len(table)), score=table[:, 4])


def ours(truth, detections) -> dict[str, float]:
    return Evaluation(truth, detections, 3).stats()


def test_one_true_positive():
    stats = ours([truth_of((10, 10, 40, 40))], [found_of((10, 10, 40, 40, 0.9))])
    assert stats["AP"] == pytest.approx(1.0) and stats["AP50"] == pytest.approx(1.0) and stats["AR100"] == 1.0
    assert stats["APs"] == -1 and stats["APm"] == pytest.approx(1.0)  # 40 x 40 = 1600 px: medium


def test_a_false_positive_above_the_true_one():
    """Ranked FP (0.95), TP (0.9): precision 1/2 at recall 1, so 0.5 at every recall point and threshold."""
    truth, found = [truth_of((10, 10, 40, 40))], [found_of((100, 100, 40, 40, 0.95), (10, 10, 40, 40, 0.9))]
    assert ours(truth, found)["AP"] == pytest.approx(0.5) and ours(truth, found)["AP50"] == pytest.approx(0.5)
    assert ours(truth, found)["AR1"] == 0.0 and ours(truth, found)["AR10"] == 1.0  # the best one is the FP


def test_a_tie_is_ranked_in_file_order():
    """Two detections of one score, no crowd: the one written first ranks first (COCO's stable sort)."""
    truth = [truth_of((10, 10, 40, 40))]
    true_first = [found_of((10, 10, 40, 40, 0.8), (100, 100, 40, 40, 0.8))]
    false_first = [found_of((100, 100, 40, 40, 0.8), (10, 10, 40, 40, 0.8))]
    assert ours(truth, true_first)["AP"] == pytest.approx(1.0)
    assert ours(truth, false_first)["AP"] == pytest.approx(0.5)
    for found in (true_first, false_first):
        assert ours(truth, found)["AP"] == pytest.approx(pycocotools_stats(*as_coco(truth, found))["AP"], abs=1e-9)


def test_a_box_of_known_iou():
    """IoU 0.62 (a 40 x 40 box against a 40 x 40 one shifted by 9.4 px): a match at 0.50, 0.55 and 0.60 only."""
    shift = 40 * (1 - 0.62) / (1 + 0.62)  # IoU (40 - s) / (40 + s) = 0.62
    stats = ours([truth_of((10, 10, 40, 40))], [found_of((10 + shift, 10, 40, 40, 0.9))])
    assert stats["AP"] == pytest.approx(0.3) and stats["AP50"] == pytest.approx(1.0) and stats["AP75"] == 0.0


def test_a_crowd_is_neither_found_nor_a_false_positive():
    """A detection on a crowd region is ignored; a box outside an area range counts only in its own."""
    truth = [truth_of((10, 10, 40, 40), (200, 200, 100, 100), crowd=[False, True])]
    found = [found_of((200, 200, 50, 50, 0.95), (10, 10, 40, 40, 0.9))]
    stats = ours(truth, found)
    assert stats["AP"] == pytest.approx(1.0)
    assert stats == pytest.approx(pycocotools_stats(*as_coco(truth, found)), abs=1e-9)


def random_case(rng: np.random.Generator):
    truth, found = [], []
    for _ in range(rng.integers(1, 7)):
        n = int(rng.integers(0, 6))
        boxes = np.c_[np.round(rng.uniform(0, 300, (n, 2)), 1),
                      np.round(rng.choice([6.0, 20, 35, 80, 150], (n, 2)) * rng.uniform(0.8, 1.2, (n, 2)), 1)]
        category = rng.integers(0, 3, n)
        truth.append(Boxes(boxes, category, area=boxes[:, 2] * boxes[:, 3] * rng.choice([1.0, 0.6], n),
                           crowd=rng.random(n) < 0.15))
        m = int(rng.integers(0, 10))
        source = rng.integers(0, max(n, 1), m)
        near = boxes[source] + np.round(rng.normal(0, 5, (m, 4)), 1) if n else np.round(rng.uniform(0, 300, (m, 4)), 1)
        near[:, 2:] = np.abs(near[:, 2:]) + 1
        classes = np.where(rng.random(m) < 0.2, rng.integers(0, 3, m), category[source] if n else rng.integers(0, 3, m))
        scores = np.round(rng.choice([0.9, 0.6, 0.6, 0.3], m) if rng.random() < 0.5 else rng.random(m), 3)  # ties
        found.append(Boxes(near, classes, score=scores))
    return truth, found


def test_random_cases_equal_pycocotools_and_the_plain_evaluation():
    rng = np.random.default_rng(7)
    checked = 0
    while checked < 40:
        truth, found = random_case(rng)
        if not sum(len(f.score) for f in found):
            continue  # pycocotools cannot load an empty results list
        checked += 1
        expected = pycocotools_stats(*as_coco(truth, found))
        assert ours(truth, found) == pytest.approx(expected, abs=1e-9)
        assert coco_reference.stats(*as_reference(truth, found)) == pytest.approx(expected, abs=1e-9)


def test_a_weighted_image_counts_as_that_many_copies():
    """The bootstrap's weights: an image drawn twice gives the AP of the list holding it twice (adjacent)."""
    truth, found = next(case for seed in range(100) if len((case := random_case(np.random.default_rng(seed)))[0]) >= 3
                        and len(case[1][0].score))
    weights = np.array([[2.0, 0.0] + [1.0] * (len(truth) - 2), [1.0] * len(truth)])
    copies = [0, 0] + list(range(2, len(truth)))
    weighted = Evaluation(truth, found, 3).per_class(weights, chunk=1)  # one draw at a time
    expanded = Evaluation([truth[i] for i in copies], [found[i] for i in copies], 3).per_class()
    once = Evaluation(truth, found, 3).per_class()
    for key in ("AP", "AP50", "AP_all", "AP50_all"):
        np.testing.assert_allclose(weighted[key][0], expanded[key], atol=1e-12)
        np.testing.assert_allclose(weighted[key][1], once[key], atol=1e-12)


# --- through the CLI: the labelled test images and detectors of known behaviour ---

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``attnlens eval`` of every colour detector, once on the YOLO labels and once on the COCO JSON."""
    root = tmp_path_factory.mktemp("detection")
    yaml, coco = write_dataset(root / "data")
    found = {}
    for name, data in (("yolo", [yaml]), ("coco", [coco, "--images", root / "data" / "images" / "val"])):
        out = root / name
        command = [sys.executable, "-m", "attnlens", "eval", "--data", *data, *[x for n in NAMES for x in ("--model", n)],
                   "--device", "cpu", "--workers", "0", "--out", out]
        done = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        found[name] = (out, json.loads((out / "summary.json").read_text()), done)
    return found


def test_the_ground_truth_written_is_the_dataset(runs):
    for name, (out, _, _) in runs.items():
        truth = json.loads((out / "ground_truth.json").read_text())
        ids = [image["id"] for image in truth["images"]]
        assert ids == ([1, 2, 3, 4, 5] if name == "yolo" else [0, 1, 2, 3, 4])  # YOLO numbered, COCO the file's own
        assert [c["id"] for c in truth["categories"]] == ([1, 2] if name == "yolo" else [7, 9])
        boxes = sorted((a["image_id"], a["bbox"]) for a in truth["annotations"])
        expected = sorted((ids[i], [x0, y0, x1 - x0, y1 - y0]) for i, (_, _, objects) in enumerate(IMAGES)
                          for _, (x0, y0, x1, y1) in objects)
        assert len(boxes) == len(expected)
        for (image, box), (image_expected, box_expected) in zip(boxes, expected):
            assert image == image_expected and box == pytest.approx(box_expected, abs=1e-3)


def test_ap_equals_pycocotools_on_the_files_written(runs):
    for out, summary, _ in runs.values():
        truth = json.loads((out / "ground_truth.json").read_text())
        for model in NAMES:
            entry = summary["detection"][model]
            detections = json.loads((out / entry["file"]).read_text())
            expected = pycocotools_stats(truth, detections)
            assert {name: entry[name] for name in expected} == pytest.approx(expected, abs=1e-6), model


def test_the_hand_computed_figures_from_both_label_formats(runs):
    """exact: 1. A red FP at 0.95 on each of 5 images above the 3 red TPs at 0.9: red precision 3/8 everywhere. Boxes
    at IoU 2/3: a match at 0.50 to 0.65 (4 of 10 thresholds). The 10 px red square missed: red recall 2/3, precision
    1 up to it: 67 of 101 recall points."""
    expected = {"exact": {"AP": 1.0, "AP50": 1.0}, "exact_again": {"AP": 1.0},
                "false_positive_first": {"AP": (3 / 8 + 1) / 2, "AP50": (3 / 8 + 1) / 2},
                "shifted": {"AP": 0.4, "AP50": 1.0, "AP75": 0.0},
                "misses_small": {"AP": (67 / 101 + 1) / 2, "AP50": (67 / 101 + 1) / 2}}
    yolo, coco = runs["yolo"][1]["detection"], runs["coco"][1]["detection"]
    for short, figures in expected.items():
        model = f"tests.app.colour_detectors:{short}"
        for name, value in figures.items():
            assert yolo[model][name] == pytest.approx(value, abs=1e-9), (short, name)
        for name in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "found", "missed"):
            assert yolo[model][name] == pytest.approx(coco[model][name], abs=1e-9), (short, name)
        for cls, figures_yolo in yolo[model]["by_class"].items():
            assert figures_yolo == pytest.approx(coco[model]["by_class"][cls], abs=1e-9), (short, cls)
    assert yolo[NAMES[2]]["by_class"]["red"]["AP"] == pytest.approx(3 / 8)
    assert yolo[NAMES[2]]["by_class"]["blue"]["AP"] == pytest.approx(1.0)


def per_object(out: Path) -> list[dict]:
    with open(out / "per_object.csv", newline="") as file:
        return list(csv.DictReader(file))


def test_each_object_found_or_missed(runs):
    rows = per_object(runs["yolo"][0])
    objects = {(row["image"], row["object"]) for row in rows}
    assert len(objects) == sum(len(objects) for _, _, objects in IMAGES)
    for row in rows:
        small = row["image"].endswith("d.png")
        expected = not (small and row["model"].endswith(":misses_small"))
        assert row["found"] == str(int(expected)), row
        if row["model"].endswith(":shifted"):
            assert float(row["iou"]) == pytest.approx(2 / 3, abs=1e-4) and float(row["score"]) == pytest.approx(0.9)
        elif expected:
            assert float(row["iou"]) == pytest.approx(1.0) and float(row["score"]) == pytest.approx(0.9)
        else:
            assert row["iou"] == row["score"] == ""
    summary = runs["yolo"][1]["detection"]
    assert (summary[NAMES[4]]["found"], summary[NAMES[4]]["missed"]) == (4, 1)
    attention = summary[NAMES[4]]["attention"]["gc"]
    assert attention["found"]["objects"] == 4 and attention["missed"]["objects"] == 1


def gc_energy(path: Path, box) -> float:
    """The GC mask softmax(20 red - 10 blue) on the image, min-max normalised: its share inside ``box``."""
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255
    mask = np.exp(20 * pixels[..., 0] - 10 * pixels[..., 2])
    normalised = (mask - mask.min()) / (mask.max() - mask.min())
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    return float(normalised[y0:y1, x0:x1].sum() / normalised.sum())


def test_each_maps_energy_on_each_object_is_the_map_computed_here(runs):
    out = runs["yolo"][0]
    root = out.parent / "data"
    rows = [row for row in per_object(out) if row["map"] == "gc" and row["model"] == NAMES[0]]
    assert rows
    for row in rows:
        box = [float(row[k]) for k in ("x0", "y0", "x1", "y1")]
        assert float(row["energy"]) == pytest.approx(gc_energy(root / row["image"], box), rel=1e-4, abs=1e-6), row
    red_alone = next(row for row in rows if row["image"].endswith("a.png"))
    assert float(red_alone["pointing"]) == 1.0  # the mask's maxima are the red square's pixels


def test_paired_ap_intervals(runs):
    summary = runs["yolo"][1]
    ap = {(c["b"], c["measure"]): c for c in summary["comparisons"] if c["map"] is None and "class" not in c}
    same = ap[NAMES[1], "AP"]
    assert same["mean_diff"] == 0.0 and same["ci95"][0] <= 0.0 <= same["ci95"][1]
    worse = ap[NAMES[2], "AP"]
    assert worse["mean_diff"] == pytest.approx((3 / 8 + 1) / 2 - 1) and worse["ci95"][1] < 0
    assert worse["a_value"] == pytest.approx(1.0) and worse["b_value"] == pytest.approx((3 / 8 + 1) / 2)
    per_class = {(c["b"], c["measure"], c["class"]): c for c in summary["comparisons"] if "class" in c}
    assert per_class[NAMES[2], "AP", "blue"]["mean_diff"] == 0.0
    assert per_class[NAMES[2], "AP50", "red"]["mean_diff"] == pytest.approx(3 / 8 - 1)


def test_the_report_and_the_terminal_show_the_detection(runs):
    out, summary, done = runs["yolo"]
    report = (out / "report.html").read_text()
    assert "<h2>Detection</h2>" in report and "1 background," in report and "1 missed (white, dashed)" in report
    assert "detection (COCO AP" in done.stdout
    assert f"{NAMES[2]} - {NAMES[0]}: AP -0.312" in done.stdout


def test_a_reference_that_cannot_be_computed_costs_only_the_reference(tmp_path):
    """Grad-CAM of a detector whose scores do not depend on its layers (the test YOLO), and of one that detects
    nothing above --conf: every image keeps its block maps, each missing reference is counted once per image."""
    import attnlens
    from tests.app.test_datasets import write_squares

    yaml = write_squares(tmp_path / "squares", [
        ("one.png", (200, 160), [(40, 30, 90, 80)], [(0, (40, 30, 90, 80))]),
        ("two.png", (200, 160), [(100, 60, 150, 110)], [(0, (100, 60, 150, 110))]),
        ("three.png", (200, 160), [(10, 10, 60, 60)], [(0, (10, 10, 60, 60))])])
    recipe = {"input_size": 320, "resize": "letterbox", "normalize": "none", "device": "cpu"}
    summary = attnlens.evaluate([("v8", attnlens.load_model("tests.app.yolo_models:v8", **recipe)),
                                 ("blind", attnlens.load_model("tests.app.yolo_models:tuple_head", conf=0.99, **recipe))],
                                yaml, batch_size=2, reference="gradcam,eigencam")
    rows = {(row["model"], row["map"]): row for row in summary["rows"]}
    assert rows["v8", "model.ca"]["images"] == 3 and rows["blind", "model.3.1"]["images"] == 3
    assert ("v8", "reference/gradcam") not in rows and ("blind", "reference/gradcam") not in rows
    assert rows["v8", "reference/eigencam"]["images"] == 3  # no target needed: computed beside the failed one
    reasons = [s for s in summary["dataset"]["skipped"] if s["kind"].startswith("reference/gradcam")]
    assert len(reasons) == 6 and {s["file"] for s in reasons} == {"images/val/one.png", "images/val/two.png",
                                                                   "images/val/three.png"}
    assert all("nothing to explain" in s["reason"] for s in reasons if "blind" in s["reason"])
    assert all("does not depend" in s["reason"] for s in reasons if "v8" in s["reason"])


def test_the_skip_warning_counts_each_kind_of_reason(tmp_path):
    yaml, _ = write_dataset(tmp_path)
    (tmp_path / "labels" / "val" / "a.txt").write_text("0 0.25 0.41 0.25 0.33\nred 0.5 0.5 0.1 0.1\n5 0.5 0.5 0.1 0.1\n")
    (tmp_path / "images" / "val" / "f.png").write_bytes(b"not an image")
    done = subprocess.run([sys.executable, "-m", "attnlens", "eval", "--data", str(yaml), "--model",
                           "tests.app.labelled_data:red_context", "--reference", "none", "--workers", "0"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    warning = next(line for line in done.stderr.splitlines() if "warning" in line)
    assert "3 skipped: bad label row (2; first: labels/val/a.txt:2: not a number" in warning
    assert "unreadable image (1; first: images/val/f.png: unreadable image" in warning


@pytest.mark.parametrize("kind", ["ultralytics", "yolov5", "end2end"])
def test_the_shown_detections_narrowed_from_the_ap_ones_are_what_the_model_reads(kind):
    """One NMS serves both thresholds: the boxes read at conf 0.25 are those read at 0.001, above 0.25, the best
    100 (random overlapping boxes, distinct scores)."""
    import torch

    from attnlens.models.outputs import BoxReader

    torch.manual_seed(0)
    anchors, classes = 2000, 3
    xywh = torch.cat([torch.rand(2, anchors, 2) * 200, 10 + torch.rand(2, anchors, 2) * 40], 2)
    scores = torch.rand(2, anchors, classes)
    if kind == "ultralytics":
        output = (torch.cat([xywh, scores], 2).transpose(1, 2),)
    elif kind == "yolov5":
        output = (torch.cat([xywh, torch.rand(2, anchors, 1), scores], 2),)
    else:
        xyxy = torch.cat([xywh[..., :2], xywh[..., :2] + xywh[..., 2:]], 2)[:, :300]
        output = torch.cat([xyxy, scores[:, :300, :1], torch.randint(0, classes, (2, 300, 1)).float()], 2)
    shown = BoxReader(kind, classes, conf=0.25, iou=0.45, max_det=100)
    scoring = BoxReader(kind, classes, conf=0.001, iou=0.45, max_det=300)
    assert shown.narrows(scoring) and not scoring.narrows(shown)
    for direct, narrowed in zip(shown.read(output), shown.narrowed(scoring.read(output))):
        assert len(direct.scores) > 20
        torch.testing.assert_close(narrowed.boxes, direct.boxes)
        torch.testing.assert_close(narrowed.scores, direct.scores)
        assert torch.equal(narrowed.classes, direct.classes) and torch.equal(narrowed.rows, direct.rows)


def test_each_objects_measures_are_measure_on_that_object_alone():
    """``measure_map``'s per-object figures, computed in each object's window, against ``measure`` on the region of
    that object alone over the whole image (boxes, a polygon, a box off the image, a flat map)."""
    import torch

    from attnlens.evaluation.datasets import Object
    from attnlens.evaluation.measures import measure, measure_map, region_of

    torch.manual_seed(0)
    objects = [Object(0, (10.3, 5.2, 40.8, 30.1)), Object(1, (0, 0, 3, 3)), Object(0, (70, 50, 90, 60)),
               Object(1, (200, 200, 210, 210)),
               Object(0, (20, 20, 50, 45), polygon=((20, 20), (50, 25), (35, 45)))]
    for heatmap in (torch.rand(60, 80), torch.ones(60, 80), torch.zeros(60, 80).index_fill_(1, torch.tensor([12]), 1)):
        _, alone = measure_map(heatmap, {}, objects)
        for obj, (energy, pointing) in zip(objects, alone):
            expected = measure(heatmap, region_of([obj], 60, 80, "cpu"))
            assert energy == pytest.approx(expected["energy"], abs=1e-12)
            assert pointing == pytest.approx(expected["pointing"], abs=1e-12)
