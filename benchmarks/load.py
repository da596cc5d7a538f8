"""A bounded load test of the real server on loopback.

Starts ``attnlens serve`` (the default model) on a free port once per ``--max-batch`` value (or uses
``--url``), sends ``--requests`` analyses of a 640x480 JPEG from ``--clients`` concurrent clients, and
prints throughput, p50 / p99 latency, the status codes, and the server's resident memory before and
after; then the throughput of each batch size relative to the first (no batching). With
``--overload``, it fires a burst far beyond the admission limit and reports how fast the refusals
(503 + Retry-After) come back.

    python benchmarks/load.py [--clients 8] [--requests 320] [--max-batch 1,4] [--overload 64]
"""
from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.serving import running_server  # noqa: E402


def resident_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


def jpeg_640x480() -> bytes:
    buffer = io.BytesIO()
    Image.open(ROOT / "static" / "samples" / "cat.jpg").convert("RGB").resize((640, 480)).save(buffer, "JPEG")
    return buffer.getvalue()


def fire(base: str, data: bytes, clients: int, requests: int) -> tuple[list[float], Counter, float, list]:
    def one(_):
        started = time.perf_counter()
        response = client.post(f"{base}/api/v1/analyze", files={"file": ("photo.jpg", data, "image/jpeg")})
        return response.status_code, time.perf_counter() - started, response.headers.get("retry-after")

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    with httpx.Client(timeout=120, limits=limits) as client, ThreadPoolExecutor(clients) as pool:
        started = time.perf_counter()
        results = list(pool.map(one, range(requests)))
        elapsed = time.perf_counter() - started
    latencies = [seconds for status, seconds, _ in results if status == 200]
    return latencies, Counter(status for status, _, _ in results), elapsed, results


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(base: str, pid: int | None, args, overload: int) -> float:
    """One load test; returns the throughput (req/s)."""
    data = jpeg_640x480()
    fire(base, data, args.clients, args.clients)  # warm the connections and the server
    before = resident_mb(pid) if pid else None
    latencies, statuses, elapsed, _ = fire(base, data, args.clients, args.requests)
    rate = len(latencies) / elapsed
    after = resident_mb(pid) if pid else None
    print(f"{args.requests} requests from {args.clients} clients in {elapsed:.1f} s: "
          f"{rate:.1f} req/s; statuses {dict(statuses)}")
    if latencies:
        print(f"latency p50 {1000 * statistics.median(latencies):.0f} ms, p99 {1000 * percentile(latencies, 0.99):.0f} ms")
    if pid:
        print(f"server memory: {before:.0f} MB -> {after:.0f} MB ({after - before:+.1f} MB)")
    if overload:
        _, statuses, elapsed, results = fire(base, data, overload, overload)
        refused = [seconds for status, seconds, retry in results if status == 503 and retry]
        print(f"overload burst: {overload} at once -> statuses {dict(statuses)} in {elapsed:.1f} s; "
              f"503 + Retry-After answered in p50 {1000 * statistics.median(refused) if refused else float('nan'):.0f} ms")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=320)
    parser.add_argument("--overload", type=int, default=64, help="burst size after the first test (0: none)")
    parser.add_argument("--max-batch", default="1,4", help="server batch sizes to compare, one server each")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--url", help="an already running server (no memory figures, no batch comparison)")
    args = parser.parse_args()
    if args.url:
        run(args.url.rstrip("/"), None, args, args.overload)
        return
    throughput = {}
    for i, max_batch in enumerate(int(b) for b in args.max_batch.split(",")):
        print(f"--- max_batch {max_batch}")
        with running_server(ATTNLENS_MODEL="efficientnet_lite0", ATTNLENS_DEVICE=args.device,
                            ATTNLENS_MAX_BATCH=str(max_batch)) as (base, process):
            throughput[max_batch] = run(base, process.pid, args, args.overload if i == 0 else 0)
    first = next(iter(throughput))
    print("throughput relative to max_batch " + f"{first}: " +
          ", ".join(f"max_batch {b}: {rate / throughput[first]:.2f}x" for b, rate in throughput.items()))


if __name__ == "__main__":
    main()
