"""Load and soak test of `edgeroute serve` on loopback, bounded in count and time.

    python benchmarks/load.py                                  # 200 clients, 4000 requests
    python benchmarks/load.py --clients 20 --requests 100      # what the tests run
    python benchmarks/load.py --hostile --clients 500 --requests 3000 --max-seconds 90

Starts the test upstream (tests/servers.py) and `edgeroute serve` as separate processes on
127.0.0.1, then drives chat completions from many concurrent clients (a tenth of them
streaming). Midway it makes the strong upstream fail with HTTP 500 for a while, so fallbacks
are exercised under load. Reports requests served, failures, latency and routing-overhead
percentiles, and the server's resident memory before, during and after; writes JSON.
``--hostile`` mixes valid requests with hostile bodies (NaN, 1e999, 100,000 nested brackets,
400-digit thresholds, lone surrogates, wrong types, prompts at and over the limit), holds 50
stalled half-sent requests open, then checks: no 5xx of the server's own, memory, /health, the
stalled sockets closed, and SIGTERM with 20 requests in flight. Needs the serve and test extras (httpx).
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
sys.path.insert(0, str(ROOT / "benchmarks"))
from processes import free_port, serve_arguments, wait_ready  # noqa: E402

PROMPTS = [
    "hi",
    "What is the capital of France?",
    "Prove that there are infinitely many primes.",
    "Write a haiku about autumn.",
    "Explain the difference between TCP and UDP in detail. " * 5,
    "Janet has 16 eggs; she eats 3 and bakes with 4. How many are left to sell at $2 each?",
]


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def send_chat(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> tuple[int | str, bool, float, bool]:
    """One chat request, streamed or not: (status or the transport error's name, complete answer, score_us, fell back)."""
    try:
        if body["stream"]:
            async with client.stream("POST", url + "/v1/chat/completions", json=body) as response:
                data = b"".join([chunk async for chunk in response.aiter_raw()])
                ok = response.status_code == 200 and data.endswith(b"[DONE]\n\n")
                score = float(response.headers.get("x-edgeroute-score-us", "nan"))
                return response.status_code, ok, score, "x-edgeroute-fallback" in response.headers
        response = await client.post(url + "/v1/chat/completions", json=body)
        payload = response.json()
        routing = payload.get("edgeroute", {})
        ok = response.status_code == 200 and bool(payload.get("choices"))
        return response.status_code, ok, routing.get("score_us", float("nan")), bool(routing.get("fallback"))
    except httpx.HTTPError as error:
        return type(error).__name__, False, float("nan"), False


async def drive(
    url: str, upstream: str, clients: int, requests: int, max_seconds: float, router: str, fault_window: tuple[float, float]
) -> dict[str, Any]:
    latencies, overheads, statuses, fallbacks = [], [], {}, 0
    counter = iter(range(requests))
    started = time.perf_counter()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        fault_on, fault_off = (int(requests * fault_window[0]), int(requests * fault_window[1]))
        # At least 30 requests in the fault: a third go strong, so a short run still meets the failure
        # ((2/3)^30 < 1e-5 that none does).
        fault_off = max(fault_off, fault_on + 30)

        async def one_client(seed: int) -> None:
            nonlocal fallbacks
            rng = random.Random(seed)
            for index in counter:
                if time.perf_counter() - started > max_seconds:
                    return
                if index in (fault_on, fault_off):  # inject, then heal, a failing strong upstream
                    await client.post(
                        upstream + "/control", json={"model": "strong-llm", "behaviour": "500" if index == fault_on else None}
                    )
                # Threshold 0 sends a third of the traffic strong whatever the router's scale, so the
                # injected strong-upstream failures always meet requests to fall back from.
                body = {
                    "model": f"{router}-{rng.choice(['0', '0.1', '0.5'])}",
                    "messages": [{"role": "user", "content": rng.choice(PROMPTS)}],
                    "stream": rng.random() < 0.1,
                }
                sent = time.perf_counter()
                status, ok, score, fallback = await send_chat(client, url, body)
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
        "requests_sent": len(latencies),
        "elapsed_s": elapsed,
        "requests_per_s": len(latencies) / elapsed,
        "statuses": statuses,
        "failed": sum(v for k, v in statuses.items() if k != "200"),
        "fallbacks": fallbacks,
        "latency_ms": {p: float(np.percentile(lat, q)) for p, q in (("p50", 50), ("p90", 90), ("p99", 99))},
        "routing_overhead_us": {p: float(np.percentile(over, q)) for p, q in (("p50", 50), ("p90", 90), ("p99", 99))},
    }


def run(clients: int, requests: int, max_seconds: float, router: str, bundles: list[str]) -> dict[str, Any]:
    """Start upstream and server, warm up, drive the load, measure memory; always stops both."""
    upstream_port, server_port = free_port(), free_port()
    upstream_url, server_url = f"http://127.0.0.1:{upstream_port}", f"http://127.0.0.1:{server_port}"
    upstream = subprocess.Popen([sys.executable, str(ROOT / "tests" / "servers.py"), str(upstream_port)])
    server = start_server(server_port, upstream_url, bundles)
    try:
        wait_ready(upstream_url + "/control", upstream)
        wait_ready(server_url + "/health", server)
        memory = {"after_start_mb": rss_mb(server.pid)}
        warmup = asyncio.run(drive(server_url, upstream_url, min(clients, 20), min(requests, 200), max_seconds, router, (2.0, 2.0)))
        memory["after_warmup_mb"] = rss_mb(server.pid)
        result = asyncio.run(drive(server_url, upstream_url, clients, requests, max_seconds, router, (0.4, 0.5)))
        memory["after_load_mb"] = rss_mb(server.pid)
        soak = asyncio.run(drive(server_url, upstream_url, clients, requests, max_seconds, router, (2.0, 2.0)))
        memory["after_soak_mb"] = rss_mb(server.pid)
        metrics = httpx.get(server_url + "/metrics").text
    finally:
        stop(server, upstream, 30)
    return {
        "clients": clients,
        "requests_per_phase": requests,
        "router": router,
        "warmup": warmup,
        "load": result,
        "soak": soak,
        "server_memory": memory,
        "fallback_metric_lines": [l for l in metrics.splitlines() if l.startswith("edgeroute_fallbacks_total")],
    }


def start_server(port: int, upstream_url: str, bundles: list[str], extra: list[str] | None = None) -> subprocess.Popen:
    """``edgeroute serve`` in a subprocess, both models on the fake upstream, output discarded."""
    command = [sys.executable, "-m", "edgeroute.runtime.cli", *serve_arguments(port, upstream_url, bundles, extra)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(server: subprocess.Popen, upstream: subprocess.Popen, server_timeout_s: float) -> None:
    """Terminate the server and the fake upstream, and wait for both to exit."""
    server.terminate()
    upstream.terminate()
    server.wait(timeout=server_timeout_s)
    upstream.wait(timeout=30)


# --- hostile mix (issue 12): valid and hostile bodies from 500 clients ------------------------


def hostile_request(rng: random.Random, router: str) -> tuple[str, bytes, str]:
    """One request of the hostile mix: (path, body, label). About a third are valid chat requests."""
    chat = "/v1/chat/completions"
    user = '"messages": [{"role": "user", "content": "%s"}]'
    choices = [
        ("valid", chat, '{"model": "%s-0.5", %s}' % (router, user % "What is 2+2?")),
        ("valid_stream", chat, '{"model": "%s-0.5", "stream": true, %s}' % (router, user % "Tell me a story")),
        ("valid_route", "/v1/route", '{"prompt": "Prove that sqrt(2) is irrational."}'),
        ("nan", chat, '{"model": "%s-0.5", "temperature": NaN, %s}' % (router, user % "hi")),
        ("infinity", chat, '{"model": "%s-0.5", "temperature": 1e999, %s}' % (router, user % "hi")),
        ("stream_nan", chat, '{"model": "%s-0.5", "stream": NaN, %s}' % (router, user % "hi")),
        ("surrogate", chat, '{"model": "%s-0.5", %s}' % (router, user % "broken \\ud83d text")),
        ("deep_nesting", "/v1/route", "[" * 100_000 + "]" * 100_000),
        ("huge_threshold", "/v1/route", '{"prompt": "hi", "threshold": 1%s}' % ("0" * 400)),
        ("huge_strong_pct", "/v1/route", '{"prompt": "hi", "strong_pct": 1%s}' % ("0" * 400)),
        ("stream_no", chat, '{"model": "%s-0.5", "stream": "no", %s}' % (router, user % "hi")),
        ("router_list", "/v1/route", '{"prompt": "hi", "router": ["mf"]}'),
        ("int_text_part", chat, '{"model": "%s-0.5", "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}' % router),
        ("bad_threshold_model", chat, '{"model": "router-mf-2", %s}' % (user % "hi")),
        ("long_prompt_at_limit", "/v1/route", json.dumps({"prompt": "lorem ipsum dolor " * 5_500})),
        (
            "parts_over_limit",
            chat,
            json.dumps(
                {
                    "model": f"{router}-0.5",
                    "messages": [
                        {"role": "user", "content": [{"type": "text", "text": "x" * 60_000}, {"type": "text", "text": "y" * 60_000}]}
                    ],
                }
            ),
        ),
        ("not_json", chat, "\xff\xfe{"),
        ("unknown_path", "/v1/nope", "{}"),
    ]
    label, path, text = choices[rng.randrange(3)] if rng.random() < 0.33 else rng.choice(choices[3:])
    return path, text.encode("utf-8", "surrogatepass") if label != "not_json" else b"\xff\xfe{", label


async def drive_hostile(url: str, clients: int, requests: int, max_seconds: float, router: str, server_pid: int) -> dict[str, Any]:
    """Send the hostile mix; count answers per label and status; sample the server's memory."""
    outcomes: dict[str, dict[str, int]] = {}
    own_5xx, peak_rss = 0, rss_mb(server_pid)
    counter = iter(range(requests))
    started = time.perf_counter()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def one_client(seed: int) -> None:
            nonlocal own_5xx, peak_rss
            rng = random.Random(seed)
            for index in counter:
                if time.perf_counter() - started > max_seconds:
                    return
                path, body, label = hostile_request(rng, router)
                try:
                    response = await client.post(url + path, content=body, headers={"content-type": "application/json"})
                    status = str(response.status_code)
                    if response.status_code >= 500:
                        kind = response.json().get("error", {}).get("type", "")
                        own_5xx += not kind.startswith("upstream_")
                except httpx.HTTPError as error:
                    status = type(error).__name__
                outcomes.setdefault(label, {}).setdefault(status, 0)
                outcomes[label][status] += 1
                if index % 50 == 0:
                    peak_rss = max(peak_rss, rss_mb(server_pid))

        await asyncio.gather(*(one_client(i) for i in range(clients)))
    elapsed = time.perf_counter() - started
    sent = sum(sum(statuses.values()) for statuses in outcomes.values())
    failed = sum(n for statuses in outcomes.values() for status, n in statuses.items() if not status.isdigit())
    return {
        "requests_sent": sent,
        "elapsed_s": elapsed,
        "requests_per_s": sent / elapsed,
        "server_own_5xx": own_5xx,
        "transport_failures": failed,
        "peak_rss_mb": peak_rss,
        "outcomes": outcomes,
    }


def open_stalled_sockets(port: int, count: int) -> list[Any]:
    """Connections that send half a request line and then nothing (slow-loris clients)."""
    import socket

    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"POST /v1/route HTTP/1.1\r\nHost: x\r\n")
        sockets.append(sock)
    return sockets


def count_closed(sockets: list[Any]) -> int:
    closed = 0
    for sock in sockets:
        sock.settimeout(0.1)
        try:
            closed += sock.recv(1) == b""
        except OSError:
            pass
        sock.close()
    return closed


def measure_shutdown(server: subprocess.Popen, server_url: str, upstream_url: str, router: str) -> dict[str, Any]:
    """SIGTERM while 20 requests wait on a stalling (5 s) upstream: do they finish, and how long does exit take?"""
    import threading

    httpx.post(upstream_url + "/control", json={"model": "weak-llm", "behaviour": "stall"})
    httpx.post(upstream_url + "/control", json={"model": "strong-llm", "behaviour": "stall"})
    results: list[int | str] = []

    def one() -> None:
        try:
            results.append(
                httpx.post(
                    server_url + "/v1/chat/completions",
                    timeout=60,
                    json={"model": f"{router}-0.5", "messages": [{"role": "user", "content": "hi"}]},
                ).status_code
            )
        except httpx.HTTPError as error:
            results.append(type(error).__name__)

    threads = [threading.Thread(target=one) for _ in range(20)]
    for thread in threads:
        thread.start()
    time.sleep(2.0)  # every request has reached the upstream by now
    signalled = time.perf_counter()
    server.terminate()
    for thread in threads:
        thread.join(timeout=120)
    server.wait(timeout=180)
    return {
        "in_flight": 20,
        "statuses": {str(s): results.count(s) for s in set(results)},
        "exit_after_s": time.perf_counter() - signalled,
        "exit_code": server.returncode,
    }


def run_hostile(
    clients: int, requests: int, max_seconds: float, router: str, bundles: list[str], client_timeout_s: float = 5.0
) -> dict[str, Any]:
    """Serve, then: 50 stalled sockets, the hostile mix, memory, /health, the stalled sockets' fate, shutdown."""
    upstream_port, server_port = free_port(), free_port()
    upstream_url, server_url = f"http://127.0.0.1:{upstream_port}", f"http://127.0.0.1:{server_port}"
    upstream = subprocess.Popen([sys.executable, str(ROOT / "tests" / "servers.py"), str(upstream_port)])
    server = start_server(server_port, upstream_url, bundles, ["--client-timeout", str(client_timeout_s), "--upstream-timeout", "10"])
    try:
        wait_ready(upstream_url + "/control", upstream)
        wait_ready(server_url + "/health", server)
        memory = {"after_start_mb": rss_mb(server.pid)}
        stalled = open_stalled_sockets(server_port, 50)
        result = asyncio.run(drive_hostile(server_url, clients, requests, max_seconds, router, server.pid))
        memory["after_hostile_mb"] = rss_mb(server.pid)
        memory["peak_sampled_mb"] = result.pop("peak_rss_mb")
        time.sleep(client_timeout_s + 1)
        slow = {"stalled_sockets": 50, "closed_by_server": count_closed(stalled), "client_timeout_s": client_timeout_s}
        health = httpx.get(server_url + "/health").status_code
        metrics = httpx.get(server_url + "/metrics").text
        shutdown = measure_shutdown(server, server_url, upstream_url, router)
    finally:
        stop(server, upstream, 180)  # the shutdown grace can hold the server that long
    return {
        "clients": clients,
        "router": router,
        "hostile": result,
        "server_memory": memory,
        "slow_clients": slow,
        "health_after": health,
        "shutdown": shutdown,
        "request_metric_lines": [l for l in metrics.splitlines() if l.startswith("edgeroute_requests_total")],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--requests", type=int, default=4000, help="requests per phase (load, then soak)")
    parser.add_argument("--max-seconds", type=float, default=300, help="stop a phase after this long")
    parser.add_argument("--router", default="router-static-distilled-gpt4-mixtral")
    parser.add_argument("--bundle", action="append", default=None, help="router bundles to serve")
    parser.add_argument("--out", type=Path, default=None, help="default: results/load.json (hostile.json with --hostile)")
    parser.add_argument(
        "--hostile", action="store_true", help="the hostile mix: valid and hostile bodies, stalled sockets, SIGTERM in flight"
    )
    args = parser.parse_args()
    if args.hostile:
        document = run_hostile(args.clients, args.requests, args.max_seconds, args.router, args.bundle or [])
    else:
        document = run(args.clients, args.requests, args.max_seconds, args.router, args.bundle or [])
    args.out = args.out or ROOT / "benchmarks" / "results" / ("hostile.json" if args.hostile else "load.json")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
