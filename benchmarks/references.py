"""What a reference map costs: ``Engine.run`` with each method against the same run without one, in one process.

Models: the default (Lite0, short side 224, one layer: its last stage) and a detector at letterbox 640 with
its head's three inputs fused (a real YOLOv8n from its YAML with random weights when ultralytics is installed,
else the tests' tuple-headed YOLO). The runs take turns for ``--repeats`` rounds on one photo; it prints each
method's median time with its range and its ratio to the plain run (the baseline measured in the same rounds).

    python benchmarks/references.py [--repeats 15] [--threads 2] [--device cpu]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from attnlens.analysis.engine import Engine, ReferenceRequest  # noqa: E402
from attnlens.models import load_model  # noqa: E402
from attnlens.models.references import METHODS  # noqa: E402


def detector(device: str):
    os.environ.setdefault("YOLO_OFFLINE", "1")
    try:
        from tests.app.test_ultralytics import yolov8n_with_coordatt

        module, name = yolov8n_with_coordatt(), "YOLOv8n (ultralytics, random weights, CA after SPPF)"
    except Exception:  # noqa: BLE001 - ultralytics is an optional test extra
        from tests.app.yolo_models import TupleHeadYolo

        module, name = TupleHeadYolo(), "the tests' tuple-headed YOLO"
    return name, load_model(module, device=device, input_size=640, resize="letterbox", normalize="none", conf=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image = Image.open(ROOT / "tests" / "data" / "chelsea.jpg").convert("RGB")
    print(f"torch {torch.__version__}, {args.device}, threads {args.threads}, {args.repeats} rounds: ms median [range]")
    for name, model in (("efficientnet_lite0 (224)", load_model(device=args.device)), detector(args.device)):
        engine = Engine(model)
        batch, _ = engine.prepare(image)
        runs = {"no reference": None} | {method: ReferenceRequest((method,), (None,)) for method in METHODS}
        times: dict[str, list[float]] = {label: [] for label in runs}
        for request in runs.values():  # warm-up
            engine.run(batch, request)
        for _ in range(args.repeats):
            for label, request in runs.items():
                start = time.perf_counter()
                engine.run(batch, request)
                times[label].append(1000 * (time.perf_counter() - start))
        base = statistics.median(times["no reference"])
        print(f"{name}: layers {', '.join(model.reference_layers)}; input {batch.shape[-1]}x{batch.shape[-2]}")
        for label, values in times.items():
            median = statistics.median(values)
            print(f"  {label:14} {median:8.1f} ms [{min(values):.1f}, {max(values):.1f}]  {median / base:5.2f}x")


if __name__ == "__main__":
    main()
