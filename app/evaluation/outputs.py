"""The evaluation's files (a contract scripts rely on, see the README): ``summary.json``, ``per_image.csv``,
``report.html`` (one self-contained page: opens offline from disk) and ``figure.png`` / ``figure.pdf``; with
detectors, ``ground_truth.json``, ``detections/<model>.json`` (COCO formats) and ``per_object.csv``."""
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

from .detection import PER_OBJECT_COLUMNS, DetectionResults
from .measures import MEASURES
from .run import Kept, Scored, ranked

__all__ = ["plural", "write_outputs"]

THUMBNAIL = 160  # px, the long side of a report thumbnail
BOX_COLOUR = (0, 255, 127)  # labelled boxes (a classifier's: nothing to match them to)
FOUND_COLOUR, MISSED_COLOUR = (0, 255, 255), (255, 255, 255)  # a detector's, as the page draws them: cyan, white dashed


def write_outputs(out: Path, summary: dict, scores: list[Scored], kept: dict,
                  detection: DetectionResults | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, allow_nan=False))
    with open(out / "per_image.csv", "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["image", "model", "map", "type", *MEASURES])
        for s in scores:
            writer.writerow([s.image, s.model, s.map, s.type, *(f"{s.measures['all'][k]:.6g}" for k in MEASURES)])
    if detection is not None and detection.files:
        for name, content in detection.files.items():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_text(json.dumps(content, allow_nan=False))
        with open(out / "per_object.csv", "w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file)
            writer.writerow(PER_OBJECT_COLUMNS)
            for row in detection.per_object:
                writer.writerow(["" if v is None else f"{v:.6g}" if isinstance(v, float) else v for v in row])
    _figure(summary, out)
    (out / "report.html").write_text(_report(summary, kept, detection.status if detection else {}), encoding="utf-8")


def _label(row: dict) -> str:
    return f"{row['model']} · {row['map']}"


def _figure(summary: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    rows = summary["rows"]
    knocked = _knocked_rows(summary)
    extra = 0.35 * len(knocked) + 1.2 if knocked else 0
    figure = Figure(figsize=(max(6, 0.5 * len(rows) + 3, 9 if knocked else 0), 7 + extra), layout="constrained")
    maps, ablation = figure.subfigures(2, 1, height_ratios=[7, extra]) if knocked else (figure, None)
    for axes, name in zip(maps.subplots(3, 1, sharex=True), ("energy", "lift", "pointing")):
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
    if ablation is not None:
        _knockout_panel(ablation.subplots(), knocked)
    scored = summary["dataset"]["images"] - summary["dataset"]["backgrounds"]
    figure.suptitle(f"{plural(scored, 'image')} scored: means with bootstrap 95% intervals")
    figure.savefig(out / "figure.png", dpi=150)
    figure.savefig(out / "figure.pdf")


def _knocked_rows(summary: dict) -> list[tuple[str, str, dict]]:
    """``(label, what, change)`` of every block knocked out, each model's most relied on first: a detector's AP
    change, a classifier's top-1 agreement with the full model minus 1."""
    rows = []
    for model, entries in summary.get("knockout", {}).items():
        for entry in entries:
            if "AP_change" in entry:
                rows.append((f"{model} · {entry['block']}", "AP change", entry["AP_change"]))
            elif "top1_agreement" in entry:
                agreement = entry["top1_agreement"]
                shifted = {"mean": None if agreement["mean"] is None else agreement["mean"] - 1,
                           "ci95": [None if v is None else v - 1 for v in agreement["ci95"]]}
                rows.append((f"{model} · {entry['block']}", "top-1 agreement − 1", shifted))
    return rows


def _knockout_panel(axes, knocked: list[tuple[str, str, dict]]) -> None:
    """The blocks knocked out as horizontal bars of their change, with intervals: how much each answer relies on
    where the block looks."""
    means = [change["mean"] or 0 for _, _, change in knocked]
    lows = [m - (change["ci95"][0] if change["ci95"][0] is not None else m) for m, (_, _, change) in zip(means, knocked)]
    highs = [(change["ci95"][1] if change["ci95"][1] is not None else m) - m for m, (_, _, change) in zip(means, knocked)]
    places = range(len(knocked))
    axes.barh(places, means, xerr=[lows, highs], color="#7a5195", capsize=3)
    axes.set_yticks(places, [f"{label} ({what})" for label, what, _ in knocked], fontsize=8)
    axes.invert_yaxis()
    axes.axvline(0, color="black", linewidth=0.8)
    axes.set_xlabel("each block knocked out (its map made flat): change of the answer, 95% interval", fontsize=9)


def plural(number: int, thing: str) -> str:
    """``1 image``, ``2 images``."""
    return f"{number} {thing}{'' if number == 1 else 's'}"


def _dashed_rectangle(draw: ImageDraw.ImageDraw, box, colour, width: int) -> None:
    """A box's outline in dashes (a missed object, as the page draws it)."""
    x0, y0, x1, y1 = box
    dash = 4 * width
    for start in range(0, int(max(x1 - x0, y1 - y0)) + 1, 2 * dash):
        for a, b in (((x0 + start, y0), (min(x0 + start + dash, x1), y0)), ((x0 + start, y1), (min(x0 + start + dash, x1), y1)),
                     ((x0, y0 + start), (x0, min(y0 + start + dash, y1))), ((x1, y0 + start), (x1, min(y0 + start + dash, y1)))):
            if a[0] <= x1 and a[1] <= y1:
                draw.line([a, b], fill=colour, width=width)


def _thumbnail(item: Kept, colormap: str = "inferno", status: dict[int, bool] | None = None) -> str:
    """The image with the map over it and its GT boxes, as a JPEG data URL; ``status``: a detector's found (cyan) /
    missed (white, dashed) per object."""
    image = decode_image(item.image.path.read_bytes())
    width, height = image.size
    if item.heatmap is not None:
        picture = overlay(image, item.heatmap.float().numpy(), item.geometry.size, item.geometry.content, colormap)
    else:
        picture = image
    draw = ImageDraw.Draw(picture)
    line = max(2, round(min(width, height) / 120))
    for j, obj in enumerate(item.image.objects):
        placed = obj.in_pixels(width, height)
        found = None if status is None else status.get(j)
        colour = BOX_COLOUR if found is None else FOUND_COLOUR if found else MISSED_COLOUR
        if found is False:
            _dashed_rectangle(draw, placed.box, colour, line)
        elif placed.polygon is not None:
            draw.polygon(placed.polygon, outline=colour, width=line)
        else:
            draw.rectangle(placed.box, outline=colour, width=line)
    picture.thumbnail((THUMBNAIL, THUMBNAIL))
    buffer = io.BytesIO()
    picture.convert("RGB").save(buffer, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _missed_caption(status: dict[int, bool] | None) -> str:
    missed = sum(not found for found in (status or {}).values())
    return f"<br>{missed} missed (white, dashed)" if missed else ""


def _figure_cell(figures: dict) -> str:
    if figures["mean"] is None:
        return "<td>–</td>"
    low, high = figures["ci95"]
    return f"<td>{figures['mean']:.3f} <small>[{low:.3f}, {high:.3f}]</small></td>"


def _bars(rows: list[dict], name: str) -> str:
    """An inline SVG chart of one measure with its intervals: a value axis (0, half, top), each bar's mean written
    above it, the table's row number below."""
    values = [(row[name]["mean"], *row[name]["ci95"]) for row in rows]
    top = max([v for triple in values for v in triple if v is not None] + [1e-9])
    left, step, bar, height = 34, 34, 22, 140
    width = left + 10 + step * len(rows)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 34}" role="img" '
             f'aria-label="{name}"><g transform="translate(0 14)">']
    for tick in (0, top / 2, top):
        y = height - height * tick / top
        parts.append(f'<line x1="{left - 4}" x2="{width}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
                     f'<text x="{left - 6}" y="{y + 3:.1f}" font-size="9" text-anchor="end">{tick:.2f}</text>')
    for i, ((mean, low, high), row) in enumerate(zip(values, rows)):
        if mean is None:
            continue
        x = left + step * i
        colour = "#999" if row["type"] == "baseline" else "#d9822b" if row["type"] == "reference" else "#3d6fb6"
        y = height - height * mean / top
        parts.append(f'<rect x="{x}" y="{y:.1f}" width="{bar}" height="{height - y:.1f}" fill="{colour}">'
                     f'<title>{html.escape(_label(row))}: {mean:.3f} [{low:.3f}, {high:.3f}]</title></rect>')
        y0, y1 = height - height * low / top, height - height * high / top
        parts.append(f'<line x1="{x + bar / 2}" x2="{x + bar / 2}" y1="{y0:.1f}" y2="{y1:.1f}" stroke="black"/>')
        parts.append(f'<text x="{x + bar / 2}" y="{min(y, y1) - 3:.1f}" font-size="9" text-anchor="middle">'
                     f'{mean:.2f}</text>')
        parts.append(f'<text x="{x + bar / 2}" y="{height + 14}" font-size="10" text-anchor="middle">{i + 1}</text>')
    parts.append("</g></svg>")
    return "".join(parts)


def _ap(value: float | None) -> str:
    return "–" if value is None else "<small>no objects</small>" if value < 0 else f"{value:.3f}"


def _detection_section(summary: dict) -> str:
    """AP per model and class, found / missed, and where each map looked on the objects found and missed."""
    detection = summary.get("detection")
    if not detection:
        return ""
    names = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")
    table = ["<div class=scroll><table><tr><th>model</th>" + "".join(f"<th>{n}</th>" for n in names) +
             "<th>objects found</th><th>missed</th><th>detections</th></tr>"]
    for model, entry in detection.items():
        cells = []
        for n in names:
            interval = entry["ci95"].get(n)
            cells.append(f"<td>{_ap(entry[n])}" + (f" <small>[{interval[0]:.3f}, {interval[1]:.3f}]</small>"
                                                   if interval and interval[0] is not None else "") + "</td>")
        table.append(f"<tr><td>{html.escape(model)}</td>{''.join(cells)}<td>{entry['found']}</td>"
                     f"<td>{entry['missed']}</td><td>{entry['detections']}</td></tr>")
    table.append("</table></div>")
    classes = list(next(iter(detection.values()))["by_class"])
    per_class = ["<div class=scroll><table><tr><th>class</th>" +
                 "".join(f"<th>{html.escape(m)} AP</th><th>AP50</th><th>found</th>" for m in detection) + "</tr>"]
    for name in classes:
        cells = "".join(f"<td>{_ap(e['by_class'][name]['AP'])}</td><td>{_ap(e['by_class'][name]['AP50'])}</td>"
                        f"<td>{e['by_class'][name]['found']} of {e['by_class'][name]['objects']}</td>"
                        for e in detection.values())
        per_class.append(f"<tr><td>{html.escape(name)}</td>{cells}</tr>")
    per_class.append("</table></div>")
    attention = ["<div class=scroll><table><tr><th>model</th><th>map</th><th>found: objects</th><th>energy</th>"
                 "<th>pointing</th><th>missed: objects</th><th>energy</th><th>pointing</th><th>energy found − missed"
                 "</th></tr>"]
    for model, entry in detection.items():
        for key, figures in entry["attention"].items():
            found, missed = figures["found"], figures["missed"]
            attention.append(f"<tr><td>{html.escape(model)}</td><td>{html.escape(key)}</td><td>{found['objects']}</td>"
                             f"{_figure_cell(found['energy'])}{_figure_cell(found['pointing'])}<td>{missed['objects']}"
                             f"</td>{_figure_cell(missed['energy'])}{_figure_cell(missed['pointing'])}"
                             f"{_figure_cell(figures['found_minus_missed']['energy'])}</tr>")
    attention.append("</table></div>")
    breakdowns = "".join(_attention_by(detection, title, heading) for title, heading in
                         (("by_class", "class"), ("by_size", "size")))
    thresholds = next(iter(detection.values()))["thresholds"]
    return f"""<h2>Detection</h2>
<p>COCO AP (IoU 0.50:0.95, 101 recall points, at most 100 detections per image and class) from each model's
detections at confidence &ge; {thresholds['ap_conf']} (at most {thresholds['ap_max_det']} per image), written to
<code>detections/&lt;model&gt;.json</code> beside <code>ground_truth.json</code>, with bootstrap 95% intervals over
images. An object is <b>found</b> when a detection of its class at the display threshold (confidence &ge;
{thresholds['conf']}, as <code>attnlens analyze</code> shows them) takes it at IoU &ge; {thresholds['match_iou']}
(best detections first, as COCO matches); else <b>missed</b>.</p>
{''.join(table)}<h3>Per class</h3>{''.join(per_class)}
<h3>Where the maps looked on the objects found and missed</h3>
<p>Each map's energy (its share inside the object's box) and pointing (its maximum within 15 px of the box), on
each object alone; means over objects, intervals from a bootstrap over images.</p>{''.join(attention)}{breakdowns}"""


def _attention_by(detection: dict, title: str, heading: str) -> str:
    """Each map's energy on the objects found and missed, per class or per size (COCO's: small under 32x32 px,
    large from 96x96), as ``summary.json`` keeps it under ``by_class`` / ``by_size``."""
    rows = []
    for model, entry in detection.items():
        for key, figures in entry["attention"].items():
            for group, parts in figures.get(title, {}).items():
                found, missed = parts["found"], parts["missed"]
                rows.append(f"<tr><td>{html.escape(model)}</td><td>{html.escape(key)}</td><td>{html.escape(group)}</td>"
                            f"<td>{found['objects']}</td>{_figure_cell(found['energy'])}<td>{missed['objects']}</td>"
                            f"{_figure_cell(missed['energy'])}{_figure_cell(parts['found_minus_missed']['energy'])}</tr>")
    if not rows:
        return ""
    sizes = " (small: under 32&times;32 px, medium: under 96&times;96 px, large: the rest)" if heading == "size" else ""
    return (f"<h4>By {heading}{sizes}</h4><div class=scroll><table><tr><th>model</th><th>map</th><th>{heading}</th>"
            "<th>found: objects</th><th>energy</th><th>missed: objects</th><th>energy</th><th>energy found − missed</th>"
            f"</tr>{''.join(rows)}</table></div>")


def _knockout_section(summary: dict) -> str:
    """Each model's blocks knocked out, ranked by how much its answer relies on where they look."""
    knocked = summary.get("knockout")
    if not knocked:
        return ""
    tables = []
    for model, entries in knocked.items():
        rows = []
        for rank, entry in enumerate(entries, 1):
            if "skipped" in entry:
                figure = f"<td colspan=2>not knocked out: {html.escape(entry['skipped'])}</td>"
            elif "AP_change" in entry:
                figure = f"<td>AP {_ap(entry['AP'])}</td>{_change_cell(entry['AP_change'])}"
            else:
                figure = f"<td>top-1 kept on {entry['images']} images</td>{_figure_cell(entry['top1_agreement'])}"
            rows.append(f"<tr><td>{rank}</td><td>{html.escape(entry['block'])}</td><td>{entry['kind']}</td>"
                        f"{figure}<td><small>{html.escape(entry['replaced'])}</small></td></tr>")
        tables.append(f"<h3>{html.escape(model)}</h3><div class=scroll><table><tr><th>#</th><th>block</th><th>kind</th>"
                      f"<th>with its map flat</th><th>change</th><th>what was made flat</th></tr>{''.join(rows)}"
                      f"</table></div>")
    return ("<h2>Knockout: how much each answer relies on where the blocks look</h2><p>Each block's map made flat in "
            "turn (the model run again, one forward per block: an inference-time ablation of this trained model, not "
            "a model trained without the block). Detectors: the change of AP; classifiers: the share of images whose "
            "top-1 class stays the full model's. Paired bootstrap 95% intervals over images; the blocks relied on "
            "most first.</p>" + "".join(tables))


def _change_cell(figures: dict) -> str:
    if figures["mean"] is None:
        return "<td>–</td>"
    low, high = figures["ci95"]
    interval = "" if low is None else f" <small>[{low:+.3f}, {high:+.3f}]</small>"
    return f"<td>{figures['mean']:+.3f}{interval}</td>"


def _report(summary: dict, kept: dict, status: dict[tuple[str, str], dict[int, bool]] | None = None) -> str:
    rows = summary["rows"]
    dataset = summary["dataset"]
    status = status or {}
    table = ["<div class=scroll><table><tr><th>#</th><th>model</th><th>map</th><th>type</th><th>images</th>"
             "<th>energy</th><th>lift</th><th>pointing</th></tr>"]
    for i, row in enumerate(rows, 1):
        table.append(f"<tr><td>{i}</td><td>{html.escape(row['model'])}</td><td>{html.escape(row['map'])}</td>"
                     f"<td>{row['type']}</td><td>{row['images']}</td>" +
                     "".join(_figure_cell(row[name]) for name in ("energy", "lift", "pointing")) + "</tr>")
    table.append("</table></div>")
    comparisons = ["<div class=scroll><table><tr><th>B vs A</th><th>map</th><th>measure</th><th>mean B - A</th>"
                   "<th>95% interval</th><th>B higher on</th></tr>"]
    for c in summary["comparisons"]:
        if c["mean_diff"] is None:
            continue
        where = html.escape(c["map"]) if c["map"] is not None else \
            f"detection{' · ' + html.escape(c['class']) if 'class' in c else ''}"
        interval = "–" if c["ci95"][0] is None else f"[{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}]"
        share = "–" if c["b_higher_share"] is None else f"{c['b_higher_share']:.0%} of images"
        comparisons.append(f"<tr><td>{html.escape(c['b'])} vs {html.escape(c['a'])}</td><td>{where}</td>"
                           f"<td>{c['measure']}</td><td>{c['mean_diff']:+.3f}</td><td>{interval}</td><td>{share}</td></tr>")
    comparisons.append("</table></div>")
    galleries = []
    for (model, key), heaps in kept.items():
        if key.startswith("baseline/"):
            continue
        best, worst = ranked(heaps)
        strip = []
        for title, items in (("best", best), ("worst", worst)):
            cells = "".join(f'<figure><img src="{_thumbnail(item, status=status.get((model, item.image.id)))}" '
                            f'alt="{html.escape(item.image.id)}"><figcaption>{html.escape(item.image.id)}<br>energy '
                            f"{item.energy:.3f}{_missed_caption(status.get((model, item.image.id)))}</figcaption>"
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
th {{ background: #f2f2f2; }} small {{ color: #666; }}
.strip {{ display: grid; grid-template-columns: repeat(4, minmax(0, {THUMBNAIL}px)); gap: 6px; }}
@media (min-width: 1400px) {{ .strip {{ grid-template-columns: repeat(8, minmax(0, {THUMBNAIL}px)); }} }}
@media (max-width: 480px) {{ .strip {{ grid-template-columns: repeat(2, minmax(0, 1fr)); }} }}
figure {{ margin: 0; }} figure img {{ max-width: 100%; height: auto; }}
figcaption {{ font-size: 11px; overflow-wrap: anywhere; }}
.charts {{ display: flex; flex-wrap: wrap; gap: 1.5rem; }} .charts figure {{ max-width: 100%; overflow-x: auto; }}
.scroll {{ overflow-x: auto; max-width: 100%; }}
code {{ font-size: 12px; }} p, h1, h2, h3, h4, li {{ overflow-wrap: anywhere; }}
</style></head><body>
<h1>attnlens eval: {html.escape(dataset['name'])}</h1>
<p>{plural(dataset['images'], 'image')} ({plural(dataset['backgrounds'], 'background')}, not scored),
{plural(dataset['objects'], 'object')};
models {', '.join(html.escape(m) for m in summary['models'])}. Means over images with bootstrap 95% intervals.
energy: share of the min-max normalised map inside the objects' boxes; lift: energy / the boxes' area share
(1 = a uniform map); pointing: the map's maximum within 15 px of a box.</p>
<h2>Maps</h2>{''.join(table)}
<p>The baselines are maps that know nothing of the image: <b>baseline/uniform</b> is the same everywhere (its energy
is the boxes' share of the image, its lift 1), <b>baseline/centre</b> a Gaussian at the image's centre (sigma a
quarter of each side: where photographers put objects). A block's map says something about the objects only where
it beats both. Bars: blocks blue, reference maps orange, baselines grey.</p>
<div class=charts>{charts}</div>
{_detection_section(summary)}
{_knockout_section(summary)}
<h2>Comparisons</h2>{''.join(comparisons) if len(comparisons) > 2 else '<p>One model: nothing to compare.</p>'}
<h2>Where each map does best and worst</h2>
<p>Each image with the map over it. Boxes: the labelled objects, green (a classifier's: nothing to match them to);
for a detector, the objects it found cyan and those it missed white and dashed.</p>{''.join(galleries)}
<h2>Skipped ({len(dataset['skipped'])})</h2><ul>{skipped}</ul>
</body></html>
"""
