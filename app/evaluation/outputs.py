"""The evaluation's files (a contract scripts rely on, see the README): ``summary.json``, ``per_image.csv``,
``report.html`` (one self-contained page: opens offline from disk) and ``figure.png`` / ``figure.pdf``."""
from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path

from PIL import ImageDraw

from attnlens.analysis.imaging import decode_image
from attnlens.analysis.render import overlay

from .measures import MEASURES
from .run import Kept, Scored, ranked

__all__ = ["write_outputs"]

THUMBNAIL = 160  # px, the long side of a report thumbnail
BOX_COLOUR = (0, 255, 127)


def write_outputs(out: Path, summary: dict, scores: list[Scored], kept: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, allow_nan=False))
    with open(out / "per_image.csv", "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["image", "model", "map", "type", *MEASURES])
        for s in scores:
            writer.writerow([s.image, s.model, s.map, s.type, *(f"{s.measures['all'][k]:.6g}" for k in MEASURES)])
    _figure(summary, out)
    (out / "report.html").write_text(_report(summary, kept), encoding="utf-8")


def _label(row: dict) -> str:
    return f"{row['model']} · {row['map']}"


def _figure(summary: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    rows = summary["rows"]
    figure = Figure(figsize=(max(6, 0.5 * len(rows) + 3), 7), layout="constrained")
    for axes, name in zip(figure.subplots(3, 1, sharex=True), ("energy", "lift", "pointing")):
        means = [row[name]["mean"] or 0 for row in rows]
        lows = [(row[name]["mean"] or 0) - (row[name]["ci95"][0] or 0) for row in rows]
        highs = [(row[name]["ci95"][1] or 0) - (row[name]["mean"] or 0) for row in rows]
        colours = ["#999999" if row["type"] == "baseline" else "#d9822b" if row["type"] == "reference" else "#3d6fb6"
                   for row in rows]
        axes.bar(range(len(rows)), means, yerr=[lows, highs], color=colours, capsize=3)
        axes.set_ylabel(name)
        if name == "lift":
            axes.axhline(1, color="black", linewidth=0.8, linestyle="--")
    axes.set_xticks(range(len(rows)), [_label(row) for row in rows], rotation=60, ha="right", fontsize=8)
    figure.suptitle(f"{summary['dataset']['images']} images: means with bootstrap 95% intervals")
    figure.savefig(out / "figure.png", dpi=150)
    figure.savefig(out / "figure.pdf")


def _thumbnail(item: Kept, colormap: str = "inferno") -> str:
    """The image with the map over it and its GT boxes, as a JPEG data URL."""
    image = decode_image(item.image.path.read_bytes())
    width, height = image.size
    if item.heatmap is not None:
        picture = overlay(image, item.heatmap.float().numpy(), item.geometry.size, item.geometry.content, colormap)
    else:
        picture = image
    draw = ImageDraw.Draw(picture)
    line = max(2, round(min(width, height) / 120))
    for obj in item.image.objects:
        placed = obj.in_pixels(width, height)
        if placed.polygon is not None:
            draw.polygon(placed.polygon, outline=BOX_COLOUR, width=line)
        else:
            draw.rectangle(placed.box, outline=BOX_COLOUR, width=line)
    picture.thumbnail((THUMBNAIL, THUMBNAIL))
    buffer = io.BytesIO()
    picture.convert("RGB").save(buffer, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure_cell(figures: dict) -> str:
    if figures["mean"] is None:
        return "<td>–</td>"
    low, high = figures["ci95"]
    return f"<td>{figures['mean']:.3f} <small>[{low:.3f}, {high:.3f}]</small></td>"


def _bars(rows: list[dict], name: str) -> str:
    """An inline SVG chart of one measure with its intervals."""
    values = [(row[name]["mean"], *row[name]["ci95"]) for row in rows]
    top = max([v for triple in values for v in triple if v is not None] + [1e-9])
    width, bar, height = 20 + 34 * len(rows), 22, 140
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 20}" role="img" '
             f'aria-label="{name}">']
    for i, ((mean, low, high), row) in enumerate(zip(values, rows)):
        if mean is None:
            continue
        x = 10 + 34 * i
        colour = "#999" if row["type"] == "baseline" else "#d9822b" if row["type"] == "reference" else "#3d6fb6"
        y = height - height * mean / top
        parts.append(f'<rect x="{x}" y="{y:.1f}" width="{bar}" height="{height - y:.1f}" fill="{colour}">'
                     f'<title>{html.escape(_label(row))}: {mean:.3f} [{low:.3f}, {high:.3f}]</title></rect>')
        y0, y1 = height - height * low / top, height - height * high / top
        parts.append(f'<line x1="{x + bar / 2}" x2="{x + bar / 2}" y1="{y0:.1f}" y2="{y1:.1f}" stroke="black"/>')
        parts.append(f'<text x="{x + bar / 2}" y="{height + 14}" font-size="10" text-anchor="middle">{i + 1}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _report(summary: dict, kept: dict) -> str:
    rows = summary["rows"]
    dataset = summary["dataset"]
    table = ["<table><tr><th>#</th><th>model</th><th>map</th><th>type</th><th>images</th><th>energy</th>"
             "<th>lift</th><th>pointing</th></tr>"]
    for i, row in enumerate(rows, 1):
        table.append(f"<tr><td>{i}</td><td>{html.escape(row['model'])}</td><td>{html.escape(row['map'])}</td>"
                     f"<td>{row['type']}</td><td>{row['images']}</td>" +
                     "".join(_figure_cell(row[name]) for name in ("energy", "lift", "pointing")) + "</tr>")
    table.append("</table>")
    comparisons = ["<table><tr><th>B vs A</th><th>map</th><th>measure</th><th>mean B - A</th><th>95% interval</th>"
                   "<th>B higher on</th></tr>"]
    for c in summary["comparisons"]:
        if c["mean_diff"] is None:
            continue
        comparisons.append(f"<tr><td>{html.escape(c['b'])} vs {html.escape(c['a'])}</td><td>{html.escape(c['map'])}"
                           f"</td><td>{c['measure']}</td><td>{c['mean_diff']:+.3f}</td><td>[{c['ci95'][0]:+.3f}, "
                           f"{c['ci95'][1]:+.3f}]</td><td>{c['b_higher_share']:.0%} of images</td></tr>")
    comparisons.append("</table>")
    galleries = []
    for (model, key), heaps in kept.items():
        if key.startswith("baseline/"):
            continue
        best, worst = ranked(heaps)
        strip = []
        for title, items in (("best", best), ("worst", worst)):
            cells = "".join(f'<figure><img src="{_thumbnail(item)}" alt="{html.escape(item.image.id)}">'
                            f"<figcaption>{html.escape(item.image.id)}<br>energy {item.energy:.3f}</figcaption>"
                            f"</figure>" for item in items)
            strip.append(f"<h4>{title} {len(items)} by energy</h4><div class=strip>{cells}</div>")
        galleries.append(f"<section><h3>{html.escape(model)} · {html.escape(key)}</h3>{''.join(strip)}</section>")
    skipped = "".join(f"<li>{html.escape(s['file'])}{':' + str(s['line']) if s['line'] else ''}: "
                      f"{html.escape(s['reason'])}</li>" for s in dataset["skipped"][:200])
    charts = "".join(f"<figure><figcaption>{name} (numbers: rows of the table)</figcaption>{_bars(rows, name)}"
                     f"</figure>" for name in ("energy", "lift", "pointing"))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>attnlens eval: {html.escape(dataset['name'])}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5rem 0 1.5rem; }} td, th {{ border: 1px solid #ccc; padding: 3px 7px; }}
th {{ background: #f2f2f2; }} small {{ color: #666; }} .strip {{ display: flex; flex-wrap: wrap; gap: 6px; }}
figure {{ margin: 0; }} figcaption {{ font-size: 11px; max-width: {THUMBNAIL}px; overflow-wrap: anywhere; }}
.charts {{ display: flex; flex-wrap: wrap; gap: 1.5rem; }}
</style></head><body>
<h1>attnlens eval: {html.escape(dataset['name'])}</h1>
<p>{dataset['images']} images ({dataset['backgrounds']} backgrounds, not scored), {dataset['objects']} objects;
models {', '.join(html.escape(m) for m in summary['models'])}. Means over images with bootstrap 95% intervals.
energy: share of the min-max normalised map inside the objects' boxes; lift: energy / the boxes' area share
(1 = a uniform map); pointing: the map's maximum within 15 px of a box.</p>
<h2>Maps</h2>{''.join(table)}
<div class=charts>{charts}</div>
<h2>Comparisons</h2>{''.join(comparisons) if len(comparisons) > 2 else '<p>One model: nothing to compare.</p>'}
<h2>Where each map does best and worst</h2>{''.join(galleries)}
<h2>Skipped ({len(dataset['skipped'])})</h2><ul>{skipped}</ul>
</body></html>
"""
