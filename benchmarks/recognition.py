"""What recognition by computation costs: once per model (the observed pass), and per request after it.

For the default model and for a model of real fork classes that attnlens knows by no name
(``tests/app/fork_models.py``: Focus, bubbliiiing's CA_Block, YOLOAir's GC, RDD-RGNet's JointAtt, YOLOAir's
DeformableConv2d, read by watching their own operations), rounds taking turns: the plain forward (no capture),
the forward under ``capture`` once the model is recognised, and the recognising pass itself (every operation
watched). Prints medians with their range and the ratios to the plain forward, measured in the same run.

    python benchmarks/recognition.py [--repeats 15] [--size 320] [--threads 2]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from attnlens import blocks  # noqa: E402
from attnlens.models.loading import load_model  # noqa: E402
from tests.app.fork_models import ForkClassifier  # noqa: E402


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return 1000 * (time.perf_counter() - start)


def measure(name: str, module: torch.nn.Module, x: torch.Tensor, repeats: int) -> None:
    def plain():
        module(x)

    def captured():
        with blocks.capture(module):
            module(x)

    def recognising():
        blocks.recognise(module, x)

    with torch.no_grad():
        blocks.recognise(module, x)
        for _ in range(2):  # warm-up
            plain(), captured()
        times: dict[str, list[float]] = {"plain forward": [], "forward under capture": [], "recognising pass": []}
        for _ in range(repeats):
            for label, fn in zip(times, (plain, captured, recognising)):
                times[label].append(timed(fn))
    found = blocks.find_blocks(module)
    watched = sum(1 for b in blocks.recognition_of(module).blocks if b.how.split(":")[0].endswith("computation"))
    print(f"{name}: {len(found)} blocks ({watched} read by watching their operations), input {tuple(x.shape)}")
    base = statistics.median(times["plain forward"])
    for label, values in times.items():
        median = statistics.median(values)
        print(f"  {label:24} {median:8.2f} ms  [{min(values):.2f}-{max(values):.2f}]  {median / base:5.2f}x plain")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--size", type=int, default=320, help="the fork model's input size (square)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, cpu, threads {args.threads}, {args.repeats} interleaved rounds")
    default = load_model(device="cpu")
    measure("default model (efficientnet_lite0)", default.module, default.normalize(torch.rand(1, 3, 224, 224)),
            args.repeats)
    measure("fork classes (tests/app/fork_models.py)", ForkClassifier().eval(), torch.rand(1, 3, args.size, args.size),
            args.repeats)


if __name__ == "__main__":
    main()
