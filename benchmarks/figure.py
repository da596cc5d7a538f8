"""What the paper figure costs: ``attnlens figure``'s grid of 4 images x 3 models x 3 maps (drawn and written as a
PDF) against the 12 analyses it shows run one by one (``Engine.analysis``), taking turns in one run.

The figure computes each model's maps once for its images, batched by input shape, then draws; the target is at most
2x the analyses alone. Prints both medians with their ranges and the ratio's median and range.

    python benchmarks/figure.py [--repeats 5] [--threads 2]
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

from attnlens.analysis.engine import Engine  # noqa: E402
from attnlens.analysis.imaging import decode_image  # noqa: E402
from attnlens.evaluation.paper import PaperImage, paper_figure, paper_figure_bytes  # noqa: E402
from attnlens.models.loading import load_model  # noqa: E402
from benchmarks.analyze import PHOTOS, jpeg  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = [("trained", load_model("efficientnet_lite0", device="cpu")),
              ("untrained", load_model("efficientnet_lite0_untrained", device="cpu")),
              ("again", load_model("efficientnet_lite0", device="cpu"))]
    images = [decode_image(jpeg(path)) for path in PHOTOS]
    rows = [PaperImage(image, path.stem) for image, path in zip(images, PHOTOS)]
    engines = [Engine(model) for _, model in models]
    figure_s, analyses_s = [], []
    for round_ in range(args.repeats + 1):
        start = time.perf_counter()
        for engine in engines:
            for image in images:
                engine.analysis(image)
        analyses = time.perf_counter() - start
        start = time.perf_counter()
        paper_figure_bytes(paper_figure(models, rows, ["gc", "ca", "acmix"]), "pdf")
        drawn = time.perf_counter() - start
        if round_:  # the first round warms up
            analyses_s.append(analyses)
            figure_s.append(drawn)
    ratios = sorted(f / a for f, a in zip(figure_s, analyses_s))
    print(f"torch {torch.__version__}, cpu, threads {torch.get_num_threads()}; 4 images x 3 models x 3 maps, "
          f"{args.repeats} rounds taking turns: median [range] s")
    print(f"  the 12 analyses alone     {statistics.median(analyses_s):.2f}  [{min(analyses_s):.2f}-{max(analyses_s):.2f}]")
    print(f"  the figure, drawn as PDF  {statistics.median(figure_s):.2f}  [{min(figure_s):.2f}-{max(figure_s):.2f}]")
    print(f"figure / analyses: {statistics.median(ratios):.2f}x [{ratios[0]:.2f}-{ratios[-1]:.2f}] (target <= 2x)")


if __name__ == "__main__":
    main()
