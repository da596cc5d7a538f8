"""Deformable convolutions that sample by hand (tests/reference/sampled_dcn.py): recognised by what they compute,
their offsets and mask in torchvision's layout equal to each block's own (kept by hand in its layout), and
``torchvision.ops.deform_conv2d`` given what was read computes the block's own output (an independent sampler)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import deform_conv2d

from attnlens.blocks import capture, recognise
from tests.helpers import randomise
from tests.reference.sampled_dcn import ChannelsLastDCNv3, GatherDCNv2, GridSampleDCN

CASES = {  # block, its input, geometry (kernel, stride, padding, dilation), a second input of another size
    "gather DCNv2": (lambda: GatherDCNv2(4, 5), (2, 4, 9, 8), ((3, 3), (1, 1), (1, 1), (1, 1)), (1, 4, 12, 7)),
    "gather DCNv2, stride 2": (lambda: GatherDCNv2(3, 4, stride=2), (1, 3, 10, 9), ((3, 3), (2, 2), (1, 1), (1, 1)),
                               (3, 3, 7, 12)),
    "grid_sample DCNv1": (lambda: GridSampleDCN(4, 6), (1, 4, 11, 12), ((3, 3), (2, 2), (2, 2), (2, 2)), (2, 4, 8, 9)),
    "channels-last DCNv3": (lambda: ChannelsLastDCNv3(8, group=2), (2, 7, 6, 8), ((3, 3), (1, 1), (1, 1), (1, 1)),
                            (1, 5, 9, 8)),
    "DCNv3, 5x5, offset scale": (lambda: ChannelsLastDCNv3(6, kernel_size=5, group=3, padding=2, offset_scale=0.5),
                                 (1, 8, 7, 6), ((5, 5), (1, 1), (2, 2), (1, 1)), (2, 6, 6, 6)),
}


def channels_first(block, tensor):
    return tensor.permute(0, 3, 1, 2) if isinstance(block, ChannelsLastDCNv3) else tensor


@pytest.mark.parametrize("case", CASES)
def test_hand_written_sampling_is_read_exactly_at_every_input_size(case):
    make, shape, geometry, other = CASES[case]
    block = randomise(make(), scale=0.4).eval()
    found = recognise(block, torch.randn(*shape))
    assert [(b.id, b.kind) for b in found.blocks] == [("", "dcn")]
    for x in (torch.randn(*shape), torch.randn(*other)):  # a new size: its layout found again
        with torch.no_grad(), capture(block) as maps:
            out = block(x)
        record = maps[""]
        with torch.no_grad():
            offsets, mask = block.offsets_by_hand(x), block.mask_by_hand(x)
        assert record.offsets.shape == offsets.shape
        assert torch.allclose(record.offsets, offsets, atol=2e-5)
        assert (record.mask is None) == (mask is None)
        if mask is not None:
            assert torch.allclose(record.mask, mask, atol=1e-6)
        assert (record.kernel_size, record.stride, record.padding, record.dilation) == geometry
        n, groups, taps, _, height, width = record.offsets.shape
        with torch.no_grad():
            again = deform_conv2d(channels_first(block, x), record.offsets.reshape(n, -1, height, width),
                                  block.torchvision_weight(), stride=record.stride, padding=record.padding,
                                  dilation=record.dilation,
                                  mask=None if record.mask is None else record.mask.reshape(n, -1, height, width))
        assert torch.allclose(again, channels_first(block, out), atol=2e-5)


def test_inside_a_model_with_batch_norm_in_training_the_statistics_move_once():
    class NormedDCN(GatherDCNv2):
        def __init__(self):
            super().__init__(4, 4)
            self.norm = nn.BatchNorm2d(4)  # inside the block, which recognition runs again

        def forward(self, x):
            return self.norm(super().forward(x))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3, padding=1)
            self.dcn = NormedDCN()
            self.head = nn.Conv2d(4, 2, 1)

        def forward(self, x):
            return self.head(self.dcn(self.stem(x)))

    net = randomise(Net(), scale=0.3)
    reference = randomise(Net(), scale=0.3)
    x = torch.randn(2, 3, 8, 8)
    net.train()
    reference.train()
    with torch.no_grad():
        found = recognise(net, x)
        reference(x)
    assert [b.id for b in found.blocks] == ["dcn"]
    assert torch.equal(net.dcn.norm.running_mean, reference.dcn.norm.running_mean)
    assert net.dcn.norm.num_batches_tracked == 1


class Warp(nn.Module):
    """A spatial transformer: one affine warp of the whole map (grid_sample), no k x k taps."""

    def __init__(self):
        super().__init__()
        self.theta = nn.Linear(4, 6)

    def forward(self, x):
        theta = self.theta(x.mean((2, 3))).view(-1, 2, 3)
        return F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False), align_corners=False)


def test_a_warp_that_is_no_deformable_convolution_is_not_read_and_says_why():
    found = recognise(randomise(Warp(), scale=0.2).eval(), torch.randn(1, 4, 6, 6))
    assert not found.blocks
    assert any("grid_sample" in candidate.why and "not a deformable convolution" in candidate.why
               for candidate in found.candidates)
