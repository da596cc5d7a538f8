"""A real ultralytics YOLOv8n (optional test extra ``yolo-test``: ultralytics is AGPL-3.0 and never a
dependency of attnlens; without it this module is skipped). Built offline from its YAML with random
weights, a CoordAtt block inserted after SPPF, saved as ultralytics saves (the whole model in half
precision under ``model``), read back by attnlens as a trusted checkpoint: letterbox 640, the model's
own names, ultralytics' (N, 4 + nc, A) layout, the block's maps."""
import copy
import os

import pytest
import torch
from PIL import Image

os.environ.setdefault("YOLO_OFFLINE", "1")  # no connectivity check
os.environ.setdefault("YOLO_AUTOINSTALL", "False")
ultralytics = pytest.importorskip("ultralytics", reason="optional test extra: pip install -e '.[yolo-test]'")

from attnlens.analysis.engine import Engine  # noqa: E402
from attnlens.models import load_model  # noqa: E402
from attnlens.models.outputs import BoxReader  # noqa: E402
from tests.e2e.conftest import DATA  # noqa: E402
from tests.reference.official_blocks import OfficialCoordAtt  # noqa: E402


def yolov8n_with_coordatt():
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel("yolov8n.yaml", nc=2, verbose=False)
    model.names = {0: "cat", 1: "dog"}
    sppf = model.model[9]
    channels = sppf.cv2.conv.out_channels
    wrapped = torch.nn.Sequential(sppf, OfficialCoordAtt(channels, channels))
    for attribute in ("f", "i", "type", "np"):  # what ultralytics' forward reads from each layer
        setattr(wrapped, attribute, getattr(sppf, attribute))
    model.model[9] = wrapped
    return model.eval()


def test_real_yolov8n_checkpoint_with_coordatt(tmp_path):
    path = tmp_path / "best.pt"
    model = yolov8n_with_coordatt()
    torch.save({"epoch": -1, "model": copy.deepcopy(model).half(), "ema": None, "optimizer": None}, path)
    loaded = load_model(str(path), device="cpu", trust_checkpoint=True, conf=0.0, max_det=10)
    assert isinstance(loaded.reader, BoxReader) and loaded.reader.kind == "ultralytics"
    assert loaded.reader.num_classes == 2 and loaded.labels == ["cat", "dog"]
    assert (loaded.recipe.size, loaded.recipe.resize, loaded.recipe.normalize) == (640, "letterbox", "none")
    image = Image.open(DATA / "chelsea.jpg").convert("RGB")
    report = Engine(loaded).analyze(image)
    assert report["task"] == "detect" and 0 < len(report["detections"]) <= 10
    for detection in report["detections"]:
        x0, y0, x1, y1 = detection["box"]
        assert 0 <= x0 <= x1 <= image.width and 0 <= y0 <= y1 <= image.height
        assert detection["label"] in ("cat", "dog")
    (block,) = report["blocks"]
    assert block["type"] == "ca" and block["id"] == "model.9.1"


class TupleWrapped(torch.nn.Module):
    """A fork's wrapper that hands the DetectionModel's answer on inside a tuple."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.names = model.names

    def forward(self, x):
        return (self.model(x),)


@pytest.mark.parametrize("wrapped", [False, True])
def test_real_yolov8n_references_at_the_detect_heads_inputs(wrapped):
    """The default reference layers are what ultralytics' Detect takes (layers 15, 18, 21: P3, P4, P5), also with
    the answer wrapped in a tuple; every method gives a map on the stride-8 grid spanning [0, 1]."""
    from attnlens.analysis.options import AnalyzeOptions
    from attnlens.models.references import METHODS

    model = yolov8n_with_coordatt()
    module = TupleWrapped(model) if wrapped else model
    loaded = load_model(module, device="cpu", input_size=320, resize="letterbox", normalize="none", conf=0.0,
                        max_det=10)
    prefix = "model.model." if wrapped else "model."
    assert loaded.reference_layers == [f"{prefix}15", f"{prefix}18", f"{prefix}21"]
    image = Image.open(DATA / "chelsea.jpg").convert("RGB")
    for method in METHODS:
        report = Engine(loaded).analyze(image, AnalyzeOptions(reference=method, include_values=True))
        reference, size = report["reference"], report["input"]
        values = torch.tensor(reference["heatmap"]["values"])
        assert reference["layers"] == loaded.reference_layers
        assert tuple(values.shape) == (size["height"] // 8, size["width"] // 8)  # P3's grid, the finest
        assert values.min() == 0 and values.max() == pytest.approx(1.0, abs=1e-5), method
