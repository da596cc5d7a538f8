"""space_to_depth against the seed, and the exact SPD rewrite of strided convolutions."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnlens.blocks import SPDConv, space_to_depth
from tests.reference.official_blocks import space_to_depth as seed_space_to_depth


def test_matches_seed_on_even_sizes():
    x = torch.randn(2, 3, 6, 8)
    assert torch.equal(space_to_depth()(x), seed_space_to_depth()(x))


def test_channel_order_is_not_pixel_unshuffle():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    out = space_to_depth()(x)
    assert out[0, :, 0, 0].tolist() == [0.0, 4.0, 1.0, 5.0]  # (0,0), (1,0), (0,1), (1,1)
    assert F.pixel_unshuffle(x, 2)[0, :, 0, 0].tolist() == [0.0, 1.0, 4.0, 5.0]


def test_odd_sizes_zero_padded_bottom_right():
    x = torch.randn(1, 2, 5, 3)
    out = space_to_depth()(x)
    assert out.shape == (1, 8, 3, 2)
    assert torch.equal(out, seed_space_to_depth()(F.pad(x, (0, 1, 0, 1))))
    with pytest.raises(RuntimeError):
        seed_space_to_depth()(x)


@pytest.mark.parametrize("kernel, padding", [(3, 1), (1, 0), (5, 2), (3, 0), (7, 3), ((3, 5), (1, 2))])
@pytest.mark.parametrize("size", [(8, 8), (9, 7), (11, 12)])
def test_from_strided_conv_is_exact(kernel, padding, size):
    conv = nn.Conv2d(3, 8, kernel, stride=2, padding=padding).double()
    spd = SPDConv.from_strided_conv(conv)
    x = torch.randn(2, 3, *size, dtype=torch.double)
    expected = conv(x)
    actual = spd(x)
    assert actual.shape == expected.shape
    assert torch.allclose(actual, expected, atol=1e-12)


@pytest.mark.parametrize("size", [(224, 224), (9, 7)])
def test_from_strided_conv_same_padding(size):
    """TensorFlow "SAME" at stride 2 on an even size pads one pixel at the bottom/right only."""
    conv = nn.Conv2d(3, 4, 3, stride=2, bias=False).double()
    spd = SPDConv.from_strided_conv(conv, padding=(0, 1, 0, 1))
    x = torch.randn(1, 3, *size, dtype=torch.double)
    assert torch.allclose(spd(x), conv(F.pad(x, (0, 1, 0, 1))), atol=1e-12)
    assert set(spd.state_dict()) == {"conv.weight"}


@pytest.mark.parametrize("kernel", [3, 5, 1])
@pytest.mark.parametrize("size", [(224, 224), (9, 7), (10, 13)])
def test_from_strided_conv_dynamic_same_padding(kernel, size):
    """TensorFlow "SAME" at stride 2 depends on the input size; the rewrite follows it."""
    conv = nn.Conv2d(3, 4, kernel, stride=2).double()
    spd = SPDConv.from_strided_conv(conv, padding="same")
    x = torch.randn(1, 3, *size, dtype=torch.double)
    pads = []
    for n in (size[1], size[0]):  # TF: total = max((ceil(n / s) - 1) * s + k - n, 0), extra at the end
        total = max((-(-n // 2) - 1) * 2 + kernel - n, 0)
        pads += [total // 2, total - total // 2]
    expected = conv(F.pad(x, pads))
    assert expected.shape[-2:] == (-(-size[0] // 2), -(-size[1] // 2))
    assert torch.allclose(spd(x), expected, atol=1e-12)


def test_default_spdconv_keeps_half_size():
    spd = SPDConv(4, 8)
    assert spd(torch.randn(1, 4, 10, 7)).shape == (1, 8, 5, 4)
    assert set(spd.state_dict()) == {"conv.weight", "conv.bias"}


@pytest.mark.parametrize("conv", [nn.Conv2d(4, 4, 3, stride=1), nn.Conv2d(4, 4, 3, stride=2, groups=2),
                                  nn.Conv2d(4, 4, 2, stride=2), nn.Conv2d(4, 4, 3, stride=2, dilation=2)])
def test_from_strided_conv_rejects_what_it_cannot_rewrite(conv):
    with pytest.raises(ValueError):
        SPDConv.from_strided_conv(conv)
