"""What a knockout costs: each block of the default model knocked out (its map made flat) against one plain forward
of the same model, on real photos, taking turns in one run.

For every photo (the test and sample photos, long side 640, the model's input recipe), each round runs the default
model once as it is and once per block under ``attnlens.blocks.knockout``, interleaved; it prints each block's median
forward time with its range and the ratio to the plain forward (target <= 1.3x), and ``Engine.run(knockout=True)``
over ``Engine.run()`` as the server and ``analyze --knockout`` pay it (all blocks, one forward each).

    python benchmarks/knockout.py [--repeats 15] [--device cpu] [--threads 2]
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from attnlens.analysis.engine import Engine  # noqa: E402
from attnlens.analysis.imaging import decode_image  # noqa: E402
from attnlens.analysis.knockout import knocked_modules  # noqa: E402
from attnlens.blocks import KINDS  # noqa: E402
from attnlens.blocks.knockout import knockout  # noqa: E402
from attnlens.models.loading import load_model  # noqa: E402
from benchmarks.analyze import PHOTOS, elapsed_ms, jpeg  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model("efficientnet_lite0", device=args.device)
    engine = Engine(model)
    device = model.device
    batches = [engine.prepare(decode_image(jpeg(path)))[0].to(device) for path in PHOTOS]
    blocks = [name for name, kind in knocked_modules(model) if KINDS[kind].flatten is not None]
    times: dict[str, list[float]] = {"plain": [], **{name: [] for name in blocks}, "run": [], "run+knockout": []}
    ratios: dict[str, list[float]] = {name: [] for name in [*blocks, "run+knockout"]}
    with torch.no_grad():
        for round_ in range(args.repeats + 1):
            for batch in batches:
                plain = elapsed_ms(lambda: model.forward(batch), device)
                measured = {}
                for name in blocks:
                    with knockout(model.module, name):
                        measured[name] = elapsed_ms(lambda: model.forward(batch), device)
                run = elapsed_ms(lambda: engine.run(batch), device)
                with_knockout = elapsed_ms(lambda: engine.run(batch, knockout=True), device)
                if not round_:
                    continue  # the first round warms up
                times["plain"].append(plain)
                times["run"].append(run)
                times["run+knockout"].append(with_knockout)
                ratios["run+knockout"].append(with_knockout / run)
                for name, value in measured.items():
                    times[name].append(value)
                    ratios[name].append(value / plain)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}; {len(batches)} photos, "
          f"{args.repeats} interleaved rounds: median [range] ms")
    for name, values in times.items():
        ratio = f"  {statistics.median(ratios[name]):.2f}x the plain forward" if name in blocks else ""
        print(f"  {name:28} {statistics.median(values):8.2f}  [{min(values):.1f}-{max(values):.1f}]{ratio}")
    per_block = (statistics.median(ratios["run+knockout"]) - 1) * statistics.median(times["run"]) / \
        statistics.median(times["plain"]) / len(blocks)
    print(f"Engine.run with knockout / without: {statistics.median(ratios['run+knockout']):.2f}x "
          f"({len(blocks)} blocks: {per_block:.2f} plain forwards per block)")


if __name__ == "__main__":
    main()
