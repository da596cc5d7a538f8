"""Pointing game and energy-in-mask (``attnlens.evaluation.measures`` on a mask region) on hand-made cases."""
import numpy as np
import pytest
import torch

from attnlens.evaluation.measures import mask_region, measure, to_image
from attnlens.models import InputGeometry


@pytest.fixture
def mask():
    mask = torch.zeros(100, 100, dtype=torch.bool)
    mask[40:60, 40:60] = True
    return mask


def peak_at(y, x):
    heatmap = torch.zeros(100, 100)
    heatmap[y, x] = 1.0
    return heatmap


def pointing(heatmap, mask):
    return measure(heatmap, mask_region(mask))["pointing"]


def energy(heatmap, mask):
    return measure(heatmap.float(), mask_region(mask))["energy"]


def test_pointing_game(mask):
    assert pointing(peak_at(50, 50), mask) == 1.0
    assert pointing(peak_at(50, 74), mask) == 1.0  # 15 px right of the mask edge (column 59)
    assert pointing(peak_at(50, 75), mask) == 0.0  # 16 px


def test_pointing_diagonal_is_euclidean(mask):
    assert pointing(peak_at(69, 69), mask) == 1.0  # (10, 10) from the corner (59, 59): 14.1 px
    assert pointing(peak_at(71, 71), mask) == 0.0  # (12, 12): 17 px


def test_flat_map_scores_chance(mask):
    flat = torch.ones(100, 100)
    assert pointing(flat, mask) == pytest.approx(mask_region(mask).near.float().mean().item())
    assert energy(flat, mask) == pytest.approx(mask.float().mean().item())


def test_energy_in_mask(mask):
    assert energy(mask, mask) == pytest.approx(1.0)
    assert energy(~mask, mask) == pytest.approx(0.0)
    half = mask.float() * 0.5 + 0.5  # min-max normalised: 1 inside, 0 outside
    assert energy(half, mask) == pytest.approx(1.0)


def test_cells_cover_the_image_at_their_stride():
    cells = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    geometry = InputGeometry(size=(32, 32), content=(0, 0, 32, 32), image_size=(32, 32))
    image = to_image(cells, geometry).numpy()  # 2 x 2 cells of 16 px
    assert image.shape == (32, 32)
    assert image[7, 24] == pytest.approx(1.0) and image[24, 7] == pytest.approx(0.0)  # cell centres: 7.5, 23.5
    assert np.all(image[:8, 24:] == pytest.approx(1.0))  # edges clamped beyond the outer cell centres
