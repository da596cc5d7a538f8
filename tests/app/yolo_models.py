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


class CrowdDetector(YoloDetector):
    """A crowded image's answer: 90 boxes apart on a 10 x 9 grid of the input, class 0, scores falling from 0.95
    to 0.33 (all above the threshold, none suppressed)."""

    count = 90

    def forward(self, x):
        feats = self.model(x)
        n, _, h, w = x.shape
        k = torch.arange(self.count, dtype=torch.float32)
        rows = torch.zeros(n, self.count, 4 + self.nc)
        rows[:, :, 0], rows[:, :, 1] = (k % 10 + 0.5) * w / 10, (k // 10 + 0.5) * h / 9
        rows[:, :, 2], rows[:, :, 3] = 0.6 * w / 10, 0.6 * h / 9
        rows[:, :, 4] = 0.95 - 0.007 * k
        return rows.transpose(1, 2), feats


class Conv(nn.Module):
    """ultralytics' ``Conv``: convolution and SiLU (no batch norm here)."""

    def __init__(self, c1, c2, k=3, s=1):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2)

    def forward(self, x):
        return nn.functional.silu(self.conv(x))


class MultiScaleDetect(nn.Module):
    """ultralytics' ``Detect`` as forks write it: per scale a box branch (``cv2``) and a class branch (``cv3``),
    the input list overwritten in place; answers ``(y, x)``, ``y`` ``(N, 4 + nc, A)`` xywh in input pixels and
    sigmoid class scores, computed from the features (gradients reach every scale's input)."""

    def __init__(self, nc, channels, strides):
        super().__init__()
        self.nc, self.strides = nc, strides
        self.cv2 = nn.ModuleList(nn.Sequential(Conv(c, 8), nn.Conv2d(8, 4, 1)) for c in channels)
        self.cv3 = nn.ModuleList(nn.Sequential(Conv(c, 8), nn.Conv2d(8, nc, 1)) for c in channels)

    def forward(self, x):
        rows = []
        for i, stride in enumerate(self.strides):
            x[i] = torch.cat((self.cv2[i](x[i]), self.cv3[i](x[i])), 1)
            h, w = x[i].shape[-2:]
            ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
            box = x[i][:, :4]
            centre_x = (xs + 0.5 + torch.tanh(box[:, 0])) * stride
            centre_y = (ys + 0.5 + torch.tanh(box[:, 1])) * stride
            size = 4 * stride * torch.sigmoid(box[:, 2:4])
            scores = torch.sigmoid(x[i][:, 4:])
            rows.append(torch.cat([centre_x[:, None], centre_y[:, None], size, scores], 1).flatten(2))
        return torch.cat(rows, 2), x


class TupleHeadYolo(nn.Module):
    """A YOLO fork whose model wraps the head's answer in a tuple, ``((y, x),)``: layers in ``model`` as
    ultralytics numbers them (0 stem, 1 stride 4, 2 = P3 stride 8, 3 = P4 stride 16 with a CA block, 4 = P5
    stride 32, 5 the head taking [P3, P4, P5])."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.model = nn.ModuleList([
            Conv(3, 8, 3, 2), Conv(8, 16, 3, 2), Conv(16, 16, 3, 2),
            nn.Sequential(Conv(16, 24, 3, 2), OfficialCoordAtt(24, 24)), Conv(24, 32, 3, 2),
            MultiScaleDetect(len(NAMES), (16, 24, 32), (8, 16, 32))])
        self.names = dict(NAMES)
        self.nc = len(NAMES)

    def forward(self, x):
        m = self.model
        p3 = m[2](m[1](m[0](x)))
        p4 = m[3](p3)
        p5 = m[4](p4)
        return (m[5]([p3, p4, p5]),)


def tuple_head():
    return TupleHeadYolo()


def crowd():
    return CrowdDetector()


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
