"""Detectors of known behaviour for the labelled test images (``labelled_data``: red squares are class 0, blue ones
class 1, on grey), answering in ultralytics' layout ``(N, 4 + 2, A)``.

Each finds the bounding box of the red pixels and of the blue pixels of its input (one object per class per
image, as the test images have) and reports them with score 0.9; the variants change one thing, so AP and found /
missed are known by hand. At letterbox 160 the test images are not resized (scale 1), so the boxes come back on the
labelled boxes exactly. A GC block whose context mask is softmax(20 red - 10 blue) (as ``labelled_data``'s) gives
every detector a map with a known value.
"""
import torch
from torch import nn

from attnlens.blocks import CB2d
from attnlens.models import ModelSpec

LABELS = ["red", "blue"]
INPUT = 160
ANCHORS = 8


def colour_box(image: torch.Tensor, channel: int) -> torch.Tensor:
    """xyxy (input pixels, pixel edges) of the pixels where ``channel`` is high and the others low; zeros if none."""
    others = [c for c in range(3) if c != channel]
    mask = (image[channel] > 0.8) & (image[others] < 0.3).all(0)
    ys, xs = torch.nonzero(mask, as_tuple=True)
    if not len(xs):
        return torch.zeros(4)
    return torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()


class ColourDetector(nn.Module):
    """``shift``: each box moved right by this share of its width (IoU with its object (1 - s) / (1 + s));
    ``false_positive``: a red box in the top left corner at score 0.95, above every true one; ``smallest``: objects
    whose box is narrower than this many pixels are not reported."""

    def __init__(self, shift: float = 0.0, false_positive: bool = False, smallest: int = 0):
        super().__init__()
        self.shift, self.false_positive, self.smallest = shift, false_positive, smallest
        self.gc = CB2d(3, fusions=["channel_add"], ratio=1.0)
        with torch.no_grad():
            self.gc.conv_mask.weight.zero_()
            self.gc.conv_mask.weight[0, 0] = 20.0  # the mask's logits: 20 x red - 10 x blue (input in [0, 1])
            self.gc.conv_mask.weight[0, 2] = -10.0

    def forward(self, x):
        features = self.gc(x)
        rows = torch.zeros(x.shape[0], ANCHORS, 4 + len(LABELS))
        rows[:, :, :4] = torch.tensor([3.0, 3.0, 2.0, 2.0])  # background anchors: tiny boxes, low scores
        rows[:, :, 4:] = 0.002
        for n, image in enumerate(x):
            for cls in range(len(LABELS)):
                x0, y0, x1, y1 = colour_box(image, (0, 2)[cls]).tolist()
                if x1 <= x0 or x1 - x0 < self.smallest:
                    continue
                dx = self.shift * (x1 - x0)
                rows[n, cls, :4] = torch.tensor([(x0 + x1) / 2 + dx, (y0 + y1) / 2, x1 - x0, y1 - y0])
                rows[n, cls, 4 + cls] = 0.9
            if self.false_positive:
                rows[n, 2, :4] = torch.tensor([6.0, 6.0, 8.0, 8.0])
                rows[n, 2, 4] = 0.95
        return rows.transpose(1, 2), [features]


def _spec(**behaviour) -> ModelSpec:
    return ModelSpec(ColourDetector(**behaviour), input_size=INPUT, resize="letterbox", normalize="none",
                     task="detect", labels=LABELS)


def exact():
    """Every object, its box exactly: AP 1."""
    return _spec()


def exact_again():
    """The same detector (a second checkpoint of equal behaviour)."""
    return _spec()


def false_positive_first():
    """As ``exact``, plus a red false positive above every true detection on each image."""
    return _spec(false_positive=True)


def shifted():
    """Boxes moved right by 20% of their width: IoU 0.8 / 1.2 = 2/3 with their objects."""
    return _spec(shift=0.2)


def misses_small():
    """Objects narrower than 20 px are not reported (the test images' 10 px red square)."""
    return _spec(smallest=20)


class ContextPool(nn.Module):
    """Attention pooling written by hand (read as GC by what it computes): ``x`` plus its context, the colour pooled
    with softmax(20 red - 10 blue) weights (the red objects' colour); ``average``: pooled by plain average instead
    (what a knockout of its mask computes, written independently)."""

    def __init__(self, average: bool = False):
        super().__init__()
        self.average = average

    def forward(self, x):
        if self.average:
            context = x.mean((2, 3))
        else:
            weights = torch.softmax((20 * x[:, 0] - 10 * x[:, 2]).flatten(1), dim=1)  # (N, H*W)
            context = torch.bmm(x.flatten(2), weights[..., None])[..., 0]  # (N, C)
        return x + context[..., None, None]


class ContextGated(ColourDetector):
    """As ``exact``, but the red object is reported only when the pooled context is red (its mask finds the red)."""

    def __init__(self, average: bool = False):
        super().__init__()
        self.pool = ContextPool(average)

    def forward(self, x):
        rows, features = super().forward(x)
        context = (self.pool(x) - x)[:, :, 0, 0]  # (N, 3)
        red = (context[:, 0] > 0.7) & (context[:, 2] < 0.3)
        rows[:, 4, 0] = torch.where(red, rows[:, 4, 0], torch.zeros_like(rows[:, 4, 0]))  # anchor 0: the red box
        return rows, features


def context_gated():
    """Every object when its GC-like pooling finds the red; knocked out, the red ones are lost."""
    return ModelSpec(ContextGated(), input_size=INPUT, resize="letterbox", normalize="none", task="detect",
                     labels=LABELS)


def context_gated_average():
    """``context_gated`` pooling by plain average: the red objects never reported."""
    return ModelSpec(ContextGated(average=True), input_size=INPUT, resize="letterbox", normalize="none", task="detect",
                     labels=LABELS)


class ContextClassifier(nn.Module):
    """Two classes: "red" when the pooled context (``ContextPool``) is red, else "other"."""

    def __init__(self, average: bool = False):
        super().__init__()
        self.pool = ContextPool(average)

    def forward(self, x):
        context = (self.pool(x) - x)[:, :, 0, 0]
        return torch.stack([10 * (context[:, 0] - context[:, 2] - 0.5), torch.zeros(len(x))], 1)


def context_classifier():
    return ModelSpec(ContextClassifier(), input_size=INPUT, resize="letterbox", normalize="none", task="classify",
                     labels=["red", "other"])


def context_classifier_average():
    return ModelSpec(ContextClassifier(average=True), input_size=INPUT, resize="letterbox", normalize="none",
                     task="classify", labels=["red", "other"])
