"""A tiny stand-in for the Debian data (stamps with known alpha, plain-colour wallpapers), made in a test."""
from pathlib import Path

import numpy as np
from PIL import Image

from attnlens.training.composites import SOURCES, split_of

STAMP_RGB = (200, 30, 30)


def make_sources(root: Path, stamps: int = 16, wallpapers: int = 12) -> dict[str, Path]:
    """Stamps: noisy-red squares (photo-like colours) with an opaque disc; wallpapers: one colour each."""
    stamp_root = root / SOURCES["tuxpaint-stamps-default"]
    wallpaper_root = root / SOURCES["plasma-workspace-wallpapers"]
    rng = np.random.default_rng(0)
    for i in range(stamps):
        rgb = np.clip(np.array(STAMP_RGB) + rng.integers(-25, 26, (64, 64, 3)), 0, 255)
        yy, xx = np.mgrid[:64, :64]
        alpha = np.where((yy - 32) ** 2 + (xx - 32) ** 2 <= 28 ** 2, 255, 0)
        path = stamp_root / "things" / f"thing{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.dstack([rgb, alpha]).astype(np.uint8), "RGBA").save(path)
    for i in range(wallpapers):
        folder = wallpaper_root / f"Wall{i}" / "contents" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (640, 480), (20, 40 + 10 * i, 220)).save(folder / "640x480.png")
    names = [f"things/thing{i}.png" for i in range(stamps)] + [f"Wall{i}" for i in range(wallpapers)]
    assert {"train", "heldout"} <= {split_of(n) for n in names[:stamps]} and \
        {"train", "heldout"} <= {split_of(n) for n in names[stamps:]}, "the fake data must fill both splits"
    return {"tuxpaint-stamps-default": stamp_root, "plasma-workspace-wallpapers": wallpaper_root}
