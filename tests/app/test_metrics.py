"""Pointing game and energy-in-mask on hand-made cases."""
import numpy as np
import pytest
import torch

from attnlens.training.evaluate import energy_in_mask, near_mask, pointing_hit, stretch


@pytest.fixture
def mask():
    mask = np.zeros((100, 100), bool)
    mask[40:60, 40:60] = True
    return mask


def peak_at(y, x):
    heatmap = np.zeros((100, 100))
    heatmap[y, x] = 1.0
    return heatmap


def test_pointing_game(mask):
    assert pointing_hit(peak_at(50, 50), mask) == 1.0
    assert pointing_hit(peak_at(50, 74), mask) == 1.0  # 15 px right of the mask edge (column 59)
    assert pointing_hit(peak_at(50, 75), mask) == 0.0  # 16 px


def test_pointing_diagonal_is_euclidean(mask):
    assert pointing_hit(peak_at(69, 69), mask) == 1.0  # (10, 10) from the corner (59, 59): 14.1 px
    assert pointing_hit(peak_at(71, 71), mask) == 0.0  # (12, 12): 17 px


def test_flat_map_scores_chance(mask):
    flat = np.ones((100, 100))
    assert pointing_hit(flat, mask) == pytest.approx(near_mask(mask).mean())
    assert energy_in_mask(flat, mask) == pytest.approx(mask.mean())


def test_energy_in_mask(mask):
    assert energy_in_mask(mask.astype(float), mask) == pytest.approx(1.0)
    assert energy_in_mask((~mask).astype(float), mask) == pytest.approx(0.0)
    half = mask.astype(float) * 0.5 + 0.5  # min-max normalised: 1 inside, 0 outside
    assert energy_in_mask(half, mask) == pytest.approx(1.0)


def test_stretch_covers_cells_at_their_stride():
    cells = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    image = stretch(cells, 16, (30, 30))  # 2 x 2 cells of 16 px cover 32 px; cropped to 30
    assert image.shape == (30, 30)
    assert image[7, 24] == pytest.approx(1.0) and image[24, 7] == pytest.approx(0.0)  # cell centres: 7.5, 23.5
