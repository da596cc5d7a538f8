"""The shipped trained blocks: they load into the default model and their maps beat the centre prior on
shipped held-out composites (objects and backgrounds never seen in training)."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attnlens import blocks
from attnlens.evaluation.measures import centre_map, mask_region, measure, to_image
from attnlens.models import InputGeometry
from attnlens.models.builtin import shipped_blocks_path
from attnlens.models.weights import read_state_dict

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
    scores, prior = {kind: [] for kind in LEARNED_KINDS}, []
    for image_path in sorted(COMPOSITES.glob("[0-9][0-9].jpg")):
        image = torch.from_numpy(np.asarray(Image.open(image_path), dtype=np.float32) / 255).permute(2, 0, 1)
        mask = torch.from_numpy(np.asarray(Image.open(image_path.with_name(image_path.stem + "-mask.png"))) > 127)
        region = mask_region(mask)
        height, width = mask.shape
        geometry = InputGeometry(size=(width, height), content=(0, 0, width, height), image_size=(width, height))
        with torch.no_grad(), blocks.capture(trained.module) as maps:
            trained.module(trained.normalize(image[None]))
        for record in maps.values():
            if record.type in scores:
                scored = measure(to_image(record.heatmap[0], geometry), region)
                scores[record.type].append((scored["pointing"], scored["energy"]))
        scored = measure(centre_map(width, height, "cpu"), region)
        prior.append((scored["pointing"], scored["energy"]))
    assert len(prior) == 16
    prior_pointing, prior_energy = np.mean(prior, axis=0)
    means = {kind: np.mean(values, axis=0) for kind, values in scores.items()}
    for kind, (_, energy) in means.items():
        assert energy > prior_energy, kind
    assert np.mean([pointing for pointing, _ in means.values()]) > prior_pointing
