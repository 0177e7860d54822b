"""Helpers the benchmark scripts share for the servers they start as subprocesses."""

from __future__ import annotations

import subprocess
import time

import httpx


def wait_ready(url: str, process: subprocess.Popen, timeout_s: float = 120) -> None:
    """Poll ``url`` until it answers; raise if the process exits first or ``timeout_s`` passes."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError(f"{url}: not ready after {timeout_s} s")
