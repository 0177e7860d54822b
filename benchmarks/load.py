"""Load and soak test of `edgeroute serve` on loopback, bounded in count and time.

    python benchmarks/load.py                                  # 200 clients, 4000 requests
    python benchmarks/load.py --clients 20 --requests 100      # what the tests run

Starts the test upstream (tests/servers.py) and `edgeroute serve` as separate processes on
127.0.0.1, then drives chat completions from many concurrent clients (a tenth of them
streaming). Midway it makes the strong upstream fail with HTTP 500 for a while, so fallbacks
are exercised under load. Reports requests served, failures, latency and routing-overhead
percentiles, and the server's resident memory before, during and after; writes JSON.
Needs the serve extra.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from servers import free_port  # noqa: E402  (the loopback upstream the tests use)

PROMPTS = ["hi", "What is the capital of France?", "Prove that there are infinitely many primes.",
           "Write a haiku about autumn.", "Explain the difference between TCP and UDP in detail. " * 5,
           "Janet has 16 eggs; she eats 3 and bakes with 4. How many are left to sell at $2 each?"]


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_ready(url: str, process: subprocess.Popen, timeout_s: float = 60) -> None:
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


async def drive(url: str, upstream: str, clients: int, requests: int, max_seconds: float, router: str,
                fault_window: tuple[float, float]) -> dict[str, Any]:
    latencies, overheads, statuses, fallbacks = [], [], {}, 0
    counter = iter(range(requests))
    started = time.perf_counter()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        fault_on, fault_off = (int(requests * fault_window[0]), int(requests * fault_window[1]))

        async def one_client(seed: int) -> None:
            nonlocal fallbacks
            rng = random.Random(seed)
            for index in counter:
                if time.perf_counter() - started > max_seconds:
                    return
                if index in (fault_on, fault_off):  # inject, then heal, a failing strong upstream
                    await client.post(upstream + "/control", json={"model": "strong-llm",
                                                                    "behaviour": "500" if index == fault_on else None})
                body = {"model": f"{router}-{rng.choice(['0.3', '0.5', '0.7'])}",
                        "messages": [{"role": "user", "content": rng.choice(PROMPTS)}],
                        "stream": rng.random() < 0.1}
                sent = time.perf_counter()
                try:
                    if body["stream"]:
                        async with client.stream("POST", url + "/v1/chat/completions", json=body) as response:
                            data = b"".join([chunk async for chunk in response.aiter_raw()])
                            status = response.status_code
                            ok = status == 200 and data.endswith(b"[DONE]\n\n")
                            score = float(response.headers.get("x-edgeroute-score-us", "nan"))
                            fallback = "x-edgeroute-fallback" in response.headers
                    else:
                        response = await client.post(url + "/v1/chat/completions", json=body)
                        status = response.status_code
                        payload = response.json()
                        ok = status == 200 and bool(payload.get("choices"))
                        routing = payload.get("edgeroute", {})
                        score, fallback = routing.get("score_us", float("nan")), bool(routing.get("fallback"))
                except httpx.HTTPError as error:
                    status, ok, score, fallback = type(error).__name__, False, float("nan"), False
                latencies.append(time.perf_counter() - sent)
                key = str(status) if ok or status != 200 else "200-incomplete"
                statuses[key] = statuses.get(key, 0) + 1
                overheads.append(score)
                fallbacks += fallback

        await asyncio.gather(*(one_client(i) for i in range(clients)))
    elapsed = time.perf_counter() - started
    lat = np.array(latencies) * 1000
    over = np.array([o for o in overheads if o == o])
    return {
        "requests_sent": len(latencies), "elapsed_s": elapsed, "requests_per_s": len(latencies) / elapsed,
        "statuses": statuses, "failed": sum(v for k, v in statuses.items() if k != "200"),
        "fallbacks": fallbacks,
        "latency_ms": {p: float(np.percentile(lat, q)) for p, q in (("p50", 50), ("p90", 90), ("p99", 99))},
        "routing_overhead_us": {p: float(np.percentile(over, q)) for p, q in (("p50", 50), ("p90", 90), ("p99", 99))},
    }


def run(clients: int, requests: int, max_seconds: float, router: str, bundles: list[str]) -> dict[str, Any]:
    """Start upstream and server, warm up, drive the load, measure memory; always stops both."""
    upstream_port, server_port = free_port(), free_port()
    upstream_url, server_url = f"http://127.0.0.1:{upstream_port}", f"http://127.0.0.1:{server_port}"
    upstream = subprocess.Popen([sys.executable, str(ROOT / "tests" / "servers.py"), str(upstream_port)])
    command = [sys.executable, "-m", "edgeroute.runtime.cli", "serve", "--port", str(server_port),
               "--strong-model", "strong-llm", "--strong-base-url", upstream_url + "/v1",
               "--weak-model", "weak-llm", "--weak-base-url", upstream_url + "/v1"]
    for bundle in bundles:
        command += ["--router", bundle]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(upstream_url + "/control", upstream)
        wait_ready(server_url + "/health", server)
        memory = {"after_start_mb": rss_mb(server.pid)}
        warmup = asyncio.run(drive(server_url, upstream_url, min(clients, 20), min(requests, 200), max_seconds,
                                   router, (2.0, 2.0)))
        memory["after_warmup_mb"] = rss_mb(server.pid)
        result = asyncio.run(drive(server_url, upstream_url, clients, requests, max_seconds, router, (0.4, 0.5)))
        memory["after_load_mb"] = rss_mb(server.pid)
        soak = asyncio.run(drive(server_url, upstream_url, clients, requests, max_seconds, router, (2.0, 2.0)))
        memory["after_soak_mb"] = rss_mb(server.pid)
        metrics = httpx.get(server_url + "/metrics").text
    finally:
        server.terminate()
        upstream.terminate()
        server.wait(timeout=30)
        upstream.wait(timeout=30)
    return {"clients": clients, "requests_per_phase": requests, "router": router, "warmup": warmup, "load": result,
            "soak": soak, "server_memory": memory,
            "fallback_metric_lines": [l for l in metrics.splitlines() if l.startswith("edgeroute_fallbacks_total")]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--requests", type=int, default=4000, help="requests per phase (load, then soak)")
    parser.add_argument("--max-seconds", type=float, default=300, help="stop a phase after this long")
    parser.add_argument("--router", default="router-mf-static-gpt4-mixtral")
    parser.add_argument("--bundle", action="append", default=None, help="router bundles to serve")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "load.json")
    args = parser.parse_args()
    document = run(args.clients, args.requests, args.max_seconds, args.router, args.bundle or [])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
