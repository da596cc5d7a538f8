"""ACmix: ours (no unfold) against the official unfold code, side by side in one run.

Prints, per input shape, forward time, forward+backward time and peak extra memory of each, and the
ratios official / ours; a plain 3x3 convolution of the same width is timed beside them for scale. Times
are the median (and the range) of ``--repeats`` rounds in which the implementations take turns, at 2 CPU
threads (or on CUDA with ``--device cuda``, fp32 and bf16). The floor: the FLOPs ACmix cannot avoid (its
1x1 projections and the k_att**2 window products, logits and weighted sum) at the matrix-product rate
measured here in the same run; ours / floor says how far from it we are. CPU peak
memory is the process's resident-set growth during one forward pass, measured (peak RSS reset through
/proc/self/clear_refs) in a fresh subprocess with glibc's mmap threshold pinned so that every large
tensor is mapped and unmapped on its own; on CUDA it is ``max_memory_allocated`` growth.

    python benchmarks/acmix.py [--device cpu|cuda] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
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


def time_ms(fn, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - start)


def interleaved_ms(fns: dict, device: str, repeats: int) -> dict[str, list[float]]:
    """Each function timed ``repeats`` times, taking turns (so drift hits all alike), after one warm-up."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(time_ms(fn, device))
    return times


def gemm_gflops(device: str, dtype: torch.dtype, repeats: int) -> float:
    """The matrix-product rate here: a (1024 x 1024) @ (1024 x 1024) product, median of ``repeats``."""
    a = torch.randn(1024, 1024, device=device, dtype=dtype)
    b = torch.randn(1024, 1024, device=device, dtype=dtype)
    times = interleaved_ms({"mm": lambda: a @ b}, device, repeats)["mm"]
    return 2 * 1024 ** 3 / (statistics.median(times) / 1000) / 1e9


def floor_gflop(shape: tuple[int, ...], kernel_att: int = 7) -> float:
    """FLOPs ACmix cannot avoid at ``shape`` (out = in channels, stride 1): the q, k, v 1x1 projections and the
    window products (logits q . k over each k_att x k_att window, then the weighted sum of v)."""
    n, channels, height, width = shape
    projections = 2 * n * height * width * channels * 3 * channels
    windows = 2 * 2 * n * height * width * channels * kernel_att ** 2
    return (projections + windows) / 1e9


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


def measure(shape, device: str, dtype: torch.dtype, repeats: int) -> dict[str, dict]:
    modules = {name: build(name, shape[1], device, dtype) for name in IMPLEMENTATIONS}
    x = torch.randn(shape, device=device, dtype=dtype)
    x_grad = x.clone().requires_grad_()

    def forward(module):
        def run():
            with torch.no_grad():
                module(x)
        return run

    def forward_backward(module):
        return lambda: module(x_grad).float().sum().backward()

    forward_ms = interleaved_ms({name: forward(m) for name, m in modules.items()}, device, repeats)
    train_ms = interleaved_ms({name: forward_backward(m) for name, m in modules.items()}, device, repeats)
    return {name: {"forward_ms": forward_ms[name], "train_ms": train_ms[name],
                   "peak_extra_mb": (cuda_peak_extra_mb(module, x) if device == "cuda" else cpu_peak_extra_mb(name, shape))}
            for name, module in modules.items()}


def spread(times: list[float]) -> str:
    return f"{statistics.median(times):8.2f} [{min(times):.1f}-{max(times):.1f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--peak-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak_child:
        name, shape = args.peak_child
        cpu_peak_child(name, tuple(int(s) for s in shape.split(",")))
        return
    torch.set_num_threads(args.threads)
    dtypes = [torch.float32, torch.bfloat16] if args.device == "cuda" else [torch.float32]
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, median [range] of "
          f"{args.repeats} interleaved rounds")
    for dtype in dtypes:
        rate = gemm_gflops(args.device, dtype, args.repeats)
        print(f"matrix-product rate ({str(dtype)[6:]}): {rate:.1f} GFLOP/s")
        print(f"{'shape':>18} {'dtype':>9} | {'impl':>8} {'fwd ms [range]':>22} {'fwd+bwd ms [range]':>24} {'peak MB':>8}")
        for shape in SHAPES:
            results = measure(shape, args.device, dtype, args.repeats)
            for name, row in results.items():
                print(f"{str(shape):>18} {str(dtype)[6:]:>9} | {name:>8} {spread(row['forward_ms']):>22} "
                      f"{spread(row['train_ms']):>24} {row['peak_extra_mb']:8.1f}")
            official, ours = results["official"], results["ours"]
            median = {name: {key: statistics.median(row[key]) for key in ("forward_ms", "train_ms")}
                      for name, row in results.items()}
            floor_ms = 1000 * floor_gflop(shape) / rate
            fwd = median['official']['forward_ms'] / median['ours']['forward_ms']
            print(f"{'':>18} {'':>9} | official/ours: forward {fwd:.1f}x, "
                  f"forward+backward {median['official']['train_ms'] / median['ours']['train_ms']:.1f}x, "
                  f"peak memory {official['peak_extra_mb'] / ours['peak_extra_mb']:.1f}x; floor {floor_ms:.2f} ms "
                  f"({floor_gflop(shape):.3f} GFLOP), ours/floor {median['ours']['forward_ms'] / floor_ms:.1f}x")

if __name__ == "__main__":
    main()
