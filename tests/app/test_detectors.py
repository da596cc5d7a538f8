"""Users' detectors: YOLO-style factories and checkpoints, torchvision detectors, models with no readable
output; letterbox geometry by hand; boxes back on the original image; trust; through the CLI and the server."""
import subprocess
import sys

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from attnlens.analysis.engine import Engine
from attnlens.models import InputRecipe, ModelLoadError, ModelSpec, load_model
from attnlens.models.outputs import BoxReader, MapsOnly, infer_reader
from attnlens.server import Settings, create_app
from tests.app.yolo_models import YoloDetector, save_checkpoint
from tests.e2e.conftest import DATA

SQUARE = (200, 100, 260, 150)  # x0, y0, x1, y1 of the white square, original-image pixels
YOLO_INPUT = {"input_size": 640, "resize": "letterbox", "normalize": "none"}


@pytest.fixture(scope="module")
def photo_with_square() -> Image.Image:
    """The cat photo (451 x 300) with a white square pasted at ``SQUARE``."""
    image = Image.open(DATA / "chelsea.jpg").convert("RGB")
    ImageDraw.Draw(image).rectangle((SQUARE[0], SQUARE[1], SQUARE[2] - 1, SQUARE[3] - 1), fill=(255, 255, 255))
    return image


def assert_square_found(report: dict, tolerance: float = 2.0) -> None:
    assert report["task"] == "detect" and "predictions" not in report
    (detection,) = report["detections"]  # the near-duplicate anchor was suppressed by NMS
    assert detection["label"] == "square" and detection["index"] == 0
    assert detection["score"] == pytest.approx(0.9)
    for found, expected in zip(detection["box"], SQUARE, strict=True):
        assert abs(found - expected) <= tolerance, (detection["box"], SQUARE)


def test_letterbox_geometry_by_hand():
    recipe = InputRecipe(640, "letterbox", "none")
    tensor, geometry = recipe.prepare(Image.new("RGB", (400, 250), (255, 0, 0)))
    # long side 400 -> 640 (scale 1.6): 640 x 400, padded to 640 x 416 (multiple of 32), 8 rows above and below
    assert tensor.shape == (1, 3, 416, 640) and geometry.content == (0, 8, 640, 408)
    assert torch.allclose(tensor[0, :, 0, 0], torch.full((3,), 114 / 255))  # grey padding
    assert torch.allclose(tensor[0, :, 200, 320], torch.tensor([1.0, 0.0, 0.0]))  # the image
    boxes = geometry.boxes_to_image(torch.tensor([[100.0, 108.0, 300.0, 208.0], [-50.0, 0.0, 700.0, 500.0]]))
    assert torch.allclose(boxes, torch.tensor([[62.5, 62.5, 187.5, 125.0], [0.0, 0.0, 400.0, 250.0]]))  # clipped


def test_short_side_geometry_by_hand():
    tensor, geometry = InputRecipe(224, "short-side", "imagenet").prepare(Image.new("RGB", (451, 300)))
    assert tensor.shape == (1, 3, 224, 337) and geometry.content == (0, 0, 337, 224)
    assert torch.allclose(geometry.boxes_to_image(torch.tensor([[0.0, 0.0, 337.0, 224.0]])),
                          torch.tensor([[0.0, 0.0, 451.0, 300.0]]))


@pytest.mark.parametrize("factory, layout", [("v8", "ultralytics"), ("v5", "yolov5"), ("end_to_end", "end2end")])
def test_yolo_layouts_put_the_box_where_the_object_is(factory, layout, photo_with_square):
    model = load_model(f"tests.app.yolo_models:{factory}", device="cpu", **YOLO_INPUT)
    assert isinstance(model.reader, BoxReader) and model.reader.kind == layout
    assert model.labels == ["square", "other"]  # from the model's names
    report = Engine(model).analyze(photo_with_square)
    assert_square_found(report)
    assert {block["type"] for block in report["blocks"]} == {"ca", "gc", "dcn"}  # every block's maps


def test_factory_may_return_a_spec_with_its_own_input_recipe(monkeypatch, photo_with_square):
    import tests.app.yolo_models as zoo

    monkeypatch.setattr(zoo, "spec", lambda: ModelSpec(YoloDetector("v8"), 640, "letterbox", "none",
                                                        labels=["square", "other"]), raising=False)
    model = load_model("tests.app.yolo_models:spec", device="cpu")
    assert (model.recipe.size, model.recipe.resize, model.recipe.normalize) == (640, "letterbox", "none")
    assert_square_found(Engine(model).analyze(photo_with_square))


def test_checkpoint_refused_untrusted_and_read_trusted(tmp_path, photo_with_square):
    path = tmp_path / "best.pt"
    save_checkpoint(path, "v5")
    with pytest.raises(ModelLoadError, match="--trust-checkpoint") as refused:
        load_model(str(path), device="cpu")
    assert "runs code" in str(refused.value)
    model = load_model(str(path), device="cpu", trust_checkpoint=True)
    assert (model.recipe.size, model.recipe.resize, model.recipe.normalize) == (640, "letterbox", "none")  # YOLO's
    assert next(model.module.parameters()).dtype == torch.float32  # saved in half precision, run in float
    assert_square_found(Engine(model).analyze(photo_with_square))


def test_state_dict_given_as_model_says_what_to_do(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(YoloDetector().state_dict(), path)
    with pytest.raises(ModelLoadError, match="weights only .* --weights"):
        load_model(str(path), device="cpu")


def test_torchvision_detector_with_a_block():
    model = load_model("tests.app.yolo_models:torchvision_detector", device="cpu", conf=0.0, max_det=5)
    assert model.takes_image_list and model.reader.kind == "torchvision" and model.task == "detect"
    assert model.recipe.normalize == "none" and model.recipe.size == 320  # it normalises and resizes inside
    image = Image.open(DATA / "coffee.jpg").convert("RGB")
    report = Engine(model).analyze(image)
    assert 0 < len(report["detections"]) <= 5
    scores = [d["score"] for d in report["detections"]]
    assert scores == sorted(scores, reverse=True)
    for detection in report["detections"]:
        x0, y0, x1, y1 = detection["box"]
        assert 0 <= x0 <= x1 <= image.width and 0 <= y0 <= y1 <= image.height
    assert [block["type"] for block in report["blocks"]] == ["ca"]


def test_features_only_model_shows_maps_and_says_why_no_predictions(photo_with_square):
    model = load_model("tests.app.yolo_models:features", device="cpu")
    assert isinstance(model.reader, MapsOnly) and model.task == "maps"
    report = Engine(model).analyze(photo_with_square)
    assert "predictions" not in report and "detections" not in report
    assert "no predictions" in report["note"] and "dict" in report["note"]
    assert {block["type"] for block in report["blocks"]} == {"ca", "gc", "dcn"}


def test_explicit_task_is_checked_and_errors_are_one_line():
    with pytest.raises(ModelLoadError, match="task classify needs class logits"):
        load_model("tests.app.yolo_models:v8", device="cpu", task="classify", **YOLO_INPUT)
    with pytest.raises(ModelLoadError, match=r"raised RuntimeError: my factory is broken"):
        load_model("tests.app.yolo_models:raises", device="cpu")
    assert load_model("tests.app.yolo_models:v8", device="cpu", task="maps", **YOLO_INPUT).task == "maps"


def test_extra_channels_after_the_classes_are_named():
    segmentation = (torch.zeros(1, 4 + 2 + 32, 300), torch.zeros(1, 32, 160, 160))
    reader = infer_reader((segmentation, [torch.zeros(1)]), 1, num_classes=2)
    assert reader.kind == "ultralytics" and reader.num_classes == 2 and "32 segmentation mask" in reader.note
    pose = infer_reader(torch.zeros(1, 4 + 1 + 51, 300), 1, num_classes=1)
    assert "17 pose keypoints" in pose.note


def test_box_decoding_by_hand():
    """YOLOv5: confidence = objectness x class score; class-wise NMS; max_det; threshold."""
    rows = torch.tensor([[[50.0, 50.0, 20.0, 20.0, 0.8, 0.9, 0.1],   # 0.72, class 0
                          [51.0, 50.0, 20.0, 20.0, 0.7, 0.9, 0.1],   # 0.63, class 0, overlaps -> suppressed
                          [51.0, 50.0, 20.0, 20.0, 0.7, 0.1, 0.8],   # 0.56, class 1: other class, kept
                          [10.0, 10.0, 4.0, 4.0, 0.5, 0.4, 0.1]]])  # 0.20 < 0.25
    reader = infer_reader((rows, []), 1, num_classes=2)
    (found,) = reader.read((rows, []))
    assert torch.allclose(found.scores, torch.tensor([0.72, 0.56])) and found.classes.tolist() == [0, 1]
    assert torch.allclose(found.boxes[0], torch.tensor([40.0, 40.0, 60.0, 60.0]))
    limited = BoxReader("yolov5", 2, max_det=1).read((rows, []))[0]
    assert limited.scores.tolist() == pytest.approx([0.72])


def test_cli_refuses_then_reads_a_checkpoint(tmp_path, photo_with_square):
    path = tmp_path / "best.pt"
    save_checkpoint(path, "v8")
    image = tmp_path / "square.jpg"
    photo_with_square.save(image, quality=95)
    refused = subprocess.run([sys.executable, "-m", "attnlens", "analyze", str(image), "--model", str(path),
                              "--device", "cpu"], capture_output=True, text=True)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.count("\n") == 1 and "--trust-checkpoint" in refused.stderr
    run = subprocess.run([sys.executable, "-m", "attnlens", "analyze", str(image), "--model", str(path),
                          "--trust-checkpoint", "--device", "cpu", "--json", "--out", str(tmp_path / "out")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    import json

    assert_square_found(json.loads(run.stdout), tolerance=3.0)  # JPEG edges
    assert (tmp_path / "out" / "square" / "detections.png").is_file()
    import os

    from_environment = subprocess.run([sys.executable, "-m", "attnlens", "analyze", str(image), "--model", str(path),
                                       "--json"], capture_output=True, text=True,
                                      env={**os.environ, "ATTNLENS_TRUST_CHECKPOINT": "1", "ATTNLENS_DEVICE": "cpu"})
    assert from_environment.returncode == 0, from_environment.stderr  # the same ATTNLENS_* options as serve
    assert_square_found(json.loads(from_environment.stdout), tolerance=3.0)


def test_server_serves_a_detector_checkpoint(tmp_path, photo_with_square):
    import io

    path = tmp_path / "best.pt"
    save_checkpoint(path, "v8")
    settings = Settings(model=str(path), trust_checkpoint=True, device="cpu")
    with TestClient(create_app(settings, load_in_background=False)) as client:
        description = client.get("/api/v1/model").json()
        assert description["task"] == "detect" and description["input"] == {"size": 640, "resize": "letterbox",
                                                                            "normalize": "none"}
        buffer = io.BytesIO()
        photo_with_square.save(buffer, format="PNG")
        response = client.post("/api/v1/analyze", files={"file": ("square.png", buffer.getvalue(), "image/png")})
        assert response.status_code == 200
        assert_square_found(response.json())


@pytest.mark.parametrize("name, text", [
    ("labels.txt", "square\nother\n"),
    ("data.yaml", "path: ../datasets\nnames: ['square', 'other']\n"),
    ("data.yml", "nc: 2\nnames:\n  0: square\n  1: other\n"),
    ("list.yaml", "names:\n  - square\n  - other\n"),
])
def test_labels_from_lines_or_yolo_yaml(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    model = load_model("tests.app.yolo_models:features", device="cpu", labels=str(path))
    assert model.labels == ["square", "other"]


def test_bad_labels_file_is_one_clear_error(tmp_path):
    path = tmp_path / "data.yaml"
    path.write_text("names: 3\n")
    with pytest.raises(ModelLoadError, match="'names' must be a list or a dict"):
        load_model("tests.app.yolo_models:features", device="cpu", labels=str(path))
    with pytest.raises(ModelLoadError, match="cannot read labels"):
        load_model("tests.app.yolo_models:features", device="cpu", labels=str(tmp_path / "missing.txt"))
