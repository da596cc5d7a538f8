"""Users' models that fail, lie or print after they load, as people write them (for ``--model
tests.app.broken_models:NAME``): each passes the loader's probe (a square 224 image) and then misbehaves."""
import sys
import time

import torch
from torch import nn

from attnlens.models import ModelSpec
from tests.app.yolo_models import YoloDetector


class Classifier(nn.Module):
    """A tiny 10-class classifier whose ``misbehave(x, call)`` hook decides what goes wrong from the second call."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(8, 10)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        logits = self.head(self.features(x))
        return self.misbehave(x, logits) if self.calls > 1 else logits

    def misbehave(self, x, logits):
        return logits


class SquareOnly(Classifier):
    def misbehave(self, x, logits):
        assert x.shape[-1] == x.shape[-2], f"expected a square input, got {tuple(x.shape)}"
        return logits


class ChangesAfterProbe(Classifier):
    def misbehave(self, x, logits):
        return {"features": logits[:, :3]}  # a dict now, where the probe saw logits


class CpuOutOfMemory(Classifier):
    def misbehave(self, x, logits):
        return logits + torch.empty(2 ** 45)  # 128 TiB: the allocator refuses


class AcceleratorOutOfMemory(Classifier):
    """What a model on a full GPU raises (simulated, so that it runs anywhere): memory other work holds."""

    def misbehave(self, x, logits):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")


class Watchdog(BaseException):
    """What a user's watchdog raises (not an Exception)."""


class RaisesBaseException(Classifier):
    def misbehave(self, x, logits):
        raise Watchdog("frame took too long")


class ExitsInForward(Classifier):
    def misbehave(self, x, logits):
        sys.exit(3)


class InPlaceOnInput(Classifier):
    def misbehave(self, x, logits):
        x.mul_(2)  # fine without gradients; under --gradcam the input requires grad
        return logits


class NanLogits(Classifier):
    def misbehave(self, x, logits):
        logits = logits.clone()
        logits[:, 3] = float("nan")
        return logits


class AllNan(Classifier):
    def misbehave(self, x, logits):
        return torch.full_like(logits, float("nan"))


class _NoBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("this fork's custom op has no backward")


class BackwardFails(Classifier):
    def misbehave(self, x, logits):
        return _NoBackward.apply(logits)


class Prints(Classifier):
    def forward(self, x):
        print("fork debug: input", tuple(x.shape))  # forks print in forward
        return super().forward(x)


class BadBoxes(YoloDetector):
    """ultralytics layout; from the second call some boxes are NaN, one has a negative width, one zero width."""

    def __init__(self):
        super().__init__("v8")
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        y, feats = super().forward(x)
        if self.calls > 1:
            y = y.clone()
            y[:, 4, :3] = 0.95  # three confident anchors of class 0
            y[:, :4, 0] = torch.tensor([float("nan"), 50.0, 40.0, 30.0])
            y[:, :4, 1] = torch.tensor([300.0, 200.0, -60.0, 40.0])  # negative width: reversed corners
            y[:, :4, 2] = torch.tensor([100.0, 100.0, 0.0, 40.0])  # zero width
        return y, feats


def square_only():
    return SquareOnly()


def changes_after_probe():
    return ChangesAfterProbe()


def cpu_out_of_memory():
    return CpuOutOfMemory()


def accelerator_out_of_memory():
    return AcceleratorOutOfMemory()


def raises_base_exception():
    return RaisesBaseException()


def exits_in_forward():
    return ExitsInForward()


def in_place_on_input():
    return InPlaceOnInput()


def nan_logits():
    return NanLogits()


def all_nan():
    return AllNan()


def prints():
    return Prints()


def backward_fails():
    return BackwardFails()


def bad_boxes():
    return ModelSpec(BadBoxes(), input_size=640, resize="letterbox", normalize="none", task="detect")


def scripted():
    return torch.jit.script(nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                          nn.Linear(8, 10)))


def on_meta():
    with torch.device("meta"):
        return Classifier()


def exits_in_factory():
    sys.exit(0)


def base_exception_in_factory():
    raise Watchdog("the license server did not answer")


def loads_wrong_weights():
    model = Classifier()
    model.load_state_dict({"head.weight": torch.zeros(3, 3), "extra.bias": torch.zeros(2)})  # torch's strict error
    return model


def names_dict():
    return ModelSpec(Classifier(), labels={0: "zero", 1: "one", 2: "two"})


class NanAtCorner(nn.Module):
    """From the second call, the input's top-left position becomes NaN (as a fork's bad normalisation might)."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls > 1:
            x = x.clone()
            x[..., 0, 0] = float("nan")
        return x


def nan_in_a_block():
    """A CA block fed a NaN at one position: its row and column gates are NaN there (a cross of NaN cells)."""
    from attnlens.blocks import CA

    return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), NanAtCorner(), CA(8, 8), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 10))


class HangsOnBatches(Classifier):
    """Loads and probes (one image at a time), then never finishes a batch of several images: a hung model on a
    worker, as a lost node leaves the run."""

    def forward(self, x):
        if x.shape[0] > 1:
            time.sleep(3600)
        return super().forward(x)


def hangs_on_batches():
    return HangsOnBatches()
