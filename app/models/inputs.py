"""How an image becomes a model's input: resize (short side or letterbox), then normalisation.

``InputRecipe.prepare(image)`` gives the input tensor ``(1, 3, h, w)`` and its ``InputGeometry``: where
the image lies in the input (``content``) and the scale, so that maps (at input resolution) and boxes
(in input pixels) map back onto the upright original image exactly.

* ``short-side``: the short side becomes ``size`` (aspect kept, the long side at most ``MAX_ASPECT``
  times it), bicubic; the whole input is image.
* ``letterbox`` (ultralytics ``LetterBox``, YOLOv5 ``letterbox``): the long side becomes ``size`` (aspect
  kept), bilinear, then grey 114 padding, split evenly, up to the next multiple of 32 on each axis
  (the rectangle YOLO's own prediction uses).

Normalisation (applied by the model's ``normalize``, on RGB in [0, 1]): ``imagenet`` (torchvision mean /
std), ``none`` (YOLO: [0, 1] as is), ``lite`` (EfficientNet-Lite: ``(x*255-127)/128``) or
``M,M,M/S,S,S`` (your mean / std, in [0, 1] units).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from PIL import Image
from torch import Tensor

__all__ = ["MAX_ASPECT", "RESIZES", "InputGeometry", "InputRecipe", "parse_normalize"]

RESIZES = ("short-side", "letterbox")
MAX_ASPECT = 4  # short-side: long side at most this many times the short side (a 2000 x 3 strip stays small)
LETTERBOX_GREY = 114
LETTERBOX_MULTIPLE = 32
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _mean_std(mean: tuple[float, ...], std: tuple[float, ...]) -> Callable[[Tensor], Tensor]:
    def normalize(images: Tensor) -> Tensor:
        m = torch.tensor(mean, dtype=images.dtype, device=images.device)[:, None, None]
        s = torch.tensor(std, dtype=images.dtype, device=images.device)[:, None, None]
        return (images - m) / s

    return normalize


def _lite(images: Tensor) -> Tensor:
    return (images * 255.0 - 127.0) / 128.0


def _identity(images: Tensor) -> Tensor:
    return images


def parse_normalize(text: str) -> Callable[[Tensor], Tensor]:
    """``imagenet``, ``none``, ``lite`` or ``M,M,M/S,S,S`` -> a function of RGB in [0, 1]; ``ValueError`` otherwise."""
    named = {"imagenet": _mean_std(IMAGENET_MEAN, IMAGENET_STD), "none": _identity, "lite": _lite}
    if text in named:
        return named[text]
    try:
        mean, std = (tuple(float(v) for v in part.split(",")) for part in text.split("/"))
    except ValueError:
        mean = std = ()
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"normalize must be imagenet, none, lite or M,M,M/S,S,S (three means / three positive stds "
                         f"in [0, 1] units), got {text!r}")
    return _mean_std(mean, std)


@dataclass(frozen=True)
class InputGeometry:
    """Where the image lies in the model input. ``size``: input (width, height); ``content``: the image's
    region ``(x0, y0, x1, y1)`` in input pixels; ``image_size``: the upright image's (width, height).
    Image pixel ``(x, y)`` is input pixel ``(x0 + x * sx, y0 + y * sy)``, ``sx = (x1 - x0) / width``."""

    size: tuple[int, int]
    content: tuple[int, int, int, int]
    image_size: tuple[int, int]

    @property
    def scale(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.content
        return (x1 - x0) / self.image_size[0], (y1 - y0) / self.image_size[1]

    def boxes_to_image(self, boxes: Tensor) -> Tensor:
        """``(K, 4)`` xyxy boxes in input pixels -> upright image pixels, clipped to the image."""
        sx, sy = self.scale
        x0, y0 = self.content[:2]
        out = (boxes.float() - boxes.new_tensor([x0, y0, x0, y0], dtype=torch.float32)) / \
            boxes.new_tensor([sx, sy, sx, sy], dtype=torch.float32)
        width, height = self.image_size
        return torch.stack([out[:, 0].clamp(0, width), out[:, 1].clamp(0, height), out[:, 2].clamp(0, width),
                            out[:, 3].clamp(0, height)], dim=1)


@dataclass(frozen=True)
class InputRecipe:
    """``size`` pixels (short side or long side, see ``resize``), then ``normalize`` (by name)."""

    size: int = 224
    resize: str = "short-side"
    normalize: str = "imagenet"

    def __post_init__(self) -> None:
        if self.resize not in RESIZES:
            raise ValueError(f"resize must be one of {', '.join(RESIZES)}, got {self.resize!r}")
        if self.size < 1:
            raise ValueError(f"input size must be positive, got {self.size}")
        parse_normalize(self.normalize)

    @cached_property
    def normalizer(self) -> Callable[[Tensor], Tensor]:
        return parse_normalize(self.normalize)

    def describe(self) -> str:
        return f"{self.resize} {self.size}, normalize {self.normalize}"

    def geometry_for(self, width: int, height: int, size: int | None = None) -> InputGeometry:
        """Where an upright ``width x height`` image lies in the model input (without the image: batches of
        equal input shapes are planned from the images' headers)."""
        size = size or self.size
        if self.resize == "short-side":
            scale = min(size / min(width, height), MAX_ASPECT * size / max(width, height))
            new = (max(1, round(width * scale)), max(1, round(height * scale)))
            return InputGeometry(size=new, content=(0, 0, *new), image_size=(width, height))
        scale = size / max(width, height)
        new = (max(1, round(width * scale)), max(1, round(height * scale)))
        padded = tuple(math.ceil(side / LETTERBOX_MULTIPLE) * LETTERBOX_MULTIPLE for side in new)
        left, top = (padded[0] - new[0]) // 2, (padded[1] - new[1]) // 2
        return InputGeometry(size=padded, content=(left, top, left + new[0], top + new[1]), image_size=(width, height))

    def prepare(self, image: Image.Image, size: int | None = None) -> tuple[Tensor, InputGeometry]:
        """Upright RGB image -> ``(1, 3, h, w)`` in [0, 1] (not yet normalised) and its geometry; ``size``
        overrides the recipe's."""
        geometry = self.geometry_for(*image.size, size)
        x0, y0, x1, y1 = geometry.content
        if self.resize == "short-side":
            canvas = image.resize((x1 - x0, y1 - y0), Image.BICUBIC)
        else:
            canvas = Image.new("RGB", geometry.size, (LETTERBOX_GREY,) * 3)
            canvas.paste(image.resize((x1 - x0, y1 - y0), Image.BILINEAR), (x0, y0))
        array = np.asarray(canvas, dtype=np.float32) / 255.0
        tensor = torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)
        return tensor, geometry
