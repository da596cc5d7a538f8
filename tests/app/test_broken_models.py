"""Users' models that fail, lie or print after they load (tests/app/broken_models.py), as users run them: the
``attnlens analyze`` process and a real server process. Every case is one line naming the model (or a JSON error
naming it), answers are valid JSON with finite numbers, and the server goes on serving."""
import json
import subprocess
import sys

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.app.conftest import DATA
from tests.helpers import png_of
from tests.serving import running_server

BROKEN = "tests.app.broken_models"
PHOTO = DATA / "chelsea.jpg"  # 451 x 300: not square


def attnlens(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "attnlens", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def strict_json(text: str):
    """JSON as a strict parser reads it: NaN and Infinity are not JSON."""
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


def one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize("factory, extra, says", [
    ("square_only", [], "AssertionError: expected a square input"),
    ("changes_after_probe", [], "its output is not laid out as in the probe pass"),
    ("cpu_out_of_memory", [], "ran out of memory on this image: RuntimeError: out of memory on the CPU"),
    ("accelerator_out_of_memory", [], "ran out of memory on this image: OutOfMemoryError: CUDA out of memory"),
    ("raises_base_exception", [], "Watchdog: frame took too long"),
    ("exits_in_forward", [], "SystemExit(3): its code called sys.exit"),
    ("backward_fails", ["--gradcam"], "failed in the reference map's backward pass: RuntimeError: this fork's "
                                      "custom op"),
])
def test_a_model_failing_on_the_image_is_one_line_naming_model_and_image(factory, extra, says):
    result = attnlens("analyze", PHOTO, "--model", f"{BROKEN}:{factory}", "--device", "cpu", "--json", *extra)
    assert result.returncode == 1 and result.stdout == ""
    line = one_line(result.stderr)
    assert line.startswith(f"attnlens: {PHOTO}: the model {BROKEN}:{factory} ") and says in line, line


def test_an_in_place_change_of_the_input_works_under_gradcam():
    """Grad-CAM's graph starts at its layer, so the input needs no gradient and may be changed in place."""
    result = attnlens("analyze", PHOTO, "--model", f"{BROKEN}:in_place_on_input", "--device", "cpu", "--json",
                      "--gradcam", "--normalize", "none")
    assert result.returncode == 0, result.stderr
    assert strict_json(result.stdout)["reference"]["method"] == "gradcam"


def test_several_images_go_on_after_a_failure_and_sum_up(tmp_path):
    square = tmp_path / "square.png"
    Image.open(PHOTO).convert("RGB").crop((0, 0, 300, 300)).save(square)
    result = attnlens("analyze", PHOTO, square, "--model", f"{BROKEN}:square_only", "--device", "cpu", "--json")
    assert result.returncode == 1
    assert [json.loads(line)["image"] for line in result.stdout.splitlines()] == [{"width": 300, "height": 300}]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and "AssertionError" in lines[0] and lines[1] == "attnlens: 1 of 2 images failed"


def test_nan_class_scores_are_left_out_and_said():
    some = strict_json(attnlens("analyze", PHOTO, "--model", f"{BROKEN}:nan_logits", "--device", "cpu",
                                "--json").stdout)
    assert len(some["predictions"]) == 5 and 3 not in [p["index"] for p in some["predictions"]]
    assert sum(p["score"] for p in some["predictions"]) <= 1 + 1e-6
    assert "1 of 10 class scores are not finite" in some["note"]
    none = strict_json(attnlens("analyze", PHOTO, "--model", f"{BROKEN}:all_nan", "--device", "cpu", "--json").stdout)
    assert none["predictions"] == [] and "10 of 10 class scores are not finite" in none["note"]


def test_bad_boxes_are_dropped_ordered_and_clipped():
    report = strict_json(attnlens("analyze", PHOTO, "--model", f"{BROKEN}:bad_boxes", "--device", "cpu",
                                  "--json").stdout)
    boxes = [detection["box"] for detection in report["detections"]]
    assert len(boxes) == 1  # of three confident anchors: one NaN, one reversed (kept, in order), one zero-width
    (x0, y0, x1, y1), = boxes
    assert 0 <= x0 < x1 <= 451 and 0 <= y0 < y1 <= 300
    assert "2 candidate detections left out" in report["note"]


def test_nan_heatmap_cells_are_masked_and_said():
    result = attnlens("analyze", PHOTO, "--model", f"{BROKEN}:nan_in_a_block", "--device", "cpu", "--json",
                      "--values", "--maps")
    assert result.returncode == 0, result.stderr
    report = strict_json(result.stdout)
    (block,) = report["blocks"]
    values = np.array([[np.nan if v is None else v for v in row] for row in block["heatmap"]["values"]])
    h, w = values.shape
    expected = np.zeros((h, w), dtype=bool)
    expected[0, :] = expected[:, 0] = True  # the NaN position's row gate and column gate
    assert np.array_equal(np.isnan(values), expected)
    assert block["heatmap"]["masked"] == h + w - 1 and all(np.isfinite(block["heatmap"]["range"]))
    assert f"{block['id']}: {h + w - 1} of {h * w} heatmap cells are not finite" in report["note"]
    png = np.asarray(png_of(block["heatmap"]["png"]).convert("RGB"))
    assert (png[0, 0] == 128).all() and (png[1, 1] != 128).any()  # masked grey, the rest coloured
    assert any(v is None for v in block["maps"]["a_h_mean"])  # summaries: null, not NaN


def test_labels_that_do_not_fit_warn_once_and_name_the_rest(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("tabby\ntiger\nlynx\n")
    result = attnlens("analyze", PHOTO, "--labels", labels, "--device", "cpu", "--json")
    assert result.returncode == 0, result.stderr
    assert one_line(result.stderr) == "attnlens: warning: efficientnet_lite0: 3 labels for 1000 classes: classes 3 " \
                                      "to 999 are named 'class N'"
    assert all(p["label"].startswith("class ") for p in strict_json(result.stdout)["predictions"] if p["index"] > 2)
    from attnlens.models import load_model

    named = load_model(f"{BROKEN}:names_dict", device="cpu")  # a ModelSpec with YOLO's names dict
    assert named.labels == ["zero", "one", "two"] and named.label(5) == "class 5"
    assert named.warnings == [f"{BROKEN}:names_dict: 3 labels for 10 classes: classes 3 to 9 are named 'class N'"]


def test_torchscript_is_read_without_maps_and_meta_is_refused():
    scripted = attnlens("analyze", PHOTO, "--model", f"{BROKEN}:scripted", "--device", "cpu", "--json")
    assert scripted.returncode == 0, scripted.stderr
    report = strict_json(scripted.stdout)
    assert len(report["predictions"]) == 5 and report["blocks"] == []
    assert "is a TorchScript module" in scripted.stderr and "Traceback" not in scripted.stderr
    gradcam = attnlens("analyze", PHOTO, "--model", f"{BROKEN}:scripted", "--device", "cpu", "--gradcam")
    assert gradcam.returncode == 1 and "no reference map can read" in gradcam.stderr and "TorchScript" in gradcam.stderr
    meta = attnlens("analyze", PHOTO, "--model", f"{BROKEN}:on_meta", "--device", "cpu")
    assert meta.returncode == 2 and "meta device" in one_line(meta.stderr)


def test_a_model_that_prints_leaves_stdout_one_json_object():
    result = attnlens("analyze", PHOTO, "--model", f"{BROKEN}:prints", "--device", "cpu", "--json")
    assert result.returncode == 0
    strict_json(result.stdout)  # exactly one document: the model's prints went to stderr
    assert "fork debug: input" in result.stderr


@pytest.mark.parametrize("factory, says", [
    ("exits_in_factory", "raised SystemExit(0): its code called sys.exit"),
    ("base_exception_in_factory", "raised Watchdog: the license server did not answer"),
    ("loads_wrong_weights", "the weights do not fit Classifier: 3 missing (first features.0.weight); 1 unexpected "
                            "(first extra.bias); 1 misshapen (first head.weight) keys"),
])
def test_loading_failures_are_one_line(factory, says):
    result = attnlens("analyze", PHOTO, "--model", f"{BROKEN}:{factory}", "--device", "cpu")
    assert result.returncode == 2 and says in one_line(result.stderr)


def test_library_messages_are_summarised_in_one_line(tmp_path):
    import torch

    pickled = tmp_path / "objects.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "config": Image.new("RGB", (1, 1))}, pickled)
    weights = attnlens("analyze", PHOTO, "--model", "tests.app.user_models:tiny", "--weights", pickled)
    line = one_line(weights.stderr)
    assert weights.returncode == 2 and "Python objects besides tensors" in line and "weights_only=False" not in line
    labels = tmp_path / "data.yaml"
    labels.write_text("names:\n  - cat\n  - [dog\n")
    yaml = attnlens("analyze", PHOTO, "--labels", labels)
    assert yaml.returncode == 2 and "(line " in one_line(yaml.stderr)


def test_the_server_answers_a_failing_model_with_its_error_and_goes_on(tmp_path):
    models = tmp_path / "models.toml"
    models.write_text("\n".join(f'[[models]]\nname = "{name}"\nmodel = "{model}"\n' for name, model in (
        ("default", "efficientnet_lite0"), ("square", f"{BROKEN}:square_only"),
        ("watchdog", f"{BROKEN}:raises_base_exception"), ("exits", f"{BROKEN}:exits_in_forward"),
        ("nan", f"{BROKEN}:nan_in_a_block"), ("memory", f"{BROKEN}:cpu_out_of_memory"),
        ("gpu-memory", f"{BROKEN}:accelerator_out_of_memory"))))
    photo = PHOTO.read_bytes()
    with running_server(args=("--models", str(models))) as (base, process), httpx.Client(base_url=base) as client:
        def post(name):
            return client.post("/api/v1/analyze", params={"model": name, "include": "values"},
                               files={"file": ("photo.jpg", photo, "image/jpeg")})

        for name, raised in (("square", "AssertionError: expected a square input"), ("watchdog", "Watchdog: frame "
                             "took too long"), ("exits", "SystemExit(3)"), ("memory", "RuntimeError: out of memory on the CPU")):
            failed = post(name)
            assert failed.status_code == 502 and failed.headers["content-type"] == "application/json"
            body = failed.json()
            assert body["model"] == name and body["raised"].startswith(raised) and f"the model {name} " in body["detail"]
            assert failed.headers.get("connection") != "close"
            assert post("default").status_code == 200  # the next request, on the same connection
        full = post("gpu-memory")  # an accelerator's memory, which other work holds: try again (the model did not fail)
        assert full.status_code == 503 and full.headers["Retry-After"] and "out of memory" in full.json()["detail"]
        assert post("default").status_code == 200
        nan = post("nan")
        assert nan.status_code == 200
        strict_json(nan.text)
        assert nan.json()["blocks"][0]["heatmap"]["masked"] > 0
        assert client.get("/healthz").json() == {"status": "ok"} and process.poll() is None
    log = process.stdout.read()
    assert "model square failed" in log or "the model square failed" in log
    assert "AssertionError" in log and "Traceback" in log  # the traceback is logged, not sent


@pytest.mark.parametrize("factory, says", [("base_exception_in_factory", "Watchdog: the license server did not "
                                                                         "answer"),
                                           ("exits_in_factory", "SystemExit(0)")])
def test_serve_stops_with_one_line_when_a_model_cannot_load(tmp_path, factory, says):
    models = tmp_path / "models.toml"
    models.write_text(f'[[models]]\nname = "default"\nmodel = "efficientnet_lite0"\n\n'
                      f'[[models]]\nname = "broken"\nmodel = "{BROKEN}:{factory}"\n')
    result = subprocess.run([sys.executable, "-m", "attnlens", "serve", "--models", str(models), "--port", "0",
                             "--device", "cpu", "--log-level", "critical"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert line.startswith("attnlens: the model broken could not be loaded") and says in line, line
