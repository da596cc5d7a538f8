"""``attnlens eval --data``: datasets as users have them (YOLO, COCO), the measures against a computation written
out here, the letterbox undone, comparisons, the files; through the CLI process."""
import csv
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from attnlens.evaluation import DataError, read_dataset
from attnlens.evaluation.datasets import Object
from attnlens.evaluation.measures import measure, region_of, to_image
from attnlens.models import InputGeometry
from tests.app.labelled_data import IMAGES, write_dataset


def hand_measures(values: np.ndarray, boxes, tolerance=15.0) -> dict:
    """energy, area, lift, pointing by loops over pixel centres (independent of attnlens' code)."""
    height, width = values.shape
    inside = np.zeros((height, width), bool)
    near = np.zeros((height, width), bool)
    for i in range(height):
        for j in range(width):
            y, x = i + 0.5, j + 0.5
            for x0, y0, x1, y1 in boxes:
                if x0 <= x < x1 and y0 <= y < y1:
                    inside[i, j] = True
                dx, dy = max(x0 - x, 0, x - x1), max(y0 - y, 0, y - y1)
                if math.hypot(dx, dy) <= tolerance:
                    near[i, j] = True
    low, high = values.min(), values.max()
    normalised = (values - low) / (high - low) if high > low else np.ones_like(values)
    energy = (normalised * inside).sum() / normalised.sum()
    area = inside.mean()
    return {"energy": energy, "area": area, "lift": energy / area, "pointing": near[values >= high].mean()}


def test_measures_equal_the_hand_computation():
    rng = np.random.default_rng(0)
    values = rng.random((30, 40)).astype(np.float32)
    boxes = [(5.2, 3.0, 17.9, 12.5), (30.0, 20.0, 38.0, 29.0)]
    got = measure(torch.from_numpy(values), region_of([Object(0, b) for b in boxes], 30, 40, "cpu"))
    expected = hand_measures(values, boxes)
    for name in expected:
        assert got[name] == pytest.approx(expected[name], rel=1e-5, abs=1e-7), name
    flat = measure(torch.ones(30, 40), region_of([Object(0, boxes[0])], 30, 40, "cpu"))
    assert flat["lift"] == pytest.approx(1.0) and flat["energy"] == pytest.approx(flat["area"])  # uniform: chance


def bilinear_by_hand(cells: np.ndarray, x: float, y: float) -> float:
    """Sample ``cells`` at continuous cell coordinates (cell centres at i + 0.5), edges clamped."""
    h, w = cells.shape
    u, v = min(max(x - 0.5, 0), w - 1), min(max(y - 0.5, 0), h - 1)
    j, i = min(int(u), w - 2), min(int(v), h - 2)
    fu, fv = u - j, v - i
    return ((1 - fu) * (1 - fv) * cells[i, j] + fu * (1 - fv) * cells[i, j + 1] + (1 - fu) * fv * cells[i + 1, j]
            + fu * fv * cells[i + 1, j + 1])


def test_the_letterbox_is_undone():
    """A 12 x 8 map over a 96 x 64 letterbox input whose image (300 x 150) lies at rows 8-56: each image pixel's
    centre goes back through the padding and the scale to the map."""
    cells = np.random.default_rng(1).random((8, 12)).astype(np.float32)
    geometry = InputGeometry(size=(96, 64), content=(0, 8, 96, 56), image_size=(300, 150))
    got = to_image(torch.from_numpy(cells), geometry).numpy()
    assert got.shape == (150, 300)
    for i, j in ((0, 0), (75, 150), (149, 299), (10, 250)):
        x_in, y_in = (j + 0.5) * 96 / 300, 8 + (i + 0.5) * 48 / 150  # input pixels
        assert got[i, j] == pytest.approx(bilinear_by_hand(cells, x_in * 12 / 96, y_in * 8 / 64), abs=1e-5)


def test_yolo_and_coco_give_the_same_objects(tmp_path):
    yaml, coco = write_dataset(tmp_path)
    from_yolo, from_coco = read_dataset(yaml), read_dataset(coco, images=tmp_path / "images" / "val")
    assert from_yolo.classes == from_coco.classes == ["red", "blue"]
    by_name = {image.id.split("/")[-1]: image for image in from_yolo.images}
    for name, (width, height), objects in IMAGES:
        for dataset_image in (by_name[name], next(i for i in from_coco.images if i.id == name)):
            placed = [o.in_pixels(width, height) for o in dataset_image.objects]
            assert [(o.index, tuple(round(v, 6) for v in o.box)) for o in placed] == \
                [(index, tuple(map(float, box))) for index, box in objects]
    assert from_yolo.backgrounds == 1 and from_yolo.objects == 5


def test_bad_rows_and_files_are_skipped_and_named(tmp_path):
    yaml, coco = write_dataset(tmp_path)
    label = tmp_path / "labels" / "val" / "a.txt"
    label.write_text(label.read_text() + "0 0.5 0.5 0.2\n5 0.5 0.5 0.1 0.1\nx 0.1 0.1 0.1 0.1\n0 1.5 0.5 0.1 0.1\n")
    dataset = read_dataset(yaml)
    assert [(s.file, s.line, s.reason.split(" ")[0]) for s in dataset.skipped] == [
        ("labels/val/a.txt", 2, "4"), ("labels/val/a.txt", 3, "unknown"), ("labels/val/a.txt", 4, "not"),
        ("labels/val/a.txt", 5, "coordinates")]
    assert len(next(i for i in dataset.images if i.id.endswith("a.png")).objects) == 1  # the good row kept
    with pytest.raises(DataError, match="no 'test' split"):
        read_dataset(yaml, split="test")
    assert len(read_dataset(yaml, limit=2).images) == 2 and read_dataset(yaml, limit=2).images == \
        read_dataset(yaml, limit=2).images  # a seeded sample
    assert read_dataset(yaml, classes=["blue"]).objects == 2


def attnlens(*args):
    return subprocess.run([sys.executable, "-m", "attnlens", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def test_eval_scores_compares_and_writes_its_files(tmp_path):
    yaml, _ = write_dataset(tmp_path / "data")
    (tmp_path / "data" / "images" / "val" / "f.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    result = attnlens("eval", "--data", yaml, "--model", "tests.app.labelled_data:flat_context", "--model",
                      "tests.app.labelled_data:red_context", "--out", out, "--device", "cpu", "--workers", "0",
                      "--reference", "none", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    flat, red = "tests.app.labelled_data:flat_context", "tests.app.labelled_data:red_context"
    assert summary["models"] == [flat, red]
    assert summary["dataset"]["images"] == 5 and summary["dataset"]["backgrounds"] == 1
    assert [s["file"] for s in summary["dataset"]["skipped"]] == ["images/val/f.png"]
    rows = {(row["model"], row["map"]): row for row in summary["rows"]}
    gc_flat, gc_red = rows[(flat, "0")], rows[(red, "0")]
    assert gc_flat["type"] == "gc" and gc_flat["images"] == 4
    assert gc_flat["lift"]["mean"] == pytest.approx(1.0, abs=1e-4)  # a uniform mask: chance
    assert gc_red["energy"]["mean"] > 0.5 and gc_red["lift"]["ci95"][0] > 2
    assert gc_red["by_class"]["red"]["energy"]["mean"] > gc_red["by_class"]["blue"]["energy"]["mean"]
    assert set(gc_red["by_size"]) == {"small", "medium"}
    comparison = next(c for c in summary["comparisons"] if c["map"] == "0" and c["measure"] == "energy")
    assert comparison["a"] == flat and comparison["b"] == red and comparison["ci95"][0] > 0
    assert comparison["b_higher_share"] == 0.75  # higher on the three images with red; c.png has only blue
    with open(out / "per_image.csv") as file:
        table = list(csv.DictReader(file))
    assert len(table) == 4 * 2 * 3  # images with objects x models x maps (the block, the two baselines)
    energies = [float(r["energy"]) for r in table if r["model"] == red and r["map"] == "0"]
    assert np.mean(energies) == pytest.approx(gc_red["energy"]["mean"], rel=1e-5)
    low, high = gc_red["energy"]["ci95"]
    assert low <= gc_red["energy"]["mean"] <= high
    assert (out / "report.html").stat().st_size > 1000 and (out / "figure.png").is_file() and (out / "figure.pdf").is_file()
    page = (out / "report.html").read_text()
    assert not any(f'{attribute}="http' in page for attribute in ("src", "href")) and "url(http" not in page
    assert page.count("data:image/jpeg;base64,") == 2 * 2 * 4  # per model's block map: its 4 images best and worst


def test_eval_mistakes_are_one_line(tmp_path):
    missing = attnlens("eval", "--data", tmp_path / "nope.yaml")
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0 and "not found" in missing.stderr


def test_coco_and_yolo_give_the_same_summary_and_sizes_by_hand(tmp_path):
    import attnlens

    yaml, coco = write_dataset(tmp_path)
    models = [("red", "tests.app.labelled_data:red_context")]
    from_yolo = attnlens.evaluate(models, yaml, reference="none", workers=0, out=tmp_path / "yolo")
    from_coco = attnlens.evaluate(models, coco, images=tmp_path / "images" / "val", reference="none", workers=0)
    for a, b in zip(from_yolo["rows"], from_coco["rows"]):
        assert a["map"] == b["map"] and a["energy"]["mean"] == pytest.approx(b["energy"]["mean"])
        assert {k: v["energy"]["mean"] for k, v in a["by_size"].items()} == \
            pytest.approx({k: v["energy"]["mean"] for k, v in b["by_size"].items()})
    gc = next(row for row in from_yolo["rows"] if row["map"] == "0")
    with open(tmp_path / "yolo" / "per_image.csv") as file:
        energy = {r["image"]: float(r["energy"]) for r in csv.DictReader(file) if r["map"] == "0"}
    # small (< 32^2 px): d.png's 10 x 10 and b.png's blue 30 x 30; medium: a's, b's red and c's
    assert gc["by_size"]["small"]["images"] == 2 and gc["by_size"]["medium"]["images"] == 3
    # the red class on the images that have it: a, b, d; a and d have nothing else, so their red energy is theirs
    assert gc["by_class"]["red"]["energy"]["mean"] > gc["by_class"]["blue"]["energy"]["mean"]
    assert min(energy["images/val/a.png"], energy["images/val/d.png"]) > 0.9  # the mask reads red
    assert gc["by_class"]["blue"]["images"] == 2 and gc["by_class"]["red"]["images"] == 3
