"""Batch scoring throughput: `edgeroute score` prompts/s, local engine vs Ray Data with 1 and 2 actors.

    python benchmarks/batch.py                    # writes benchmarks/results/batch.{md,json}
    python benchmarks/batch.py --prompts 200 --out /tmp/x --routers static-distilled-gpt4-mixtral

Prompts: the first MMLU and GSM8K prompts of ../shared/data/routellm-evals (read in place) when
present, else synthetic ones; written to a temporary JSONL log. Every engine scores the same log
with the same batch size, and the Ray outputs are checked byte for byte against the local one.
The Ray cluster is local (started once, not timed per run; its start-up time is reported apart).
Needs the ray extra.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "routellm-evals"
ROUTERS = ("static-distilled-gpt4-mixtral", "bert-minilm-gpt4-mixtral")
ACTORS = (1, 2)


def load_prompts(count: int) -> tuple[list[str], str]:
    """``count`` prompts (GSM8K and MMLU when the data is present) and where they came from."""
    from edgeroute.runtime.evaluation.data import load_benchmark

    prompts: list[str] = []
    if DATA.is_dir():
        for benchmark in ("gsm8k", "mmlu"):
            prompts += load_benchmark(DATA, benchmark).prompts
        if len(prompts) >= count:  # evenly spaced over GSM8K then MMLU: both kinds of prompt, many lengths
            return _spread(prompts, count), f"RouteLLM evals ({DATA.name}): GSM8K + MMLU, evenly spaced"
    synthetic = [f"Question {i}: explain step by step why {i} * {i + 7} = {i * (i + 7)}." + " Check it." * (i % 9) for i in range(count)]
    return synthetic, "synthetic"


def _spread(prompts: list[str], count: int) -> list[str]:
    step = len(prompts) / count
    return [prompts[int(i * step)] for i in range(count)]


def cpu() -> dict[str, Any]:
    """CPU model, core count and flags from lscpu."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        text = ""
    fields = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip() for line in text.splitlines() if ":" in line}
    flags = fields.get("Flags", "").split()
    vector = [flag for flag in flags if flag.startswith(("avx", "sse4", "fma", "f16c", "amx")) or "vnni" in flag]
    return {
        "model": fields.get("Model name"),
        "cores": os.cpu_count(),
        "vector_flags": vector,
        "flags": flags,
        "python": platform.python_version(),
    }


def _timed_row(router: str, engine: str, actors: int | None, threads: int | str, seconds: float, n: int, identical: bool) -> dict[str, Any]:
    return {
        "router": router,
        "engine": engine,
        "actors": actors,
        "threads": threads,
        "seconds": seconds,
        "prompts_per_s": n / seconds,
        "identical_to_local": identical,
    }


def _time_engines(name: str, log: Path, folder: Path, n: int, batch_size: int, repeats: int) -> list[dict[str, Any]]:
    """One router scored locally (all threads, then one) and on Ray per actor count; the best of ``repeats`` each."""
    from edgeroute.runtime import Router
    from edgeroute.runtime.serving.batch import score_file
    from edgeroute.runtime.serving.ray_batch import score_file_ray

    local, single = folder / f"{name}.local.jsonl", folder / f"{name}.local1.jsonl"
    seconds = min(score_file(Router.load(name), log, local, chunk_size=batch_size, progress=False).seconds for _ in range(repeats))
    rows = [_timed_row(name, "local", None, "all", seconds, n, True)]
    seconds = min(
        score_file(Router.load(name, threads=1), log, single, chunk_size=batch_size, progress=False).seconds for _ in range(repeats)
    )
    rows.append(_timed_row(name, "local", None, 1, seconds, n, single.read_bytes() == local.read_bytes()))
    for actors in ACTORS:
        out = folder / f"{name}.ray{actors}.jsonl"
        seconds = min(score_file_ray(name, log, out, batch_size=batch_size, actors=actors, progress=False).seconds for _ in range(repeats))
        rows.append(_timed_row(name, "ray", actors, 1, seconds, n, out.read_bytes() == local.read_bytes()))
    return rows


def run(count: int, routers: tuple[str, ...], batch_size: int, repeats: int) -> dict[str, Any]:
    """Time every engine on every router; returns the JSON document."""
    import ray

    prompts, source = load_prompts(count)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "log.jsonl"
        log.write_text("".join(json.dumps({"id": i, "prompt": p}) + "\n" for i, p in enumerate(prompts)), encoding="utf-8")
        started = time.perf_counter()
        ray.init(num_cpus=max(ACTORS) + 1, include_dashboard=False, log_to_driver=False)
        cluster_start_s = time.perf_counter() - started
        try:
            for name in routers:
                rows += _time_engines(name, log, Path(folder), len(prompts), batch_size, repeats)
        finally:
            ray.shutdown()
    return {
        "n_prompts": len(prompts),
        "prompts": source,
        "batch_size": batch_size,
        "repeats": repeats,
        "ray_version": ray.__version__,
        "ray_cluster_start_s": cluster_start_s,
        "cpu": cpu(),
        "load_average_1m_at_end": os.getloadavg()[0],
        "results": rows,
    }


def table(document: dict[str, Any]) -> str:
    """The markdown report."""
    cpu_info = document["cpu"]
    lines = [
        "# Batch scoring throughput (`edgeroute score`)",
        "",
        f"{document['n_prompts']} prompts ({document['prompts']}), one JSONL log, batch/chunk size "
        f"{document['batch_size']}, best of {document['repeats']} runs; Ray {document['ray_version']} on a local "
        f"cluster (start-up {document['ray_cluster_start_s']:.1f} s, not counted below: each Ray run's time covers "
        "its actors' start, router loads, reading, scoring and writing).",
        "",
        f"CPU: {cpu_info['model']}, {cpu_info['cores']} cores; vector flags: {' '.join(cpu_info['vector_flags']) or 'none'}"
        " (full `lscpu` flags in batch.json). This machine is shared with other engineers' jobs "
        f"(1-minute load average {document['load_average_1m_at_end']:.1f} at the end of the run), so the figures are "
        "indicative, not a clean-room measurement.",
        "",
        "| router | engine | actors | onnxruntime threads (each) | seconds | prompts/s | output identical to local |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for row in document["results"]:
        actors = "" if row["actors"] is None else str(row["actors"])
        lines.append(
            f"| {row['router']} | {row['engine']} | {actors} | {row['threads']} | {row['seconds']:.2f} | "
            f"{row['prompts_per_s']:,.0f} | {'yes' if row['identical_to_local'] else 'NO'} |"
        )
    lines += [
        "",
        "The local engine runs in the calling process (onnxruntime on every core by default, or one thread); each "
        "Ray actor holds one Ray CPU and runs one onnxruntime thread, and each Ray run also pays for starting its "
        "actors (a Python process that imports edgeroute and loads the router) and for moving blocks through "
        "Ray's object store. The static router's scoring is so cheap that this overhead dominates; the transformer "
        "router's scoring dominates instead. With other jobs on the same two cores, onnxruntime's spinning "
        "intra-op threads can lose more to contention than one thread per process does, which is why the "
        "one-thread rows are shown.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=4000)
    parser.add_argument("--routers", default=",".join(ROUTERS))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    document = run(args.prompts, tuple(args.routers.split(",")), args.batch_size, args.repeats)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "batch.json").write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    (out / "batch.md").write_text(table(document), encoding="utf-8")
    print(table(document))


if __name__ == "__main__":
    main()
