"""DCN / DCNv2 against mmcv-style modules, a loop reference of the definition, and hand cases."""
import pytest
import torch
import torch.nn.functional as F

from attnlens.blocks import DCN, DCNv2
from tests.helpers import randomise
from tests.reference.official_blocks import MmcvDeformConv2dPack, MmcvModulatedDeformConv2dPack, naive_deform_conv2d


@pytest.mark.parametrize("ours_cls, mmcv_cls, keys", [
    (DCN, MmcvDeformConv2dPack, {"weight", "conv_offset.weight", "conv_offset.bias"}),
    (DCNv2, MmcvModulatedDeformConv2dPack, {"weight", "bias", "conv_offset.weight", "conv_offset.bias"}),
])
def test_state_dict_and_function_match_mmcv(ours_cls, mmcv_cls, keys):
    mmcv = randomise(mmcv_cls(8, 6, 3, stride=2, padding=1, deform_groups=2), scale=0.3)
    ours = ours_cls(8, 6, 3, stride=2, padding=1, deform_groups=2)
    assert set(ours.state_dict()) == set(mmcv.state_dict()) == keys
    ours.load_state_dict(mmcv.state_dict(), strict=True)
    x = torch.randn(2, 8, 9, 8)
    assert torch.allclose(ours(x), mmcv(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls", [DCN, DCNv2])
@pytest.mark.parametrize("config", [dict(stride=1, padding=1, groups=1, deform_groups=1),
                                    dict(stride=2, padding=0, groups=2, deform_groups=2, dilation=2)])
def test_matches_definition(cls, config):
    module = randomise(cls(4, 4, 3, **config), scale=0.4).double()
    x = torch.randn(1, 4, 6, 7, dtype=torch.double)
    raw = module.conv_offset(x)
    taps_2 = 2 * module.deform_groups * 9
    offset, mask = raw[:, :taps_2], (raw[:, taps_2:].sigmoid() if cls is DCNv2 else None)
    expected = naive_deform_conv2d(x, offset, module.weight, module.bias, module.stride, module.padding,
                                   module.dilation, mask)
    with torch.no_grad():
        assert torch.allclose(module(x), expected, atol=1e-10)


def test_zero_offsets_start_as_plain_convolution():
    dcn = DCN(4, 6, 3, padding=1, bias=True)
    x = torch.randn(1, 4, 7, 7)
    assert torch.allclose(dcn(x), F.conv2d(x, dcn.weight, dcn.bias, padding=1), atol=1e-5)
    dcn2 = DCNv2(4, 6, 3, padding=1)  # mask = sigmoid(0) = 0.5
    assert torch.allclose(dcn2(x), F.conv2d(x, dcn2.weight * 0.5, dcn2.bias, padding=1), atol=1e-5)


def test_known_offset_shifts_the_sampling_grid():
    """dy = +1, dx = -2 on every tap == a plain convolution on the input moved up 1 and right 2."""
    dcn = DCN(2, 3, 3, padding=1)
    with torch.no_grad():
        dcn.conv_offset.bias.view(9, 2).copy_(torch.tensor([1.0, -2.0]))  # (tap, [dy, dx])
    x = F.pad(torch.randn(1, 2, 6, 8), (3, 3, 3, 3))  # zero border: both paddings read zeros
    moved = F.pad(x, (2, 0, 0, 1))[:, :, 1:, :-2]  # moved[i, j] = x[i + 1, j - 2], zero outside
    assert torch.allclose(dcn(x), F.conv2d(moved, dcn.weight, padding=1), atol=1e-5)


@pytest.mark.parametrize("kwargs", [dict(groups=3), dict(deform_groups=3), dict(groups=0)])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        DCN(4, 4, 3, **kwargs)


def test_gradcheck():
    module = randomise(DCNv2(2, 2, 3, padding=1), scale=0.3).double()
    x = torch.randn(1, 2, 4, 4, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(module, (x,), atol=1e-6)


@pytest.mark.parametrize("config", [dict(stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1, offset_groups=1),
                                    dict(stride=(2, 1), padding=(2, 0), dilation=(2, 1), groups=2, offset_groups=4),
                                    dict(stride=(1, 2), padding=(0, 1), dilation=(1, 1), groups=4, offset_groups=2)])
@pytest.mark.parametrize("modulated", [False, True])
def test_sampled_kernel_matches_torchvision_values_and_gradients(config, modulated):
    """Large offsets (many taps outside the map, some on exact pixel edges) against torchvision's own kernel."""
    from torchvision.ops import deform_conv2d

    from attnlens.blocks.deform import sampled_deform_conv2d

    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 8, 9, 11, dtype=torch.double, generator=generator)
    weight = torch.randn(8, 8 // config["groups"], 3, 3, dtype=torch.double, generator=generator)
    bias = torch.randn(8, dtype=torch.double, generator=generator)
    out_size = [(size + 2 * p - d * 2 - 1) // s + 1 for size, p, d, s in
                zip((9, 11), config["padding"], config["dilation"], config["stride"])]
    offset = torch.randn(2, 2 * config["offset_groups"] * 9, *out_size, dtype=torch.double, generator=generator) * 4
    offset[..., 0, :] = offset[..., 0, :].round()  # integer positions: bilinear weights of exactly 0 and 1
    mask = torch.rand(2, config["offset_groups"] * 9, *out_size, dtype=torch.double, generator=generator) \
        if modulated else None
    inputs = [t.requires_grad_() for t in (x, offset, weight, bias) + ((mask,) if modulated else ())]
    arguments = dict(stride=config["stride"], padding=config["padding"], dilation=config["dilation"])
    ours = sampled_deform_conv2d(x, offset, weight, bias, mask=mask, **arguments)
    expected = deform_conv2d(x, offset, weight, bias, mask=mask, **arguments)
    torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-10)
    cotangent = torch.randn_like(ours)
    for got, want, name in zip(torch.autograd.grad(ours, inputs, cotangent),
                               torch.autograd.grad(expected, inputs, cotangent), ("x", "offset", "weight", "bias", "mask")):
        if name == "offset":  # bilinear is not differentiable on pixel edges: compare away from them
            keep = torch.ones_like(got, dtype=torch.bool)
            keep[..., 0, :] = False
            got, want = got[keep], want[keep]
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-8, msg=name)
