"""Labelled datasets the tests write: the same images and boxes as a YOLO data.yaml and as a COCO JSON, and models
whose maps are known by construction (a GC block whose context mask reads the red channel)."""
import json
import time
from dataclasses import replace
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from torch import nn

from attnlens.blocks import CB2d
from attnlens.models import ModelSpec

# (file, size, [(class, box x0, y0, x1, y1)]): red squares (class 0) and blue ones (class 1) on grey
IMAGES = [
    ("a.png", (160, 120), [(0, (20, 30, 60, 70))]),
    ("b.png", (160, 120), [(0, (100, 10, 150, 60)), (1, (10, 80, 40, 110))]),
    ("c.png", (120, 160), [(1, (30, 40, 130 - 30, 100))]),
    ("d.png", (160, 120), [(0, (70, 50, 80, 60))]),  # small (10 x 10)
    ("e.png", (160, 120), []),  # a background
]
COLOURS = {0: (230, 30, 30), 1: (30, 30, 230)}


def write_dataset(root: Path) -> tuple[Path, Path]:
    """Write the images, YOLO labels, data.yaml and a COCO JSON; returns (data.yaml, instances.json)."""
    (root / "images" / "val").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    coco = {"images": [], "annotations": [], "categories": [{"id": 7, "name": "red"}, {"id": 9, "name": "blue"}]}
    for number, (name, (width, height), objects) in enumerate(IMAGES):
        image = Image.new("RGB", (width, height), (128, 128, 128))
        draw = ImageDraw.Draw(image)
        rows = []
        for index, (x0, y0, x1, y1) in objects:
            draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=COLOURS[index])
            rows.append(f"{index} {(x0 + x1) / 2 / width} {(y0 + y1) / 2 / height} {(x1 - x0) / width} "
                        f"{(y1 - y0) / height}")
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": number,
                                        "category_id": (7, 9)[index], "bbox": [x0, y0, x1 - x0, y1 - y0]})
        image.save(root / "images" / "val" / name)
        if objects:
            (root / "labels" / "val" / name).with_suffix(".txt").write_text("\n".join(rows) + "\n")
        coco["images"].append({"id": number, "file_name": name, "width": width, "height": height})
    (root / "data.yaml").write_text("path: .\nval: images/val\nnames: {0: red, 1: blue}\n")
    (root / "instances.json").write_text(json.dumps(coco))
    return root / "data.yaml", root / "instances.json"


def _gc_model(weight: float) -> ModelSpec:
    block = CB2d(3, fusions=["channel_add"], ratio=1.0)
    with torch.no_grad():
        block.conv_mask.weight.zero_()
        block.conv_mask.weight[0, 0] = weight  # the mask's logits: weight x red (input in [0, 1])
        block.conv_mask.weight[0, 2] = -weight / 2
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the same model in every process that builds it (the Ray workers do too)
        head = nn.Linear(3, 2)
    model = nn.Sequential(block, nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)
    return ModelSpec(model, input_size=96, resize="letterbox", normalize="none", task="classify", labels=["a", "b"])


def red_context():
    """GC whose context mask is softmax(20 * red - 10 * blue): it attends to the red squares."""
    return _gc_model(20.0)


def flat_context():
    """The same with a zero mask conv: a uniform context mask."""
    return _gc_model(0.0)


class _Unhurried(nn.Module):
    """A model that takes ``seconds`` more for each forward."""

    def __init__(self, model: nn.Module, seconds: float):
        super().__init__()
        self.model, self.seconds = model, seconds

    def forward(self, x):
        time.sleep(self.seconds)
        return self.model(x)


def unhurried_red_context():
    """``red_context`` taking half a second more a forward: a run long enough to lose a node in."""
    spec = red_context()
    return replace(spec, module=_Unhurried(spec.module, 0.5))
