"""Start the real ``attnlens serve`` process on a free port for tests, and wait until it is ready."""
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_server(python: str = sys.executable, cwd: Path | None = None, args: tuple[str, ...] = (), **environment: str):
    """Yield ``(base_url, process)`` of a ready ``python -m attnlens serve`` run in ``cwd``; ``ATTNLENS_*``
    settings come from ``environment``, extra flags from ``args``."""
    port = free_port()
    env = {**os.environ, "ATTNLENS_DEVICE": "cpu", **environment}
    process = subprocess.Popen([python, "-m", "attnlens", "serve", "--port", str(port), *args], env=env, cwd=cwd,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None:
                raise RuntimeError(f"the server exited: {process.stdout.read()}")
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not become ready in 120 s")
            time.sleep(0.3)
        yield base, process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
