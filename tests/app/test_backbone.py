"""EfficientNet-Lite0: every pretrained key used, TensorFlow SAME padding, right answers on real photos."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from attnlens.analysis.imaging import decode_image
from attnlens.models.backbones.efficientnet_lite import (
    Conv2dSame,
    EfficientNetLite0,
    lite0_weights_path,
    normalize,
    same_padding,
)
from tests.app.conftest import CAT_CLASSES, ESPRESSO


@pytest.fixture(scope="module")
def plain():
    model = EfficientNetLite0().eval()
    state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    assert set(state) == set(model.state_dict())  # every key of the package is used, none is missing
    model.load_state_dict(state, strict=True)
    return model


@pytest.mark.parametrize("size, kernel, stride, expected", [
    (224, 3, 2, (0, 1)), (225, 3, 2, (1, 1)), (224, 5, 2, (1, 2)), (14, 5, 1, (2, 2)), (7, 3, 1, (1, 1)), (1, 1, 2, (0, 0)),
])
def test_same_padding_matches_tensorflow_rule(size, kernel, stride, expected):
    # TF: out = ceil(n / s); total = max((out - 1) * s + k - n, 0); before = total // 2
    assert same_padding(size, kernel, stride) == expected


def test_conv2d_same_pads_bottom_right_at_stride_2():
    conv = Conv2dSame(2, 3, 3, stride=2, bias=False)
    x = torch.randn(1, 2, 8, 6)
    expected = F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, stride=2)
    assert torch.allclose(conv(x), expected, atol=1e-6)


def test_normalisation_is_lite_formula():
    assert torch.allclose(normalize(torch.tensor([0.0, 127 / 255, 1.0])), torch.tensor([-127 / 128, 0.0, 1.0]))


def _classify(model, data: bytes) -> torch.Tensor:
    image = decode_image(data)
    scale = 224 / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    with torch.no_grad():
        return model(normalize(x)).softmax(1)[0]


def test_plain_backbone_classifies_real_photos(plain, photos):
    cat = _classify(plain, photos["cat"])
    assert cat.argmax().item() in CAT_CLASSES and cat[sorted(CAT_CLASSES)].sum() > 0.6
    espresso = _classify(plain, photos["espresso"])
    assert espresso.argmax().item() == ESPRESSO and espresso[ESPRESSO] > 0.4
