"""Coordinate attention against the official CoordAtt and the seed's CA."""
import pytest
import torch

from attnlens.blocks import CA
from tests.helpers import randomise
from tests.reference.official_blocks import OfficialCoordAtt, SeedCA


def randomise_with_statistics(module, seed=0):
    """Random weights and BatchNorm statistics."""
    randomise(module, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        module.bn1.running_mean.normal_(generator=generator)
        module.bn1.running_var.uniform_(0.5, 2.0, generator=generator)
    return module


@pytest.mark.parametrize("reference", [OfficialCoordAtt, SeedCA])
@pytest.mark.parametrize("train", [False, True])
def test_matches_official(reference, train):
    official = randomise_with_statistics(reference(64, 64, reduction=16))
    ours = CA(64, 64, reduction=16)
    assert set(ours.state_dict()) == set(official.state_dict())
    ours.load_state_dict(official.state_dict(), strict=True)
    official.train(train), ours.train(train)
    x = torch.randn(2, 64, 7, 9)
    assert torch.allclose(ours(x), official(x), rtol=1e-5, atol=1e-6)


def test_formula_out_is_x_times_height_and_width_weights():
    block = randomise_with_statistics(CA(16, 16)).eval()
    x = torch.randn(1, 16, 5, 6)
    y_h = block.act(block.bn1(block.conv1(x.mean(3, keepdim=True))))  # (N, mip, H, 1)
    y_w = block.act(block.bn1(block.conv1(x.mean(2, keepdim=True))))  # (N, mip, 1, W)
    a_h, a_w = block.conv_h(y_h).sigmoid(), block.conv_w(y_w).sigmoid()
    assert torch.allclose(block(x), x * a_h * a_w, atol=1e-6)


def test_mip_and_no_state_created_in_forward():
    block = CA(512, 512)
    assert block.conv1.out_channels == 16  # max(8, 512 // 32)
    assert CA(64, 64).conv1.out_channels == 8
    modules_before = [name for name, _ in block.named_modules()]
    block(torch.randn(1, 512, 3, 4))
    assert [name for name, _ in block.named_modules()] == modules_before


def test_oup_must_equal_inp():
    with pytest.raises(ValueError, match="must equal"):
        CA(16, 32)


def test_gradcheck():
    block = randomise_with_statistics(CA(8, 8)).double().eval()
    x = torch.randn(1, 8, 3, 4, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(block, (x,))
