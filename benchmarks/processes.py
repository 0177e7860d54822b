"""Helpers the benchmark scripts share for the servers they start as subprocesses."""

from __future__ import annotations

import socket
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


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_arguments(port: int, upstream_url: str, routers: list[str], extra: list[str] | None = None) -> list[str]:
    """``edgeroute serve`` arguments: both models (``strong-llm``, ``weak-llm``) on one loopback upstream."""
    models = ["--strong-model", "strong-llm", "--strong-base-url", upstream_url + "/v1"]
    models += ["--weak-model", "weak-llm", "--weak-base-url", upstream_url + "/v1"]
    return ["serve", "--port", str(port), *[a for r in routers for a in ("--router", r)], *models, *(extra or [])]
