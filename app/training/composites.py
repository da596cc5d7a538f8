"""Composite images with a known object mask, made offline from Debian packages.

Objects: the photographed stamps of ``tuxpaint-stamps-default`` (RGBA photos with alpha masks; line
art is skipped). Backgrounds: the photographic wallpapers of ``plasma-workspace-wallpapers``. Each
composite pastes one object at a random scale and position onto a random crop of a background; its
mask is the object's alpha. The same object at the same place on plain grey is the *teacher* view.

Splits are deterministic and disjoint by stamp **and** by background (a hash of the name), so held-out
composites show objects and backgrounds never seen in training.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from PIL import Image

__all__ = ["Composite", "CompositeSet", "DataNotFound", "SOURCES", "locate_sources", "split_of"]

SIZE = 224
TEACHER_BACKGROUND = (128, 128, 128)
SOURCES = {  # Debian package -> the folder it installs that we read
    "tuxpaint-stamps-default": "usr/share/tuxpaint/stamps",
    "plasma-workspace-wallpapers": "usr/share/wallpapers",
}
DEBIAN_CACHE = Path.home() / ".cache" / "attnlens" / "debian"  # where attnlens train / eval unpack them
HELD_OUT_EVERY = 5  # one name in five (by hash) is held out


class DataNotFound(RuntimeError):
    """The Debian packages with the objects and backgrounds are neither installed nor obtainable."""


def split_of(name: str) -> str:
    """``"heldout"`` or ``"train"``, fixed by the name's hash (independent of the machine and the order)."""
    return "heldout" if int(hashlib.sha1(name.encode()).hexdigest(), 16) % HELD_OUT_EVERY == 0 else "train"


def locate_sources(cache: Path | None = None) -> dict[str, Path]:
    """The folders of ``SOURCES``, installed (under ``/``) or unpacked into ``cache`` (by ``attnlens train`` /
    ``eval``, which fetch them with ``apt-get download``). Raises ``DataNotFound`` naming what is missing."""
    cache = cache or DEBIAN_CACHE
    found, missing = {}, []
    for package, folder in SOURCES.items():
        where = next((root / folder for root in (Path("/"), cache / package) if (root / folder).is_dir()), None)
        if where is None:
            missing.append(package)
        else:
            found[package] = where
    if missing:
        raise DataNotFound(f"the Debian package(s) {', '.join(missing)} are neither installed nor unpacked in {cache}: "
                           f"sudo apt-get install {' '.join(missing)}")
    return found


def _is_photo(image: Image.Image) -> bool:
    """A photographed stamp, not line art: enough of it opaque, and many distinct colours."""
    rgba = np.asarray(image.convert("RGBA"))
    opaque = rgba[..., 3] > 128
    if opaque.mean() < 0.05:
        return False
    colours = np.unique(rgba[opaque][:, :3] // 4, axis=0)
    return len(colours) >= 1500


@dataclass(frozen=True)
class Composite:
    image: Image.Image  # the object on the background (student view), SIZE x SIZE RGB
    teacher: Image.Image  # the object alone on grey
    mask: np.ndarray  # bool (SIZE, SIZE): the object's pixels
    stamp: str
    background: str


class CompositeSet(torch.utils.data.Dataset):
    """``count`` deterministic composites of one split; item ``i`` is always the same image.

    Items are dicts of float tensors: ``image`` and ``teacher`` ``(3, SIZE, SIZE)`` in [0, 1], ``mask``
    ``(SIZE, SIZE)``.
    """

    def __init__(self, split: str, count: int, seed: int = 0, sources: dict[str, Path] | None = None,
                 cache: Path | None = None):
        if split not in ("train", "heldout"):
            raise ValueError(f"split must be train or heldout, got {split!r}")
        self.split, self.count, self.seed = split, count, seed
        self.sources = sources or locate_sources()
        self.cache = cache or Path.home() / ".cache" / "attnlens" / "backgrounds"

    @cached_property
    def stamps(self) -> list[tuple[str, Image.Image]]:
        root = self.sources["tuxpaint-stamps-default"]
        stamps = []
        for path in sorted(root.rglob("*.png")):
            name = path.relative_to(root).as_posix()
            if "/cartoon/" in name or name.startswith("symbols/") or split_of(name) != self.split:
                continue
            image = Image.open(path)
            if _is_photo(image):
                stamps.append((name, image.convert("RGBA")))
        if not stamps:
            raise DataNotFound(f"no photographed stamps of the {self.split} split under {root}")
        return stamps

    @cached_property
    def backgrounds(self) -> list[tuple[str, Image.Image]]:
        """Each wallpaper's largest image, scaled to a 448-pixel short side (cached on disk)."""
        root = self.sources["plasma-workspace-wallpapers"]
        backgrounds = []
        for folder in sorted(p for p in root.iterdir() if (p / "contents" / "images").is_dir()):
            if split_of(folder.name) != self.split:
                continue
            cached = self.cache / f"{folder.name}.jpg"
            if not cached.is_file():
                largest = max((folder / "contents" / "images").iterdir(), key=lambda p: p.stat().st_size)
                image = Image.open(largest).convert("RGB")
                image.thumbnail((448 * 4, 448 * 4))
                scale = 448 / min(image.size)
                image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
                self.cache.mkdir(parents=True, exist_ok=True)
                image.save(cached, quality=92)
            backgrounds.append((folder.name, Image.open(cached).convert("RGB")))
        if not backgrounds:
            raise DataNotFound(f"no wallpapers of the {self.split} split under {root}")
        return backgrounds

    def __len__(self) -> int:
        return self.count

    def composite(self, index: int) -> Composite:
        rng = np.random.default_rng([self.seed, index, 0 if self.split == "train" else 1])
        stamp_name, stamp = self.stamps[rng.integers(len(self.stamps))]
        background_name, background = self.backgrounds[rng.integers(len(self.backgrounds))]
        crop = int(min(background.size) * rng.uniform(0.6, 1.0))
        left = rng.integers(background.width - crop + 1)
        top = rng.integers(background.height - crop + 1)
        scene = background.crop((left, top, left + crop, top + crop)).resize((SIZE, SIZE), Image.BICUBIC)
        if rng.random() < 0.5:
            stamp = stamp.transpose(Image.FLIP_LEFT_RIGHT)
        longest = rng.uniform(0.3, 0.65) * SIZE
        scale = longest / max(stamp.size)
        stamp = stamp.resize((max(1, round(stamp.width * scale)), max(1, round(stamp.height * scale))), Image.BICUBIC)
        x = int(rng.integers(SIZE - stamp.width + 1))
        y = int(rng.integers(SIZE - stamp.height + 1))
        layer = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))
        layer.paste(stamp, (x, y))
        image = Image.alpha_composite(scene.convert("RGBA"), layer).convert("RGB")
        teacher = Image.alpha_composite(Image.new("RGBA", (SIZE, SIZE), TEACHER_BACKGROUND + (255,)), layer)
        mask = np.asarray(layer)[..., 3] > 127
        return Composite(image, teacher.convert("RGB"), mask, stamp_name, background_name)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = self.composite(index)
        to_tensor = lambda image: torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)  # noqa: E731
        return {"image": to_tensor(item.image), "teacher": to_tensor(item.teacher),
                "mask": torch.from_numpy(item.mask.astype(np.float32))}
