"""Recognition by computation: real fork classes (tests/reference/real_forks.py) read with maps equal to a hand
computation from their own weights; every call kept; what is not read is said; the user's names."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnlens import blocks
from attnlens.blocks import capture, find_blocks, recognise
from tests.helpers import randomise
from tests.reference.real_forks import (
    CBAM,
    EMA,
    GC,
    BottleneckCSPGC,
    CA_Block,
    EinopsSPD,
    Focus,
    GlobalContext,
    JointAtt,
    ModulatorDCN,
    ParamGeneratorDCN,
    SEBlock,
    TorchOpsDCNv2,
)


def read(block, x, name=""):
    """The record of ``block`` (recognised on ``x``), from a second capture (as the server reads it)."""
    block.eval()
    recognise(block, x)
    with torch.no_grad(), capture(block) as maps:
        out = block(x)
    return maps[name], out


def lengths_by_hand(offset, groups, taps):
    """Mean over groups and taps of |(dy, dx)|, torchvision's layout: channel g*2*taps + 2t is dy, +1 is dx."""
    total = torch.zeros(offset.shape[0], *offset.shape[2:])
    for g in range(groups):
        for t in range(taps):
            dy, dx = offset[:, g * 2 * taps + 2 * t], offset[:, g * 2 * taps + 2 * t + 1]
            total += torch.sqrt(dy ** 2 + dx ** 2)
    return total / (groups * taps)


@pytest.mark.parametrize("stride, groups", [(1, 1), (2, 2)])
def test_yoloair_param_generator_dcn_offsets_and_mask(stride, groups):
    block = randomise(ParamGeneratorDCN(8, 6, 3, stride=stride, offset_groups=groups), scale=0.3)
    x = torch.randn(2, 8, 9, 10)
    record, _ = read(block, x)
    with torch.no_grad():
        dy_block, dx_block, mask = block.param_generator(x).chunk(3, dim=1)
    offset = torch.cat([dy_block, dx_block], 1)  # what the fork hands the kernel
    h, w = offset.shape[-2:]
    assert record.type == "dcn" and record.offsets.shape == (2, groups, 9, 2, h, w)
    assert torch.equal(record.offsets.reshape(2, -1, h, w), offset)
    assert torch.allclose(record.mask.reshape(2, -1, h, w), mask.sigmoid())
    assert record.kernel_size == (3, 3) and record.stride == (stride, stride) and record.padding == (1, 1)
    assert torch.allclose(record.heatmap, lengths_by_hand(offset, groups, 9), atol=1e-6)


def test_developer0hye_dcn_reads_its_two_convs_and_twice_sigmoid_mask():
    block = randomise(ModulatorDCN(4, 5, kernel_size=3, stride=1, padding=2, dilation=2), scale=0.5)
    x = torch.randn(1, 4, 8, 7)
    record, _ = read(block, x)
    with torch.no_grad():
        offset, mask = block.offset_conv(x), 2 * torch.sigmoid(block.modulator_conv(x))
    assert torch.equal(record.offsets.reshape(1, 18, 8, 7), offset)
    assert torch.allclose(record.mask.reshape(1, 9, 8, 7), mask)
    assert record.mask.max() > 1  # the fork's 2 * sigmoid, as the kernel got it
    assert record.dilation == (2, 2) and record.padding == (2, 2)


def test_torch_ops_dcnv2_fork():
    block = randomise(TorchOpsDCNv2(4, 4, deformable_groups=2), scale=0.3)
    x = torch.randn(1, 4, 6, 6)
    record, _ = read(block, x)
    with torch.no_grad():
        o1, o2, mask = torch.chunk(block.conv_offset_mask(x), 3, dim=1)
    assert torch.equal(record.offsets.reshape(1, 36, 6, 6), torch.cat((o1, o2), 1))
    assert torch.allclose(record.mask.reshape(1, 18, 6, 6), torch.sigmoid(mask))


def test_bubbliiiing_ca_block_gates_by_hand():
    block = randomise(CA_Block(32, reduction=8), scale=0.5)
    x = torch.randn(2, 32, 5, 7)
    record, out = read(block, x)
    with torch.no_grad():  # by hand, as the fork lays it out: strips along dim 3
        strips = torch.cat([x.mean(3, keepdim=True).permute(0, 1, 3, 2), x.mean(2, keepdim=True)], 3)
        z = F.relu(block.bn(block.conv_1x1(strips)))
        a_h = torch.sigmoid(block.F_h(z[..., :5].permute(0, 1, 3, 2)))[..., 0]  # (N, C, H)
        a_w = torch.sigmoid(block.F_w(z[..., 5:]))[:, :, 0]  # (N, C, W)
    assert record.type == "ca" and record.a_h.shape == (2, 32, 5) and record.a_w.shape == (2, 32, 7)
    assert torch.allclose(record.a_h, a_h, atol=1e-6) and torch.allclose(record.a_w, a_w, atol=1e-6)
    assert torch.allclose(x * record.a_h[..., None] * record.a_w[:, :, None], out, atol=1e-6)
    expected = sum(a_h[:, c, :, None] * a_w[:, c, None, :] for c in range(32)) / 32
    assert torch.allclose(record.heatmap, expected, atol=1e-6)


def test_yoloair_gc_with_only_channel_add_and_a_conv_after():
    block = randomise(GC(8, 16, k=3, s=2), scale=0.5)
    x = torch.randn(2, 8, 6, 5)
    record, _ = read(block, x)
    with torch.no_grad():
        expected = F.softmax(block.conv_mask(x).view(2, 30), dim=1).view(2, 6, 5)
    assert record.type == "gc" and torch.allclose(record.context_mask, expected, atol=1e-7)
    assert torch.allclose(record.context_mask.sum((1, 2)), torch.ones(2))


def test_yoloair_bottleneck_csp_gc_pools_its_own_output():
    block = randomise(BottleneckCSPGC(8, 8), scale=0.3)
    x = torch.randn(1, 8, 4, 6)
    record, _ = read(block, x)
    with torch.no_grad():  # the CSP output y, by hand from the module's own layers
        y1 = block.cv3(block.m(block.cv1(x)))
        y = block.cv4(block.act(block.bn(torch.cat((y1, block.cv2(x)), 1))))
        expected = F.softmax(block.conv_mask(y).view(1, 24), dim=1).view(1, 4, 6)
    assert torch.allclose(record.context_mask, expected, atol=1e-7)


def test_timm_global_context():
    block = randomise(GlobalContext(16), scale=0.5)
    x = torch.randn(1, 16, 3, 4)
    record, _ = read(block, x)
    with torch.no_grad():
        expected = F.softmax(block.conv_attn(x).view(1, 12), dim=1).view(1, 3, 4)
    assert torch.allclose(record.context_mask, expected, atol=1e-7)


def test_joint_att_keeps_all_four_groups_joined_along_channels():
    block = randomise(JointAtt(64, 64, reduction=8), scale=0.5)
    x = torch.randn(2, 64, 6, 5)
    record, out = read(block, x)
    assert record.a_h.shape == (2, 64, 6) and record.a_w.shape == (2, 64, 5)  # not 16 of 64
    with torch.no_grad():
        for g in range(4):  # each group by hand, with the shared convs
            part = x[:, 16 * g:16 * (g + 1)]
            y = torch.cat([part.mean(3, keepdim=True), part.mean(2, keepdim=True).permute(0, 1, 3, 2)], 2)
            y = block.act(block.bn1(block.conv1(y)))
            a_h = block.conv_h(y[:, :, :6]).sigmoid()[..., 0]
            a_w = block.conv_w(y[:, :, 6:].permute(0, 1, 3, 2)).sigmoid()[:, :, 0]
            assert torch.allclose(record.a_h[:, 16 * g:16 * (g + 1)], a_h, atol=1e-6), g
            assert torch.allclose(record.a_w[:, 16 * g:16 * (g + 1)], a_w, atol=1e-6), g
    gated = x * record.a_h[..., None] * record.a_w[:, :, None]  # then the fork's shuffle
    assert torch.allclose(gated.reshape(2, 16, 4, 6, 5).permute(0, 2, 1, 3, 4).reshape(2, 64, 6, 5), out, atol=1e-6)


def test_ema_groups_folded_into_the_batch_map_back_to_channels():
    block = randomise(EMA(16, factor=4), scale=0.5)
    x = torch.randn(2, 16, 5, 6)
    record, _ = read(block, x)
    with torch.no_grad():
        groups = x.reshape(8, 4, 5, 6)
        hw = block.conv1x1(torch.cat([groups.mean(3, keepdim=True), groups.mean(2, keepdim=True).permute(0, 1, 3, 2)], 2))
        a_h = hw[:, :, :5].sigmoid()[..., 0].reshape(2, 16, 5)  # group g of image n is channels 4g..4g+3 of n
        a_w = hw[:, :, 5:].sigmoid()[..., 0].reshape(2, 16, 6)
    assert torch.allclose(record.a_h, a_h, atol=1e-6) and torch.allclose(record.a_w, a_w, atol=1e-6)


def phases_by_hand(x):
    return torch.stack([x[..., 0::2, 0::2], x[..., 1::2, 0::2], x[..., 0::2, 1::2], x[..., 1::2, 1::2]], 1)


@pytest.mark.parametrize("make", [lambda: Focus(3, 8, 3), lambda: EinopsSPD(3, 8)])
def test_focus_and_einops_space_to_depth_in_the_official_phase_order(make):
    block = randomise(make(), scale=0.5)
    x = torch.randn(2, 3, 8, 6)
    record, _ = read(block, x)
    phases = phases_by_hand(x)
    assert record.type == "spd"
    assert torch.allclose(record.phase_energy, phases.square().mean(2), atol=1e-6)
    assert torch.allclose(record.phase_detail, phases.var(1, unbiased=False).mean(1), atol=1e-6)
    with torch.no_grad(), capture(block) as maps:  # a flat image: nothing to tell phases apart, the order kept
        block(torch.ones(1, 3, 8, 6))
    assert torch.allclose(maps[""].phase_energy, torch.ones(1, 4, 4, 3))


def test_the_innermost_module_is_the_block():
    class C3(nn.Module):
        def __init__(self):
            super().__init__()
            self.cv1 = nn.Conv2d(8, 8, 1)
            self.m = nn.Sequential(CA_Block(8, 4))

        def forward(self, x):
            return self.m(self.cv1(x)) + x

    assert find_blocks(randomise(C3()).eval(), torch.randn(1, 8, 4, 4)) == {"m.0": "ca"}


def test_a_block_called_twice_keeps_both_calls():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.ca = CA_Block(8, 4)

        def forward(self, x):
            return self.ca(x) + self.ca(x.flip(-1))

    model = randomise(Twice()).eval()
    x = torch.randn(1, 8, 4, 5)
    recognition = recognise(model, x)
    assert [(block.id, block.records) for block in recognition.blocks] == [("ca", ("ca", "ca#2"))]
    with torch.no_grad(), capture(model) as maps:
        model(x)
    first, second = read(model.ca, x)[0], read(model.ca, x.flip(-1))[0]  # each call alone
    assert list(maps) == ["ca", "ca#2"]
    assert torch.allclose(maps["ca"].a_w, first.a_w) and torch.allclose(maps["ca#2"].a_w, second.a_w)
    with torch.no_grad(), capture(model) as maps:  # a second pass replaces the first, it does not add #3, #4
        model(x)
        model(x)
    assert list(maps) == ["ca", "ca#2"]


def test_cbam_and_se_are_no_block_and_say_why():
    model = nn.Sequential(CBAM(16, 4), SEBlock(16)).eval()
    recognition = recognise(model, torch.randn(1, 16, 6, 6))
    assert recognition.blocks == ()
    reasons = {(candidate.id, candidate.why.split(" (")[0]) for candidate in recognition.candidates}
    assert reasons == {("0", "a channel gate"), ("0", "a spatial gate"), ("1", "a channel gate")}
    assert find_blocks(model) == {}


def test_official_and_our_blocks_are_read_by_names_where_names_read_exactly():
    model = nn.Sequential(blocks.CB2d(8), blocks.CA(8, 8), JointAtt(8, 8)).eval()
    recognition = recognise(randomise(model), torch.randn(1, 8, 5, 5))
    how = {block.id: block.how.split(":")[0] for block in recognition.blocks}
    assert how == {"0": "by names", "1": "by names", "2": "by computation"}  # JointAtt's names mislead


def test_user_names_a_block_recognition_attributes_elsewhere():
    class Wrapper(nn.Module):  # the parent the user wants the maps under
        def __init__(self):
            super().__init__()
            self.inner = CA_Block(8, 4)

        def forward(self, x):
            return self.inner(x)

    model = nn.Sequential(randomise(Wrapper())).eval()
    x = torch.randn(1, 8, 4, 4)
    assert find_blocks(model, x) == {"0.inner": "ca"}
    assert find_blocks(model, x, blocks={"0": "ca"}) == {"0": "ca"}
    assert recognise(model, x, blocks={"0": "ca"}).blocks[0].how.startswith("named by the user")
    with pytest.raises(ValueError, match=r"no module '0\.iner'.*nearest: 0\.inner"):
        find_blocks(model, x, blocks={"0.iner": "ca"})
    with pytest.raises(ValueError, match="kind must be one of"):
        find_blocks(model, x, blocks={"0": "cbam"})


def test_a_named_module_that_computes_nothing_of_the_kind_is_a_candidate():
    model = nn.Sequential(SEBlock(8)).eval()
    recognition = recognise(model, torch.randn(1, 8, 4, 4), blocks={"0": "gc"})
    assert recognition.blocks == ()
    assert recognition.candidates[0].why.startswith("named as gc, but it computes nothing read as gc")


def test_recognised_blocks_cost_nothing_where_nothing_was_found():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), CA_Block(8, 4), nn.Conv2d(8, 8, 3)).eval()
    recognise(model, torch.randn(1, 3, 8, 8))
    seen = []
    original = blocks.observe.Observer.__torch_dispatch__

    def counting(self, func, types, args=(), kwargs=None):
        seen.append(str(func))
        return original(self, func, types, args, kwargs)

    blocks.observe.Observer.__torch_dispatch__ = counting
    try:
        with torch.no_grad(), capture(model) as maps:
            model(torch.randn(1, 3, 8, 8))
    finally:
        blocks.observe.Observer.__torch_dispatch__ = original
    assert set(maps) == {"1"}
    assert seen and "aten.convolution.default" in seen  # CA_Block's own 1x1 convs
    assert seen.count("aten.convolution.default") == 3  # conv_1x1, F_h, F_w: the model's two convs are not watched


def test_torchscript_modules_are_run_unread():
    scripted = torch.jit.script(nn.Sequential(nn.Conv2d(3, 8, 3), blocks.CA(8, 8)))
    x = torch.randn(1, 3, 8, 8)
    assert find_blocks(scripted) == {} and find_blocks(scripted, x) == {}
    assert "TorchScript" in recognise(scripted, x).candidates[0].why
    with capture(scripted) as maps:
        scripted(x)
    assert maps == {}


def test_space_to_depth_of_an_odd_input_padded_any_way():
    class ReplicatePadSPD(nn.Module):  # a fork's variant: replicate-pad odd sizes, then slice, in one forward
        def forward(self, x):
            x = F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2), mode="replicate")
            return torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1)

    block = ReplicatePadSPD().eval()
    x = torch.randn(1, 3, 7, 9)
    record, _ = read(block, x)
    padded = F.pad(x, (0, 1, 0, 1), mode="replicate")
    assert torch.allclose(record.phase_energy, phases_by_hand(padded).square().mean(2), atol=1e-6)


def test_a_pattern_that_cannot_read_never_breaks_the_forward(monkeypatch):
    from attnlens.blocks.kinds import KINDS

    def broken(*args, **kwargs):
        raise RuntimeError("a reading bug")

    monkeypatch.setattr(KINDS["ca"].pattern, "see", broken)
    monkeypatch.setattr(KINDS["gc"].pattern, "finish", broken)
    model = nn.Sequential(randomise(CA_Block(8, 4)), randomise(GC(8, 8))).eval()
    x = torch.randn(1, 8, 6, 6)
    with torch.no_grad():
        expected = model(x)
        recognition = recognise(model, x)
        with capture(model) as maps:
            out = model(x)
    assert torch.equal(out, expected) and recognition.blocks == () and maps == {}
    assert any("reading it failed: RuntimeError: a reading bug" in c.why for c in recognition.candidates)
