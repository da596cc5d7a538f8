"""Factories of models built as fork users build them, with block classes attnlens knows by no name
(tests/reference/real_forks.py), for ``--model tests.app.fork_models:...``."""
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
