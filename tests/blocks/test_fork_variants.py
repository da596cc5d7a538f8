"""capture reads the block variants YOLO forks write (SPEC section 7), each checked by hand."""
import torch
from torch import nn

from attnlens.blocks import capture, find_blocks
from tests.helpers import randomise
from tests.reference.fork_blocks import (
    ContextBlock2d,
    ForkCoordAtt,
    OffsetConv2dDCN,
    PixelUnshuffleSPDConv,
    SPDConv,
    YoloDCNv2,
)


def test_every_fork_variant_is_found_with_its_kind():
    model = nn.Sequential(SPDConv(3, 8), PixelUnshuffleSPDConv(8, 8), ContextBlock2d(8), ForkCoordAtt(8, 8),
                          YoloDCNv2(8, 8), OffsetConv2dDCN(8, 8))
    assert find_blocks(model) == {"0": "spd", "1.unshuffle": "spd", "2": "gc", "3": "ca", "4": "dcn", "5": "dcn"}


def test_yolo_dcnv2_offsets_and_mask_are_the_chunks_it_feeds_the_kernel():
    block = randomise(YoloDCNv2(6, 8, deformable_groups=2), scale=0.3).eval()
    x = torch.randn(2, 6, 9, 7)
    with torch.no_grad(), capture(block) as maps:
        block(x)
        o1, o2, mask_logits = torch.chunk(block.conv_offset_mask(x), 3, dim=1)  # by hand, as the fork does
    record = maps[""]
    offsets = torch.cat((o1, o2), 1)  # (N, 2*G*9, H, W), torchvision layout: group, tap, [dy, dx]
    assert record.offsets.shape == (2, 2, 9, 2, 9, 7)
    assert torch.equal(record.offsets[:, 1, 4, 0], offsets[:, 1 * 18 + 2 * 4])  # group 1, centre tap, dy
    assert torch.equal(record.offsets[:, 1, 4, 1], offsets[:, 1 * 18 + 2 * 4 + 1])  # dx
    assert torch.allclose(record.mask[:, 0, 3], torch.sigmoid(mask_logits[:, 3]))
    assert record.stride == (1, 1) and record.padding == (1, 1) and record.kernel_size == (3, 3)
    lengths = offsets.view(2, 2, 9, 2, 9, 7).norm(dim=3).mean(dim=(1, 2))
    assert torch.allclose(record.heatmap, lengths, atol=1e-6)


def test_offset_conv2d_dcn_without_group_attribute_is_dcnv1():
    block = randomise(OffsetConv2dDCN(4, 4), scale=0.3)
    x = torch.randn(1, 4, 6, 6)
    with torch.no_grad(), capture(block) as maps:
        block(x)
    record = maps[""]
    assert record.mask is None and record.offsets.shape == (1, 1, 9, 2, 6, 6)
    assert torch.equal(record.offsets.reshape(1, 18, 6, 6), block.conv_offset2d(x))


def test_fork_coordatt_reads_its_own_gate_not_a_sigmoid():
    block = randomise(ForkCoordAtt(16, 16), scale=0.5).eval()
    x = torch.randn(2, 16, 5, 7)
    with torch.no_grad(), capture(block) as maps:
        out = block(x)
    record = maps[""]
    # by hand: rows / columns means, shared 1x1 conv, Hardswish, then relu6(z + 3) / 6
    y = torch.cat([x.mean(3, keepdim=True), x.mean(2, keepdim=True).permute(0, 1, 3, 2)], dim=2)
    y = nn.functional.hardswish(block.bn1(block.conv1(y)))
    hard_sigmoid = lambda z: torch.clamp(z + 3, 0, 6) / 6  # noqa: E731
    a_h = hard_sigmoid(block.conv_h(y[:, :, :5]))[..., 0]
    a_w = hard_sigmoid(block.conv_w(y[:, :, 5:].permute(0, 1, 3, 2)))[:, :, 0]
    assert torch.allclose(record.a_h, a_h, atol=1e-6) and torch.allclose(record.a_w, a_w, atol=1e-6)
    assert not torch.allclose(record.a_h, block.conv_h(y[:, :, :5]).sigmoid()[..., 0], atol=1e-3)
    assert torch.allclose(x * record.a_h[..., None] * record.a_w[:, :, None], out, atol=1e-6)


def test_context_block2d_mask_is_the_softmax_of_conv_mask():
    block = randomise(ContextBlock2d(8), scale=0.5)
    x = torch.randn(2, 8, 4, 5)
    with torch.no_grad(), capture(block) as maps:
        block(x)
    expected = block.conv_mask(x).view(2, 20).softmax(dim=1).view(2, 4, 5)
    assert torch.allclose(maps[""].context_mask, expected, atol=1e-7)


def _phase_energy_by_hand(x):
    """The official order: (row, col) = (0,0), (1,0), (0,1), (1,1); mean square over channels."""
    phases = [x[..., 0::2, 0::2], x[..., 1::2, 0::2], x[..., 0::2, 1::2], x[..., 1::2, 1::2]]
    return torch.stack([p.square().mean(1) for p in phases], 1)


def test_pixel_unshuffle_and_slicing_spdconv_give_the_official_phase_order():
    x = torch.randn(2, 3, 6, 8)
    expected = _phase_energy_by_hand(x)
    for block, name in ((PixelUnshuffleSPDConv(3, 4), "unshuffle"), (SPDConv(3, 4), "")):
        with torch.no_grad(), capture(block) as maps:
            block(x)
        record = maps[name]
        assert torch.allclose(record.phase_energy, expected, atol=1e-6), type(block).__name__
        phases = torch.stack([x[..., 0::2, 0::2], x[..., 1::2, 0::2], x[..., 0::2, 1::2], x[..., 1::2, 1::2]], 1)
        assert torch.allclose(record.phase_detail, phases.var(1, unbiased=False).mean(1), atol=1e-6)


def test_nested_captures_both_record():
    inner_model = ForkCoordAtt(8, 8).eval()
    model = nn.Sequential(ContextBlock2d(8), inner_model).eval()
    x = torch.randn(1, 8, 4, 4)
    with torch.no_grad(), capture(model) as outer:
        with capture(inner_model) as inner:
            model(x)
        after = dict(outer)
        model(x)
    assert set(inner) == {""} and set(after) == {"0", "1"}
    assert torch.equal(inner[""].a_h, outer["1"].a_h)
