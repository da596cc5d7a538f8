"""``attnlens eval``'s scoring: Grad-CAM against a plain implementation, and ``evaluate`` on a small fake of the
Debian data against scores worked out here from the composites' masks."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from attnlens.analysis.imaging import decode_image
from attnlens.models import load_model
from attnlens.training.composites import SIZE, CompositeSet
from attnlens.training.evaluate import evaluate, grad_cam
from tests.app.fake_sources import make_sources

GRAD_CAM_ROW = "Grad-CAM, plain backbone last stage"
REFERENCE_ROW = "Grad-CAM reference, trained model (what include=gradcam serves)"


@pytest.fixture(scope="module")
def plain():
    return load_model("efficientnet_lite0_plain", device="cpu")


def lite0_normalise(images: torch.Tensor) -> torch.Tensor:
    return (images * 255 - 127) / 128  # Lite0's documented input normalisation


def reference_grad_cam(module: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """Grad-CAM written out for one image ``(3, H, W)`` in [0, 1]: the last stage's activations A (kept with a
    forward hook), the gradient of the top-1 logit w.r.t. A by ``backward``, channel weights = that gradient's
    mean over positions, CAM = ReLU(sum over channels of weight x A)."""
    kept = []
    handle = module._blocks[-1].register_forward_hook(lambda block, args, output: kept.append(output))
    try:
        with torch.enable_grad():
            logits = module(lite0_normalise(image[None]))
            activations = kept[0]
            activations.retain_grad()
            logits[0, logits[0].argmax()].backward()
    finally:
        handle.remove()
        module.zero_grad(set_to_none=True)
    weights = activations.grad[0].mean(dim=(1, 2))  # (C,)
    return torch.relu((weights[:, None, None] * activations[0]).sum(dim=0)).detach()


def test_grad_cam_of_the_plain_backbone_matches_a_written_out_grad_cam(plain, photos):
    batch = torch.stack([
        torch.from_numpy(np.asarray(decode_image(photos[name]).resize((SIZE, SIZE), Image.BICUBIC),
                                    dtype=np.float32) / 255).permute(2, 0, 1)
        for name in ("cat", "espresso")])
    cams = grad_cam(plain, batch)
    assert cams.shape == (2, 7, 7)  # stride 32 at 224 px
    for i in range(2):
        expected = reference_grad_cam(plain.module, batch[i])
        assert expected.max() > 0 and not torch.equal(expected, expected.flatten()[0].expand_as(expected))
        torch.testing.assert_close(cams[i], expected, rtol=1e-4, atol=1e-5 * float(expected.max()))


class TinyNet(nn.Module):
    """Last stage: a 1x1 conv that is the identity (so A is the input); head: mean over positions, then W."""

    def __init__(self, head: list[list[float]]):
        super().__init__()
        stage = nn.Conv2d(2, 2, 1, bias=False)
        classifier = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            stage.weight.copy_(torch.eye(2)[:, :, None, None])
            classifier.weight.copy_(torch.tensor(head))
        self._blocks = nn.ModuleList([stage])
        self.classifier = classifier

    def forward(self, x):
        return self.classifier(self._blocks[-1](x).mean(dim=(2, 3)))


def test_grad_cam_by_hand():
    """Logit k = sum_c W[k, c] mean(A_c), so dlogit/dA_c = W[k, c] / 4 at every one of the 4 positions and
    CAM = ReLU(sum_c W[k, c] / 4 * A_c) for the top class k."""
    module = TinyNet([[1.0, -1.0], [0.2, 0.2]])
    model = SimpleNamespace(module=module, device=torch.device("cpu"), reference_layers=["_blocks.0"],
                            forward=lambda x: module(x))
    batch = torch.tensor([
        [[[4.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 2.0]]],  # logits (0.5, 0.3): class 0, CAM (A0 - A1) / 4
        [[[0.0, 0.0], [0.0, 0.0]], [[4.0, 4.0], [4.0, 4.0]]],  # logits (-4, 0.8): class 1, CAM 0.05 (A0 + A1)
    ])
    expected = torch.tensor([[[1.0, 0.0], [0.0, 0.0]],  # (1, 0; 0, -0.5) through the ReLU
                             [[0.2, 0.2], [0.2, 0.2]]])
    torch.testing.assert_close(grad_cam(model, batch), expected)


# --- evaluate() on fake data ----------------------------------------------------------------------------

COUNT = 4


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    return make_sources(tmp_path_factory.mktemp("debian"))


@pytest.fixture(scope="module")
def scored(default_model, plain, sources, tmp_path_factory):
    untrained = load_model("efficientnet_lite0_untrained", device="cpu")
    with pytest.MonkeyPatch.context() as patch:  # evaluate caches backgrounds under ~/.cache: not the real one
        patch.setenv("HOME", str(tmp_path_factory.mktemp("home")))
        scores = evaluate(default_model, untrained, plain, count=COUNT, sources=sources)
    return scores, untrained


@pytest.fixture(scope="module")
def heldout(sources, tmp_path_factory):
    """The composites evaluate scores (held-out split, its default seed 1), made here."""
    data = CompositeSet("heldout", COUNT, seed=1, sources=sources, cache=tmp_path_factory.mktemp("backgrounds"))
    return [data.composite(i) for i in range(COUNT)]


def near(mask: np.ndarray, radius: int = 15) -> np.ndarray:
    """Pixels within ``radius`` px (Euclidean) of the mask, by OR-ing the mask shifted by every offset of the disk."""
    padded = np.pad(mask, radius)
    out = np.zeros_like(mask)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy * dy + dx * dx <= radius * radius:
                out |= padded[radius + dy: radius + dy + mask.shape[0], radius + dx: radius + dx + mask.shape[1]]
    return out


def test_near_mask_by_hand():
    mask = np.zeros((40, 40), dtype=bool)
    mask[20, 20] = True
    ring = near(mask)
    assert ring[20, 35] and ring[29, 32] and not ring[20, 36] and not ring[31, 31]  # 9^2 + 12^2 = 15^2; 11^2 * 2 > 225


def test_rows_cover_every_block_and_the_baselines(scored, default_model):
    scores, untrained = scored
    expected = ({f"trained {b.type} ({b.id})" for b in default_model.blocks}
                | {f"untrained {b.type} ({b.id})" for b in untrained.blocks}
                | {"centre prior", "uniform", GRAD_CAM_ROW, REFERENCE_ROW})
    assert set(scores["rows"]) == expected and len(expected) == 2 * 5 + 4
    assert scores["count"] == COUNT
    for name, row in scores["rows"].items():
        assert set(row) == {"pointing", "energy"}
        assert 0 <= row["pointing"] <= 1 and 0 <= row["energy"] <= 1, name


def test_uniform_map_scores_the_object_area_and_the_near_share(scored, heldout):
    """A flat map: every pixel ties for the maximum (pointing = the share of near-object pixels) and its mass
    is spread evenly (energy = the object's area share)."""
    uniform = scored[0]["rows"]["uniform"]
    masks = [item.mask for item in heldout]
    assert all(0 < mask.mean() < 0.5 for mask in masks)
    assert uniform["energy"] == pytest.approx(np.mean([mask.mean() for mask in masks]), abs=1e-9)
    assert uniform["pointing"] == pytest.approx(np.mean([near(mask).mean() for mask in masks]), abs=1e-9)
    assert uniform["pointing"] > uniform["energy"]  # near the object is more than the object


def test_centre_prior_scores(scored, heldout):
    """A Gaussian of sigma SIZE/4 at the image centre: its four central pixels tie for the maximum."""
    axis = np.arange(SIZE) - (SIZE - 1) / 2
    prior = np.exp(-(axis[:, None] ** 2 + axis[None, :] ** 2) / (2 * (SIZE / 4) ** 2))
    centre = [SIZE // 2 - 1, SIZE // 2]
    pointing, energy = [], []
    for item in heldout:
        pointing.append(near(item.mask)[np.ix_(centre, centre)].mean())
        normalised = (prior - prior.min()) / (prior.max() - prior.min())
        energy.append((normalised * item.mask).sum() / normalised.sum())
    row = scored[0]["rows"]["centre prior"]
    assert row["pointing"] == pytest.approx(np.mean(pointing), abs=1e-9)
    assert row["energy"] == pytest.approx(np.mean(energy), abs=1e-6)


def test_agreement_is_the_share_of_same_top1_on_the_objects_alone(scored, heldout, default_model, plain):
    teachers = torch.stack([torch.from_numpy(np.asarray(item.teacher, dtype=np.float32) / 255).permute(2, 0, 1)
                            for item in heldout])
    with torch.no_grad():
        student = default_model.module(lite0_normalise(teachers)).argmax(1)
        reference = plain.module(lite0_normalise(teachers)).argmax(1)
    assert scored[0]["agreement"] == pytest.approx((student == reference).float().mean().item())
    assert 0 <= scored[0]["agreement"] <= 1
