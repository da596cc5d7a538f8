"""The ``attnlens`` command line (also ``python -m app``)."""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from . import __version__


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help="efficientnet_lite0 (default, embedded), resnet18, resnet50, or package.module:factory")
    parser.add_argument("--weights", default=None, help="state_dict file (.pt/.pth read with weights_only, or .safetensors)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA when available)")
    parser.add_argument("--precision", default=None, help="auto (bf16 autocast on CUDA, fp32 on CPU), fp32, bf16, fp16")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attnlens", description="See what CNN plug-in blocks attend to.")
    parser.add_argument("--version", action="version", version=f"attnlens {__version__}")
    commands = parser.add_subparsers(dest="command")
    analyze = commands.add_parser("analyze", help="analyse images: predictions and every block's maps",
                                  description="Analyse images: top-5 predictions and every block's heatmap.")
    analyze.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    analyze.add_argument("--json", action="store_true", help="print the API's JSON (one object per image, one per line)")
    analyze.add_argument("--out", type=Path, help="write <image>.json and <image>/<block>.png overlays here")
    analyze.add_argument("--figure", type=Path, help="write a figure of image + every block's map (.png, .pdf, .svg)")
    analyze.add_argument("--size", type=int, default=None, help="short side the image is resized to (default: model input)")
    analyze.add_argument("--colormap", default="inferno", help="matplotlib colormap (default: inferno)")
    analyze.add_argument("--values", action="store_true", help="include raw heatmap values in the JSON")
    analyze.add_argument("--maps", action="store_true", help="include the full maps (attention, offsets ...) in the JSON")
    _add_model_options(analyze)
    serve = commands.add_parser("serve", help="start the web server and JSON API",
                                description="Start the web server. Every option can also be set with an environment "
                                            "variable ATTNLENS_<OPTION> (e.g. ATTNLENS_PORT=8080); flags win.")
    serve.add_argument("--host", default=None, help="interface (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default 8000)")
    serve.add_argument("--queue-size", type=int, default=None, help="requests admitted at once; more get 503 (default 16)")
    serve.add_argument("--max-batch", type=int, default=None, help="images per forward pass (default: 8 on CUDA, 1 on CPU)")
    serve.add_argument("--log-level", default=None, help="debug, info, warning ... (default info)")
    _add_model_options(serve)
    commands.add_parser("blocks", help="list the block kinds attnlens reads, with their classes")
    return parser


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def _summary(path: Path, report: dict, strides: dict[str, int]) -> str:
    lines = [f"{path}  ({report['image']['width']}x{report['image']['height']}, "
             f"{report['timings_ms']['total']:.0f} ms)"]
    lines += [f"  {p['score']:6.1%}  {p['label']}" for p in report["predictions"]]
    for block in report["blocks"]:
        low, high = block["heatmap"]["range"]
        lines.append(f"  {block['type']:6} {block['id']:32} stride {strides.get(block['id'], '?'):>2}  "
                     f"heatmap {block['heatmap']['shape'][0]}x{block['heatmap']['shape'][1]}  "
                     f"range [{low:.3g}, {high:.3g}] {block['heatmap']['unit']}")
    return "\n".join(lines)


def _write_outputs(out: Path, path: Path, image, report: dict, colormap: str) -> None:
    import numpy as np

    from .render import overlay

    folder = out / _safe_name(path.stem)
    folder.mkdir(parents=True, exist_ok=True)
    for block in report["blocks"]:
        values = np.asarray(block["heatmap"]["values"], dtype=np.float32)
        overlay(image, values, colormap).save(folder / f"{_safe_name(block['id'])}.png")
    report = {**report, "blocks": [{**b, "heatmap": {k: v for k, v in b["heatmap"].items() if k != "values"}}
                                   for b in report["blocks"]]}
    (out / f"{_safe_name(path.stem)}.json").write_text(json.dumps(report))


def analyze(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .engine import AnalyzeOptions, Engine
    from .figure import FIGURE_FORMATS, save_figure
    from .imaging import ImageError, decode_image
    from .models import ModelLoadError, load_model

    if args.figure and args.figure.suffix.lower() not in FIGURE_FORMATS:
        print(f"attnlens: --figure must end in {', '.join(FIGURE_FORMATS)}", file=sys.stderr)
        return 2
    try:
        model = load_model(args.model, args.weights, args.device)
        options = AnalyzeOptions(size=args.size, colormap=args.colormap,
                                 include_values=args.values or bool(args.out or args.figure), include_maps=args.maps)
        options.validate()
    except (ModelLoadError, ValueError) as error:
        print(f"attnlens: {error}", file=sys.stderr)
        return 2
    try:
        engine = Engine(model, args.precision or "auto")
    except ValueError as error:
        print(f"attnlens: {error}", file=sys.stderr)
        return 2
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
        report = engine.analyze(image, options)
        if args.out:
            _write_outputs(args.out, path, image, report, args.colormap)
        if args.figure:
            target = args.figure if len(args.images) == 1 else \
                args.figure.with_name(f"{args.figure.stem}-{_safe_name(path.stem)}{args.figure.suffix}")
            save_figure(image, report, target, args.colormap, strides)
        if args.json:
            if not args.values:
                for block in report["blocks"]:
                    block["heatmap"].pop("values", None)
            print(json.dumps(report), flush=True)
        elif not args.out or len(args.images) == 1:
            progress.write(_summary(path, report, strides), file=sys.stdout)
    return 1 if failures else 0


def serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from .server import serve as run_server
    from .settings import Settings

    overrides = {name: getattr(args, name) for name in ("host", "port", "queue_size", "max_batch", "log_level",
                                                        "model", "weights", "device", "precision")}
    try:
        settings = Settings(**{name: value for name, value in overrides.items() if value is not None})
    except ValidationError as error:
        print(f"attnlens: bad settings: {error}", file=sys.stderr)
        return 2
    run_server(settings)
    return 0


def list_blocks() -> int:
    for kind, names in (("acmix", "ACmix"), ("gc", "CB2d / GlobalContextBlock (also mmcv ContextBlock)"),
                        ("ca", "CA / CoordinateAttention (also official CoordAtt)"),
                        ("spd", "space_to_depth / SPDConv"),
                        ("dcn", "DCN / DCNv2 (mmcv *DeformConv2dPack style), torchvision DeformConv2d")):
        print(f"{kind:6} {names}")
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "analyze":
        sys.exit(analyze(args))
    if args.command == "serve":
        sys.exit(serve(args))
    if args.command == "blocks":
        sys.exit(list_blocks())
    parser.print_help()


if __name__ == "__main__":
    main()
