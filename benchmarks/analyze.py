"""Where the time of one analysis goes, and what the blocks cost, on real photos, measured in one run.

For each photo (the test and sample photos, resized so their long side is 640), the stages take turns
for ``--repeats`` rounds: decode, resize, the plain backbone's forward (``efficientnet_lite0_plain``), the
default model's forward without capture, ``Engine.run`` (forward under capture: what the server reports
as ``timings_ms.forward``, plus the heatmaps and block summaries it reports as ``heatmaps``), and rendering the report
(PNGs, JSON). It prints the medians with their range, and the ratios: the default model under capture
over the plain backbone (the blocks' cost), and capture's own overhead. With ``--blocks``, each plugin's
share of the default model's forward. With ``--served``, the same ratio as the real server reports it: one
``attnlens serve`` offering both models, the photos posted to each in turn, their ``timings_ms.forward``.

    python benchmarks/analyze.py [--repeats 15] [--device cpu] [--threads 2] [--blocks] [--served]
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
from attnlens.models.loading import load_model  # noqa: E402

PHOTOS = [ROOT / "tests" / "data" / "chelsea.jpg", ROOT / "tests" / "data" / "coffee.jpg",
          ROOT / "static" / "samples" / "astronaut.jpg", ROOT / "static" / "samples" / "rocket.jpg"]


def elapsed_ms(fn, device: torch.device) -> float:
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 1000 * (time.perf_counter() - start)


def jpeg(path: Path) -> bytes:
    image = Image.open(path).convert("RGB")
    image.thumbnail((640, 640))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def stages_of(data: bytes, engine: Engine, plain: Engine) -> dict:
    image = decode_image(data)
    batch, geometry = engine.prepare(image)
    normalized = engine.model.normalize(batch.to(engine.model.device))
    result = engine.run(batch)
    (analysis,) = engine.analyses(result, [geometry])
    options = AnalyzeOptions()

    def no_grad(module):
        def run():
            with torch.no_grad():
                module(normalized)
        return run

    return {
        "decode (JPEG -> RGB)": lambda: decode_image(data),
        "resize + tensor": lambda: engine.prepare(image),
        "forward, plain backbone": no_grad(plain.model.module),
        "forward, default model, no capture": no_grad(engine.model.module),
        "Engine.run (capture + heatmaps)": lambda: engine.run(batch),
        "report: PNGs + JSON": lambda: json.dumps(analysis.report(options)),
    }


def block_shares(engine: Engine, batch: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median ms of each plugin (and the stem) inside the default model's forward, timed with hooks."""
    named = dict(engine.model.module.named_modules())
    names = [name for name in named if name == "_conv_stem" or name.count(".") == 1 and name.startswith("plugins.")]
    spent: dict[str, list[float]] = {name: [] for name in names}
    started: dict[str, float] = {}
    handles = []
    for name in names:
        handles.append(named[name].register_forward_pre_hook(lambda m, a, name=name: started.__setitem__(
            name, time.perf_counter())))
        handles.append(named[name].register_forward_hook(lambda m, a, o, name=name: spent[name].append(
            1000 * (time.perf_counter() - started[name]))))
    try:
        with torch.no_grad():
            for _ in range(repeats):
                engine.model.module(engine.model.normalize(batch))
    finally:
        for handle in handles:
            handle.remove()
    return {name: statistics.median(times) for name, times in spent.items()}


def served_ratio(repeats: int, device: str) -> None:
    """The server's own ``timings_ms.forward``: default model vs plain backbone, same photos, taking turns."""
    import tempfile

    import httpx

    from tests.serving import running_server

    photos = [jpeg(path) for path in PHOTOS]
    with tempfile.TemporaryDirectory() as folder:
        models = Path(folder) / "models.toml"
        models.write_text('[[models]]\nname = "default"\nmodel = "efficientnet_lite0"\n\n'
                          '[[models]]\nname = "plain"\nmodel = "efficientnet_lite0_plain"\n')
        with running_server(args=("--models", str(models)), ATTNLENS_DEVICE=device, ATTNLENS_MAX_BATCH="1") as (base, _), \
                httpx.Client(timeout=60) as client:
            forward: dict[str, list[float]] = {"default": [], "plain": []}
            for round_ in range(repeats + 1):
                for data in photos:
                    for name in forward:
                        answer = client.post(f"{base}/api/v1/analyze", params={"model": name},
                                             files={"file": ("photo.jpg", data, "image/jpeg")}).json()
                        if round_:  # the first round warms up
                            forward[name].append(answer["timings_ms"]["forward"])
    ratios = sorted(a / b for a, b in zip(forward["default"], forward["plain"]))
    print(f"server timings_ms.forward, {len(photos)} photos x {repeats} rounds: default "
          f"{statistics.median(forward['default']):.2f} ms, plain backbone {statistics.median(forward['plain']):.2f} ms; "
          f"ratio {statistics.median(ratios):.2f}x (quartiles {ratios[len(ratios) // 4]:.2f}-"
          f"{ratios[3 * len(ratios) // 4]:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--blocks", action="store_true", help="also each plugin's time inside the forward")
    parser.add_argument("--served", action="store_true", help="also the ratio of the server's own timings_ms.forward")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    engine = Engine(load_model("efficientnet_lite0", device=args.device))
    plain = Engine(load_model("efficientnet_lite0_plain", device=args.device))
    device = engine.model.device
    photos = {path.name: stages_of(jpeg(path), engine, plain) for path in PHOTOS}
    times: dict[str, list[float]] = {}
    for stages in photos.values():  # warm-up
        for fn in stages.values():
            fn()
    for _ in range(args.repeats):  # every stage of every photo takes its turn in each round
        for stages in photos.values():
            for name, fn in stages.items():
                times.setdefault(name, []).append(elapsed_ms(fn, device))
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}; {len(photos)} photos "
          f"(long side 640 -> short side {engine.model.input_size}), {args.repeats} interleaved rounds: "
          f"median [range] ms over photos and rounds")
    median = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        print(f"  {name:36} {median[name]:8.2f}  [{min(values):.1f}-{max(values):.1f}]")
    ratios = {name: [] for name in ("run", "forward")}
    count = len(times["forward, plain backbone"])
    for i in range(count):  # per photo and round: the pairs measured side by side
        ratios["run"].append(times["Engine.run (capture + heatmaps)"][i] / times["forward, plain backbone"][i])
        ratios["forward"].append(times["forward, default model, no capture"][i] / times["forward, plain backbone"][i])
    for key, label in (("run", "default model under capture / plain backbone"),
                       ("forward", "default model without capture / plain backbone")):
        values = sorted(ratios[key])
        print(f"{label}: {statistics.median(values):.2f}x (quartiles {values[len(values) // 4]:.2f}-"
              f"{values[3 * len(values) // 4]:.2f})")
    capture = median["Engine.run (capture + heatmaps)"] - median["forward, default model, no capture"]
    print(f"capture's own cost: {capture:+.2f} ms of {median['forward, default model, no capture']:.2f} ms")
    if args.blocks:
        batch, _ = engine.prepare(decode_image(jpeg(PHOTOS[0])))
        shares = block_shares(engine, batch.to(device), args.repeats)
        print("inside the default model's forward (median ms): " + ", ".join(f"{k} {v:.2f}" for k, v in shares.items()))
    if args.served:
        served_ratio(args.repeats, args.device)


if __name__ == "__main__":
    main()
