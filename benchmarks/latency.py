"""Router overhead: latency, throughput, cold start, memory and install size, backends side by side.

    python benchmarks/latency.py                       # full run, writes benchmarks/results/latency.{md,json,png}
    python benchmarks/latency.py --tiny --out /tmp/x   # seconds-long smoke run (what the tests do)

Every backend scores the same weights with the same thread count in one run, so the ratios
are comparable even on a noisy machine: PyTorch eager fp32 through transformers (how RouteLLM
runs its BERT router), ONNX fp32 as exported, ONNX with onnxruntime's transformer fusions, and
ONNX int8 (the shipped precision); CUDA fp32/fp16 when a GPU is present. The weights come from
``--checkpoint`` (a RouteLLM BERT checkpoint folder; default: the packaged all-MiniLM-L6-v2 with
a 3-label head, the architecture of the shipped BERT router). Needs the export extra.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

SHORT = "What is the capital of France?"
MEDIUM = ("A train leaves the station at 3 pm travelling at 80 km/h, and a second train leaves the same station "
          "at 4 pm on the same track at 100 km/h. At what time does the second train catch up with the first, "
          "and how far from the station are they?")
LONG = " ".join([MEDIUM] * 5)
LENGTHS = {"short": SHORT, "medium": MEDIUM, "long": LONG}
BATCHES = (1, 8, 32, 128)
# The static tier's breakdown adds a ~400-token prompt (the static tier truncates at 512).
STATIC_LENGTHS = {**LENGTHS, "longer": " ".join([MEDIUM] * 7)}


def percentiles(samples_s: list[float]) -> dict[str, float]:
    values = np.array(samples_s) * 1e6
    return {"p50_us": float(np.percentile(values, 50)), "p90_us": float(np.percentile(values, 90)),
            "p99_us": float(np.percentile(values, 99)), "n": len(values)}


def time_calls(function: Callable[[], Any], repeats: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        function()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        samples.append(time.perf_counter() - started)
    return samples


def machine() -> dict[str, Any]:
    import onnxruntime
    import tokenizers

    flags: list[str] = []
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = sorted(set(line.split(":", 1)[1].split()) & {"avx2", "avx512f", "avx512_vnni", "avx_vnni",
                                                                      "avx512_bf16", "amx_int8", "fma"})
                break
    except OSError:
        pass
    return {"cpu": model, "cpu_flags": flags, "cores": os.cpu_count(), "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "tokenizers": tokenizers.__version__, "numpy": np.__version__,
            "providers": onnxruntime.get_available_providers()}


def build_graphs(checkpoint: Path | None, folder: Path) -> tuple[Any, Any, dict[str, Path]]:
    """The torch model, its tokenizer, and the ONNX graphs (raw fp32, fused fp32, int8) of the same weights."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from edgeroute.export import minilm_dir
    from edgeroute.export.onnx_graphs import ClassifierLogits, export_graph, optimize_graph, quantize_graph

    source = checkpoint or minilm_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(str(source), num_labels=3, local_files_only=True,
                                                               attn_implementation="eager").eval()
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tokenizer.model_input_names]
    graphs = {"onnx fp32": folder / "raw.onnx", "onnx fused": folder / "fused.onnx", "onnx int8": folder / "int8.onnx"}
    export_graph(ClassifierLogits(model), names, "logits", graphs["onnx fp32"], 17)
    config = model.config
    optimize_graph(graphs["onnx fp32"], graphs["onnx fused"], config.model_type, config.num_attention_heads,
                   config.hidden_size)
    quantize_graph(graphs["onnx fused"], graphs["onnx int8"], per_channel=True, reduce_range=False)
    tokenizer.backend_tokenizer.save(str(folder / "tokenizer.json"))
    return model, tokenizer, graphs


def backends(model: Any, tokenizer: Any, graphs: dict[str, Path], folder: Path, threads: int,
             max_length: int) -> dict[str, Callable[[list[str]], Any]]:
    """Name -> score(batch of prompts) for every backend, all on the same weights and threads."""
    import onnxruntime as ort
    import torch

    from edgeroute.runtime.encoders import OnnxTextEncoder, load_tokenizer

    torch.set_num_threads(threads)
    fast_tokenizer = load_tokenizer(folder / "tokenizer.json", max_length)
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tokenizer.model_input_names]

    def torch_score(prompts: list[str]) -> Any:
        with torch.no_grad():
            batch = tokenizer(prompts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            return model(**batch).logits

    result: dict[str, Callable[[list[str]], Any]] = {"pytorch eager fp32": torch_score}
    providers = [("cpu", ["CPUExecutionProvider"])]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        providers.append(("cuda", ["CUDAExecutionProvider"]))
    for device, provider in providers:
        for name, path in graphs.items():
            if device == "cuda" and name == "onnx int8":
                continue  # dynamic int8 kernels are CPU kernels
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            if name == "onnx fp32":
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
            session = ort.InferenceSession(str(path), options, providers=provider)
            encoder = OnnxTextEncoder(session, fast_tokenizer, names, "logits")
            label = name if device == "cpu" else f"cuda {name.split()[-1]}"
            result[label] = encoder
    return result


def tokenization_share(tokenizer_encoder: Any, score: Callable[[list[str]], Any], repeats: int) -> dict[str, float]:
    """Median tokenization time and its share of the int8 batch-1 score, per prompt length."""
    shares = {}
    for label, prompt in LENGTHS.items():
        tokenize = statistics.median(time_calls(lambda: tokenizer_encoder.tokenize([prompt]), repeats))
        total = statistics.median(time_calls(lambda: score([prompt]), repeats))
        shares[label] = {"tokenize_us": tokenize * 1e6, "total_us": total * 1e6, "share": tokenize / total}
    return shares


_COLD_START = """
import json, resource, sys, time
t0 = time.perf_counter()
from edgeroute.runtime import Router
t1 = time.perf_counter()
router = Router.load(sys.argv[1], threads=int(sys.argv[2]))
t2 = time.perf_counter()
router.strong_win_rate("What is the capital of France?")
t3 = time.perf_counter()
for _ in range(200):
    router.strong_win_rate("A train leaves the station at 3 pm travelling at 80 km/h.")
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "optimum"))
try:  # VmHWM is this process's own peak; ru_maxrss survives exec and would report the parent's
    peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024
except OSError:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_score_s": t3 - t2, "total_s": t3 - t0,
                  "peak_rss_mb": peak, "heavy_modules": heavy}))
"""


def cold_start(bundle: str, threads: int) -> dict[str, Any]:
    """Import, load and first score of the runtime in a fresh process, and its peak resident memory."""
    output = subprocess.run([sys.executable, "-c", _COLD_START, bundle, str(threads)], capture_output=True,
                            text=True, check=True, timeout=300)
    return json.loads(output.stdout.strip().splitlines()[-1])


def installed_size_mb(distributions: tuple[str, ...] = ("onnxruntime", "tokenizers", "numpy")) -> dict[str, float]:
    """On-disk size of the runtime's dependencies (and of torch, when it is installed here, for scale)."""
    from importlib import metadata

    sizes = {}
    for name in (*distributions, "torch"):
        try:
            files = metadata.distribution(name).files or []
        except metadata.PackageNotFoundError:
            continue
        total = 0
        for file in files:
            path = Path(file.locate())
            if path.is_file():
                total += path.stat().st_size
        sizes[name] = total / 1e6
    sizes["runtime_total"] = sum(v for k, v in sizes.items() if k in distributions)
    return sizes


def mf_head_us(repeats: int) -> dict[str, float]:
    """The folded MF head alone: one dot product and a sigmoid on a 384-d embedding."""
    rng = np.random.default_rng(0)
    embedding = rng.standard_normal((1, 384)).astype(np.float32)
    difference = rng.standard_normal(384).astype(np.float32)
    samples = time_calls(lambda: 1.0 / (1.0 + np.exp(-(embedding @ difference).astype(np.float64))), repeats, 50)
    return percentiles(samples)


def default_static_bundle() -> str:
    """The shipped default router (models/DEFAULT) if it is a static-tier router, else the first shipped one."""
    from edgeroute.runtime import default_router_name, read_manifest, shipped_routers
    from edgeroute.runtime.router import resolve_bundle

    for name in (default_router_name(), *shipped_routers()):
        if read_manifest(resolve_bundle(name)).encoder.kind == "static":
            return name
    raise SystemExit("no static-tier router is shipped; pass --static-bundle")


def static_tier(bundle: str, repeats: int, rounds: int = 5, batch: int = 128) -> dict[str, Any]:
    """The static tier's embedding step, 1 thread: tokenizer path vs chunk cache vs the tokenizer alone,
    and the whole router (embedding, MF head, sigmoid) with the chunk cache.

    Same table and tokenizer file as ``bundle``; interleaved rounds of ``time.perf_counter_ns``
    samples so that a noisy neighbour hits every path alike. Also batch-``batch`` throughput.
    """
    from edgeroute.runtime import Router
    from edgeroute.runtime.encoders import StaticEmbedder, load_tokenizer
    from edgeroute.runtime.manifest import StaticEmbedderSpec, read_manifest
    from edgeroute.runtime.router import resolve_bundle

    manifest = read_manifest(resolve_bundle(bundle))
    if not isinstance(manifest.encoder, StaticEmbedderSpec) or manifest.tokenizer is None:
        raise SystemExit(f"{bundle}: not a static-tier router; pass --static-bundle")
    table = np.load(manifest.folder / manifest.encoder.file)
    tokenizer_file = manifest.folder / manifest.tokenizer.file
    cached = StaticEmbedder(table, load_tokenizer(tokenizer_file, manifest.max_length))
    plain = StaticEmbedder(table, load_tokenizer(tokenizer_file, manifest.max_length), fast=False)
    encode = plain._encode
    paths: dict[str, Callable[[list[str]], Any]] = {
        "tokenizer path (before)": plain, "chunk cache (after)": cached,
        "tokenizer alone": lambda prompts: encode(prompts, add_special_tokens=False),
        "whole router (after)": Router.load(bundle, threads=1).strong_win_rates}
    samples: dict[str, dict[str, list[int]]] = {name: {label: [] for label in STATIC_LENGTHS} for name in paths}
    clock = time.perf_counter_ns
    for _ in range(rounds):
        for label, prompt in STATIC_LENGTHS.items():
            batch1 = [prompt]
            for name, function in paths.items():
                for _ in range(20):
                    function(batch1)
                out = samples[name][label]
                for _ in range(max(repeats // rounds, 1)):
                    started = clock()
                    function(batch1)
                    out.append(clock() - started)
    prompts = [f"{MEDIUM} ({i})" for i in range(batch)]
    throughput = {}
    for name in ("tokenizer path (before)", "chunk cache (after)"):
        throughput[name] = batch / statistics.median(time_calls(lambda f=paths[name]: f(prompts), max(repeats // 500, 5)))
    return {
        "bundle": manifest.name, "threads": 1, "samples_per_cell": max(repeats // rounds, 1) * rounds,
        "tokens": {label: len(cached.chunks.ids(prompt)) if cached.chunks else None for label, prompt in STATIC_LENGTHS.items()},
        "fast_path": cached.chunks is not None,
        "latency_batch1": {name: {label: percentiles([ns * 1e-9 for ns in values]) for label, values in rows.items()}
                           for name, rows in samples.items()},
        f"batch{batch}_prompts_per_s": throughput,
        "max_abs_diff": float(np.abs(cached(prompts + list(STATIC_LENGTHS.values()))
                                     - plain(prompts + list(STATIC_LENGTHS.values()))).max()),
    }


def static_table(section: dict[str, Any]) -> str:
    """The static-tier breakdown as text."""
    lines = [f"static tier embedding, {section['bundle']}, 1 thread, {section['samples_per_cell']} calls per cell; "
             f"tokens {section['tokens']}",
             f"{'path':26s} " + " ".join(f"{label + ' p50':>11s} {'p99':>7s}" for label in STATIC_LENGTHS)]
    for name, rows in section["latency_batch1"].items():
        lines.append(f"{name:26s} " + " ".join(f"{rows[label]['p50_us']:10.1f}u {rows[label]['p99_us']:6.0f}u"
                                               for label in STATIC_LENGTHS))
    key = next(k for k in section if k.endswith("_prompts_per_s"))
    lines.append(f"{key}: " + ", ".join(f"{name} {value:.0f}" for name, value in section[key].items()))
    lines.append(f"max |cache - tokenizer| over the batch: {section['max_abs_diff']:.1e}")
    return "\n".join(lines)


def run(checkpoint: Path | None, threads: int, repeats: int, throughput_seconds: float, bundle: str | None,
        tiny: bool = False, static_bundle: str | None = None) -> dict[str, Any]:
    """Measure everything; returns the JSON document."""
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        model, tokenizer, graphs = build_graphs(checkpoint, folder)
        max_length = 128 if tiny else 256
        scorers = backends(model, tokenizer, graphs, folder, threads, max_length)
        if static_bundle:
            from edgeroute.runtime import Router

            # The microsecond tier: a whole router (tokenize, static embedding, MF head, sigmoid).
            scorers["static router"] = Router.load(static_bundle).strong_win_rates
        latency: dict[str, dict[str, Any]] = {}
        for name, score in scorers.items():
            latency[name] = {label: percentiles(time_calls(lambda p=prompt: score([p]), repeats))
                             for label, prompt in LENGTHS.items()}
        throughput: dict[str, dict[str, float]] = {}
        for name, score in scorers.items():
            throughput[name] = {}
            for batch in BATCHES:
                prompts = [f"{MEDIUM} ({i})" for i in range(batch)]
                score(prompts)
                done, started = 0, time.perf_counter()
                while time.perf_counter() - started < throughput_seconds or done == 0:
                    score(prompts)
                    done += batch
                throughput[name][str(batch)] = done / (time.perf_counter() - started)
        int8 = scorers["onnx int8"]
        document = {
            "machine": machine(), "threads": threads, "repeats": repeats,
            "weights": str(checkpoint or "all-MiniLM-L6-v2 + 3-label head"), "max_length": max_length,
            "prompt_tokens": {label: len(tokenizer(prompt, truncation=True, max_length=max_length)["input_ids"])
                              for label, prompt in LENGTHS.items()},
            "latency_batch1": latency, "throughput_prompts_per_s": throughput,
            "tokenization": tokenization_share(int8, int8, repeats),
            "mf_head": mf_head_us(max(repeats, 1000)),
            "installed_size_mb": installed_size_mb(),
        }
    if static_bundle:
        document["static_tier"] = static_tier(static_bundle, max(repeats * 25, 100))
    if bundle:
        document["cold_start"] = cold_start(bundle, threads)
    reference = document["latency_batch1"]["pytorch eager fp32"]["medium"]["p50_us"]
    document["speedup_vs_pytorch_medium_p50"] = {
        name: reference / values["medium"]["p50_us"] for name, values in document["latency_batch1"].items()}
    if "static router" in document["latency_batch1"]:
        document["static_vs_int8_medium_p50"] = (document["latency_batch1"]["onnx int8"]["medium"]["p50_us"]
                                                 / document["latency_batch1"]["static router"]["medium"]["p50_us"])
    return document


def table(document: dict[str, Any]) -> str:
    lines = [f"threads {document['threads']}; prompt tokens {document['prompt_tokens']}",
             f"{'backend':22s} {'short p50':>10s} {'medium p50':>11s} {'p90':>9s} {'p99':>9s} {'long p50':>10s} "
             f"{'x torch':>8s} " + " ".join(f"{'b' + str(b) + '/s':>8s}" for b in BATCHES)]
    for name, values in document["latency_batch1"].items():
        medium = values["medium"]
        lines.append(
            f"{name:22s} {values['short']['p50_us']:9.0f}u {medium['p50_us']:10.0f}u {medium['p90_us']:8.0f}u "
            f"{medium['p99_us']:8.0f}u {values['long']['p50_us']:9.0f}u "
            f"{document['speedup_vs_pytorch_medium_p50'][name]:7.2f}x "
            + " ".join(f"{document['throughput_prompts_per_s'][name][str(b)]:8.0f}" for b in BATCHES))
    lines.append(f"MF head alone: p50 {document['mf_head']['p50_us']:.2f} us")
    if "static_vs_int8_medium_p50" in document:
        lines.append(f"static router vs ONNX int8 transformer, medium p50: {document['static_vs_int8_medium_p50']:.1f}x faster")
    for label, share in document["tokenization"].items():
        lines.append(f"tokenization ({label}): {share['tokenize_us']:.0f} us of {share['total_us']:.0f} us "
                     f"({share['share']:.0%}) with int8")
    if "static_tier" in document:
        lines.append(static_table(document["static_tier"]))
    if "cold_start" in document:
        cold = document["cold_start"]
        lines.append(f"cold start: import {cold['import_s']:.3f} s, load {cold['load_s']:.3f} s, first score "
                     f"{cold['first_score_s']:.3f} s, total {cold['total_s']:.3f} s; peak RSS {cold['peak_rss_mb']:.0f} MB; "
                     f"heavy modules imported: {cold['heavy_modules'] or 'none'}")
    sizes = document["installed_size_mb"]
    lines.append("installed size: " + ", ".join(f"{k} {v:.0f} MB" for k, v in sizes.items()))
    return "\n".join(lines)


def plot(document: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    names = list(document["latency_batch1"])
    x = np.arange(len(LENGTHS))
    width = 0.8 / len(names)
    for index, name in enumerate(names):
        values = [document["latency_batch1"][name][label]["p50_us"] / 1000 for label in LENGTHS]
        left.bar(x + index * width, values, width, label=name)
    left.set_xticks(x + 0.4 - width / 2, [f"{k} ({document['prompt_tokens'][k]} tok)" for k in LENGTHS])
    left.set_ylabel("batch-1 p50 latency (ms)")
    left.set_yscale("log")
    left.legend(fontsize=8)
    for name in names:
        right.plot(BATCHES, [document["throughput_prompts_per_s"][name][str(b)] for b in BATCHES], marker="o", label=name)
    right.set_xscale("log", base=2)
    right.set_xlabel("batch size (medium prompts)")
    right.set_ylabel("prompts / s")
    right.legend(fontsize=8)
    figure.suptitle(f"{document['machine']['cpu']}, {document['threads']} threads")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None, help="RouteLLM BERT checkpoint folder")
    parser.add_argument("--bundle", default="bert-minilm-gpt4-mixtral", help="bundle for the cold-start measurement")
    parser.add_argument("--static-bundle", default=None,
                        help="static-tier router to time (default: the shipped default router, models/DEFAULT)")
    parser.add_argument("--static-only", action="store_true",
                        help="only the static tier's breakdown (no torch needed); prints it, writes nothing")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--throughput-seconds", type=float, default=3.0)
    parser.add_argument("--tiny", action="store_true", help="a seconds-long run on a tiny random model")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if args.tiny:
        args.repeats, args.throughput_seconds = 5, 0.05
    if args.static_bundle is None:
        args.static_bundle = default_static_bundle()
    if args.static_only:
        section = static_tier(args.static_bundle, max(args.repeats * 25, 100))
        print(json.dumps({"machine": machine(), "static_tier": section}, indent=2))
        print(static_table(section))
        return
    document = run(args.checkpoint, args.threads, args.repeats, args.throughput_seconds, args.bundle, args.tiny,
                   args.static_bundle)
    document["peak_rss_mb_harness"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latency.json").write_text(json.dumps(document, indent=2) + "\n")
    plot(document, args.out / "latency.png")
    text = table(document)
    (args.out / "latency.txt").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
