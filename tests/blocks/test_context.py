"""GC block against the seed's CB2d and mmcv's ContextBlock, and against its formula."""
import pytest
import torch

from attnlens.blocks import CB2d, GlobalContextBlock
from tests.helpers import randomise
from tests.reference.official_blocks import MmcvContextBlock, SeedCB2d


@pytest.mark.parametrize("pool", ["att", "avg"])
@pytest.mark.parametrize("fusions", [["channel_add", "channel_mul"], ["channel_add"], ["channel_mul"]])
def test_matches_seed_cb2d(pool, fusions):
    seed = randomise(SeedCB2d(16, pool=pool, fusions=fusions), scale=1.0)
    ours = CB2d(16, pool=pool, fusions=fusions)
    assert set(ours.state_dict()) == set(seed.state_dict())
    ours.load_state_dict(seed.state_dict(), strict=True)
    x = torch.randn(2, 16, 7, 5)
    assert torch.allclose(ours(x), seed(x), rtol=1e-5, atol=1e-6)


def test_matches_mmcv_context_block_keys_and_function():
    mmcv = randomise(MmcvContextBlock(32, ratio=1 / 8, fusion_types=("channel_add",)), scale=1.0)
    ours = GlobalContextBlock(32, fusions=["channel_add"], ratio=1 / 8)
    ours.load_state_dict(mmcv.state_dict(), strict=True)
    mmcv.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 32, 6, 6)
    assert torch.allclose(ours(x), mmcv(x), rtol=1e-5, atol=1e-6)


def test_formula():
    block = randomise(CB2d(8, fusions=["channel_add"]), scale=1.0)
    x = torch.randn(1, 8, 3, 4)
    logits = torch.einsum("c,nchw->nhw", block.conv_mask.weight[0, :, 0, 0], x) + block.conv_mask.bias
    weights = torch.softmax(logits.flatten(1), 1)  # (N, H*W)
    context = torch.einsum("np,ncp->nc", weights, x.flatten(2))[..., None, None]
    assert torch.allclose(block(x), x + block.channel_add_conv(context), atol=1e-6)


def test_init():
    torch.manual_seed(0)
    block = CB2d(256)
    for branch in (block.channel_add_conv, block.channel_mul_conv):
        assert not branch[-1].weight.any() and not branch[-1].bias.any()
    assert not block.conv_mask.bias.any()
    # kaiming normal, fan_in, gain sqrt(2): std = sqrt(2 / 256)
    assert abs(block.conv_mask.weight.std().item() - (2 / 256) ** 0.5) < 0.02
    x = torch.randn(1, 256, 4, 4)
    assert torch.allclose(block(x), 0.5 * x)  # add branch 0, mul branch sigmoid(0)
    identity = CB2d(256, fusions=["channel_add"])
    assert torch.equal(identity(x), x)


@pytest.mark.parametrize("kwargs", [dict(pool="max"), dict(fusions=[]), dict(fusions=["channel_sub"])])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        CB2d(16, **kwargs)


def test_too_few_channels():
    with pytest.raises(ValueError, match="at least 1"):
        CB2d(3)


def test_gradcheck():
    block = randomise(CB2d(8), scale=1.0).double()
    x = torch.randn(1, 8, 3, 3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(block, (x,))
