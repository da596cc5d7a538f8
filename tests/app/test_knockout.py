"""Knockout through every route: the CLI's JSON (a model whose answer depends on its GC mask, equal to the same model
pooling by plain average), ``attnlens.analyze(knockout=True)``, the server's ``include=knockout`` (every block of the
default model, each saying what was replaced), and a detector's change (lost, gained, kept) on a hand-computed case."""
import json
import subprocess
import sys

import torch
from PIL import Image

import attnlens
from attnlens.analysis.knockout import _detection_change
from attnlens.models.inputs import InputGeometry
from attnlens.models.outputs import Detections
from tests.app.conftest import DATA
from tests.app.test_api import client_for, post

GC_MODEL = "tests.app.fork_models:gc_classifier"


def test_the_cli_knocks_out_a_gc_to_the_same_model_pooling_by_average(tmp_path):
    done = subprocess.run([sys.executable, "-m", "attnlens", "analyze", str(DATA / "chelsea.jpg"), "--model", GC_MODEL,
                           "--device", "cpu", "--knockout", "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    (entry,) = report["knockout"]
    assert entry["block"] == "gc" and entry["kind"] == "gc" and "plain average" in entry["replaced"]
    # independently: the same model, its GC pooling by average, on the same input
    model = attnlens.load_model(GC_MODEL, device="cpu")
    model.module.gc.pool = "avg"
    batch, _ = model.recipe.prepare(Image.open(DATA / "chelsea.jpg").convert("RGB"))
    with torch.no_grad():
        probabilities = torch.softmax(model.forward(batch), 1)[0]
    scores, indices = probabilities.topk(5)
    assert [p["index"] for p in entry["predictions"]] == indices.tolist()
    assert [p["score"] for p in entry["predictions"]] == [round(float(s), 6) for s in scores]
    top = report["predictions"][0]
    assert entry["change"]["top"]["index"] == top["index"]
    assert abs(entry["change"]["probability_after"] - float(probabilities[top["index"]])) < 1e-6
    assert entry["change"]["probability_change"] != 0  # the mask mattered


def test_python_and_the_server_give_every_block_an_entry(photos):
    analysis = attnlens.analyze(attnlens.load_model(GC_MODEL, device="cpu"), DATA / "chelsea.jpg", knockout=True)
    assert [entry["block"] for entry in analysis.report()["knockout"]] == ["gc"]
    with client_for() as client:
        answer = post(client, photos["cat"], include="knockout")
        assert answer.status_code == 200, answer.text
        report = answer.json()
        blocks = list(dict.fromkeys(block["id"].split("#")[0] for block in report["blocks"]))
        assert [entry["block"] for entry in report["knockout"]] == blocks
        for entry in report["knockout"]:
            assert entry["replaced"]
            if entry["kind"] == "spd":
                assert "no preference" in entry["skipped"] and "predictions" not in entry
            else:
                assert "skipped" not in entry and len(entry["predictions"]) == 5 and "top_kept" in entry["change"]
        assert report["timings_ms"]["knockout"] > 0
        assert "knockout" not in post(client, photos["cat"]).json()


def test_a_detectors_change_lost_gained_and_kept_by_hand():
    geometry = InputGeometry((100, 100), (0, 0, 100, 100), (100, 100))
    before = Detections(torch.tensor([[0, 0, 10, 10], [50, 50, 70, 70], [20, 20, 30, 30.]]), torch.tensor([.9, .8, .7]),
                        torch.tensor([0, 1, 0]), torch.arange(3))
    after = Detections(torch.tensor([[52, 52, 70, 70], [1, 0, 10, 10], [20, 20, 30, 30.], [80, 80, 90, 90]]),
                       torch.tensor([.85, .5, .6, .4]), torch.tensor([1, 0, 1, 0]), torch.arange(4))
    change = _detection_change(before, after, geometry)
    # 0 keeps 1 (IoU 0.9), 1 keeps 0 (IoU 324/400 = 0.81), 2's twin is of another class: lost; 2 and 3 gained
    assert change["lost"] == [2] and change["gained"] == [2, 3]
    assert [(k["index"], k["matched"]) for k in change["kept"]] == [(0, 1), (1, 0)]
    assert [k["iou"] for k in change["kept"]] == [0.9, 0.81]
    assert [k["score_change"] for k in change["kept"]] == [round(0.5 - 0.9, 6), round(0.85 - 0.8, 6)]
    assert change["mean_score_change"] == round((0.5 - 0.9 + 0.85 - 0.8) / 2, 6)


def test_eval_knockout_ranks_blocks_by_ap_change_equal_to_the_model_without_the_mask(tmp_path):
    from tests.app.labelled_data import write_dataset

    yaml, _ = write_dataset(tmp_path / "data")
    full = attnlens.evaluate([("gated", "tests.app.colour_detectors:context_gated")], yaml, reference="none",
                             knockout=True, out=tmp_path / "eval")
    average = attnlens.evaluate([("average", "tests.app.colour_detectors:context_gated_average")], yaml,
                                reference="none")["detection"]["average"]
    entries = full["knockout"]["gated"]
    assert [entry["block"] for entry in entries] == ["pool", "gc"]  # the block the answer relies on first
    pool = entries[0]
    before = full["detection"]["gated"]
    assert pool["AP"] == average["AP"] == 0.5 and pool["AP50"] == average["AP50"]
    assert pool["AP_change"]["mean"] == average["AP"] - before["AP"] == -0.5
    low, high = pool["AP_change"]["ci95"]
    assert low <= -0.5 <= high < 0
    assert entries[1]["AP_change"]["mean"] == 0  # its own GC feeds nothing the boxes depend on
    report = (tmp_path / "eval" / "report.html").read_text()
    assert "Knockout: how much each answer relies" in report and "-0.500" in report
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["knockout"] == full["knockout"]


def test_eval_knockout_of_a_classifier_is_its_top1_agreement(tmp_path):
    from tests.app.labelled_data import write_dataset

    yaml, _ = write_dataset(tmp_path / "data")
    summary = attnlens.evaluate([("red", "tests.app.colour_detectors:context_classifier")], yaml, reference="none",
                                knockout=True)
    (entry,) = summary["knockout"]["red"]
    model = attnlens.load_model("tests.app.colour_detectors:context_classifier", device="cpu")
    average = attnlens.load_model("tests.app.colour_detectors:context_classifier_average", device="cpu")
    paths = sorted((tmp_path / "data" / "images" / "val").iterdir())
    kept = [int(attnlens.analyze(model, path).predictions.argmax()) ==
            int(attnlens.analyze(average, path).predictions.argmax()) for path in paths]
    assert 0 < sum(kept) < len(kept)  # the mask decides some answers
    assert entry["images"] == len(paths) and entry["top1_agreement"]["mean"] == sum(kept) / len(kept)
