"""blocks.capture: values against hand computation, official-code modules, hooks, threads."""
import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import DeformConv2d

from attnlens import blocks
from attnlens.blocks import capture, find_blocks
from tests.helpers import randomise
from tests.reference.official_acmix import OfficialACmix
from tests.reference.official_blocks import (
    MmcvContextBlock,
    MmcvDeformConv2dPack,
    MmcvModulatedDeformConv2dPack,
    OfficialCoordAtt,
    SeedCB2d,
)
from tests.reference.official_blocks import space_to_depth as seed_space_to_depth


class UserDeform(nn.Module):
    """A user's own DCN: torchvision's DeformConv2d fed by an offset conv (the seed's recipe)."""

    def __init__(self, channels):
        super().__init__()
        self.offset = nn.Conv2d(channels, 18, 3, padding=1)
        self.torchvision_dcn2d = DeformConv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.torchvision_dcn2d(x, self.offset(x))


def ours_model():
    return nn.Sequential(blocks.SPDConv(3, 16), blocks.CB2d(16), blocks.CA(16, 16), blocks.ACmix(16, 16, head=2),
                         blocks.DCNv2(16, 16, 3, padding=1), blocks.DCN(16, 16, 3, padding=1, stride=2)).eval()


def official_model():
    return nn.Sequential(seed_space_to_depth(), nn.Conv2d(12, 16, 1), SeedCB2d(16),
                         MmcvContextBlock(16, 0.25, fusion_types=("channel_add", "channel_mul")),
                         OfficialCoordAtt(16, 16), OfficialACmix(16, 16, head=2), MmcvDeformConv2dPack(16, 16, 3, padding=1),
                         MmcvModulatedDeformConv2dPack(16, 16, 3, padding=1), UserDeform(16)).eval()


def test_find_blocks_names_kinds_in_order():
    assert find_blocks(ours_model()) == {"0.space_to_depth": "spd", "1": "gc", "2": "ca", "3": "acmix", "4": "dcn",
                                         "5": "dcn"}
    assert find_blocks(official_model()) == {"0": "spd", "2": "gc", "3": "gc", "4": "ca", "5": "acmix", "6": "dcn",
                                             "7": "dcn", "8.torchvision_dcn2d": "dcn"}


@pytest.mark.parametrize("make", [ours_model, official_model])
def test_every_block_reports_heatmap_at_feature_resolution(make):
    model = randomise(make(), scale=0.2)
    x = torch.randn(2, 3, 16, 14)
    with torch.no_grad(), capture(model) as maps:
        model(x)
    assert list(maps) == list(find_blocks(model))  # execution order == module order here
    for name, record in maps.items():
        assert record.heatmap.ndim == 3 and record.heatmap.shape[0] == 2, name
        assert torch.isfinite(record.heatmap).all(), name


@pytest.mark.parametrize("block", [blocks.CB2d(8), SeedCB2d(8), MmcvContextBlock(8, 0.25)])
def test_gc_mask_is_softmax_of_conv_mask_and_sums_to_one(block):
    randomise(block)
    x = torch.randn(2, 8, 5, 6)
    with torch.no_grad(), capture(block) as maps:
        block(x)
    mask = maps[""].context_mask
    expected = F.softmax(block.conv_mask(x).flatten(1), dim=1).view(2, 5, 6)
    assert torch.allclose(mask, expected, atol=1e-7)
    assert torch.allclose(mask.sum((1, 2)), torch.ones(2))
    assert maps[""].type == "gc" and torch.equal(maps[""].heatmap, mask)


def test_gc_avg_pool_mask_is_uniform():
    block = blocks.CB2d(8, pool="avg")
    with capture(block) as maps:
        block(torch.randn(1, 8, 4, 5))
    assert torch.allclose(maps[""].context_mask, torch.full((1, 4, 5), 1 / 20))


@pytest.mark.parametrize("block", [blocks.CA(16, 16), OfficialCoordAtt(16, 16)])
def test_ca_weights_and_heatmap(block):
    randomise(block).eval()
    x = torch.randn(2, 16, 5, 7)
    with torch.no_grad(), capture(block) as maps:
        out = block(x)
    record = maps[""]
    assert record.a_h.shape == (2, 16, 5) and record.a_w.shape == (2, 16, 7)
    # out = x * a_h * a_w, so the weights must reproduce the output
    assert torch.allclose(x * record.a_h[..., :, None] * record.a_w[..., None, :], out, atol=1e-6)
    expected = sum(record.a_h[:, c, :, None] * record.a_w[:, c, None, :] for c in range(16)) / 16
    assert torch.allclose(record.heatmap, expected, atol=1e-7)


def test_acmix_attention_from_official_and_ours_equal_official_attention():
    official = randomise(OfficialACmix(16, 16, kernel_att=5, head=2, stride=2))
    ours = blocks.ACmix(16, 16, kernel_att=5, head=2, stride=2)
    ours.load_state_dict(official.state_dict())
    x = torch.randn(2, 16, 10, 8)
    with torch.no_grad(), capture(official) as official_maps, capture(ours) as our_maps:
        official(x)
        ours(x)
    assert set(official_maps) == set(our_maps) == {""}
    expected = official.last_attention.view(2, 2, 25, 5, 4)
    for record in (official_maps[""], our_maps[""]):
        assert record.attention.shape == (2, 2, 25, 5, 4)
        assert torch.allclose(record.attention, expected, atol=1e-6)
        assert (record.rate1, record.rate2) == (official.rate1.item(), official.rate2.item())
        assert torch.allclose(record.attention.sum(2), torch.ones(2, 2, 5, 4))
        received = record.heatmap
        assert received.shape == (2, 10, 8)
        assert torch.allclose(received.sum((1, 2)), torch.full((2,), 20.0))  # every query hands out 1


def test_acmix_received_hand_loop():
    block = randomise(blocks.ACmix(8, 8, kernel_att=3, head=2), scale=1.0)
    x = torch.randn(1, 8, 4, 5)
    with torch.no_grad(), capture(block) as maps:
        block(x)
    attention = maps[""].attention.mean(1)[0]  # (9, 4, 5)
    reflect = lambda i, n: -i if i < 0 else (2 * (n - 1) - i if i >= n else i)  # noqa: E731
    expected = torch.zeros(4, 5)
    for i in range(4):
        for j in range(5):
            for a in range(3):
                for b in range(3):
                    expected[reflect(i + a - 1, 4), reflect(j + b - 1, 5)] += attention[a * 3 + b, i, j]
    assert torch.allclose(maps[""].heatmap[0], expected, atol=1e-6)


@pytest.mark.parametrize("make", [lambda: blocks.DCN(4, 4, 3, padding=1, deform_groups=2),
                                  lambda: blocks.DCNv2(4, 4, 3, padding=1, deform_groups=2),
                                  lambda: MmcvDeformConv2dPack(4, 4, 3, padding=1, deform_groups=2),
                                  lambda: MmcvModulatedDeformConv2dPack(4, 4, 3, padding=1, deform_groups=2)])
def test_dcn_known_offsets_recorded_in_dy_dx_order(make):
    block = make()
    modulated = block.conv_offset.out_channels == 54
    with torch.no_grad():
        block.conv_offset.bias[:36].view(2, 9, 2).copy_(torch.tensor([1.5, -2.0]))  # (group, tap, [dy, dx])
        if modulated:
            block.conv_offset.bias[36:] = 2.0
    with torch.no_grad(), capture(block) as maps:
        block(torch.randn(1, 4, 6, 5))
    record = maps[""]
    assert record.offsets.shape == (1, 2, 9, 2, 6, 5)
    assert torch.allclose(record.offsets[:, :, :, 0], torch.full((1, 2, 9, 6, 5), 1.5))
    assert torch.allclose(record.offsets[:, :, :, 1], torch.full((1, 2, 9, 6, 5), -2.0))
    assert torch.allclose(record.heatmap, torch.full((1, 6, 5), 2.5))  # |(1.5, -2)|
    if modulated:
        assert torch.allclose(record.mask, torch.full((1, 2, 9, 6, 5), torch.sigmoid(torch.tensor(2.0)).item()))
    else:
        assert record.mask is None
    assert (record.kernel_size, record.stride, record.padding) == ((3, 3), (1, 1), (1, 1))


def test_dcn_torchvision_module_fed_by_user_offset_conv():
    block = randomise(UserDeform(4), scale=0.3)
    x = torch.randn(1, 4, 5, 5)
    with torch.no_grad(), capture(block) as maps:
        block(x)
        expected = block.offset(x)
    assert torch.allclose(maps["torchvision_dcn2d"].offsets, expected.view(1, 1, 9, 2, 5, 5))


def test_spd_phase_energy_and_detail():
    block = blocks.space_to_depth()
    x = torch.randn(1, 3, 4, 6)
    with capture(block) as maps:
        block(x)
    phases = [x[..., r::2, c::2] for r, c in ((0, 0), (1, 0), (0, 1), (1, 1))]
    energy = torch.stack([p.square().mean(1) for p in phases], 1)
    assert torch.allclose(maps[""].phase_energy, energy)
    stacked = torch.stack(phases)  # (4, N, C, h, w)
    detail = ((stacked - stacked.mean(0)) ** 2).mean(0).mean(1)
    assert torch.allclose(maps[""].heatmap, detail, atol=1e-6)


def all_hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_no_hooks_outside_capture_and_removed_on_exceptions():
    model = ours_model()
    assert all_hooks(model) == 0
    with capture(model):
        assert all_hooks(model) > 0
    assert all_hooks(model) == 0
    with pytest.raises(RuntimeError):
        with capture(model):
            model(torch.randn(1, 5, 8, 8))  # wrong channel count
    assert all_hooks(model) == 0


def test_forward_outside_capture_records_nothing():
    model = ours_model()
    with capture(model) as maps:
        pass
    model(torch.randn(1, 3, 8, 8))
    assert maps == {}


def test_concurrent_captures_on_one_model_stay_apart():
    model = randomise(ours_model(), scale=0.2)
    inputs = [torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    with torch.no_grad():
        expected = []
        for x in inputs:
            with capture(model) as maps:
                model(x)
            expected.append({name: record.heatmap for name, record in maps.items()})
    barrier = threading.Barrier(2)
    errors = []

    def worker(index):
        try:
            for _ in range(40):
                barrier.wait()
                with torch.no_grad(), capture(model) as maps:
                    model(inputs[index])
                assert list(maps) == list(expected[index])
                for name, record in maps.items():
                    assert torch.allclose(record.heatmap, expected[index][name], atol=1e-5), name
        except BaseException as error:  # noqa: BLE001 - reported in the main thread
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert all_hooks(model) == 0


def test_a_module_whose_children_change_is_read_again():
    """Recognition is remembered per module (capture is called per request), but not past a change of children."""
    holder = nn.Sequential(nn.Module())
    assert find_blocks(holder) == {}
    block = holder[0]
    for name in ("conv1", "bn1", "conv_h", "conv_w"):  # CA's structure, added afterwards
        setattr(block, name, nn.Identity())
    assert find_blocks(holder) == {"0": "ca"}
