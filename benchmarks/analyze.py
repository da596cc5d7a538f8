"""Where the time of one analysis goes, for a 640x480 JPEG, measured in one run.

Prints the median of each stage (decode, resize, forward without capture, forward under capture,
maps -> report with PNGs, JSON encoding) and the overhead of capture and rendering relative to the
plain forward pass of the same augmented model; the plain backbone (no blocks) is timed beside it.

    python benchmarks/analyze.py [--repeats 30] [--device cpu] [--threads 2]
"""
from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from attnlens.analysis.engine import Engine  # noqa: E402
from attnlens.analysis.imaging import decode_image  # noqa: E402
from attnlens.analysis.options import AnalyzeOptions  # noqa: E402
from attnlens.models.backbones.efficientnet_lite import EfficientNetLite0, lite0_weights_path  # noqa: E402
from attnlens.models.loading import load_model  # noqa: E402


def median_ms(fn, repeats: int, device: torch.device) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    buffer = io.BytesIO()
    Image.open(ROOT / "static" / "samples" / "cat.jpg").convert("RGB").resize((640, 480)).save(buffer, "JPEG", quality=90)
    jpeg = buffer.getvalue()
    model = load_model(device=args.device)
    engine = Engine(model)
    plain = EfficientNetLite0().eval().to(model.device)
    plain.load_state_dict(torch.load(lite0_weights_path(), map_location="cpu", weights_only=True))

    image = decode_image(jpeg)
    batch, geometry = engine.prepare(image)
    normalized = model.normalize(batch.to(model.device))
    (analysis,) = engine.analyses(engine.run(batch), [geometry])
    options = AnalyzeOptions()
    report = analysis.report(options)

    def forward(module):
        def run():
            with torch.no_grad():
                module(normalized)
        return run

    stages = {
        "decode (JPEG -> RGB)": median_ms(lambda: decode_image(jpeg), args.repeats, model.device),
        "resize + tensor": median_ms(lambda: engine.prepare(image), args.repeats, model.device),
        "forward, plain backbone": median_ms(forward(plain), args.repeats, model.device),
        "forward, augmented, no capture": median_ms(forward(model.module), args.repeats, model.device),
        "forward, augmented, capture": median_ms(lambda: engine.run(batch), args.repeats, model.device),
        "maps -> report (PNGs)": median_ms(lambda: analysis.report(options), args.repeats, model.device),
        "JSON encoding": median_ms(lambda: json.dumps(report), args.repeats, model.device),
    }
    print(f"torch {torch.__version__}, device {model.device}, threads {torch.get_num_threads()}, "
          f"640x480 JPEG -> input {batch.shape[-1]}x{batch.shape[-2]}, {args.repeats} repeats (median)")
    for name, ms in stages.items():
        print(f"  {name:32} {ms:8.2f} ms")
    base = stages["forward, augmented, no capture"]
    capture = stages["forward, augmented, capture"] - base
    render = stages["maps -> report (PNGs)"] + stages["JSON encoding"]
    total = stages["decode (JPEG -> RGB)"] + stages["resize + tensor"] + stages["forward, augmented, capture"] + render
    print(f"capture overhead: {capture:+.2f} ms ({100 * capture / base:+.1f}% of the forward pass)")
    print(f"rendering + encoding: {render:.2f} ms ({100 * render / base:.1f}% of the forward pass)")
    print(f"blocks' cost: augmented forward / plain backbone forward = {base / stages['forward, plain backbone']:.2f}x")
    print(f"one analysis end to end: {total:.1f} ms")


if __name__ == "__main__":
    main()
