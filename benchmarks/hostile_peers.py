"""Hostile peers on both sides of `edgeroute serve` (issue 25), one attack at a time, on loopback.

    python benchmarks/hostile_peers.py            # about 3 minutes on 2 cores
    python benchmarks/hostile_peers.py --quick    # fewer requests (what the tests run)

Each attack runs against a fresh `edgeroute serve` subprocess while a watcher samples the server's
resident memory and the latency of `GET /health` every 20 ms: header floods from clients
(endless header blocks, no API key), upstreams that send a 64 MiB chunked trailer, trickle a
trailer past the deadline, or send endless `103 Early Hints`, an upstream that sends an answer
nobody asked for after each real one (wrong-owner answers counted: must be 0), all with both
upstream clients (the lean HTTP/1.1 one and aiohttp), and the three budget attacks (the share of
strong calls among the next 200 real chat calls before and after). Writes
``benchmarks/results/hostile_peers.json`` and the "Hostile peers" section of ``reliability.md``.
Needs the serve and test extras (httpx, starlette).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))
from processes import free_port, wait_ready  # noqa: E402
from servers import ChattyUpstream, HostileUpstream, realistic_prompts  # noqa: E402

ROUTER = "static-distilled-gpt4-mixtral"
STRONG = f"router-{ROUTER}-0"  # threshold 0: every call goes to the strong upstream
RESULTS = ROOT / "benchmarks" / "results"
MARK_START, MARK_END = "<!-- hostile-peers:start -->", "<!-- hostile-peers:end -->"


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Watch:
    """Samples the server's RSS and times ``GET /health`` every 20 ms until stopped."""

    def __init__(self, url: str, pid: int) -> None:
        self.url, self.pid = url, pid
        self.rss: list[float] = [rss_mb(pid)]
        self.health_ms: list[float] = []
        self.health_failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    ok = client.get(self.url + "/health").status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.health_ms.append((time.perf_counter() - started) * 1e3)
                self.health_failures += not ok
                self.rss.append(rss_mb(self.pid))
                time.sleep(0.02)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if not self.health_ms:  # an attack shorter than one probe: one probe after it
            started = time.perf_counter()
            self.health_failures += httpx.get(self.url + "/health", timeout=30).status_code != 200
            self.health_ms.append((time.perf_counter() - started) * 1e3)
        self.rss.append(rss_mb(self.pid))

    def figures(self) -> dict[str, float]:
        """RSS at start, at its peak and at the end, and /health's p99 and worst latency during the attack."""
        times = sorted(self.health_ms) or [float("nan")]
        return {
            "rss_start_mb": round(self.rss[0], 1),
            "rss_peak_mb": round(max(self.rss), 1),
            "rss_growth_mb": round(self.rss[-1] - self.rss[0], 1),
            "health_p99_ms": round(times[min(len(times) - 1, int(0.99 * len(times)))], 1),
            "health_max_ms": round(times[-1], 1),
            "health_failures": self.health_failures,
        }


@contextmanager
def edgeroute(strong_url: str, weak_url: str, extra: list[str]) -> Iterator[tuple[str, subprocess.Popen]]:
    """``edgeroute serve`` in a subprocess: the strong model on ``strong_url``, the weak one on ``weak_url``."""
    port = free_port()
    models = ["--strong-model", "strong-llm", "--strong-base-url", strong_url, "--weak-model", "weak-llm", "--weak-base-url", weak_url]
    command = [sys.executable, "-m", "edgeroute.runtime.cli", "serve", "--port", str(port), "--router", ROUTER, *models, *extra]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url + "/health", server)
        yield url, server
    finally:
        server.terminate()
        server.wait(timeout=60)


@contextmanager
def fake_upstream() -> Iterator[str]:
    """The test upstream (tests/servers.py) in a subprocess; its base URL."""
    port = free_port()
    process = subprocess.Popen([sys.executable, str(ROOT / "tests" / "servers.py"), str(port)])
    try:
        wait_ready(f"http://127.0.0.1:{port}/control", process)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        process.wait(timeout=30)


def flood_headers(port: int, seconds: float) -> dict[str, Any]:
    """Connections streaming endless header blocks (no API key), one after another for ``seconds``:
    each until the server answers or closes it. Counts connections, bytes sent and the answers."""
    statuses: dict[str, int] = {}
    connections, most = 0, 0
    deadline = time.time() + seconds
    line = b"X-Flood: " + b"a" * 8000 + b"\r\n"
    while time.time() < deadline:
        sent, answer = 0, b""
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            try:
                sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
                while time.time() < deadline:
                    sock.sendall(line)
                    sent += len(line)
            except OSError:
                pass
            try:
                answer = sock.recv(200)
            except OSError:
                pass
        status = answer.split(b" ")[1].decode() if answer.startswith(b"HTTP/1.1 ") else "closed"
        statuses[status] = statuses.get(status, 0) + 1
        connections, most = connections + 1, max(most, sent)
    return {"connections": connections, "statuses": statuses, "most_bytes_sent": most}


def header_flood(weak_url: str, quick: bool) -> dict[str, Any]:
    """Four flooding clients at once, each reconnecting for the whole attack."""
    with edgeroute(weak_url, weak_url, []) as (url, server), Watch(url, server.pid) as watch:
        port = int(url.rsplit(":", 1)[1])
        results: list[dict[str, Any]] = []
        threads = [threading.Thread(target=lambda: results.append(flood_headers(port, 3 if quick else 10))) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return {"clients": results, **watch.figures()}


def chat(client: httpx.Client, url: str, model: str, content: str) -> httpx.Response:
    return client.post(url + "/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": content}]})


def hostile_upstream(behaviour: str, client_kind: str, weak_url: str) -> dict[str, Any]:
    """Four concurrent chat calls routed to an upstream that misbehaves by ``behaviour``; --upstream-timeout 2."""
    hostile = HostileUpstream(behaviour)
    outcomes: list[dict[str, Any]] = []

    def one(url: str) -> None:
        started = time.perf_counter()
        with httpx.Client(timeout=120) as client:
            response = chat(client, url, STRONG, "hi")
        seconds = round(time.perf_counter() - started, 2)
        outcomes.append({"status": response.status_code, "seconds": seconds, "fallback": response.headers.get("x-edgeroute-fallback")})

    try:
        extra = ["--upstream-timeout", "2", "--upstream-client", client_kind]
        with edgeroute(hostile.url, weak_url, extra) as (url, server), Watch(url, server.pid) as watch:
            threads = [threading.Thread(target=one, args=(url,)) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    finally:
        hostile.close()
    return {"calls": outcomes, **watch.figures()}


def unsolicited(client_kind: str, weak_url: str, requests: int) -> dict[str, Any]:
    """Chat calls from 4 client threads to an upstream that sends an extra answer 10 ms after each real one."""
    chatty = ChattyUpstream(delay_s=0.01)
    counts = {"own": 0, "fallback": 0, "wrong_owner": 0}
    lock = threading.Lock()

    def client_thread(url: str, number: int) -> None:
        rng = random.Random(number)
        with httpx.Client(timeout=30) as client:
            for n in range(requests // 4):
                token = f"client-{number}-request-{n}"
                content = chat(client, url, STRONG, token).json()["choices"][0]["message"]["content"]
                kind = "own" if content == token else "fallback" if content == "answer from weak-llm" else "wrong_owner"
                with lock:
                    counts[kind] += 1
                time.sleep(rng.uniform(0.0, 0.03))

    try:
        extra = ["--upstream-timeout", "2", "--upstream-client", client_kind]
        with edgeroute(chatty.url, weak_url, extra) as (url, server), Watch(url, server.pid) as watch:
            threads = [threading.Thread(target=client_thread, args=(url, k)) for k in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    finally:
        chatty.server.shutdown()
        chatty.server.server_close()
    return {**counts, **watch.figures()}


BUDGET_ATTACKS: dict[str, Callable[[httpx.Client, str], object]] = {
    "1,024 x 'hi' in one /v1/route batch": lambda c, u: c.post(u + "/v1/route", json={"prompts": ["hi"] * 1024}),
    "1,024 long padded prompts through /v1/route": lambda c, u: c.post(
        u + "/v1/route", json={"prompts": [f"{n} " + "padding words " * 300 for n in range(1024)]}
    ),
    "1,000 identical chat prompts": lambda c, u: [chat(c, u, "router-default", "hi") for _ in range(1000)],
}


def chat_share(client: httpx.Client, url: str, prompts: list[str]) -> float:
    """Share of strong decisions among these routed chat calls."""
    tiers = [chat(client, url, "router-default", prompt).headers["x-edgeroute-tier"] for prompt in prompts]
    return tiers.count("strong") / len(tiers)


def budget_attack(name: str, weak_url: str) -> dict[str, Any]:
    """The share of the next 200 real calls before and after one attack on `--strong-share 0.3`."""
    with edgeroute(weak_url, weak_url, ["--strong-share", "0.3", "--budget-window", "400"]) as (url, server):
        with httpx.Client(timeout=60) as client:
            chat_share(client, url, realistic_prompts(400, seed=1))
            before = chat_share(client, url, realistic_prompts(200, seed=2))
            with Watch(url, server.pid) as watch:
                BUDGET_ATTACKS[name](client, url)
            after = chat_share(client, url, realistic_prompts(200, seed=3))
    return {"share_before": before, "share_after": after, **watch.figures()}


def run(quick: bool) -> dict[str, Any]:
    """Every attack, in turn; the weak model (and fallback) on the test upstream."""
    document: dict[str, Any] = {"machine": f"{platform.processor() or platform.machine()}, {platform.python_version()}", "quick": quick}
    with fake_upstream() as weak_url:
        document["header_flood"] = header_flood(weak_url, quick)
        for client_kind in ("auto", "aiohttp"):
            for behaviour in ("huge_trailer", "late_trailer", "early_hints"):
                document[f"{behaviour} ({client_kind})"] = hostile_upstream(behaviour, client_kind, weak_url)
            document[f"unsolicited answers ({client_kind})"] = unsolicited(client_kind, weak_url, 40 if quick else 400)
        for name in BUDGET_ATTACKS if not quick else list(BUDGET_ATTACKS)[:1]:
            document[f"budget: {name}"] = budget_attack(name, weak_url)
    return document


def outcome(name: str, row: dict[str, Any]) -> str:
    """The attack's own result, in words."""
    if name == "header_flood":
        statuses: dict[str, int] = {}
        for client in row["clients"]:
            for status, count in client["statuses"].items():
                statuses[status] = statuses.get(status, 0) + count
        most = max(client["most_bytes_sent"] for client in row["clients"]) // 1024
        answers = ", ".join(f"{n} × {s}" for s, n in sorted(statuses.items()))
        return f"{sum(statuses.values())} flooding connections: {answers} (at most {most} KiB pushed into one before it closed)"
    if name.startswith("unsolicited"):
        return f"{row['own']} own answers, {row['fallback']} fallbacks, **{row['wrong_owner']} wrong-owner**"
    if name.startswith("budget"):
        return f"share of the next 200 real calls {row['share_before']:.3f} before, {row['share_after']:.3f} after"
    calls = row["calls"]
    statuses, slowest = sorted({c["status"] for c in calls}), max(c["seconds"] for c in calls)
    return f"{len(calls)} calls: status {statuses}, {slowest:.1f} s at most, fallback on {sum(bool(c['fallback']) for c in calls)}"


def markdown(document: dict[str, Any]) -> str:
    """The reliability.md section."""
    lines = [
        "## Hostile peers (issue 25): `python benchmarks/hostile_peers.py`",
        "",
        f"Machine: {document['machine']}; loopback; router `{ROUTER}`; each attack against a fresh `edgeroute serve` "
        "subprocess, its resident memory and `GET /health` sampled every 20 ms during the attack. `auto` is the lean "
        "HTTP/1.1 client (plain-http upstreams), `aiohttp` the other one. Raw figures: `hostile_peers.json`.",
        "",
        "| attack | outcome | RSS start → peak (growth after) | /health p99 / worst during |",
        "| --- | --- | --- | --- |",
    ]
    for name, row in document.items():
        if not isinstance(row, dict):
            continue
        memory = f"{row['rss_start_mb']:.0f} → {row['rss_peak_mb']:.0f} MB ({row['rss_growth_mb']:+.1f})"
        health = f"{row['health_p99_ms']:.1f} / {row['health_max_ms']:.1f} ms" + (
            f", {row['health_failures']} failed" if row["health_failures"] else ""
        )
        lines.append(f"| {name} | {outcome(name, row)} | {memory} | {health} |")
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    """Replace the section between the markers in ``path`` (appended when absent)."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Reliability figures\n"
    block = f"{MARK_START}\n{section}{MARK_END}"
    if MARK_START in text:
        head, rest = text.split(MARK_START, 1)
        text = head + block + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer requests and one budget attack")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for hostile_peers.json and reliability.md")
    args = parser.parse_args()
    document = run(args.quick)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "hostile_peers.json").write_text(json.dumps(document, indent=2) + "\n")
    write_section(args.out / "reliability.md", markdown(document))
    print(markdown(document))


if __name__ == "__main__":
    main()
