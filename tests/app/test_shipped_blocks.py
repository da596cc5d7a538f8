"""The shipped trained blocks: they load into the default model and their maps beat the centre prior on
shipped held-out composites (objects and backgrounds never seen in training)."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attnlens import blocks
from attnlens.models.loading import read_state_dict, shipped_blocks_path
from attnlens.training.evaluate import centre_prior, energy_in_mask, near_mask, pointing_hit, stretch

COMPOSITES = Path(__file__).resolve().parents[1] / "data" / "composites"
LEARNED_KINDS = ("gc", "ca", "acmix")  # the trained attention maps (model card)


@pytest.fixture(scope="module")
def trained(default_model):
    return default_model


def test_shipped_blocks_load_into_the_default_model(trained):
    path = shipped_blocks_path()
    assert path is not None and trained.blocks_trained
    state = read_state_dict(path)
    assert state and all(name.startswith("plugins.") for name in state)
    assert path.stat().st_size < 5 * 2**20
    module_state = trained.module.state_dict()
    for name, tensor in state.items():
        assert torch.equal(module_state[name].cpu(), tensor)


def test_trained_maps_beat_the_centre_prior_on_held_out_composites(trained):
    # 16 composites are few: each kind must put more of its mass on the object than the centre prior,
    # and the kinds together must point at it more often (the model card has the 192-composite figures)
    strides = {b.id: b.feature_stride for b in trained.blocks}
    scores, prior = {kind: [] for kind in LEARNED_KINDS}, []
    for image_path in sorted(COMPOSITES.glob("[0-9][0-9].jpg")):
        image = torch.from_numpy(np.asarray(Image.open(image_path), dtype=np.float32) / 255).permute(2, 0, 1)
        mask = np.asarray(Image.open(image_path.with_name(image_path.stem + "-mask.png"))) > 127
        near = near_mask(mask)
        with torch.no_grad(), blocks.capture(trained.module) as maps:
            trained.module(trained.normalize(image[None]))
        for name, record in maps.items():
            if record.type in scores:
                heatmap = stretch(record.heatmap[0], strides[name], mask.shape)
                scores[record.type].append((pointing_hit(heatmap, mask, near=near), energy_in_mask(heatmap, mask)))
        prior.append((pointing_hit(centre_prior(), mask, near=near), energy_in_mask(centre_prior(), mask)))
    assert len(prior) == 16
    prior_pointing, prior_energy = np.mean(prior, axis=0)
    means = {kind: np.mean(values, axis=0) for kind, values in scores.items()}
    for kind, (_, energy) in means.items():
        assert energy > prior_energy, kind
    assert np.mean([pointing for pointing, _ in means.values()]) > prior_pointing
