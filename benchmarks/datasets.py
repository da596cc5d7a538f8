"""How fast the Dataset view's listing answers for a big split: pages of 100 of a 10,000-image YOLO dataset.

Writes the dataset once (small PNGs with 1-3 labelled boxes each, and an eval ``per_image.csv`` with a score per
image), then times, through the API (``GET /api/v1/datasets/{name}/images``, in-process ASGI client, JSON
included): the server's start (labels read, no image opened), the first page (its 100 sizes read from the
image headers), a page deep into the split (cold), the same page again (sizes cached), a page sorted by a
score, and a class-filtered page. Target: < 200 ms a page. Median of ``--repeats`` (each cold page on a fresh
server) with the range.

    python benchmarks/datasets.py [--images 10000] [--repeats 5] [--folder /tmp/attnlens-bench-data]
"""
from __future__ import annotations

import argparse
import csv
import random
import statistics
import sys
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastapi.testclient import TestClient  # noqa: E402

from attnlens.server import create_app  # noqa: E402
from attnlens.server.settings import Settings  # noqa: E402


def write_dataset(folder: Path, count: int) -> tuple[Path, Path]:
    """``count`` images with labels and a per_image.csv; kept between runs (written when missing)."""
    yaml, results = folder / "data.yaml", folder / "results"
    if yaml.is_file() and len(list((folder / "images" / "val").iterdir())) == count:
        return yaml, results
    rng = random.Random(0)
    (folder / "images" / "val").mkdir(parents=True, exist_ok=True)
    (folder / "labels" / "val").mkdir(parents=True, exist_ok=True)
    results.mkdir(exist_ok=True)
    with open(results / "per_image.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["image", "model", "map", "type", "energy", "area", "lift", "pointing"])
        for i in range(count):
            name = f"img{i:05d}.png"
            size = (rng.choice((64, 80, 96)), rng.choice((48, 64)))
            Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3))).save(folder / "images" / "val" / name)
            rows = [f"{rng.randrange(3)} {rng.uniform(0.2, 0.8):.4f} {rng.uniform(0.2, 0.8):.4f} 0.2 0.2"
                    for _ in range(rng.randint(1, 3))]
            (folder / "labels" / "val" / f"img{i:05d}.txt").write_text("\n".join(rows))
            energy = rng.random()
            writer.writerow([f"images/val/{name}", "m", "model.gc", "gc", f"{energy:.6g}", "0.1",
                             f"{energy / 0.1:.6g}", "1"])
    yaml.write_text(f"path: {folder}\nval: images/val\nnames: [a, b, c]\n")
    return yaml, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/attnlens-bench-data"))
    args = parser.parse_args()
    started = time.perf_counter()
    yaml, results = write_dataset(args.folder, args.images)
    print(f"{args.images} images in {args.folder} ({time.perf_counter() - started:.1f} s to make or find)")
    pages = {"first page": {}, f"page at offset {args.images // 2}": {"offset": args.images // 2},
             "sorted by model.gc:energy": {"sort": "model.gc:energy", "offset": 300},
             "class b only": {"class": "b", "offset": 200}}
    times: dict[str, list[float]] = {"start (labels read)": [], **{f"{name}, cold": [] for name in pages},
                                     **{f"{name}, again": [] for name in pages}}
    settings = Settings(device="cpu", model="tests.app.yolo_models:v8", data=yaml, eval_results=results)
    for _ in range(args.repeats):
        start = time.perf_counter()
        app = create_app(settings, load_in_background=True)
        times["start (labels read)"].append(1000 * (time.perf_counter() - start))
        with TestClient(app) as client:
            while client.get("/readyz").status_code != 200:  # the model loads meanwhile: timed once it has
                time.sleep(0.1)
            for name, params in pages.items():
                for when in ("cold", "again"):
                    start = time.perf_counter()
                    response = client.get("/api/v1/datasets/data/images", params={"limit": 100, **params})
                    times[f"{name}, {when}"].append(1000 * (time.perf_counter() - start))
                    assert response.status_code == 200 and len(response.json()["images"]) == 100, response.text
    print(f"GET /api/v1/datasets/data/images?limit=100, ms median [range] of {args.repeats} fresh servers "
          f"(target < 200 ms a page):")
    for name, values in times.items():
        print(f"  {name:40} {statistics.median(values):8.1f} [{min(values):.1f}, {max(values):.1f}]")


if __name__ == "__main__":
    main()
