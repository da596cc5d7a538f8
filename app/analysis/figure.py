"""A publication-ready figure of one analysis: the image and every block's heatmap over it.

Drawn with matplotlib's object API (no pyplot state), from the same report the API returns
(``include_values``), so the figure shows exactly what clients get. PNG, PDF or SVG by extension.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from attnlens.blocks.kinds import KINDS

__all__ = ["FIGURE_FORMATS", "save_figure"]

FIGURE_FORMATS = (".png", ".pdf", ".svg")


def save_figure(image: Image.Image, report: dict, path: str | Path, colormap: str = "inferno",
                strides: dict[str, int] | None = None) -> Path:
    """Write the figure of ``report`` (made with ``include_values``) over ``image`` to ``path``."""
    path = Path(path)
    if path.suffix.lower() not in FIGURE_FORMATS:
        raise ValueError(f"figure format must be one of {', '.join(FIGURE_FORMATS)}, got {path.name!r}")
    panels = len(report["blocks"]) + 1
    columns = min(3, panels)
    rows = math.ceil(panels / columns)
    figure = Figure(figsize=(4.2 * columns, 3.6 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    extent = (0, image.width, image.height, 0)
    top = report["predictions"][0]
    axes[0].imshow(image, extent=extent)
    axes[0].set_title(f"input {image.width}x{image.height}\ntop-1: {top['label']} ({top['score']:.2f})", fontsize=10)
    for axis, block in zip(axes[1:], report["blocks"]):
        values = np.asarray(block["heatmap"]["values"], dtype=np.float32)
        axis.imshow(image, extent=extent)
        shown = axis.imshow(values, extent=extent, cmap=colormap, alpha=0.6, interpolation="bilinear")
        colorbar = figure.colorbar(shown, ax=axis, shrink=0.85)
        colorbar.set_label(block["heatmap"]["unit"], fontsize=8)
        stride = f", stride {strides[block['id']]}" if strides and block["id"] in strides else ""
        axis.set_title(f"{KINDS[block['type']].record.title}\n{block['id']}{stride}", fontsize=10)
    for axis in axes:
        axis.set_axis_off()
    figure.savefig(path, dpi=200)
    return path
