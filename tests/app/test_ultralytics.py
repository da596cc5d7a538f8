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
