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
from PIL import Image

__all__ = ["COLORMAP_CHOICES", "DEFAULT_COLORMAP", "colormap_lut", "data_url", "heatmap_rgb", "overlay", "png_bytes"]

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


def normalized(values: np.ndarray) -> np.ndarray:
    """Min-max scaled to [0, 1]; a flat map becomes zeros."""
    values = np.asarray(values, dtype=np.float32)
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def heatmap_rgb(values: np.ndarray, colormap: str = DEFAULT_COLORMAP) -> np.ndarray:
    """``(h, w)`` values -> ``(h, w, 3)`` uint8 colours."""
    return colormap_lut(colormap)[np.round(normalized(values) * 255).astype(np.uint8)]


def png_bytes(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def overlay(image: Image.Image, values: np.ndarray, colormap: str = DEFAULT_COLORMAP,
            opacity: float = 0.5) -> Image.Image:
    """The heatmap stretched bilinearly over ``image`` (cell centres on cell centres), blended at ``opacity``."""
    stretched = Image.fromarray(normalized(values)).resize(image.size, Image.BILINEAR)
    colours = Image.fromarray(heatmap_rgb(np.asarray(stretched), colormap))
    return Image.blend(image.convert("RGB"), colours, opacity)
