"""A tiny training run: it lowers the loss, saves only the trained block parameters, and resumes."""
import itertools

import pytest
import torch
from safetensors.torch import load_file

from attnlens.training import train as training
from attnlens.training.composites import CompositeSet
from attnlens.training.train import TrainConfig, train
from tests.app.fake_sources import make_sources


@pytest.fixture(scope="module")
def one_batch(tmp_path_factory):
    data = CompositeSet("train", 4, sources=make_sources(tmp_path_factory.mktemp("debian")),
                        cache=tmp_path_factory.mktemp("backgrounds"))
    items = [data[i] for i in range(4)]
    return torch.stack([i["image"] for i in items]), torch.stack([i["teacher"] for i in items])


def test_tiny_distillation_run_lowers_the_loss(tmp_path, one_batch, monkeypatch):
    # the same batch at every step, so the loss can only fall if the optimisation works
    monkeypatch.setattr(training, "_composite_batches", lambda config, start: itertools.repeat(one_batch))
    result = train(TrainConfig(out=tmp_path, steps=8, batch_size=4, lr=3e-2, checkpoint_every=4, device="cpu"))
    losses = result["losses"]
    assert len(losses) == 8 and losses[-1] < losses[0]
    saved = load_file(str(result["weights"]))
    assert saved and all(name.startswith("plugins.") for name in saved)  # only what was trained
    assert sum(t.numel() for t in saved.values()) * 4 < 5 * 2**20  # small enough to ship

    resumed = train(TrainConfig(out=tmp_path, steps=10, batch_size=4, lr=3e-2, resume=True, device="cpu"))
    assert len(resumed["losses"]) == 10 and resumed["losses"][:8] == losses  # continued, not restarted


def test_supervised_run_on_an_image_folder(tmp_path):
    from PIL import Image

    for label, colour in (("red", (220, 20, 20)), ("blue", (20, 20, 220))):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (48, 40), colour).save(tmp_path / "data" / label / f"{i}.png")
    result = train(TrainConfig(out=tmp_path / "run", steps=2, batch_size=2, data=tmp_path / "data", device="cpu"))
    saved = load_file(str(result["weights"]))
    assert saved["_fc.weight"].shape == (2, 1280)  # a new head for the folder's classes, trained with the blocks
    assert len(result["losses"]) == 2


def test_probes_read_the_blocks_outputs_not_their_maps():
    from attnlens.models.loading import load_model
    from attnlens.training.train import BlockProbes

    module = load_model("efficientnet_lite0_untrained", device="cpu").module
    seen = {}
    watch = [module.plugins[name].register_forward_hook(
        lambda block, inputs, output, name=name: seen.__setitem__(name, (inputs[0], output)))
        for name in ("gc", "ca", "acmix")]
    probes = BlockProbes(module.plugins, 1000)
    handles = probes.attach()
    with torch.no_grad():
        module(torch.randn(2, 3, 224, 224))
    for handle in handles + watch:
        handle.remove()
    assert not any(block._forward_hooks for block in module.plugins.modules())

    x, _ = seen["gc"]  # GC: the block's own context vector, pooled with softmax(conv_mask(x)) by hand
    weights = torch.softmax(module.plugins["gc"].conv_mask(x).flatten(1), dim=1)
    context = (x.flatten(2) * weights[:, None, :]).sum(2)
    torch.testing.assert_close(probes.pooled["gc"], context, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(probes.pooled["ca"], seen["ca"][1].mean(dim=(2, 3)))
    with torch.no_grad():  # ACmix: its branch's output (the gated residual adds it scaled by the gate)
        branch = module.plugins["acmix"].branch(seen["acmix"][0])
    torch.testing.assert_close(probes.pooled["acmix"], branch.mean(dim=(2, 3)))
    assert [logits.shape for logits in probes.logits(slice(0, 2))] == [(2, 1000)] * 3
