"""The ``attnlens`` command line (also ``python -m attnlens``)."""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from . import __version__

REFERENCE_METHODS = ("gradcam", "gradcam++", "layercam", "eigencam")  # attnlens.models.references.METHODS (no torch here)


def _positive(text: str) -> int:
    """argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_model_options(parser: argparse.ArgumentParser, repeated: tuple[str, ...] = ()) -> None:
    """The flags of ``ModelOptions`` (one declaration for the CLI, the server's variables and models files);
    ``repeated``: options given once per model (``eval --model A --model B``)."""
    from .models.options import ModelOptions

    group = parser.add_argument_group("model", "which model, and how its input is made and its output read")
    for name, field in ModelOptions.model_fields.items():
        flag = "--" + name.replace("_", "-")
        default = f" (default {field.default})" if field.default not in (None, False) else ""
        extra = field.json_schema_extra or {}
        if name in repeated:
            group.add_argument(flag, dest=name, action="append", default=None,
                               help=f"{field.description} (repeat to compare models)")
            continue
        if "flag" in extra:  # repeatable: --block A=ca --block B=gc
            group.add_argument(extra["flag"], dest=name, action="append", default=None, metavar=extra.get("metavar"),
                               help=field.description)
            continue
        if field.annotation is bool:
            group.add_argument(flag, action="store_true", default=None, help=field.description)
            continue
        kind = next((t for t in (int, float) if field.annotation in (t, t | None)), str)
        group.add_argument(flag, *extra.get("aliases", ()), dest=name, type=kind, default=None,
                           metavar=extra.get("metavar"), help=f"{field.description}{default}")


def _model_options(args: argparse.Namespace):
    """The model flags given, over the ``ATTNLENS_*`` variables, over the defaults."""
    from .models.options import EnvironmentModelOptions, ModelOptions

    return EnvironmentModelOptions(**{name: value for name in ModelOptions.model_fields
                                      if (value := getattr(args, name, None)) is not None}).model_options()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attnlens", description="See what CNN plug-in blocks attend to.")
    parser.add_argument("--version", action="version", version=f"attnlens {__version__}")
    commands = parser.add_subparsers(dest="command")
    analyze = commands.add_parser("analyze", help="analyse images: predictions and every block's maps",
                                  description="Analyse images: top-5 predictions and every block's heatmap.")
    analyze.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    analyze.add_argument("--json", action="store_true", help="print the API's JSON (one object per image, one per line)")
    analyze.add_argument("--out", type=Path, help="write <image>.json, <image>.npz (every full map as a numpy array) "
                                                  "and <image>/<block>.png overlays here")
    analyze.add_argument("--figure", type=Path, help="write a figure of image + every block's map (.png, .pdf, .svg)")
    analyze.add_argument("--size", type=int, default=None, help="input size for these images (default: the model's --input-size)")
    analyze.add_argument("--colormap", default="inferno", help="matplotlib colormap (default: inferno)")
    analyze.add_argument("--values", action="store_true", help="include raw heatmap values in the JSON")
    analyze.add_argument("--maps", action="store_true", help="include the full maps (attention, offsets ...) in the JSON")
    analyze.add_argument("--reference", choices=REFERENCE_METHODS, default=None,
                         help="add a reference map to the JSON, the figure and --out: gradcam, gradcam++, layercam "
                              "(a backward pass each) or eigencam (none, no target)")
    analyze.add_argument("--gradcam", action="store_true", help="the same as --reference gradcam")
    analyze.add_argument("--target", type=int, default=None, help="what the reference explains: a class index, or a "
                                                                  "detection's rank (default: the top one)")
    analyze.add_argument("--target-kind", choices=("class", "box", "all"), default="class",
                         help="detectors: the score the reference explains: the class score (default), the box "
                              "coordinates, or both")
    analyze.add_argument("--knockout", action="store_true",
                         help="the answer again with each block's map made flat (GC mask uniform, CA gates their "
                              "means, ACmix attention uniform, DCN offsets zero; one forward per block), and what "
                              "changed: in the JSON's knockout and the summary")
    analyze.add_argument("--figure-boxes", type=int, default=None, metavar="N",
                         help="--figure draws the N best detections and says how many more (default 5)")
    _add_model_options(analyze)
    figure = commands.add_parser(
        "figure", help="the paper figure: images x models x maps in one grid, at a journal's width",
        description="Rows are images; columns the image, then for each model each map (--maps: kinds gc, ca, acmix, "
                    "dcn, spd, block ids, reference methods; default: every kind the models share, and --reference). "
                    "One colour scale per map family across models and images, a colour bar each; heatmaps raster at "
                    "--dpi, text and boxes vector, fonts TrueType in a PDF.")
    figure.add_argument("images", nargs="+", metavar="IMAGE",
                        help="image files; with --data, the dataset's image ids (or files in it)")
    figure.add_argument("--out", type=Path, required=True, help="FILE.pdf, FILE.svg or FILE.png")
    figure.add_argument("--models", type=Path, metavar="FILE.toml",
                        help="the models, as serve reads them (a table's title names its columns)")
    figure.add_argument("--maps", default=None, metavar="LIST",
                        help="comma-separated: kinds (gc,ca,acmix,dcn,spd), block ids, reference methods")
    figure.add_argument("--reference", choices=REFERENCE_METHODS, default=None,
                        help="a reference map column beside the blocks' (default: none)")
    figure.add_argument("--width", default="page", help="inches, or column (3.5) or page (7.16, default)")
    figure.add_argument("--dpi", type=int, default=300, help="the heatmaps' raster resolution (default 300)")
    figure.add_argument("--font-size", type=float, default=7, help="points (default 7)")
    figure.add_argument("--scale", choices=("shared", "per-panel"), default="shared",
                        help="one colour scale per map family (default), or each panel its own (said in the figure)")
    figure.add_argument("--boxes", type=int, default=0, metavar="N",
                        help="detectors: draw each panel's N best detections (cyan / magenta against --data's boxes)")
    figure.add_argument("--row-labels", action="store_true", help="name each row by its image")
    figure.add_argument("--data", type=Path, default=None, help="a labelled dataset (YOLO data.yaml or COCO JSON): "
                                                                 "IMAGE are its ids, its boxes drawn")
    figure.add_argument("--data-images", type=Path, default=None, help="COCO: the folder of the images")
    figure.add_argument("--data-split", default="val", help="YOLO: the split (default val)")
    figure.add_argument("--colormap", default="inferno", help="matplotlib colormap (default: inferno)")
    _add_model_options(figure, repeated=("model",))
    serve = commands.add_parser("serve", help="start the web server and JSON API",
                                description="Start the web server. Every option can also be set with an environment "
                                            "variable ATTNLENS_<OPTION> (e.g. ATTNLENS_PORT=8080); flags win.")
    serve.add_argument("--host", default=None, help="interface (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default 8000)")
    serve.add_argument("--queue-size", type=int, default=None, help="requests admitted at once; more get 503 (default 16)")
    serve.add_argument("--max-batch", type=int, default=None, help="images per forward pass (default: 8 on CUDA, 4 on CPU)")
    serve.add_argument("--log-level", default=None, help="debug, info, warning ... (default info)")
    serve.add_argument("--data", type=Path, default=None, metavar="DATA",
                       help="a labelled dataset to browse in the page (YOLO data.yaml or COCO JSON); [[datasets]] "
                            "tables of a models file add more")
    serve.add_argument("--data-images", type=Path, default=None, help="COCO: the folder of the images")
    serve.add_argument("--data-split", default=None, help="YOLO: the split to browse (default val)")
    serve.add_argument("--eval-results", type=Path, default=None, metavar="DIR",
                       help="an attnlens eval --out folder: sort the dataset's images by each map's scores")
    serve.add_argument("--models", type=Path, default=None, metavar="FILE.toml",
                       help="serve several models: [[models]] tables with a name and the model options below "
                            "(default: the default model and the same with untrained blocks, or the one --model)")
    _add_model_options(serve)
    train = commands.add_parser("train", help="train the default model's blocks (distillation on composites)",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                description="Train the default model's blocks: the plain backbone sees each object alone, "
                                            "the augmented model sees it pasted on a photo and learns to match. Needs the "
                                            "Debian packages tuxpaint-stamps-default and plasma-workspace-wallpapers "
                                            "(used where installed, else fetched with apt-get download).")
    train.add_argument("--out", type=Path, default=Path("runs/blocks"), help="checkpoints and blocks.safetensors here")
    from .training.config import TrainConfig  # its defaults are the shipped blocks' recipe

    defaults = TrainConfig()
    train.add_argument("--steps", type=_positive, default=defaults.steps, help="optimisation steps")
    train.add_argument("--batch-size", type=_positive, default=defaults.batch_size, help="composites per step")
    train.add_argument("--lr", type=float, default=defaults.lr, help="AdamW learning rate (cosine schedule)")
    train.add_argument("--ca-lr-factor", type=float, default=defaults.ca_lr_factor,
                       help="CA's learning rate is --lr times this")
    train.add_argument("--temperature", type=float, default=defaults.temperature, help="distillation temperature")
    train.add_argument("--consistency", type=float, default=defaults.consistency,
                       help="weight of the object-alone term that keeps the plain model's answers (0: off)")
    train.add_argument("--probe", type=float, default=defaults.probe,
                       help="weight of the probe terms: each block's own output must tell the teacher's answer (0: off)")
    train.add_argument("--seed", type=int, default=0, help="fixes the data order and initialisation")
    train.add_argument("--checkpoint-every", type=_positive, default=50, help="steps between checkpoints")
    train.add_argument("--resume", action="store_true", help="continue from --out/checkpoint.pt")
    train.add_argument("--data", type=Path, help="an ImageFolder with labels: train blocks + a new head on it instead")
    train.add_argument("--device", default=None)
    evaluate = commands.add_parser(
        "eval", help="score every block's maps against a labelled dataset's boxes (or the held-out composites)",
        description="With --data: every map of every model (--model A --model B, or --models FILE.toml) scored "
                    "against the boxes of a labelled dataset (YOLO data.yaml, or COCO JSON with --images): energy, "
                    "area, lift and pointing per image, means with bootstrap 95% intervals overall, per class and "
                    "per size, paired comparisons of the models; for detectors also COCO AP (as pycocotools computes "
                    "it) and each labelled object found or missed, with where each map looked on it; --out writes "
                    "summary.json, per_image.csv, report.html and figure.png/.pdf, and for detectors "
                    "ground_truth.json, detections/MODEL.json (COCO formats) and per_object.csv. Without --data: the "
                    "default model's blocks on held-out composites (the model card's scores).")
    evaluate.add_argument("--data", type=Path, help="a YOLO data.yaml or a COCO detection JSON")
    evaluate.add_argument("--images", type=Path, help="COCO: the folder of the images (default: the JSON's)")
    evaluate.add_argument("--split", default="val", help="YOLO: the split to score (default val)")
    evaluate.add_argument("--limit", type=_positive, help="score a seeded sample of this many images")
    evaluate.add_argument("--classes", help="only these classes count (comma-separated names or indices)")
    evaluate.add_argument("--models", type=Path, metavar="FILE.toml", help="the models to compare, as serve reads them")
    evaluate.add_argument("--reference", default="gradcam", metavar="METHOD[,METHOD...]",
                          help="reference maps scored beside the blocks': " + ", ".join(REFERENCE_METHODS) +
                               ", comma-separated (one pass serves them all), or none (default gradcam, where a "
                               "model has layers for it)")
    evaluate.add_argument("--out", type=Path, help="write summary.json, per_image.csv, report.html, figure.png/.pdf "
                                                   "(detectors: ground_truth.json, detections/, per_object.csv)")
    evaluate.add_argument("--ap-conf", type=float, default=0.001, metavar="CONF",
                          help="detectors: the confidence threshold of the detections AP is computed from (default "
                               "0.001, as detector validation; --conf, default 0.25, decides found / missed)")
    evaluate.add_argument("--ap-max-det", type=_positive, default=300, metavar="N",
                          help="detectors: at most this many detections per image for AP (default 300; COCO's AP "
                               "counts the best 100 per image and class)")
    evaluate.add_argument("--knockout", action="store_true",
                          help="each block knocked out too (its map made flat: one forward per block and batch): per "
                               "block the change of AP (detectors) or the top-1 agreement with the full model "
                               "(classifiers), with paired bootstrap intervals, ranked")
    evaluate.add_argument("--batch-size", type=_positive, default=8, help="images per forward pass (default 8)")
    evaluate.add_argument("--workers", type=int, default=2, help="DataLoader processes decoding images (default 2)")
    evaluate.add_argument("--ray", nargs="?", const=True, default=None, metavar="ADDRESS",
                          help="score on a Ray cluster (pip install 'attnlens[ray]'): local (one started for the run), "
                               "auto (the running one, or RAY_ADDRESS's) or its address; alone: auto where RAY_ADDRESS "
                               "is set, else local. The workers import your model code from this folder, shipped to "
                               "them; the dataset must be on a disk they share")
    evaluate.add_argument("--ray-stall-s", type=float, default=None, metavar="S",
                          help="with --ray: no batch finished for this long (a lost node, a hung model) ends the run "
                               "with what Ray reports, what was scored kept in --out, exit 1 (default 300)")
    evaluate.add_argument("--ray-actors", type=_positive, default=None, metavar="N",
                          help="with --ray: model actors (default: one per GPU in the cluster, else one)")
    evaluate.add_argument("--blocks", type=Path, help="composites: trained block weights (default: the shipped ones)")
    evaluate.add_argument("--count", type=_positive, default=200, help="composites: how many held-out composites")
    evaluate.add_argument("--seed", type=int, default=1, help="composites and samples: the seed")
    evaluate.add_argument("--json", action="store_true", help="print the scores (the summary) as JSON")
    _add_model_options(evaluate, repeated=("model",))
    blocks = commands.add_parser("blocks", help="list a model's blocks (with --model ...), or the kinds attnlens reads",
                                 description="With model options: every block recognised in that model (module, "
                                             "class, kind, feature stride, how it was recognised) and the modules "
                                             "seen but not read, with why. Without: the kinds attnlens reads.")
    blocks.add_argument("--json", action="store_true", help="print the listing as JSON")
    _add_model_options(blocks)
    return parser


def _reference(args: argparse.Namespace) -> str | None:
    """``--reference``, or ``--gradcam`` (its old spelling); both naming different methods is a mistake."""
    if args.gradcam and args.reference not in (None, "gradcam"):
        raise ValueError(f"--gradcam asks for --reference gradcam, but --reference {args.reference} was given: give one")
    return "gradcam" if args.gradcam else args.reference


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def _summary(path: Path, report: dict, strides: dict[str, int]) -> str:
    lines = [f"{path}  ({report['image']['width']}x{report['image']['height']}, "
             f"{report['timings_ms']['total']:.0f} ms)"]
    lines += [f"  {p['score']:6.1%}  {p['label']}" for p in report.get("predictions", [])]
    lines += [f"  {d['score']:6.1%}  {d['label']:20} box [{', '.join(f'{v:.0f}' for v in d['box'])}]"
              for d in report.get("detections", [])]
    if "detections" in report and not report["detections"]:
        lines.append("  no detections above the confidence threshold")
    if report.get("note"):
        lines.append(f"  note: {report['note']}")
    for block in report["blocks"]:
        low, high = block["heatmap"]["range"]
        lines.append(f"  {block['type']:6} {block['id']:32} stride {strides.get(block['id'], '?'):>2}  "
                     f"heatmap {block['heatmap']['shape'][0]}x{block['heatmap']['shape'][1]}  "
                     f"range [{low:.3g}, {high:.3g}] {block['heatmap']['unit']}")
    if "reference" in report:
        reference = report["reference"]
        low, high = reference["heatmap"]["range"]
        target = reference.get("target")
        what = f" of {target['label']!r}" + (f" ({target['kind']})" if "rank" in target else "") if target else ""
        lines.append(f"  {reference['method']}{what} at {', '.join(reference['layers'])}: heatmap "
                     f"{reference['heatmap']['shape'][0]}x{reference['heatmap']['shape'][1]}  range [{low:.3g}, {high:.3g}]"
                     f" {reference['heatmap']['unit']}")
    for entry in report.get("knockout", ()):
        lines.append(f"  knockout {entry['block']} ({entry['kind']}): {_knockout_change(entry)}")
    return "\n".join(lines)


def _knockout_change(entry: dict) -> str:
    """What knocking the block out changed, in a few words."""
    change = entry.get("change")
    if change is None:
        return entry.get("skipped", "not knocked out")
    if "top_kept" in change:
        moved = f"{change['top']['label']} {change['probability']:.1%} -> {change['probability_after']:.1%}"
        return moved if change["top_kept"] else f"top class now {change['new_top']['label']} ({moved})"
    mean = change["mean_score_change"]
    return (f"{len(change['lost'])} detections lost, {len(change['gained'])} gained, {len(change['kept'])} kept"
            + (f" (score {mean:+.3f} on average)" if mean is not None else ""))


def _write_outputs(out: Path, path: Path, analysis, report: dict, options) -> None:
    """<image>.json (the report, without raw values), <image>.npz (every map) and <image>/ overlays."""
    import numpy as np

    from .analysis.render import draw_detections, overlay

    folder = out / _safe_name(path.stem)
    folder.mkdir(parents=True, exist_ok=True)
    model_input = report["input"]
    pictures = [(block["id"], block["heatmap"]) for block in report["blocks"]]
    if "reference" in report:
        pictures.append((f"reference.{report['reference']['method']}", report["reference"]["heatmap"]))
    for name, heatmap in pictures:
        values = np.asarray(heatmap["values"], dtype=np.float32)
        picture = overlay(analysis.image, values, (model_input["width"], model_input["height"]),
                          tuple(model_input["content"]), options.colormap)
        draw_detections(picture, report.get("detections", [])).save(folder / f"{_safe_name(name)}.png")
    if "detections" in report:
        draw_detections(analysis.image, report["detections"]).save(folder / "detections.png")
    (out / f"{_safe_name(path.stem)}.npz").write_bytes(analysis.npz(options))
    (out / f"{_safe_name(path.stem)}.json").write_text(json.dumps(_without_values(report)))


def _without_values(report: dict) -> dict:
    """The report without raw heatmap values (they were asked only for drawing)."""
    def strip(heatmap: dict) -> dict:
        return {key: value for key, value in heatmap.items() if key != "values"}

    report = {**report, "blocks": [{**block, "heatmap": strip(block["heatmap"])} for block in report["blocks"]]}
    if "reference" in report:
        report["reference"] = {**report["reference"], "heatmap": strip(report["reference"]["heatmap"])}
    return report


def _answers_only(as_json: bool):
    """Where the command's answers go: stdout. With ``--json``, everything else printed meanwhile (a model's own
    prints: forks print in forward) goes to stderr, so stdout stays JSON only."""
    answers = sys.stdout
    if as_json:
        sys.stdout = sys.stderr
    return answers


def _warn(model) -> None:
    """What loading found that works, but maybe not as the user thinks: one line each on stderr."""
    for warning in model.warnings:
        print(f"attnlens: warning: {warning}", file=sys.stderr)


def _one_line(error: Exception) -> str:
    """A pydantic validation error as one line (field: message; ...), anything else as it is."""
    from pydantic import ValidationError

    if isinstance(error, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in error.errors())
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def analyze(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .analysis.engine import Engine
    from .analysis.figure import FIGURE_FORMATS, save_figure
    from .analysis.imaging import ImageError, decode_image
    from .analysis.options import AnalyzeOptions
    from .models import ModelLoadError, load_model
    from .models.boundary import ModelRunError
    from .models.outputs import TargetError

    if args.figure and args.figure.suffix.lower() not in FIGURE_FORMATS:
        print(f"attnlens: --figure must end in {', '.join(FIGURE_FORMATS)}", file=sys.stderr)
        return 2
    from pydantic import ValidationError

    answers = _answers_only(args.json)
    try:
        model_options = _model_options(args)
        model = load_model(model_options)
        engine = Engine(model, model_options.precision)
        options = AnalyzeOptions(size=args.size, colormap=args.colormap,
                                 include_values=args.values or bool(args.out or args.figure), include_maps=args.maps,
                                 reference=_reference(args), target=args.target, target_kind=args.target_kind,
                                 knockout=args.knockout)
        options.validate()
        if args.figure_boxes is not None and args.figure_boxes < 0:
            raise ValueError(f"--figure-boxes must be at least 0, got {args.figure_boxes}")
    except (ModelLoadError, ValidationError, ValueError) as error:
        print(f"attnlens: {_one_line(error)}", file=sys.stderr)
        return 2
    _warn(model)
    strides = {block.id: block.feature_stride for block in model.blocks}
    failures = 0
    progress = tqdm(args.images, desc="analysing", unit="image", file=sys.stderr,
                    disable=len(args.images) < 2 or not sys.stderr.isatty() and not args.out)
    for path in progress:
        try:
            image = decode_image(path.read_bytes())
        except (OSError, ImageError) as error:
            print(f"attnlens: {path}: {error}", file=sys.stderr)
            failures += 1
            continue
        started = time.perf_counter()
        try:
            analysis = engine.analysis(image, options)
        except TargetError as error:
            print(f"attnlens: {path}: {options.reference}: {error}", file=sys.stderr)
            failures += 1
            continue
        except ModelRunError as error:  # the model's own failure on this image: said, then the next image
            print(f"attnlens: {path}: {error}", file=sys.stderr)
            failures += 1
            continue
        report = analysis.report(options)
        report["timings_ms"]["total"] = round(1000 * (time.perf_counter() - started), 2)
        if args.out:
            _write_outputs(args.out, path, analysis, report, options)
        if args.figure:
            target = args.figure if len(args.images) == 1 else \
                args.figure.with_name(f"{args.figure.stem}-{_safe_name(path.stem)}{args.figure.suffix}")
            save_figure(image, report, target, args.colormap, strides, args.figure_boxes)  # the report made above
        if args.json:
            print(json.dumps(report if args.values else _without_values(report), allow_nan=False), file=answers,
                  flush=True)
        elif not args.out or len(args.images) == 1:
            progress.write(_summary(path, report, strides), file=sys.stdout)
    if failures and len(args.images) > 1:
        print(f"attnlens: {failures} of {len(args.images)} images failed", file=sys.stderr)
    return 1 if failures else 0


def paper_figure(args: argparse.Namespace) -> int:
    """``attnlens figure``: the grid of images x models x maps, written whole or not at all."""
    from pydantic import ValidationError

    from .analysis.imaging import ImageError
    from .evaluation import DataError
    from .evaluation.paper import FORMATS, FigureError, save_paper_figure
    from .evaluation.paper import paper_figure as draw
    from .models import ModelLoadError, load_model
    from .models.boundary import ModelRunError
    from .models.catalog import model_titles, models_to_serve

    try:
        if args.out.suffix.lower().lstrip(".") not in FORMATS:  # said before the models load
            raise FigureError(f"--out must end in .pdf, .svg or .png, got {args.out.name!r}")
        if args.dpi < 50 or args.dpi > 1200 or args.font_size <= 0 or args.boxes < 0:
            raise FigureError("--dpi must be 50 to 1200, --font-size above 0, --boxes at least 0")
        rows = _figure_rows(args)
        base = _model_options(argparse.Namespace(**{**vars(args), "model": None}))
        if args.models:
            chosen = models_to_serve(base, args.models)
            titles = model_titles(args.models)
        else:
            chosen = [(name, base.model_copy(update={"model": name})) for name in (args.model or [None])]
            chosen = [(options.model or "efficientnet_lite0", options) for _, options in chosen]
            titles = {}
        models = [(name, load_model(options)) for name, options in chosen]
        maps = [m.strip() for m in args.maps.split(",") if m.strip()] if args.maps else None
        figure = draw(models, rows, maps, args.reference, args.width, args.dpi, args.font_size, args.scale,
                      args.boxes, args.row_labels, args.colormap, titles)
        save_paper_figure(figure, args.out, args.dpi)
    except (FigureError, ModelLoadError, DataError, ImageError, ValidationError, ValueError, OSError) as error:
        print(f"attnlens: {_one_line(error)}", file=sys.stderr)
        return 2
    except ModelRunError as error:
        print(f"attnlens: {error}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} ({len(rows)} images x {len(models)} models)")
    return 0


def _figure_rows(args: argparse.Namespace) -> list:
    """The figure's rows: each image decoded (with its labelled boxes when ``--data`` names a dataset)."""
    from .analysis.imaging import ImageError, decode_image
    from .evaluation import read_dataset
    from .evaluation.browse import DatasetBrowser
    from .evaluation.paper import PaperImage

    browser = None
    if args.data:
        browser = DatasetBrowser(read_dataset(args.data, args.data_images, args.data_split))
    rows = []
    for name in args.images:
        entry = browser.by_id.get(name) if browser else None
        if browser is not None and entry is None:
            entry = next((image for image in browser.dataset.images if name in (image.path.name, image.path.stem)), None)
            if entry is None:
                raise ValueError(f"{name}: no image of that id, file name or stem in {args.data}")
        path = entry.path if entry else Path(name)
        try:
            image = decode_image(path.read_bytes())
        except (OSError, ImageError) as error:
            raise ValueError(f"{name}: {error}") from error
        truth = browser.ground_truth(entry, image.size) if entry else None
        rows.append(PaperImage(image, Path(name).stem if not entry else entry.id, truth))
    return rows


def serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from .models import ModelLoadError
    from .server import serve as run_server
    from .server.settings import Settings

    overrides = {name: value for name in Settings.model_fields if (value := getattr(args, name, None)) is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as error:
        print(f"attnlens: bad settings: {_one_line(error)}", file=sys.stderr)
        return 2
    from .evaluation import DataError

    try:
        failure = run_server(settings)
    except (ModelLoadError, DataError) as error:
        print(f"attnlens: {error}", file=sys.stderr)
        return 2
    if failure:
        print(f"attnlens: {failure}", file=sys.stderr)
        return 2
    return 0


def _fetch_debian_package(package: str, target: Path) -> None:
    """``apt-get download`` one package and unpack it into ``target`` (no root needed)."""
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        raise OSError("apt-get is not available here")
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", package], cwd=target, check=True, capture_output=True, timeout=900)
    deb = next(target.glob(f"{package}_*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(target)], check=True, capture_output=True, timeout=900)
    deb.unlink()


def _composite_sources() -> dict[str, Path]:
    """The Debian packages the composites are made of: installed, unpacked before, or fetched now."""
    from .training.composites import DEBIAN_CACHE, SOURCES, DataNotFound, locate_sources

    try:
        return locate_sources()
    except DataNotFound:
        pass
    for package, folder in SOURCES.items():
        if not (Path("/") / folder).is_dir() and not (DEBIAN_CACHE / package / folder).is_dir():
            print(f"attnlens: fetching {package} with apt-get download into {DEBIAN_CACHE}", file=sys.stderr)
            try:
                _fetch_debian_package(package, DEBIAN_CACHE / package)
            except (subprocess.SubprocessError, StopIteration, OSError) as error:
                raise DataNotFound(f"could not fetch {package} ({error}); install it: sudo apt-get install "
                                   f"{' '.join(SOURCES)}") from error
    return locate_sources()


def train_blocks(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .training.composites import DataNotFound
    from .training.train import TrainConfig, train

    config = TrainConfig(out=args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                         ca_lr_factor=args.ca_lr_factor, temperature=args.temperature,
                         consistency=args.consistency, probe=args.probe, seed=args.seed,
                         checkpoint_every=args.checkpoint_every, resume=args.resume, data=args.data,
                         device=args.device)
    try:
        if config.data is None:
            config.sources = _composite_sources()
        result = train(config, progress=lambda steps, **kw: tqdm(desc="training", unit="step", file=sys.stderr, **kw))
    except DataNotFound as error:
        print(f"attnlens: {error}", file=sys.stderr)
        return 2
    losses = result["losses"]
    print(f"loss {sum(losses[:20]) / min(20, len(losses)):.4f} -> {sum(losses[-20:]) / min(20, len(losses)):.4f}; "
          f"trained blocks: {result['weights']}\nscore them: attnlens eval --blocks {result['weights']}")
    return 0


def evaluate_dataset(args: argparse.Namespace) -> int:
    """``attnlens eval --data``: every model's maps scored on a labelled dataset."""
    from pydantic import ValidationError
    from tqdm import tqdm

    from .evaluation import DataError, evaluate
    from .models import ModelLoadError, load_model
    from .models.catalog import models_to_serve

    answers = _answers_only(args.json)
    try:
        if args.ray_actors and not args.ray:
            raise ValueError("--ray-actors goes with --ray")
        if args.ray_stall_s is not None and (not args.ray or args.ray_stall_s <= 0):
            raise ValueError("--ray-stall-s goes with --ray and must be above 0")
        if args.ray:
            from .evaluation.distributed import ray_module

            ray_module()  # Ray missing is said before the models load
        base = _model_options(argparse.Namespace(**{**vars(args), "model": None}))
        if args.models:
            chosen = models_to_serve(base, args.models)
        else:
            chosen = [(name, base.model_copy(update={"model": name})) for name in (args.model or [None])]
            chosen = [(options.model or "efficientnet_lite0", options) for _, options in chosen]
        models = [(name, load_model(options)) for name, options in chosen]
        for _, model in models:
            _warn(model)
        classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
        summary = evaluate(models, args.data, args.images, args.split, args.limit, classes, args.reference, args.out,
                           args.batch_size, args.workers, args.seed,
                           progress=lambda total: tqdm(total=total, desc="scoring", unit="image", file=sys.stderr),
                           ray=args.ray, ray_actors=args.ray_actors, ap_conf=args.ap_conf, ap_max_det=args.ap_max_det,
                           knockout=args.knockout, ray_stall_s=args.ray_stall_s)
    except (ModelLoadError, DataError, ValidationError, ValueError) as error:
        stalled = type(error).__name__ == "RayStall"  # what was scored is summarised, and written with --out
        kept = f"; what was scored is in {args.out}" if stalled and args.out else ""
        print(f"attnlens: {_one_line(error)}{kept}", file=sys.stderr)
        return 1 if stalled else 2
    if skipped := summary["dataset"]["skipped"]:
        print(f"attnlens: warning: {_skipped_line(skipped)}; all are in the summary", file=sys.stderr)
    if args.json:
        print(json.dumps(summary, allow_nan=False), file=answers)
        return 0
    from .evaluation.outputs import plural

    dataset = summary["dataset"]
    print(f"{plural(dataset['images'], 'image')}, {plural(dataset['objects'], 'object')}, "
          f"{plural(dataset['backgrounds'], 'background')} (not scored); means over images [bootstrap 95% interval]")
    width = max(len(name) for name in summary["models"])
    print(f"{'model':{width}} {'map':34} {'energy':>22} {'lift':>22} {'pointing':>22}")
    for row in summary["rows"]:
        cells = [f"{row[m]['mean']:.3f} [{row[m]['ci95'][0]:.3f}, {row[m]['ci95'][1]:.3f}]" if row[m]["mean"] is not
                 None else "-" for m in ("energy", "lift", "pointing")]
        print(f"{row['model']:{width}} {row['map'][:34]:34} {cells[0]:>22} {cells[1]:>22} {cells[2]:>22}")
    for c in summary["comparisons"]:
        if c["measure"] == "energy" and c["mean_diff"] is not None:
            print(f"{c['b']} - {c['a']} on {c['map']}: energy {c['mean_diff']:+.3f} [{c['ci95'][0]:+.3f}, "
                  f"{c['ci95'][1]:+.3f}], higher on {c['b_higher_share']:.0%} of images")
    _print_detection(summary)
    _print_knockout(summary)
    if args.out:
        print(f"wrote {args.out}/summary.json, per_image.csv, report.html, figure.png and figure.pdf" +
              (", ground_truth.json, detections/ and per_object.csv" if summary.get("detection") else ""))
    return 0


def _print_knockout(summary: dict) -> None:
    """Each model's blocks, ranked by how much its answer relies on where they look."""
    for model, entries in summary.get("knockout", {}).items():
        print(f"{model}: each block knocked out (its map made flat), the most relied on first")
        for entry in entries:
            if "skipped" in entry:
                figure = f"not knocked out: {entry['skipped']}"
            elif "AP_change" in entry:
                change = entry["AP_change"]
                figure = "AP change -" if change["mean"] is None else \
                    f"AP {entry['AP']:.3f}, change {change['mean']:+.3f} [{_signed(change['ci95'][0])}, " \
                    f"{_signed(change['ci95'][1])}]"
            else:
                agreement = entry["top1_agreement"]
                figure = f"top-1 kept on {agreement['mean']:.1%} [{agreement['ci95'][0]:.1%}, " \
                         f"{agreement['ci95'][1]:.1%}] of {entry['images']} images"
            print(f"  {entry['block']:32} {entry['kind']:6} {figure}")


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.3f}"


def _skipped_line(skipped: list[dict]) -> str:
    """What was skipped, counted by kind of reason, with each kind's first case."""
    kinds: dict[str, list[dict]] = {}
    for entry in skipped:
        kinds.setdefault(entry.get("kind", "other"), []).append(entry)
    parts = []
    for kind, entries in sorted(kinds.items(), key=lambda item: -len(item[1])):
        first = entries[0]
        parts.append(f"{kind} ({len(entries)}; first: {first['file']}{':' + str(first['line']) if first['line'] else ''}"
                     f": {first['reason']})")
    return f"{len(skipped)} skipped: " + "; ".join(parts)


def _print_detection(summary: dict) -> None:
    """Each detector's AP figures, found / missed, and the AP comparisons."""
    detection = summary.get("detection") or {}
    if not detection:
        return
    width = max(len(name) for name in detection)
    names = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")
    print(f"\ndetection (COCO AP from detections at conf >= {next(iter(detection.values()))['thresholds']['ap_conf']}; "
          f"found / missed at the display threshold)")
    print(f"{'model':{width}} {'AP [95% interval]':>22} " + " ".join(f"{n:>6}" for n in names[1:]) + "  found / objects")
    for name, entry in detection.items():
        low, high = entry["ci95"]["AP"]
        ap = "-" if entry["AP"] < 0 else f"{entry['AP']:.3f}" + (f" [{low:.3f}, {high:.3f}]" if low is not None else "")
        cells = " ".join(f"{entry[n]:6.3f}" if entry[n] >= 0 else f"{'-':>6}" for n in names[1:])
        print(f"{name:{width}} {ap:>22} {cells}  {entry['found']} / {entry['objects']}")
    for c in summary["comparisons"]:
        if c["map"] is None and "class" not in c:
            interval = f" [{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}]" if c["ci95"][0] is not None else ""
            print(f"{c['b']} - {c['a']}: {c['measure']} {c['mean_diff']:+.3f}{interval}")


def evaluate_blocks(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .models import ModelLoadError, load_model, load_trained_blocks, read_state_dict
    from .training.composites import DataNotFound
    from .training.evaluate import evaluate

    try:
        trained = load_model("efficientnet_lite0_untrained" if args.blocks else "efficientnet_lite0", device=args.device)
        if args.blocks:
            load_trained_blocks(trained.module, read_state_dict(args.blocks), str(args.blocks))
            trained.blocks_trained = True
        untrained = load_model("efficientnet_lite0_untrained", device=args.device)
        plain = load_model("efficientnet_lite0_plain", device=args.device)
    except ModelLoadError as error:
        print(f"attnlens: {error}", file=sys.stderr)
        return 2
    try:
        scores = evaluate(trained, untrained, plain, count=args.count, seed=args.seed, sources=_composite_sources(),
                          progress=lambda batches: tqdm(batches, desc="scoring", unit="batch", file=sys.stderr))
    except DataNotFound as error:
        print(f"attnlens: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(scores))
        return 0
    label = "trained" if trained.blocks_trained else "shipped (untrained)"
    print(f"{scores['count']} held-out composites (objects and backgrounds unseen in training); blocks: {label}")
    print(f"{'heatmap':58} {'pointing':>9} {'energy':>8}")
    for name, row in scores["rows"].items():
        print(f"{name:58} {row['pointing']:9.3f} {row['energy']:8.3f}")
    print(f"top-1 agreement with the plain backbone on the objects alone: {scores['agreement']:.3f}")
    return 0


def list_blocks(args: argparse.Namespace) -> int:
    from .models.options import ModelOptions

    if not any(getattr(args, name, None) is not None for name in ModelOptions.model_fields):
        return _list_kinds(args.json)
    from pydantic import ValidationError

    from .models import ModelLoadError, load_model

    answers = _answers_only(args.json)
    try:
        model = load_model(_model_options(args))
    except (ModelLoadError, ValidationError, ValueError) as error:
        print(f"attnlens: {_one_line(error)}", file=sys.stderr)
        return 2
    candidates = model.recognition.candidates if model.recognition else ()
    if args.json:
        print(json.dumps({"model": model.name, "blocks": [vars(block) for block in model.blocks],
                          "candidates": [vars(candidate) for candidate in candidates], "note": model.note or None,
                          "reference_layers": model.reference_layers, "warnings": model.warnings}), file=answers)
        return 0
    _warn(model)
    print(f"{model.name}: {len(model.blocks)} block record{'s' * (len(model.blocks) != 1)} in one pass")
    for block in model.blocks:
        print(f"  {block.id:28} {block.class_name:22} {block.type:6} stride {block.feature_stride:>2}  "
              f"{block.recognised}")
    if candidates:
        print("seen but not read:")
        for candidate in candidates:
            print(f"  {candidate.id:28} {candidate.class_name:22} {candidate.why}")
    if not model.blocks:
        print(f"note: {model.note}")
    print(f"reference maps at: {', '.join(model.reference_layers) or 'no layer (name some with --reference-layers)'}")
    return 0


def _list_kinds(as_json: bool) -> int:
    from .blocks.kinds import KINDS

    if as_json:
        print(json.dumps({name: {"title": kind.record.title, "meaning": kind.record.meaning, "unit": kind.record.unit,
                                 "recognised_by": kind.pattern.description,
                                 "read_by_names": [reader.description for reader in kind.readers]}
                          for name, kind in KINDS.items()}))
        return 0
    for name, kind in KINDS.items():
        record = kind.record
        head, _, rest = record.meaning.partition(": ")  # "context mask: where ...": the title names it already
        meaning = rest if rest and head.lower() in record.title.lower() else record.meaning
        print(f"{name:6} {record.title} ({record.unit}): {meaning}")
        print(f"         recognised by {kind.pattern.description}")
        print(f"         read by names where that reads exactly what it computes: "
              f"{'; '.join(reader.description for reader in kind.readers)}")
    print("a model's own blocks: attnlens blocks --model MODEL")
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if str(Path.cwd()) not in sys.path and "" not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # like uvicorn: --model package.module:factory from the working directory
    if args.command == "analyze":
        sys.exit(analyze(args))
    if args.command == "serve":
        sys.exit(serve(args))
    if args.command == "figure":
        sys.exit(paper_figure(args))
    if args.command == "train":
        sys.exit(train_blocks(args))
    if args.command == "eval":
        sys.exit(evaluate_dataset(args) if args.data else evaluate_blocks(args))
    if args.command == "blocks":
        sys.exit(list_blocks(args))
    parser.print_help()


if __name__ == "__main__":
    main()
