"""YOLO-style detectors written the way users write them, for the tests of users' detectors.

A small backbone with the official-code blocks users paste into their forks (``CoordAtt``, GCNet's
``CB2d``, a fork's ``conv_offset_mask`` DCNv2), and heads that answer in the real layouts:
ultralytics v8 / 11 ``(y, feats)`` with ``y`` ``(N, 4 + nc, A)``, YOLOv5 / v7 ``(N, A, 5 + nc)`` with
objectness, end-to-end ``(N, K, 6)``. What they detect is known by construction: the bounding box of
the bright pixels (all channels above 0.9) of the input, as class 0 ("square"), so a test can put a
white square in a photo and check that the box comes back where the square is in the original image.
"""
import torch
from torch import nn

from tests.reference.fork_blocks import YoloDCNv2
from tests.reference.official_blocks import OfficialCoordAtt, SeedCB2d

NAMES = {0: "square", 1: "other"}


def bright_box(images: torch.Tensor) -> torch.Tensor:
    """``(N, 4)`` xyxy (input pixels, pixel edges) of the pixels above 0.9 in every channel of RGB in [0, 1]."""
    boxes = []
    for image in images:
        ys, xs = torch.nonzero((image > 0.9).all(0), as_tuple=True)
        if len(xs) == 0:
            boxes.append(torch.zeros(4))
        else:
            boxes.append(torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float())
    return torch.stack(boxes)


class Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, stride=4, padding=1)
        self.ca = OfficialCoordAtt(16, 16)
        self.down = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.gc = SeedCB2d(32)
        self.dcn = YoloDCNv2(32, 32)

    def forward(self, x):
        p3 = self.ca(torch.relu(self.stem(x)))
        return [p3, self.dcn(self.gc(torch.relu(self.down(p3))))]


class YoloDetector(nn.Module):
    """``layout``: ``v8`` (ultralytics), ``v5`` (objectness) or ``e2e``. Input: RGB in [0, 1] (no mean / std)."""

    def __init__(self, layout: str = "v8", anchors: int = 300):
        super().__init__()
        self.layout, self.anchors = layout, anchors
        self.model = Backbone()
        self.names = dict(NAMES)
        self.nc = len(NAMES)
        self.stride = torch.tensor([4.0, 8.0])

    def forward(self, x):
        feats = self.model(x)
        n = x.shape[0]
        box = bright_box(x)  # (N, 4) xyxy
        xywh = torch.cat([(box[:, :2] + box[:, 2:]) / 2, box[:, 2:] - box[:, :2]], 1)
        found = (box[:, 2] > box[:, 0]).float()  # 1 where there is a bright region
        rows = torch.zeros(n, self.anchors, 4 + self.nc)
        rows[:, :, :4] = torch.tensor([10.0, 10.0, 4.0, 4.0])  # background anchors: low scores
        rows[:, :, 4:] = 0.01
        rows[:, 7, :4] = xywh  # anchor 7 sees the square
        rows[:, 7, 4] = 0.9 * found  # class 0 ("square")
        rows[:, 8, :4] = xywh + torch.tensor([1.0, 1.0, 0.0, 0.0])  # a near duplicate: NMS must drop it
        rows[:, 8, 4] = 0.8 * found
        if self.layout == "v8":
            return rows.transpose(1, 2), feats  # (N, 4 + nc, A)
        if self.layout == "v5":
            objectness = rows[:, :, 4:].amax(2, keepdim=True).clamp(min=0.02)
            return torch.cat([rows[:, :, :4], objectness, rows[:, :, 4:] / objectness], 2), feats  # (N, A, 5 + nc)
        if self.layout == "e2e":
            return torch.cat([box[:, None, :], 0.9 * found[:, None, None], torch.zeros(n, 1, 1)], 2), feats
        raise ValueError(self.layout)


class FeaturesOnly(nn.Module):
    """A backbone returning a dict of feature maps: nothing to read as predictions."""

    def __init__(self):
        super().__init__()
        self.model = Backbone()

    def forward(self, x):
        p3, p4 = self.model(x)
        return {"p3": p3, "p4": p4}


def v8():
    return YoloDetector("v8")


def v5():
    return YoloDetector("v5")


def end_to_end():
    return YoloDetector("e2e")


def features():
    return FeaturesOnly()


def raises():
    raise RuntimeError("my factory is broken")


def torchvision_detector():
    """Faster R-CNN (MobileNetV3, 320) without weights, a CA block after its backbone's last stage."""
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    torch.manual_seed(0)
    model = fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None, num_classes=3)
    body = model.backbone.body
    last = str(len(body) - 1)
    channels = getattr(body, last).out_channels
    setattr(body, last, nn.Sequential(getattr(body, last), OfficialCoordAtt(channels, channels)))
    return model


def save_checkpoint(path, layout: str = "v8") -> None:
    """A checkpoint as ultralytics saves it: the whole model in half precision under ``model``, ``ema`` None."""
    torch.manual_seed(0)
    model = YoloDetector(layout).eval()
    torch.save({"epoch": -1, "model": model.half(), "ema": None, "optimizer": None, "train_args": {}}, path)
