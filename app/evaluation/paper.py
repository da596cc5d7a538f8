"""The paper figure (``attnlens figure``): images x models x maps in one grid, at a journal's column width.

Rows are images; columns are the image itself, then for each model each map asked for: a block kind (``gc``,
``ca``, ``acmix``, ``dcn``, ``spd``: the model's first block of that kind), a block id, or a reference map
(``gradcam`` ...). Each map column family (the same map across models) has one colour scale over every image and
model, stated in a colour bar, unless ``scale="per-panel"`` (then said in the figure). Panels keep the image's
aspect ratio (the letterbox undone) and line up; heatmaps are rasters at ``dpi``, text and boxes vector, fonts
embedded as TrueType in a PDF. The maps of each model are computed once, batched by input shape.
"""
from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_pdf import PdfFile, PdfPages
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from attnlens.analysis.engine import Engine, ReferenceRequest
from attnlens.analysis.render import on_image
from attnlens.analysis.report import detection_report
from attnlens.blocks import KINDS
from attnlens.models import LoadedModel
from attnlens.models.references import METHODS

from .browse import match_detections

__all__ = ["FORMATS", "WIDTHS", "FigureError", "Panel", "PaperImage", "paper_figure", "paper_figure_bytes",
           "save_paper_figure"]

WIDTHS = {"column": 3.5, "page": 7.16}  # inches: IEEE's one column and two-column page
SHORT = {"gc": "GC mask", "ca": "CA a_h x a_w", "acmix": "ACmix attention", "dcn": "DCN offsets", "spd": "SPD detail"}
OPACITY = 0.6  # of the map over the image, as the page's default
BOX_COLOURS = {"tp": "#00e5ff", "fp": "#ff3df2", "missed": "#ffffff", "plain": "#00ff7f"}  # as the page draws them


class FigureError(ValueError):
    """A figure that cannot be made as asked (an unknown map, an image that cannot be read), in one line."""


@dataclass
class PaperImage:
    """One row: the upright image, its label, and the labelled boxes when a dataset gave them (``box`` in image
    pixels, ``index``, ``label``)."""

    image: Image.Image
    label: str
    truth: list[dict] | None = None


@dataclass
class Panel:
    """One map of one model on one image: ``values`` over the model input (None: the model has no such map,
    ``missing`` says so), the geometry that puts them on the image, and the boxes drawn, with colours and styles."""

    values: np.ndarray | None
    missing: str = ""
    unit: str = ""
    boxes: list[tuple[list[float], str, bool]] = field(default_factory=list)  # (box, colour, dashed)
    input_size: tuple[int, int] = (0, 0)  # (w, h) of the model input
    content: tuple[int, int, int, int] = (0, 0, 0, 0)  # where the image lies in it

    def over(self, size: tuple[int, int]) -> np.ndarray:
        """The map over the image (the letterbox undone), resized to ``size`` (w, h) raster pixels."""
        return on_image(self.values, self.input_size, self.content, size)


def _columns(models: Sequence[tuple[str, LoadedModel]], maps: Sequence[str] | None,
             reference: str | None) -> list[str]:
    """The map columns asked for, checked: each a kind, a block id of some model, or a reference method."""
    if maps:
        known_ids = {block.id for _, model in models for block in model.blocks}
        for name in maps:
            if name not in KINDS and name not in METHODS and name not in known_ids:
                raise FigureError(f"unknown map {name!r}: a kind ({', '.join(KINDS)}), a reference method "
                                  f"({', '.join(METHODS)}) or a block id of the models ({', '.join(sorted(known_ids))})")
        return list(maps)
    shared = [kind for kind in KINDS if all(any(b.type == kind for b in model.blocks) for _, model in models)]
    return shared + ([reference] if reference else [])


def _map_of(model: LoadedModel, name: str, result, row: int) -> tuple[Any, str, str]:
    """``(values over the model input, "", unit)`` of map ``name`` for image ``row``, or ``(None, why, "")``."""
    if name in METHODS:
        found = result.references.get(name)
        reference = found[row] if found else None
        if reference is None:
            return None, f"no {METHODS[name].title} for {model.name}" if not found else \
                f"{METHODS[name].title}: nothing to explain", ""
        return reference.heatmap.float().cpu().numpy(), "", reference.unit
    if name in KINDS:
        key = next((block.id for block in model.blocks if block.type == name), None)
        if key is None:
            return None, f"no {name.upper() if name != 'acmix' else 'ACmix'} in {model.name}", ""
    else:
        key = name if name in result.maps else None
        if key is None:
            return None, f"no block {name} in {model.name}", ""
    record = result.maps[key]
    return record.heatmap[row].float().cpu().numpy(), "", record.unit


def _panels(model: LoadedModel, rows: Sequence[PaperImage], columns: Sequence[str], reference: str | None,
            boxes: int) -> list[list[Panel]]:
    """Every panel of one model: ``[row][column]``; its maps computed once per group of images of one input shape."""
    engine = Engine(model)
    prepared = [engine.prepare(row.image) for row in rows]
    methods = tuple(dict.fromkeys([c for c in columns if c in METHODS] + ([reference] if reference else [])))
    methods = methods if model.reference_layers else ()
    panels: list[list[Panel]] = [[] for _ in rows]
    groups: dict[tuple, list[int]] = {}
    for i, (tensor, _) in enumerate(prepared):
        groups.setdefault(tuple(tensor.shape), []).append(i)
    for places in groups.values():
        batch = torch.cat([prepared[i][0] for i in places])
        request = ReferenceRequest(methods, (None,) * len(places), optional=True) if methods else None
        result = engine.run(batch, request)
        for row, i in enumerate(places):
            geometry = prepared[i][1]
            drawn = _boxes_of(model, result, row, geometry, rows[i].truth, boxes)
            for column in columns:
                values, missing, unit = _map_of(model, column, result, row)
                panels[i].append(Panel(values, missing, unit, drawn, result.input_size, geometry.content))
    return panels


def _boxes_of(model: LoadedModel, result, row: int, geometry, truth: list[dict] | None,
              boxes: int) -> list[tuple[list[float], str, bool]]:
    """The ``boxes`` best detections (true positives cyan, false positives magenta where there is ground truth, else
    green) and the labelled objects missed (white, dashed)."""
    if model.task != "detect" or not boxes:
        return []
    detections, _ = detection_report(result.predictions[row], geometry, model.label)
    shown = detections[:boxes]
    if truth is None:
        return [(d["box"], BOX_COLOURS["plain"], False) for d in shown]
    labels = [model.label(i) for i in range(model.num_classes)]
    classes = sorted({g["label"] for g in truth})
    matched = match_detections(truth, shown, labels, classes) if truth else []
    taken = {g["detection"] for g in matched if g["detection"] is not None}
    drawn = [(d["box"], BOX_COLOURS["tp"] if rank in taken else BOX_COLOURS["fp"], False) for rank, d in enumerate(shown)]
    return drawn + [(g["box"], BOX_COLOURS["missed"], True) for g in matched if g["status"] == "missed"]


def paper_figure(models: Sequence[tuple[str, LoadedModel]], images: Sequence[PaperImage],
                 maps: Sequence[str] | None = None, reference: str | None = None, width: float | str = "page",
                 dpi: int = 300, font_size: float = 7, scale: str = "shared", boxes: int = 0,
                 row_labels: bool = False, colormap: str = "inferno", titles: dict[str, str] | None = None) -> Figure:
    """The grid figure (a matplotlib ``Figure``, ``width`` inches wide or a preset of ``WIDTHS``): ``models``
    ``(name, LoadedModel)``, ``images`` ``PaperImage`` rows, ``maps`` the map columns (default: every kind the
    models share, then ``reference``), ``scale`` ``shared`` (one colour scale per map family) or ``per-panel``,
    ``boxes`` the best detections drawn per panel, ``titles`` a model's column title (default its name).
    ``FigureError`` for a map no model has by that name, a bad width or scale."""
    inches = WIDTHS.get(width, width) if isinstance(width, str) else width
    if isinstance(inches, str):
        try:
            inches = float(inches)
        except ValueError:
            raise FigureError(f"--width must be inches or one of {', '.join(WIDTHS)}, got {width!r}") from None
    if not 1 <= inches <= 20:
        raise FigureError(f"--width must be between 1 and 20 inches, got {inches}")
    if scale not in ("shared", "per-panel"):
        raise FigureError(f"--scale must be shared or per-panel, got {scale!r}")
    if not models or not images:
        raise FigureError("a figure needs at least one model and one image")
    columns = _columns(models, maps, reference)
    if not columns:
        raise FigureError("the models share no block kind: name the maps with --maps")
    panels = {name: _panels(model, images, columns, reference, boxes) for name, model in models}
    return _draw(models, images, columns, panels, inches, dpi, font_size, scale, row_labels, colormap, titles or {})


def _draw(models, images, columns, panels, inches, dpi, font_size, scale, row_labels, colormap, titles) -> Figure:
    """The grid on one canvas (coordinates in inches, so panels line up exactly): each panel one raster at ``dpi``'s
    pixel size (the map over the image, blended at ``OPACITY``; its ``gid`` names the map, its ``norm`` and ``cmap``
    are the map's colour scale), the text and boxes vector."""
    count = 1 + len(models) * len(columns)
    gap, left = 0.02, (0.32 if row_labels else 0.04)
    top = 3.0 * font_size / 72 + 0.06
    bar = 0.12 + 2.4 * font_size / 72
    panel = (inches - left - 0.04 - gap * (count - 1)) / count
    heights = [panel * row.image.height / row.image.width for row in images]
    height = top + sum(heights) + gap * (len(images) - 1) + bar + 0.06
    figure = Figure(figsize=(inches, height), dpi=dpi)
    canvas = figure.add_axes((0, 0, 1, 1))
    canvas.set_xlim(0, inches)
    canvas.set_ylim(0, height)
    canvas.set_axis_off()
    sizes = [(max(1, round(panel * dpi)), max(1, round(h * dpi))) for h in heights]  # a row's panels in raster pixels
    rasters = {name: [[cell.over(sizes[r]) if cell.values is not None else None for cell in row]
                      for r, row in enumerate(cells)] for name, cells in panels.items()}  # each map as it is shown
    ranges = {}
    for c, column in enumerate(columns):
        values = [v[r][c] for v in rasters.values() for r in range(len(images)) if v[r][c] is not None]
        ranges[column] = (min(float(np.nanmin(v)) for v in values), max(float(np.nanmax(v)) for v in values)) \
            if values else (0.0, 1.0)
    shown: dict[str, Any] = {}
    text = {"fontsize": font_size, "ha": "center"}
    y = height - top
    for r, row in enumerate(images):
        y -= heights[r]
        photo = np.asarray(row.image.resize(sizes[r], Image.LANCZOS))
        faded = (1 - OPACITY) * photo.astype(np.float32)  # the image's part of every blended panel of the row
        scale_box = (panel / row.image.width, heights[r] / row.image.height)  # image pixels -> inches
        for k in range(count):
            x = left + k * (panel + gap)
            extent = (x, x + panel, y, y + heights[r])
            if r == 0:
                canvas.text(x + panel / 2, y + heights[r] + 0.02, "image" if k == 0 else _short(columns[(k - 1) %
                            len(columns)]), va="bottom", **text)
            if k == 0:
                canvas.imshow(photo, extent=extent, interpolation="none")
                for box in row.truth or ():
                    _box(canvas, box["box"], (x, y + heights[r]), scale_box, BOX_COLOURS["plain"], False)
                if row_labels:
                    canvas.text(x - 0.03, y + heights[r] / 2, row.label, rotation=90, fontsize=font_size, ha="right",
                                va="center")
                continue
            m, c = divmod(k - 1, len(columns))
            name = models[m][0]
            cell = panels[name][r][c]
            column = columns[c]
            if r == 0 and c == 0:  # the model's title over its columns
                span = len(columns) * panel + (len(columns) - 1) * gap
                canvas.text(x + span / 2, height - 0.03, titles.get(name, name), va="top", **text)  # one font: embedded once
            if cell.values is None:
                canvas.add_patch(Rectangle((x, y), panel, heights[r], facecolor="#eeeeee", edgecolor="none"))
                per_line = max(8, int(panel * 72 / (0.55 * font_size * 0.85)))
                canvas.text(x + panel / 2, y + heights[r] / 2,
                            "\n".join(textwrap.wrap(cell.missing, per_line, break_long_words=True)),
                            va="center", fontsize=font_size * 0.85, ha="center")
                continue
            values = rasters[name][r][c]
            low, high = ranges[column] if scale == "shared" else (float(np.nanmin(values)), float(np.nanmax(values)))
            scale_of = ScalarMappable(Normalize(low, high if high > low else low + 1e-12), colormap)
            shown[column] = scale_of
            colours = scale_of.to_rgba(values, bytes=True)[..., :3]
            blended = np.rint(faded + OPACITY * colours).astype(np.uint8)  # one raster a panel
            image = canvas.imshow(blended, extent=extent, interpolation="none")
            image.set_gid(f"map {name} {column}")  # the map's colours: this panel's norm and colormap
            image.set_norm(scale_of.norm)
            image.set_cmap(scale_of.cmap)
            for box, colour, dashed in cell.boxes:
                _box(canvas, box, (x, y + heights[r]), scale_box, colour, dashed)
        y -= gap
    canvas.set_xlim(0, inches)  # imshow sets the limits to its last image
    canvas.set_ylim(0, height)
    units = {column: next((p[r][c].unit for p in panels.values() for r in range(len(images)) if p[r][c].unit), "")
             for c, column in enumerate(columns)}
    _colour_bars(figure, columns, shown, units, inches, height, left, bar, font_size, scale)
    return figure


def _short(column: str) -> str:
    return SHORT.get(column, METHODS[column].title if column in METHODS else column)


def _box(canvas, box: list[float], corner: tuple[float, float], scale: tuple[float, float], colour: str,
         dashed: bool) -> None:
    """A box in image pixels drawn on the panel whose top left corner is ``corner`` (inches)."""
    x0, y0, x1, y1 = box
    left, top = corner
    canvas.add_patch(Rectangle((left + x0 * scale[0], top - y1 * scale[1]), (x1 - x0) * scale[0],
                               (y1 - y0) * scale[1], fill=False, edgecolor=colour, linewidth=0.8,
                               linestyle="--" if dashed else "-"))


def _colour_bars(figure: Figure, columns, shown, units, inches, height, left, bar, font_size, scale) -> None:
    """One colour bar per map family along the bottom (shared scale), or a line saying each panel has its own."""
    if scale == "per-panel":
        figure.text(left / inches, 0.04 / height, "each panel scaled to its own range (min to max): colours are not "
                    "comparable between panels", fontsize=font_size)
        return
    families = [column for column in columns if column in shown]
    if not families:
        return
    width = (inches - left - 0.04) / len(families)
    for i, column in enumerate(families):
        axis = figure.add_axes(((left + i * width + 0.1) / inches, (bar - 0.1) / height,
                                (width - 0.2) / inches, 0.05 / height))
        colorbar = figure.colorbar(shown[column], cax=axis, orientation="horizontal")
        _smooth_bar(colorbar)
        colorbar.ax.tick_params(labelsize=font_size * 0.8, length=2, pad=1)
        colorbar.set_label(f"{_short(column)} ({units[column]})" + (", all panels" if len(families) < 3 else ""),
                           fontsize=font_size * 0.8, labelpad=1)


BAR_CELLS, BAR_SHADING = "colour bar cells", "colour bar shading"  # gids: the two ways a colour bar's colours are drawn


def _smooth_bar(colorbar) -> None:
    """Beside the colour bar's 256 filled cells (vector), the same colours as one vector shading (Gouraud through the
    colormap's colours), hidden but where a PDF is written (``_bars_for``); the only rasters stay the panels."""
    steps = np.linspace(colorbar.norm.vmin, colorbar.norm.vmax, colorbar.cmap.N)
    values = np.vstack([steps, steps])  # along the bar (its x is the value), across it 0 to 1
    colorbar.solids.set_rasterized(False)
    colorbar.solids.set_gid(BAR_CELLS)
    colorbar.ax.pcolormesh(values, np.outer([0, 1], np.ones_like(steps)), values, shading="gouraud",
                           cmap=colorbar.cmap, norm=colorbar.norm, gid=BAR_SHADING, visible=False)


FORMATS = ("pdf", "svg", "png")


def paper_figure_bytes(figure: Figure, format: str = "pdf", dpi: int = 300) -> bytes:
    """The figure as a PDF, SVG or PNG file's bytes, fonts embedded as TrueType, SVG text kept as text."""
    if format not in FORMATS:
        raise FigureError(f"the figure's format must be one of {', '.join(FORMATS)}, got {format!r}")
    buffer = io.BytesIO()
    # every panel's rasters their own (not composited into one image of the whole canvas)
    with matplotlib.rc_context({"pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "none",
                                "image.composite_image": False}), _bars_for(figure, format):
        if format == "pdf":
            with _PanelPages(buffer) as pages:  # fonts and rasters are written as it closes
                figure.savefig(pages, dpi=dpi, format="pdf")
        else:
            figure.savefig(buffer, dpi=dpi, format=format)
    return buffer.getvalue()


@contextmanager
def _bars_for(figure: Figure, format: str):
    """In a PDF, the colour bars drawn as one shading each, not as cells (a PDF writer's path and graphics state
    each: the bars written 10x faster). An SVG keeps the cells: it has no Gouraud shading (matplotlib draws each
    triangle as gradients, twice the file)."""
    bars = [artist for axis in figure.axes for artist in axis.collections
            if artist.get_gid() in (BAR_CELLS, BAR_SHADING)] if format == "pdf" else []
    for artist in bars:
        artist.set_visible(artist.get_gid() == BAR_SHADING)
    try:
        yield
    finally:
        for artist in bars:
            artist.set_visible(artist.get_gid() == BAR_CELLS)


class _QuicklyDeflated:
    """An image saved as PNG at zlib level 1. matplotlib's PDF writer embeds a raster as its PNG's deflated data;
    at PIL's default level 6 that took most of a figure's writing time (2.3x level 1's, for a PDF about 10% smaller)."""

    def __init__(self, image: Image.Image):
        self.image = image

    def save(self, buffer, format: str) -> None:
        self.image.save(buffer, format=format, compress_level=1)


class _PanelPdf(PdfFile):
    """matplotlib's PDF file, its rasters deflated quickly (``_QuicklyDeflated``); the file is the same otherwise."""

    def _writePng(self, img):
        return super()._writePng(_QuicklyDeflated(img))


class _PanelPages(PdfPages):
    """A one-page ``PdfPages`` writing a ``_PanelPdf``."""

    def _ensure_file(self):
        if self._file is None:
            self._file = _PanelPdf(self._filename, metadata=self._metadata)
        return self._file


def save_paper_figure(figure: Figure, path: str | Path, dpi: int = 300) -> Path:
    """Write the figure (.pdf, .svg or .png by extension); the file appears whole or not at all."""
    path = Path(path)
    data = paper_figure_bytes(figure, path.suffix.lower().lstrip("."), dpi)
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_bytes(data)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path
