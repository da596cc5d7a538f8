"""``attnlens eval`` throughput against the plain batched forward, on the same images with the same preprocessing.

A labelled set is written first: the test and sample photos (long side 640) with coloured squares pasted at
seeded places (their boxes the labels), repeated to ``--images``. Then, taking turns for ``--repeats`` rounds,
(1) the plain forward: the same DataLoader (decode + resize in workers, batches of one input shape), the model's
forward without capture; (2) the evaluation: ``attnlens.evaluation.evaluate_dataset`` with ``--reference none``
(forward under capture, every map scored; a detector's boxes read at the AP threshold too and each object scored
alone), (3) the same with Grad-CAM references (a backward pass per batch) and, for detectors, (4) the whole
detection part on top of (2): COCO AP with its bootstrap intervals, found / missed and the per-object join
(``attnlens.evaluation.detection.evaluate_detections``). Prints images/s (median [range]) and the ratios to the
plain forward, for the default model, the YOLO-style test detector at 640 (a few boxes per image) and a
multi-scale YOLO head with random weights at 640 (300 detections per image at conf 0.001, as a real detector's
validation gives).

With ``--ray``: instead, the whole evaluation (``attnlens.evaluate``, Grad-CAM reference, the default model) run
locally and on a Ray cluster of this machine (``ray="local"``: the cluster started, the folder shipped, the
model loaded on the workers, the cluster stopped), taking turns; prints seconds (median [range]), the ratio and
the difference, Ray's overhead on this machine.

    python benchmarks/eval.py [--images 48] [--repeats 3] [--batch-size 8] [--workers 2] [--threads 2] [--ray]
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from attnlens.evaluation import evaluate, read_dataset  # noqa: E402
from attnlens.evaluation.detection import evaluate_detections  # noqa: E402
from attnlens.evaluation.run import _collate, _Prepared, evaluate_dataset, plan_batches  # noqa: E402
from attnlens.models.loading import load_model  # noqa: E402

PHOTOS = [ROOT / "tests" / "data" / "chelsea.jpg", ROOT / "tests" / "data" / "coffee.jpg",
          ROOT / "static" / "samples" / "astronaut.jpg", ROOT / "static" / "samples" / "rocket.jpg"]


def write_set(folder: Path, count: int) -> Path:
    (folder / "images" / "val").mkdir(parents=True)
    (folder / "labels" / "val").mkdir(parents=True)
    rng = random.Random(0)
    for i in range(count):
        image = Image.open(PHOTOS[i % len(PHOTOS)]).convert("RGB")
        image.thumbnail((640, 640))
        width, height = image.size
        side = rng.randint(40, 160)
        x0, y0 = rng.randint(0, width - side), rng.randint(0, height - side)
        ImageDraw.Draw(image).rectangle((x0, y0, x0 + side - 1, y0 + side - 1), fill=(230, 30, 30))
        image.save(folder / "images" / "val" / f"{i:04d}.jpg", quality=90)
        (folder / "labels" / "val" / f"{i:04d}.txt").write_text(
            f"0 {(x0 + side / 2) / width} {(y0 + side / 2) / height} {side / width} {side / height}\n")
    (folder / "data.yaml").write_text("path: .\nval: images/val\nnames: [square, other]\n")
    return folder / "data.yaml"


def plain_pass(model, dataset, batch_size: int, workers: int) -> None:
    loader = DataLoader(_Prepared(dataset.images, [model.recipe]),
                        batch_sampler=plan_batches(dataset.images, [model], batch_size),
                        num_workers=workers, collate_fn=_collate)
    with torch.no_grad():
        for batch in loader:
            model.module(model.normalize(torch.stack([tensors[0] for _, tensors, _ in batch])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ray", action="store_true", help="the local run against --ray local, end to end")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        dataset = read_dataset(write_set(Path(folder), args.images))
        if args.ray:
            return ray_overhead(dataset, args)
        print(f"torch {torch.__version__}, cpu, threads {args.threads}, {args.images} images (long side 640), "
              f"batch {args.batch_size}, {args.workers} workers, {args.repeats} rounds: images/s median [range]")
        letterbox = {"input_size": 640, "resize": "letterbox", "normalize": "none"}
        for label, options in (("default model (efficientnet_lite0, short side 224)", {}),
                               ("YOLO-style test detector (letterbox 640)", {"model": "tests.app.yolo_models:v8",
                                                                             **letterbox}),
                               ("multi-scale YOLO head, random weights (letterbox 640)",
                                {"model": "tests.app.yolo_models:tuple_head", **letterbox})):
            model = load_model(device="cpu", **options)
            runs = {"plain forward": lambda: plain_pass(model, dataset, args.batch_size, args.workers),
                    "eval, --reference none": lambda: evaluate_dataset([("m", model)], dataset, (),
                                                                       args.batch_size, args.workers),
                    "eval, Grad-CAM reference": lambda: evaluate_dataset([("m", model)], dataset, ("gradcam",),
                                                                         args.batch_size, args.workers)}
            if model.task == "detect":
                runs["eval + AP, found / missed"] = lambda: evaluate_detections(
                    [("m", model)], dataset, evaluate_dataset([("m", model)], dataset, (), args.batch_size,
                                                                     args.workers))
            rates: dict[str, list[float]] = {name: [] for name in runs}
            for _ in range(args.repeats):
                for name, run in runs.items():
                    start = time.perf_counter()
                    result = run()
                    rates[name].append(args.images / (time.perf_counter() - start))
                    if name.startswith("eval + AP"):
                        detections = result.summary["m"]["detections"]
            base = statistics.median(rates["plain forward"])
            print(label + (f": {detections / args.images:.0f} detections per image for AP"
                           if model.task == "detect" else ""))
            for name, values in rates.items():
                median = statistics.median(values)
                print(f"  {name:26} {median:7.1f}  [{min(values):.1f}-{max(values):.1f}]  {median / base:.2f}x plain")


def ray_overhead(dataset, args) -> None:
    import logging

    logging.getLogger("ray").setLevel(logging.ERROR)
    model = load_model(device="cpu")
    runs = {"local": lambda: evaluate([("m", model)], dataset, workers=args.workers, batch_size=args.batch_size),
            "--ray local": lambda: evaluate([("m", model)], dataset, batch_size=args.batch_size, ray="local")}
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    results = {}
    for _ in range(args.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            results[name] = run()
            seconds[name].append(time.perf_counter() - start)
    assert results["local"] == results["--ray local"], "the Ray run's summary differs from the local run's"
    print(f"torch {torch.__version__}, cpu, threads {args.threads}, {args.images} images (long side 640), batch "
          f"{args.batch_size}, default model with Grad-CAM, {args.repeats} rounds: seconds end to end, median [range]")
    base = statistics.median(seconds["local"])
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"  {name:12} {median:7.2f} s  [{min(values):.2f}-{max(values):.2f}]  {median / base:.2f}x local  "
              f"{median - base:+.2f} s")
    print("  summaries equal: yes")


if __name__ == "__main__":
    main()
