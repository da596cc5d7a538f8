"""The composite generator: masks, determinism, disjoint splits; on a small fake of the Debian data."""
import hashlib
import json
import os
import subprocess
import sys

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
    with pytest.raises(ValueError):
        CompositeSet("test", 4, sources=sources, cache=cache)


# sha1(name) mod 5 == 0 -> held out; worked out once with hashlib (sha1 ending ...a8fa, ...ac11, ...b939 for the
# three held-out names), kept literal so a change of the rule shows
KNOWN_SPLITS = {
    "things/thing0.png": "train", "things/thing1.png": "train", "things/thing2.png": "train",
    "things/thing3.png": "train", "things/thing4.png": "train", "things/thing5.png": "heldout",
    "things/thing6.png": "heldout", "things/thing7.png": "train", "Wall0": "heldout", "Wall1": "train",
    "Wall2": "train", "Wall3": "train", "animals/mammals/cat.png": "train", "Next": "train",
}
MANY_NAMES = [f"stamps/kind{i % 7}/object{i}.png" for i in range(4000)] + [f"Wallpaper{i}" for i in range(1000)]


def test_split_of_known_names():
    assert {name: split_of(name) for name in KNOWN_SPLITS} == KNOWN_SPLITS


def test_one_name_in_five_is_held_out_by_its_sha1():
    expected = {name: "heldout" if int(hashlib.sha1(name.encode()).hexdigest(), 16) % 5 == 0 else "train"
                for name in MANY_NAMES}
    assert {name: split_of(name) for name in MANY_NAMES} == expected
    share = sum(split_of(name) == "heldout" for name in MANY_NAMES) / len(MANY_NAMES)
    assert share == pytest.approx(0.2, abs=0.015)


def test_split_is_the_same_in_every_process():
    """Other processes (other hash seeds) split the same names the same way; Python's salted hash() would not."""
    names = list(KNOWN_SPLITS) + MANY_NAMES[:300]
    code = ("import json, sys; from attnlens.training.composites import split_of; names = json.load(sys.stdin); "
            "print(json.dumps({'split': [split_of(n) for n in names], 'hash': [hash(n) % 5 for n in names]}))")
    runs = [subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             env=dict(os.environ, PYTHONHASHSEED=seed)) for seed in ("1", "2")]
    results = [json.loads(run.communicate(json.dumps(names), timeout=120)[0]) for run in runs]
    assert all(run.returncode == 0 for run in runs)
    here = [split_of(name) for name in names]
    assert results[0]["split"] == here and results[1]["split"] == here
    assert results[0]["hash"] != results[1]["hash"]  # the processes really hash differently


def test_line_art_is_skipped(sources, cache, tmp_path):
    from PIL import Image

    flat = tmp_path / "flat.png"
    Image.new("RGBA", (64, 64), (0, 0, 0, 255)).save(flat)
    from attnlens.training.composites import _is_photo

    assert not _is_photo(Image.open(flat))
    assert _is_photo(CompositeSet("train", 1, sources=sources, cache=cache).stamps[0][1])
