"""Where the blocks go in each backbone, initialised so the augmented model predicts exactly as the plain one.

Every kind appears once per backbone, at a place chosen for what it does and what it costs:

* **SPD** replaces the stem's stride-2 convolution, rewritten exactly from the pretrained weights
  (``SPDConv.from_strided_conv``: a stride-2 k x k conv == space_to_depth + a stride-1 conv on 4C).
* **DCN** (deformable conv) where a regular convolution samples a neighbourhood. ResNets: in place of
  the 3x3 conv of layer3's last bottleneck, offsets zero, so it starts as that conv. Lite0 has no
  regular 3x3 conv past the stem, and torchvision's deformable kernel is ~100x slower than a plain
  depthwise conv (measured: 8 ms vs 0.08 ms for Lite0 block 7's 480-channel depthwise conv on 2 CPU
  threads, against 13 ms for the whole network), so there it is a zero-gated residual branch with a
  regular 3x3 DCN at stride 8 (~1 ms).
* **CA** (coordinate attention) and **GC** (global context) at stride 16, where features are
  semantic but maps still have 14 x 14 cells at 224 px. GC uses the ``channel_add`` fusion, which is
  the identity at init. In Lite0 both follow block 10 (the end of stage 5), CA first: there its row /
  column means tell the object's rows and columns apart better than after block 7 (measured: held-out
  energy 0.20 vs 0.16 at 300 steps, README model card). CA keeps its official multiplicative form, so
  its weights always mean "how much of each row / column is kept": it starts uniform and block 11's
  expand conv divides the uniform factor out (exact at init). In ResNets it is a zero-gated residual.
* **ACmix** at a low-resolution stage (stride 16), where its 7 x 7 window spans half the image, as a
  zero-gated residual branch.

``GatedResidual``'s gate starts at 0, so before any training the augmented model computes exactly
what the plain backbone computes.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from attnlens.blocks import CA, DCN, ACmix, CB2d, SPDConv

from .backbones.efficientnet_lite import EfficientNetLite0

__all__ = ["GatedResidual", "augment_lite0", "augment_resnet"]


class GatedResidual(nn.Module):
    """``out = x + gate * branch(x)``; ``gate`` (a learnable scalar) starts at 0: the identity."""

    def __init__(self, branch: nn.Module):
        super().__init__()
        self.branch = branch
        self.gate = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.gate * self.branch(x)


INIT_SEED = 0  # block initialisation is seeded: the same untrained model (and maps) on every load
CA_INIT_BIAS = 1.0  # CA starts as a uniform keep-factor sigmoid(1)^2 = 0.53, where its sigmoids still learn


def near_identity_coordinate_attention(channels: int, bias: float = CA_INIT_BIAS) -> tuple[CA, float]:
    """CA in its official, purely multiplicative form (``x * a_h * a_w``, weights in (0, 1): a keep-factor
    with one meaning), started uniform: ``conv_h`` / ``conv_w`` weights zero, bias ``bias``, so every
    position is scaled by ``keep = sigmoid(bias)**2``. Returns the block and ``keep`` (for the reader of its
    output to divide out, which makes the model exact at init)."""
    block = CA(channels, channels)
    with torch.no_grad():
        for conv in (block.conv_h, block.conv_w):
            conv.weight.zero_()
            conv.bias.fill_(bias)
    return block, float(torch.sigmoid(torch.tensor(bias)) ** 2)


def augment_lite0(model: EfficientNetLite0) -> EfficientNetLite0:
    """Lite0 with SPD stem, DCN after block 4 (stride 8), ACmix after block 9, then CA and GC after
    block 10 (stride 16). In place; returns ``model``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED)
        return _augment_lite0(model)


def _augment_lite0(model: EfficientNetLite0) -> EfficientNetLite0:
    stem = model._conv_stem
    model._conv_stem = SPDConv.from_strided_conv(stem, padding="same")
    model.add_plugin("dcn", 4, GatedResidual(DCN(40, 40, 3, padding=1)))
    model.add_plugin("acmix", 9, GatedResidual(ACmix(112, 112, kernel_att=7, head=4)))
    ca, keep = near_identity_coordinate_attention(112)
    model.add_plugin("ca", 10, ca)
    model.add_plugin("gc", 10, CB2d(112, fusions=["channel_add"]))
    # CA's output reaches block 11 (no skip) only through GC, which adds nothing at init: undo the uniform factor
    with torch.no_grad():
        model._blocks[11]._expand_conv.weight.div_(keep)
    return model


def augment_resnet(model: nn.Module) -> nn.Module:
    """torchvision ResNet with SPD stem, DCN in layer3's last 3x3 conv, CA after layer2 (stride 8),
    ACmix and GC after layer3 (stride 16), appended to the layers so the pretrained keys are kept."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED)
        return _augment_resnet(model)


def _augment_resnet(model: nn.Module) -> nn.Module:
    model.conv1 = SPDConv.from_strided_conv(model.conv1)
    last = model.layer3[-1]
    conv = last.conv2
    dcn = DCN(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
              conv.groups)
    with torch.no_grad():
        dcn.weight.copy_(conv.weight)
    last.conv2 = dcn
    channels2 = model.layer2[-1].conv1.in_channels
    channels3 = model.layer3[-1].conv1.in_channels
    model.layer2.append(GatedResidual(CA(channels2, channels2)))
    model.layer3.append(GatedResidual(ACmix(channels3, channels3, kernel_att=7, head=4)))
    model.layer3.append(CB2d(channels3, fusions=["channel_add"]))
    return model
