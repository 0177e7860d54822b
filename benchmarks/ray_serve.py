"""Requests/s of ``POST /v1/route`` through ``edgeroute serve``: one uvicorn process vs Ray Serve with 1 and 2 replicas.

    python benchmarks/ray_serve.py [--router R] [--repeat 20] [--clients 8] [--seconds 15] [--out OUT.json]

Each engine runs as ``edgeroute serve`` in a subprocess (the Ray ones start their own local
cluster and stop it at SIGINT); the load is ``--clients`` threads, each with one keep-alive httpx
client posting one prompt per request, in this process. ``/v1/route`` never calls an upstream, so
none is needed. Every figure is on the machine's cores shared by server, proxy and load: the
one-minute load average before and after each run is recorded with it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from processes import wait_ready  # noqa: E402

PROMPTS = [
    "What is 2 + 2?",
    "Prove that there are infinitely many primes.",
    "Translate 'good morning' to French.",
    "Write a haiku about routers.",
    "Explain the difference between TCP and UDP in detail.",
]


def _load(url: str, clients: int, seconds: float, repeat: int = 1) -> dict[str, float]:
    counts, errors = [0] * clients, [0] * clients
    stop = time.perf_counter() + seconds

    def worker(index: int) -> None:
        with httpx.Client(timeout=30) as client:
            while time.perf_counter() < stop:
                prompt = " ".join([PROMPTS[(index + counts[index]) % len(PROMPTS)]] * repeat)
                response = client.post(url + "/v1/route", json={"prompt": prompt})
                if response.status_code == 200:
                    counts[index] += 1
                else:
                    errors[index] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    return {"requests": sum(counts), "errors": sum(errors), "seconds": round(elapsed, 2), "requests_per_s": round(sum(counts) / elapsed, 1)}


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def measure(engine: list[str], router: str, clients: int, seconds: float, port: int, repeat: int = 1) -> dict:
    command = [sys.executable, "-m", "edgeroute.runtime.cli", "serve", "--router", router, "--port", str(port), "--threads", "1", *engine]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url + "/health", process, timeout_s=180)
        deadline = time.time() + 180
        while not _healthy(url):  # Serve's proxy listens before the replicas answer
            if time.time() > deadline or process.poll() is not None:
                raise RuntimeError(f"{' '.join(engine)}: /health did not answer 200")
            time.sleep(0.5)
        ready_s = time.perf_counter() - started
        _load(url, clients, 2, repeat)  # warm-up: connections, thread pools
        load_before = os.getloadavg()[0]
        result = _load(url, clients, seconds, repeat)
        result.update(
            engine=" ".join(engine) or "uvicorn",
            ready_s=round(ready_s, 1),
            load_1min_before=round(load_before, 2),
            load_1min_after=round(os.getloadavg()[0], 2),
        )
        return result
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--router", default="static-distilled-gpt4-mixtral")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--port", type=int, default=6071)
    parser.add_argument(
        "--repeat", type=int, default=1, help="each prompt repeated this many times (20: about 200 tokens, where BERT scoring dominates)"
    )
    parser.add_argument("--out", default=None, help="write the results as JSON")
    args = parser.parse_args()
    runs = []
    for engine in ([], ["--engine", "ray", "--replicas", "1"], ["--engine", "ray", "--replicas", "2"]):
        runs.append(measure(engine, args.router, args.clients, args.seconds, args.port, args.repeat))
        print(json.dumps(runs[-1]), flush=True)
    document = {"router": args.router, "clients": args.clients, "prompt_repeat": args.repeat, "cpus": os.cpu_count(), "runs": runs}
    if args.out:
        Path(args.out).write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
