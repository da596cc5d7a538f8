"""ACmix: ours (no unfold) against the official unfold code, side by side in one run.

Prints, per input shape, forward time, forward+backward time and peak extra memory of each, and the
ratios official / ours; a plain 3x3 convolution of the same width is timed beside them for scale. Time is
the best of several runs at 2 CPU threads (or on CUDA with ``--device cuda``, fp32 and bf16). CPU peak
memory is the process's resident-set growth during one forward pass, measured (peak RSS reset through
/proc/self/clear_refs) in a fresh subprocess with glibc's mmap threshold pinned so that every large
tensor is mapped and unmapped on its own; on CUDA it is ``max_memory_allocated`` growth.

    python benchmarks/acmix.py [--device cpu|cuda] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from attnlens.blocks import ACmix  # noqa: E402
from tests.reference.official_acmix import OfficialACmix  # noqa: E402

SHAPES = [(1, 64, 56, 56), (4, 128, 28, 28)]
IMPLEMENTATIONS = ("official", "ours", "conv3x3")  # conv3x3: a plain 3x3 conv of the same width, for scale


def build(name: str, channels: int, device: str, dtype: torch.dtype) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "conv3x3":
        module = torch.nn.Conv2d(channels, channels, 3, padding=1)
    else:
        module = OfficialACmix(channels, channels)
        if name == "ours":
            ours = ACmix(channels, channels)
            ours.load_state_dict(module.state_dict(), strict=True)
            module = ours
    return module.to(device=device, dtype=dtype)


def best_time_ms(fn, device: str, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def memory_status_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def cpu_peak_child(name: str, shape: tuple[int, ...]) -> None:
    """Run in a fresh process: print the peak RSS growth (bytes) of one forward pass."""
    module = build(name, shape[1], "cpu", torch.float32)
    x = torch.randn(shape)
    with torch.no_grad():
        module(x)  # warm up: one-off allocations (thread pools, kernels) are not the block's memory
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # reset the peak resident set size (VmHWM) to the current one
        before = memory_status_bytes("VmRSS")
        module(x)
    print(json.dumps({"peak_extra": memory_status_bytes("VmHWM") - before}))


def cpu_peak_extra_mb(name: str, shape: tuple[int, ...]) -> float:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    result = subprocess.run([sys.executable, __file__, "--peak-child", name, ",".join(map(str, shape))],
                            env=env, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_extra"] / 2**20


def cuda_peak_extra_mb(module: torch.nn.Module, x: torch.Tensor) -> float:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    with torch.no_grad():
        module(x)
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def measure(shape, device: str, dtype: torch.dtype, repeats: int) -> dict[str, dict[str, float]]:
    results = {}
    for name in IMPLEMENTATIONS:
        module = build(name, shape[1], device, dtype)
        x = torch.randn(shape, device=device, dtype=dtype)
        x_grad = x.clone().requires_grad_()

        def forward():
            with torch.no_grad():
                module(x)

        def forward_backward():
            module(x_grad).float().sum().backward()

        results[name] = {
            "forward_ms": best_time_ms(forward, device, repeats),
            "train_ms": best_time_ms(forward_backward, device, max(1, repeats // 2)),
            "peak_extra_mb": (cuda_peak_extra_mb(module, x) if device == "cuda"
                              else cpu_peak_extra_mb(name, shape)),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--peak-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak_child:
        name, shape = args.peak_child
        cpu_peak_child(name, tuple(int(s) for s in shape.split(",")))
        return
    torch.set_num_threads(args.threads)
    dtypes = [torch.float32, torch.bfloat16] if args.device == "cuda" else [torch.float32]
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}")
    header = f"{'shape':>18} {'dtype':>9} | {'impl':>8} {'fwd ms':>8} {'fwd+bwd ms':>11} {'peak MB':>8}"
    print(header)
    for dtype in dtypes:
        for shape in SHAPES:
            results = measure(shape, args.device, dtype, args.repeats)
            for name, row in results.items():
                print(f"{str(shape):>18} {str(dtype)[6:]:>9} | {name:>8} {row['forward_ms']:8.2f} "
                      f"{row['train_ms']:11.2f} {row['peak_extra_mb']:8.1f}")
            official, ours = results["official"], results["ours"]
            print(f"{'':>18} {'':>9} | ratios official/ours: forward {official['forward_ms'] / ours['forward_ms']:.1f}x, "
                  f"forward+backward {official['train_ms'] / ours['train_ms']:.1f}x, "
                  f"peak memory {official['peak_extra_mb'] / ours['peak_extra_mb']:.1f}x")


if __name__ == "__main__":
    main()
