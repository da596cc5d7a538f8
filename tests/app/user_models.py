"""User-model factories for the tests of ``--model package.module:factory``."""
from torch import nn

from attnlens.blocks import CB2d
from tests.reference.official_blocks import OfficialCoordAtt


def tiny():
    """A small classifier with an official-code CoordAtt and our GC block, 10 classes."""
    return nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(), OfficialCoordAtt(16, 16),
                         CB2d(16, fusions=["channel_add"]), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


def not_a_module():
    return "not a model"
