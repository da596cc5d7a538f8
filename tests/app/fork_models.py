"""Factories of models built as fork users build them, with block classes attnlens knows by no name
(tests/reference/real_forks.py), for ``--model tests.app.fork_models:...``."""
import torch
from torch import nn

from tests.reference.real_forks import CBAM, GC, CA_Block, Focus, JointAtt, ParamGeneratorDCN


class ForkClassifier(nn.Module):
    """A YOLO-style ``model`` Sequential: Focus stem, CA_Block, GC, JointAtt, a functional-op DCN, 10 classes."""

    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(Focus(3, 16, 3), nn.Conv2d(16, 32, 3, 2, 1), CA_Block(32, 4), GC(32, 32),
                                   JointAtt(32, 32, reduction=4), ParamGeneratorDCN(32, 32, 3), nn.AdaptiveAvgPool2d(1),
                                   nn.Flatten(), nn.Linear(32, 10))

    def forward(self, x):
        return self.model(x)


def fork_classifier():
    return ForkClassifier()


def cbam_only():
    """CBAM is not one of the kinds: a model with no block."""
    return nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), CBAM(16, 4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


class LazyAttention(nn.Module):
    """A fork's attention wrapper that builds its CA_Block in its first forward, from the input's channels."""

    def __init__(self):
        super().__init__()
        self.coordatt = None

    def forward(self, x):
        if self.coordatt is None:
            with torch.random.fork_rng():
                torch.manual_seed(0)
                self.coordatt = CA_Block(x.shape[1], 4).to(x.device).train(self.training)
        return self.coordatt(x)


class SmallClassifier(nn.Module):
    def __init__(self, block: nn.Module):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, 2, 1)
        self.att = block
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))

    def forward(self, x):
        return self.head(self.att(torch.relu(self.stem(x))))


def lazy_attention():
    """A classifier whose ``att`` builds its CA_Block (``att.coordatt``) in the first forward."""
    return SmallClassifier(LazyAttention())


class ProjectedCoordAtt(nn.Module):
    """Coordinate attention whose row and column gates (Conv1d on the pooled rows and columns, sigmoid) multiply a
    1x1 projection of the input (in != out), not the input itself."""

    def __init__(self, c_in: int, c_out: int, k: int = 3):
        super().__init__()
        self.proj = nn.Conv2d(c_in, c_out, 1)
        self.conv_h = nn.Conv1d(c_in, c_out, k, padding=k // 2)
        self.conv_w = nn.Conv1d(c_in, c_out, k, padding=k // 2)

    def forward(self, x):
        gate_h = torch.sigmoid(self.conv_h(x.mean(3)))  # (N, C_out, H)
        gate_w = torch.sigmoid(self.conv_w(x.mean(2)))  # (N, C_out, W)
        return self.proj(x) * gate_h.unsqueeze(3) * gate_w.unsqueeze(2)


class ProjectedClassifier(SmallClassifier):
    def __init__(self):
        super().__init__(ProjectedCoordAtt(16, 24))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 10))


def projected_ca():
    """A classifier whose ``att`` gates a 1x1 projection of its input (read by computation)."""
    torch.manual_seed(0)
    return ProjectedClassifier()


class StridedCoordAtt(nn.Module):
    """Coordinate attention on a stride-2 projection of its input, gates from that projection's rows and columns:
    a tensor inside the block at another size than its input, read once named."""

    def __init__(self, c_in: int, c_out: int, k: int = 3):
        super().__init__()
        self.proj = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
        self.conv_h = nn.Conv1d(c_out, c_out, k, padding=k // 2)
        self.conv_w = nn.Conv1d(c_out, c_out, k, padding=k // 2)

    def forward(self, x):
        y = self.proj(x)
        return y * torch.sigmoid(self.conv_h(y.mean(3))).unsqueeze(3) * torch.sigmoid(self.conv_w(y.mean(2))).unsqueeze(2)


class StridedClassifier(SmallClassifier):
    def __init__(self):
        super().__init__(StridedCoordAtt(16, 24))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 10))


def strided_ca():
    """A classifier whose ``att`` gates a stride-2 projection inside it: name ``att=ca`` to read it."""
    torch.manual_seed(0)
    return StridedClassifier()


class ContextClassifier(nn.Module):
    """A classifier whose answer depends on where its GC block pools from (attention pooling, weights drawn)."""

    def __init__(self):
        super().__init__()
        from attnlens.blocks import GlobalContextBlock

        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 4, 1), nn.ReLU())
        self.gc = GlobalContextBlock(16, ratio=0.5)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))

    def forward(self, x):
        return self.head(self.gc(self.stem(x)))


def gc_classifier():
    """A classifier with one GC block whose context mask matters (``ContextClassifier``), seeded."""
    model = ContextClassifier()
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.6)
    return model
