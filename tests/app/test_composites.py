"""The composite generator: masks, determinism, disjoint splits; on a small fake of the Debian data."""
import numpy as np
import pytest

from attnlens.training.composites import TEACHER_BACKGROUND, CompositeSet, split_of
from tests.app.fake_sources import STAMP_RGB, make_sources


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    return make_sources(tmp_path_factory.mktemp("debian"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("backgrounds")


def test_mask_is_the_object(sources, cache):
    data = CompositeSet("train", 20, sources=sources, cache=cache)
    for index in range(20):
        item = data.composite(index)
        image, teacher = np.asarray(item.image).astype(int), np.asarray(item.teacher).astype(int)
        assert item.mask.any() and not item.mask.all()
        red = np.abs(image - STAMP_RGB).max(-1) <= 40  # the stamp's noisy red
        assert red[item.mask].mean() > 0.97 and red[~item.mask].mean() < 0.01  # wallpapers are blue
        edge = np.abs(teacher - TEACHER_BACKGROUND).max(-1) == 0
        assert edge[~item.mask].mean() > 0.97  # the teacher sees grey wherever the object is not
        same = np.all(image[item.mask] == teacher[item.mask], axis=-1)  # the same object, same place
        assert same.mean() > 0.9  # all but the half-transparent rim, which blends with different backdrops


def test_deterministic_and_varied(sources, cache):
    first = CompositeSet("train", 8, seed=3, sources=sources, cache=cache)
    again = CompositeSet("train", 8, seed=3, sources=sources, cache=cache)
    other = CompositeSet("train", 8, seed=4, sources=sources, cache=cache)
    for i in range(8):
        assert np.array_equal(np.asarray(first.composite(i).image), np.asarray(again.composite(i).image))
    assert not np.array_equal(first[0]["image"].numpy(), first[1]["image"].numpy())
    assert not np.array_equal(first[0]["mask"].numpy(), other[0]["mask"].numpy())


def test_splits_are_disjoint_by_stamp_and_background(sources, cache):
    train = CompositeSet("train", 4, sources=sources, cache=cache)
    heldout = CompositeSet("heldout", 4, sources=sources, cache=cache)
    assert {n for n, _ in train.stamps}.isdisjoint({n for n, _ in heldout.stamps})
    assert {n for n, _ in train.backgrounds}.isdisjoint({n for n, _ in heldout.backgrounds})
    assert all(split_of(heldout.composite(i).stamp) == "heldout" for i in range(4))
    assert split_of("things/thing1.png") == split_of("things/thing1.png")  # by name only
    with pytest.raises(ValueError):
        CompositeSet("test", 4, sources=sources, cache=cache)


def test_line_art_is_skipped(sources, cache, tmp_path):
    from PIL import Image

    flat = tmp_path / "flat.png"
    Image.new("RGBA", (64, 64), (0, 0, 0, 255)).save(flat)
    from attnlens.training.composites import _is_photo

    assert not _is_photo(Image.open(flat))
    assert _is_photo(CompositeSet("train", 1, sources=sources, cache=cache).stamps[0][1])
