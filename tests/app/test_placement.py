"""The augmented models hold every block kind and, before training, compute what the plain ones compute."""
import copy

import pytest
import torch
import torchvision

from attnlens import blocks
from attnlens.models.backbones.efficientnet_lite import EfficientNetLite0, lite0_weights_path
from attnlens.models.placement import GatedResidual, augment_lite0, augment_resnet

KINDS = {"gc", "ca", "acmix", "dcn", "spd"}


@pytest.fixture(scope="module")
def lite0_pair():
    plain = EfficientNetLite0().eval()
    plain.load_state_dict(torch.load(lite0_weights_path(), map_location="cpu", weights_only=True))
    return plain, augment_lite0(copy.deepcopy(plain)).eval()


@pytest.mark.parametrize("size", [(224, 224), (224, 298), (225, 301), (97, 64)])
def test_lite0_augmented_equals_plain_at_init(lite0_pair, size):
    plain, augmented = lite0_pair
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        expected, actual = plain(x), augmented(x)
    assert torch.allclose(actual, expected, atol=1e-4, rtol=1e-4)
    assert torch.equal(actual.topk(5).indices, expected.topk(5).indices)


def test_lite0_has_every_kind_and_spd_stem_is_exact(lite0_pair):
    plain, augmented = lite0_pair
    assert set(blocks.find_blocks(augmented).values()) == KINDS
    x = torch.randn(1, 3, 64, 90)
    with torch.no_grad():
        assert torch.allclose(augmented._conv_stem(x), plain._conv_stem(x), atol=1e-5)
    gates = [m.gate for m in augmented.modules() if isinstance(m, GatedResidual)]
    assert gates and all(g.item() == 0 for g in gates)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_resnet_augmented_equals_plain_at_init(name):
    torch.manual_seed(0)
    plain = getattr(torchvision.models, name)(weights=None).eval()
    augmented = augment_resnet(copy.deepcopy(plain)).eval()
    assert set(blocks.find_blocks(augmented).values()) == KINDS
    assert set(plain.state_dict()) <= set(augmented.state_dict()) | {"conv1.weight"}  # pretrained keys kept
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        assert torch.allclose(augmented(x), plain(x), atol=1e-4, rtol=1e-4)
