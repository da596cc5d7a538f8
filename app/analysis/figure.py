"""A publication-ready figure of one analysis: the image (with its detections) and every block's heatmap over it.

Drawn with matplotlib's object API (no pyplot state), from the same report the API returns
(``include_values``), so the figure shows exactly what clients get. PNG, PDF or SVG by extension.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from attnlens.blocks.kinds import KINDS

from .render import on_image

__all__ = ["FIGURE_BOXES", "FIGURE_FORMATS", "make_figure", "save_figure"]

FIGURE_FORMATS = (".png", ".pdf", ".svg")
FIGURE_BOXES = 5  # the detections drawn, best first (a crowded image's boxes would hide the maps)


def _headline(report: dict) -> str:
    """What the model answered, in one line."""
    if report.get("predictions"):
        top = report["predictions"][0]
        return f"top-1: {top['label']} ({top['score']:.2f})"
    if "detections" in report:
        found = report["detections"]
        return f"{len(found)} detection{'s' * (len(found) != 1)}" + (f", best {found[0]['label']} "
                                                                   f"({found[0]['score']:.2f})" if found else "")
    return "maps only"


def _draw_boxes(axis, detections: list[dict], labelled: bool) -> None:
    for detection in detections:
        x0, y0, x1, y1 = detection["box"]
        axis.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="springgreen", linewidth=1.2))
        if labelled:
            axis.text(x0, y0, f"{detection['label']} {detection['score']:.2f}", fontsize=7, color="black",
                      va="bottom", bbox={"facecolor": "springgreen", "edgecolor": "none", "pad": 1})


def make_figure(image: Image.Image, report: dict, colormap: str = "inferno",
                strides: dict[str, int] | None = None, boxes: int | None = None) -> Figure:
    """The figure of ``report`` (made with ``include_values``) over ``image``: one panel per block, then the
    reference map if the report has one; the ``boxes`` best detections (default ``FIGURE_BOXES``) on every
    panel, labelled on the first, whose title says how many more there are."""
    boxes = FIGURE_BOXES if boxes is None else boxes
    panels = [(f"{KINDS[block['type']].record.title}\n{block['id']}"
               + (f", stride {strides[block['id']]}" if strides and block["id"] in strides else ""), block["heatmap"])
              for block in report["blocks"]]
    if "reference" in report:
        reference = report["reference"]
        target = reference.get("target")
        layers = reference["layers"]
        where = f"layer {layers[0]}" if len(layers) == 1 else f"{len(layers)} layers: {', '.join(layers)}"
        panels.append((f"{reference['method']} reference" + (f": {target['label']}" if target else "") + f"\n{where}",
                       reference["heatmap"]))
    columns = min(3, len(panels) + 1)
    rows = math.ceil((len(panels) + 1) / columns)
    figure = Figure(figsize=(4.2 * columns, 3.6 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    extent = (0, image.width, image.height, 0)
    found = report.get("detections", [])
    detections = found[:boxes]
    more = f" (boxes: the best {len(detections)}; {len(found) - len(detections)} more)" if len(found) > len(detections) else ""
    axes[0].imshow(image, extent=extent)
    axes[0].set_title(f"image {image.width}x{image.height}\n{_headline(report)}{more}", fontsize=10)
    _draw_boxes(axes[0], detections, labelled=True)
    model_input = report["input"]
    for axis, (title, heatmap) in zip(axes[1:], panels):
        values = on_image(np.asarray(heatmap["values"], dtype=np.float32),
                          (model_input["width"], model_input["height"]), tuple(model_input["content"]), image.size)
        axis.imshow(image, extent=extent)
        shown = axis.imshow(values, extent=extent, cmap=colormap, alpha=0.6, interpolation="bilinear")
        colorbar = figure.colorbar(shown, ax=axis, shrink=0.85)
        colorbar.set_label(heatmap["unit"], fontsize=8)
        axis.set_title(title, fontsize=10)
        _draw_boxes(axis, detections, labelled=False)
    for axis in axes:
        axis.set_axis_off()
    return figure


def save_figure(image: Image.Image, report: dict, path: str | Path, colormap: str = "inferno",
                strides: dict[str, int] | None = None, boxes: int | None = None) -> Path:
    """Write ``make_figure`` to ``path`` (.png, .pdf or .svg)."""
    path = Path(path)
    if path.suffix.lower() not in FIGURE_FORMATS:
        raise ValueError(f"figure format must be one of {', '.join(FIGURE_FORMATS)}, got {path.name!r}")
    make_figure(image, report, colormap, strides, boxes).savefig(path, dpi=200)
    return path
