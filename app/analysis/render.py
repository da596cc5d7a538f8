"""Maps -> pictures: colour-mapped heatmaps (PNG) and overlays on the image.

Colormaps are matplotlib's, applied as 256-entry lookup tables (no figure per request). Heatmaps are
min-max normalised per map for display; the raw values travel separately.
"""
from __future__ import annotations

import base64
import io
from functools import cache

import matplotlib
import numpy as np
from PIL import Image, ImageDraw

__all__ = ["COLORMAP_CHOICES", "DEFAULT_COLORMAP", "colormap_lut", "data_url", "draw_detections", "heatmap_rgb", "on_image",
           "overlay", "png_bytes"]

DEFAULT_COLORMAP = "inferno"
COLORMAP_CHOICES = ("inferno", "viridis", "magma", "plasma", "turbo", "cividis", "gray")  # offered by the page


@cache
def colormap_lut(name: str) -> np.ndarray:
    """``(256, 3)`` uint8 lookup table of a matplotlib colormap; ``ValueError`` for unknown names."""
    if name not in matplotlib.colormaps:
        raise ValueError(f"unknown colormap {name!r}; try inferno, viridis, magma, plasma, turbo, jet or gray")
    table = matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3]
    lut = np.round(table * 255).astype(np.uint8)
    lut.flags.writeable = False
    return lut


MASKED_RGB = (128, 128, 128)  # cells whose value is not finite (NaN / inf): grey, a colour no colormap here ends in


def normalized(values: np.ndarray) -> np.ndarray:
    """Min-max scaled to [0, 1] over the finite values; a flat map becomes zeros, cells not finite stay NaN."""
    values = np.asarray(values, dtype=np.float32)
    finite = np.isfinite(values)
    if not finite.all():
        values = np.where(finite, values, np.nan)
    if not finite.any():
        return values
    low, high = float(values[finite].min()), float(values[finite].max())
    return (values - low) / (high - low) if high > low else np.where(finite, 0.0, np.nan).astype(np.float32)


def heatmap_rgb(values: np.ndarray, colormap: str = DEFAULT_COLORMAP) -> np.ndarray:
    """``(h, w)`` values -> ``(h, w, 3)`` uint8 colours; cells not finite in ``MASKED_RGB``."""
    scaled = normalized(values)
    finite = np.isfinite(scaled)
    rgb = colormap_lut(colormap)[np.round(np.where(finite, scaled, 0) * 255).astype(np.uint8)]
    if not finite.all():
        rgb = rgb.copy()
        rgb[~finite] = MASKED_RGB
    return rgb


def png_bytes(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def on_image(values: np.ndarray, input_size: tuple[int, int], content: tuple[int, int, int, int],
             image_size: tuple[int, int]) -> np.ndarray:
    """A map over the model input (``input_size`` (w, h), cell centres on cell centres) -> over the image:
    stretched to the input, cropped to where the image lies in it (``content``: letterbox padding
    dropped), resized to ``image_size`` (w, h). ``(h, w)`` float32."""
    stretched = Image.fromarray(np.asarray(values, dtype=np.float32)).resize(input_size, Image.BILINEAR)
    return np.asarray(stretched.crop(content).resize(image_size, Image.BILINEAR))


def overlay(image: Image.Image, values: np.ndarray, input_size: tuple[int, int], content: tuple[int, int, int, int],
            colormap: str = DEFAULT_COLORMAP, opacity: float = 0.5) -> Image.Image:
    """The heatmap over ``image`` (see ``on_image``), colour-mapped and blended at ``opacity``."""
    colours = Image.fromarray(heatmap_rgb(on_image(values, input_size, content, image.size), colormap))
    return Image.blend(image.convert("RGB"), colours, opacity)


def draw_detections(image: Image.Image, detections: list[dict], colour: tuple[int, int, int] = (0, 255, 127)) -> Image.Image:
    """``image`` with each detection's box (image pixels) and ``label score`` drawn on a copy."""
    drawn = image.convert("RGB")
    pen = ImageDraw.Draw(drawn)
    width = max(2, round(min(image.size) / 200))
    for detection in detections:
        x0, y0, x1, y1 = detection["box"]
        pen.rectangle((x0, y0, x1, y1), outline=colour, width=width)
        text = f"{detection['label']} {detection['score']:.2f}"
        left, top, right, bottom = pen.textbbox((x0, y0), text)
        pen.rectangle((left, top - (bottom - top) - 2, right + 4, top), fill=colour)
        pen.text((x0 + 2, top - (bottom - top) - 2), text, fill=(0, 0, 0))
    return drawn
