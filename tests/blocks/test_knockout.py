"""Knockout: each kind's map made flat, ours and blocks read by computation alike, checked against an independent
computation of the same block with the flat map (its average-pooling GC, the gates' means by hand, the official
ACmix with a uniform softmax, torchvision's deform_conv2d with zero offsets and the block's own mask)."""
import copy
import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import deform_conv2d

from attnlens.blocks import (
    ACmix,
    CoordinateAttention,
    DeformConv,
    GlobalContextBlock,
    ModulatedDeformConv,
    SpaceToDepth,
    capture,
    recognise,
)
from attnlens.blocks.knockout import knockout
from tests.app.fork_models import ProjectedCoordAtt
from tests.helpers import randomise
from tests.reference.official_acmix import OfficialACmix
from tests.reference.sampled_dcn import GatherDCNv2
from tests.reference.variant_blocks import ExpGC, TokensLastWindow

X = torch.randn(2, 16, 12, 14, generator=torch.Generator().manual_seed(0))


def knocked(block, x=X, name=""):
    block.eval()
    recognise(block, x)
    with torch.no_grad(), knockout(block, name) as done:
        out = block(x)
    return out, done


class Uniform(nn.Module):
    """The official ACmix's softmax, flat: 1 / (k*k) on every tap."""

    def forward(self, logits):
        return torch.full_like(logits, 1.0 / logits.shape[1])


def test_gc_knocked_out_is_the_same_block_pooling_by_average():
    block = randomise(GlobalContextBlock(16), scale=0.3)
    out, done = knocked(block)
    average = copy.deepcopy(block)
    average.pool = "avg"
    with torch.no_grad():
        assert torch.allclose(out, average(X), atol=1e-6)
        assert not torch.allclose(out, block(X), atol=1e-3)  # the mask mattered
    assert done.kind == "gc" and done.flattened == 1 and "uniform" in done.replaced


def test_ca_knocked_out_keeps_each_gates_mean():
    block = randomise(CoordinateAttention(16, 16), scale=0.3).eval()
    recognise(block, X)
    with torch.no_grad(), capture(block) as maps:
        block(X)
    a_h, a_w = maps[""].a_h, maps[""].a_w  # (N, C, H), (N, C, W): checked against the official gates elsewhere
    out, done = knocked(block)
    assert torch.allclose(out, X * a_h.mean(2)[..., None, None] * a_w.mean(2)[..., None, None], atol=1e-6)
    assert done.flattened == 2


@pytest.mark.parametrize("stride", [1, 2])
def test_our_acmix_knocked_out_is_the_official_code_with_a_uniform_softmax(stride):
    ours = randomise(ACmix(16, 16, kernel_att=5, head=2, stride=stride), scale=0.3)
    official = OfficialACmix(16, 16, kernel_att=5, head=2, stride=stride).eval()
    official.load_state_dict(ours.state_dict())
    official.softmax = Uniform()
    x = X[..., :12]  # even sides: the official code's stride 2 needs them
    out, done = knocked(ours, x)
    with torch.no_grad():
        assert torch.allclose(out, official(x), atol=1e-5)
    assert done.flattened == 1


def test_an_acmix_read_by_computation_is_knocked_out_at_its_softmax():
    block = randomise(OfficialACmix(16, 16, kernel_att=3, head=2), scale=0.3)
    flat = copy.deepcopy(block).eval()
    flat.softmax = Uniform()
    x = X[..., :12]
    out, done = knocked(block, x)
    with torch.no_grad():
        assert torch.allclose(out, flat(x), atol=1e-5)
    assert done.flattened == 1


def test_a_window_attention_kept_taps_last_is_knocked_out_too():
    block = randomise(TokensLastWindow(16), scale=0.5)
    out, done = knocked(block)
    q, keys, values = (part.detach() for part in block.parts(X))
    by_hand = X + values.mean(2).view_as(X)  # every tap 1/(k*k): the window's mean value
    assert torch.allclose(out, by_hand, atol=1e-5) and done.flattened == 1


def test_a_gc_with_its_softmax_written_out_pools_by_average():
    block = randomise(ExpGC(16), scale=0.5)
    out, done = knocked(block)
    with torch.no_grad():
        assert torch.allclose(out, block.fuse(X, X.mean((2, 3))), atol=1e-5)
    assert done.flattened == 1


def test_gates_on_a_projection_are_knocked_out_to_their_means():
    block = randomise(ProjectedCoordAtt(16, 24), scale=0.5)
    out, done = knocked(block)
    with torch.no_grad():
        gate_h = torch.sigmoid(block.conv_h(X.mean(3))).mean(2)
        gate_w = torch.sigmoid(block.conv_w(X.mean(2))).mean(2)
        assert torch.allclose(out, block.proj(X) * gate_h[..., None, None] * gate_w[..., None, None], atol=1e-6)


def test_dcn_knocked_out_is_a_plain_convolution_and_dcnv2_keeps_its_mask():
    v1 = randomise(DeformConv(16, 8, 3, padding=1), scale=0.3)
    out, done = knocked(v1)
    assert torch.allclose(out, F.conv2d(X, v1.weight, v1.bias, padding=1), atol=1e-5) and done.flattened == 1
    v2 = randomise(ModulatedDeformConv(16, 8, 3, padding=1, deform_groups=2), scale=0.3)
    out, _ = knocked(v2)
    with torch.no_grad():
        mask = torch.sigmoid(v2.conv_offset(X)[:, 2 * 2 * 9:])  # the last third: the mask logits, kept
        expected = deform_conv2d(X, torch.zeros(2, 2 * 2 * 9, 12, 14), v2.weight, v2.bias, padding=1, mask=mask)
    assert torch.allclose(out, expected, atol=1e-5)


def test_hand_written_sampling_is_knocked_out_where_its_offsets_are_made():
    block = randomise(GatherDCNv2(16, 8), scale=0.3)
    out, done = knocked(block)  # recognised on X: its layout at this shape is known
    with torch.no_grad():
        expected = deform_conv2d(X, torch.zeros(2, 18, 12, 14), block.conv.weight, padding=1,
                                 mask=block.mask_by_hand(X)[:, 0])
    assert torch.allclose(out, expected, atol=1e-5) and done.flattened == 1


def test_spd_has_no_flat_map_and_other_threads_run_the_model_untouched():
    block = SpaceToDepth().eval()
    recognise(block, X)
    with pytest.raises(ValueError, match="no preference to remove"):
        with knockout(block, ""):
            pass
    gc = randomise(GlobalContextBlock(16), scale=0.3).eval()
    recognise(gc, X)
    with torch.no_grad():
        plain = gc(X)
    seen = {}
    with torch.no_grad(), knockout(gc, "") as done:
        worker = threading.Thread(target=lambda: seen.setdefault("out", gc(X)))
        worker.start()
        worker.join()
        flat = gc(X)
    assert torch.equal(seen["out"], plain) and not torch.allclose(flat, plain) and done.calls == 1


def test_a_module_that_is_no_block_is_refused():
    model = nn.Sequential(nn.Conv2d(16, 16, 1), GlobalContextBlock(16)).eval()
    recognise(model, X)
    with pytest.raises(ValueError, match="no block recognised"):
        with knockout(model, "0"):
            pass
    with pytest.raises(ValueError, match="no module"):
        with knockout(model, "nope"):
            pass
