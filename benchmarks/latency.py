"""Router overhead: latency, throughput, cold start, memory and install size, backends side by side.

    python benchmarks/latency.py                       # full run: latency.{md,json,txt,png} and server_overhead.{md,json}
    python benchmarks/latency.py --tiny --out /tmp/x   # short smoke run (what the tests do); no server part
    python benchmarks/latency.py --static-only         # the static tier's breakdown only (no torch needed)

Every backend scores the same weights in one run, at 1 thread and at ``--threads`` (default: all
cores), in interleaved rounds (every thread count, backend and prompt length once per round), so
the ratios are comparable even on a noisy machine: PyTorch eager fp32 through transformers (how
RouteLLM runs its BERT router), ONNX fp32 as exported, ONNX with onnxruntime's transformer
fusions, ONNX dynamic int8 as `edgeroute export` writes it, and int8 variants (per-channel vs
per-tensor, reduce_range on/off, a shorter max_length) with their parity against fp32; the
shipped default static router (models/DEFAULT); CUDA fp32/fp16 rows (IO binding) and PyTorch eager
CUDA where a GPU is present. The weights come from ``--checkpoint`` (a RouteLLM BERT checkpoint
folder; default: the packaged all-MiniLM-L6-v2 with a seeded 3-label head, the architecture of
the shipped BERT router). latency.md states every issue-13 target as met or missed, with the CPU
model, its ISA flags and the load average. Needs the export extra (and serve for the server part).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the sibling scripts (machine, server_overhead) import as modules
    sys.path.insert(0, str(HERE))
from machine import cpu_clock, machine_flags, steal_note, steal_share  # noqa: E402

if str(Path(__file__).resolve().parent) not in sys.path:  # the sibling server_overhead.py imports as a module
    sys.path.insert(0, str(Path(__file__).resolve().parent))

SHORT = "What is the capital of France?"
MEDIUM = (
    "A train leaves the station at 3 pm travelling at 80 km/h, and a second train leaves the same station "
    "at 4 pm on the same track at 100 km/h. At what time does the second train catch up with the first, "
    "and how far from the station are they?"
)
LONG = " ".join([MEDIUM] * 5)
LENGTHS = {"short": SHORT, "medium": MEDIUM, "long": LONG}
BATCHES = (1, 8, 32, 128)
# The static tier's breakdown adds a ~400-token prompt (the static tier truncates at 512).
STATIC_LENGTHS = {**LENGTHS, "longer": " ".join([MEDIUM] * 7)}


def percentiles(samples_s: list[float]) -> dict[str, float]:
    values = np.array(samples_s) * 1e6
    return {
        "p50_us": float(np.percentile(values, 50)),
        "p90_us": float(np.percentile(values, 90)),
        "p99_us": float(np.percentile(values, 99)),
        "n": len(values),
    }


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
    """``machine_flags`` plus the versions of the libraries that do the work."""
    import onnxruntime
    import tokenizers

    return {
        **machine_flags(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "tokenizers": tokenizers.__version__,
        "numpy": np.__version__,
        "providers": onnxruntime.get_available_providers(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }


# Dynamic int8 variants of the same fused graph: name -> (per_channel, reduce_range). The first is
# what `edgeroute export` writes by default (export/: --per-channel --reduce-range) and is the
# "onnx int8" backend. onnxruntime's quantize_dynamic has no QDQ format (QuantFormat applies to
# static quantization only), so the QOperator/QDQ comparison does not arise for dynamic int8.
# name -> (per_channel, reduce_range, SkipLayerNormalization fused into the graph); the export default first.
INT8_VARIANTS = {
    "onnx int8": (True, True, False),
    "int8 per-channel 8-bit": (True, False, False),
    "int8 per-tensor 7-bit": (False, True, False),
    "int8 per-tensor 8-bit": (False, False, False),
    "int8 SkipLayerNorm fused (before)": (True, True, True),
}
# Backends in the throughput and plot views (the int8 variants are in their own table).
# The shipped transformer tier (``--bundle``: its own graph, e.g. 4 frozen layers + a linear probe), timed as a
# whole router beside RouteLLM's 6-layer BERT router in PyTorch eager.
SHIPPED_TRANSFORMER = "transformer tier (shipped bundle)"
MAIN_BACKENDS = ("pytorch eager fp32", "onnx fp32", "onnx fused", "onnx int8", SHIPPED_TRANSFORMER, "static router")


def build_graphs(checkpoint: Path | None, folder: Path) -> tuple[Any, Any, dict[str, Path]]:
    """The torch model, its tokenizer, and the ONNX graphs (raw fp32, fused fp32, int8 variants) of the same weights."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from edgeroute.export import minilm_dir
    from edgeroute.export.onnx_graphs import ClassifierLogits, export_graph, optimize_graph, quantize_graph

    source = checkpoint or minilm_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(source), num_labels=3, local_files_only=True, attn_implementation="eager"
    ).eval()
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tokenizer.model_input_names]
    graphs = {"onnx fp32": folder / "raw.onnx", "onnx fused": folder / "fused.onnx"}
    export_graph(ClassifierLogits(model), names, "logits", graphs["onnx fp32"], 17)
    config = model.config
    shape = (config.model_type, config.num_attention_heads, config.hidden_size)
    optimize_graph(graphs["onnx fp32"], graphs["onnx fused"], *shape)
    optimize_graph(graphs["onnx fp32"], folder / "fused_sln.onnx", *shape, skip_layer_norm=True)
    for index, (name, (per_channel, reduce_range, sln)) in enumerate(INT8_VARIANTS.items()):
        graphs[name] = folder / f"int8_{index}.onnx"
        fused = folder / "fused_sln.onnx" if sln else graphs["onnx fused"]
        quantize_graph(fused, graphs[name], per_channel=per_channel, reduce_range=reduce_range)
    tokenizer.backend_tokenizer.save(str(folder / "tokenizer.json"))
    return model, tokenizer, graphs


def onnx_session(path: Path, threads: int, basic: bool = False, providers: list[Any] | None = None) -> Any:
    """An onnxruntime session with ``threads`` intra-op threads (``basic``: only basic graph optimizations)."""
    import onnxruntime as ort

    from edgeroute.runtime.scoring.encoders import CPU_DISABLED_OPTIMIZERS

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if basic:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    providers = providers or ["CPUExecutionProvider"]
    # As the runtime's CPU sessions: Add + LayerNormalization stay apart (a graph that has them fused keeps them so).
    disabled = list(CPU_DISABLED_OPTIMIZERS) if providers == ["CPUExecutionProvider"] else []
    return ort.InferenceSession(str(path), options, providers=providers, disabled_optimizers=disabled)


def backends(
    model: Any, tokenizer: Any, graphs: dict[str, Path], folder: Path, threads: int, max_length: int
) -> dict[str, Callable[[list[str]], Any]]:
    """Name -> score(batch of prompts) for every CPU backend, all on the same weights and ``threads``.

    torch's thread count is global: the PyTorch scorer sets it on every call (cheap), so that
    scorers for several thread counts can be interleaved in one process.
    """
    import torch

    from edgeroute.runtime.scoring.encoders import OnnxTextEncoder, load_tokenizer

    fast_tokenizer = load_tokenizer(folder / "tokenizer.json", max_length)
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tokenizer.model_input_names]

    def torch_score(prompts: list[str]) -> Any:
        torch.set_num_threads(threads)
        with torch.no_grad():
            batch = tokenizer(prompts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            return model(**batch).logits

    result: dict[str, Callable[[list[str]], Any]] = {"pytorch eager fp32": torch_score}
    for name, path in graphs.items():
        session = onnx_session(path, threads, basic=name == "onnx fp32")
        result[name] = OnnxTextEncoder(session, fast_tokenizer, names, "logits")
    # The export default at half the truncation length: only prompts longer than that differ.
    short = load_tokenizer(folder / "tokenizer.json", max_length // 2)
    default_int8: Any = result["onnx int8"]
    result[f"onnx int8 max_length {max_length // 2}"] = OnnxTextEncoder(default_int8.session, short, names, "logits")
    return result


SWITCH_PAUSE_S = 0.05
# Many short rounds rather than a few long ones: a slow stretch of the machine then lands in every backend's cells.
ROUNDS = 20


def interleaved_latency(
    groups: dict[int, dict[str, Callable[[list[str]], Any]]], rounds: int, per_cell: int
) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """Batch-1 latency of every scorer at every thread count and prompt length, in interleaved rounds.

    Each round visits every thread count (order alternating), every scorer (in a seeded order of its
    own, so that no backend always runs right after the same one) and every length, taking
    ``per_cell`` samples after 2 warm-up calls: a noisy neighbour hits all cells alike. Each cell's
    percentiles come with its per-round p50s (``round_p50_us``), from which the paired ratios are taken.
    """
    samples: dict[int, dict[str, dict[str, list[float]]]] = {
        threads: {name: {label: [] for label in LENGTHS} for name in scorers} for threads, scorers in groups.items()
    }
    order = list(groups)
    for index in range(rounds):
        for threads in order if index % 2 == 0 else order[::-1]:
            names = list(groups[threads])
            random.Random(index).shuffle(names)
            for name in names:
                # The previous backend's idle onnxruntime workers spin for a while after its last run and take
                # the second core: measured with six 2-thread int8 sessions interleaved, p90 7.7 ms against
                # 4.0 ms for one session. A pause lets them park, as one router per process never sees.
                time.sleep(SWITCH_PAUSE_S)
                for label, prompt in LENGTHS.items():
                    sample_cell(groups[threads][name], [prompt], per_cell, samples[threads][name][label])
    return {
        str(threads): {name: {label: cell_figures(values, per_cell) for label, values in rows.items()} for name, rows in by_name.items()}
        for threads, by_name in samples.items()
    }


def sample_cell(score: Callable[[list[str]], Any], batch: list[str], count: int, out: list[float]) -> None:
    """Append ``count`` timed calls of ``score(batch)`` to ``out``, after 2 untimed ones."""
    score(batch)
    score(batch)
    for _ in range(count):
        started = time.perf_counter()
        score(batch)
        out.append(time.perf_counter() - started)


def cell_figures(samples_s: list[float], per_round: int) -> dict[str, Any]:
    """Percentiles of all of a cell's samples, and the p50 of each round's ``per_round`` samples (µs)."""
    chunks = [samples_s[start : start + per_round] for start in range(0, len(samples_s), per_round)]
    return {**percentiles(samples_s), "round_p50_us": [float(np.median(chunk)) * 1e6 for chunk in chunks]}


def paired_speedup(reference: dict[str, Any], backend: dict[str, Any]) -> float:
    """The median over rounds of (reference round p50 / backend round p50).

    Both were timed within seconds of each other in each round, so a slow stretch of a shared machine
    (it moves everything by up to 1.5x here) scales both sides of a ratio, where it shifts one pooled p50
    more than the other; cells without per-round figures fall back to the pooled p50 ratio.
    """
    pairs = list(zip(reference.get("round_p50_us", []), backend.get("round_p50_us", [])))
    if not pairs:
        return float(reference["p50_us"] / backend["p50_us"])
    return float(np.median([ours / theirs for ours, theirs in pairs]))


def throughput(scorers: dict[str, Callable[[list[str]], Any]], seconds: float) -> dict[str, dict[str, float]]:
    """Medium prompts per second at each batch size, each scorer for ``seconds`` per batch size."""
    result: dict[str, dict[str, float]] = {}
    for name, score in scorers.items():
        result[name] = {}
        for batch in BATCHES:
            prompts = [f"{MEDIUM} ({i})" for i in range(batch)]
            score(prompts)
            done, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds or done == 0:
                score(prompts)
                done += batch
            result[name][str(batch)] = done / (time.perf_counter() - started)
    return result


def int8_parity(scorers: dict[str, Callable[[list[str]], Any]], count: int = 100) -> dict[str, dict[str, Any]]:
    """Each int8 variant against ONNX fp32 on the first ``count`` parity prompts (export/parity.py), one prompt a run.

    max |Δ logit| over the 3 logits, and win-rate figures (win rate = softmax probability of label 0,
    RouteLLM's BERT convention) with decision agreement at thresholds 0.1..0.9.
    """
    from edgeroute.export.parity import PARITY_PROMPTS, parity_figures

    prompts = PARITY_PROMPTS[:count]

    def logits(score: Callable[[list[str]], Any]) -> np.ndarray:
        return np.concatenate([np.asarray(score([prompt]), dtype=np.float64) for prompt in prompts])

    def win_rate(values: np.ndarray) -> np.ndarray:
        shifted = np.exp(values - values.max(axis=1, keepdims=True))
        return shifted[:, 0] / shifted.sum(axis=1)

    reference = logits(scorers["onnx fp32"])
    result = {}
    for name in scorers:
        if "int8" not in name:
            continue
        candidate = logits(scorers[name])
        figures = parity_figures(win_rate(reference), win_rate(candidate))
        result[name] = {
            "prompts": len(prompts),
            "max_abs_logit_diff": float(np.abs(candidate - reference).max()),
            "max_abs_win_rate_diff": figures["max_abs_diff"],
            "min_decision_agreement": figures["min_agreement"],
            "argmax_agreement": float(np.mean(candidate.argmax(1) == reference.argmax(1))),
        }
    return result


def io_binding_scorer(session: Any, tokenizer: Any, names: list[str]) -> Callable[[list[str]], Any]:
    """Score on CUDA with IO binding: inputs copied to the device once, logits bound on the device, then fetched."""
    import onnxruntime as ort

    attributes = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}

    def score(prompts: list[str]) -> Any:
        encodings = tokenizer.encode_batch(prompts)
        binding = session.io_binding()
        for name in names:
            array = np.asarray([getattr(e, attributes[name]) for e in encodings], dtype=np.int64)
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0))
        binding.bind_output("logits", "cuda", 0)
        session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    return score


def cuda_scorers(
    model: Any, tokenizer: Any, graphs: dict[str, Path], folder: Path, max_length: int
) -> tuple[dict[str, Callable[[list[str]], Any]], list[str]]:
    """ONNX CUDA fp32/fp16 (IO binding) and PyTorch eager CUDA fp32/fp16 scorers, and why any are missing."""
    import copy

    import onnxruntime as ort
    import torch

    from edgeroute.runtime.scoring.encoders import load_tokenizer

    scorers: dict[str, Callable[[list[str]], Any]] = {}
    skipped = []
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tokenizer.model_input_names]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        from edgeroute.export.onnx_graphs import to_fp16

        if hasattr(ort, "preload_dlls"):  # onnxruntime-gpu >= 1.21: CUDA/cuDNN from the nvidia-* wheels
            ort.preload_dlls()
        to_fp16(graphs["onnx fused"], folder / "fused_fp16.onnx")
        fast_tokenizer = load_tokenizer(folder / "tokenizer.json", max_length)
        for name, path in (("onnx cuda fp32", graphs["onnx fused"]), ("onnx cuda fp16", folder / "fused_fp16.onnx")):
            session = onnx_session(path, 1, providers=["CUDAExecutionProvider"])
            scorers[name] = io_binding_scorer(session, fast_tokenizer, names)
    else:
        skipped.append("onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu on a GPU machine)")
    if torch.cuda.is_available():
        for name, dtype in (("pytorch eager cuda fp32", torch.float32), ("pytorch eager cuda fp16", torch.float16)):
            module = copy.deepcopy(model).to("cuda", dtype=dtype)

            def torch_score(prompts: list[str], module: Any = module) -> Any:
                with torch.no_grad():
                    batch = tokenizer(prompts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
                    return module(**{k: v.to("cuda") for k, v in batch.items()}).logits.float().cpu()

            scorers[name] = torch_score
    else:
        skipped.append("torch.cuda.is_available() is False")
    return scorers, skipped


def cuda_rows(scorers: dict[str, Callable[[list[str]], Any]], repeats: int, seconds: float) -> dict[str, Any]:
    """Batch-1 medium latency and batch-128 throughput of each CUDA scorer."""
    rows = {}
    prompts = [f"{MEDIUM} ({i})" for i in range(128)]
    for name, score in scorers.items():
        batch1 = percentiles(time_calls(partial(score, [MEDIUM]), repeats, warmup=10))
        score(prompts)
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds or done == 0:
            score(prompts)
            done += len(prompts)
        rows[name] = {"medium_batch1": batch1, "batch128_prompts_per_s": done / (time.perf_counter() - started)}
    return rows


def tokenization_share(tokenizer_encoder: Any, score: Callable[[list[str]], Any], repeats: int) -> dict[str, dict[str, float]]:
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
    output = subprocess.run(
        [sys.executable, "-c", _COLD_START, bundle, str(threads)], capture_output=True, text=True, check=True, timeout=300
    )
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
    from edgeroute.runtime.scoring.router import resolve_bundle

    for name in (default_router_name(), *shipped_routers()):
        if read_manifest(resolve_bundle(name)).encoder.kind == "static":
            return name
    raise SystemExit("no static-tier router is shipped; pass --static-bundle")


def _interleaved_ns(
    paths: dict[str, Callable[[list[str]], Any]], rounds: int, per_round: int
) -> tuple[dict[str, dict[str, list[int]]], dict[str, list[float]]]:
    """Batch-1 nanosecond samples of every path on every STATIC_LENGTHS prompt, in interleaved rounds; and each
    path's medium-prompt p50 per round (the machine's speed in that round)."""
    samples: dict[str, dict[str, list[int]]] = {name: {label: [] for label in STATIC_LENGTHS} for name in paths}
    round_p50s: dict[str, list[float]] = {name: [] for name in paths}
    clock = time.perf_counter_ns
    for _ in range(rounds):
        for label, prompt in STATIC_LENGTHS.items():
            batch1 = [prompt]
            for name, function in paths.items():
                for _ in range(20):
                    function(batch1)
                out = samples[name][label]
                for _ in range(per_round):
                    started = clock()
                    function(batch1)
                    out.append(clock() - started)
                if label == "medium":
                    round_p50s[name].append(statistics.median(out[-per_round:]) / 1e3)
    return samples, round_p50s


def static_tier(bundle: str, repeats: int, rounds: int = 10, batch: int = 128) -> dict[str, Any]:
    """The static tier's embedding step, 1 thread: tokenizer path vs chunk cache vs the tokenizer alone,
    and the whole router (embedding, MF head, sigmoid) with the chunk cache.

    Same table and tokenizer file as ``bundle``; interleaved rounds of ``time.perf_counter_ns``
    samples so that a noisy neighbour hits every path alike. Also batch-``batch`` throughput.
    """
    from edgeroute.runtime import Router
    from edgeroute.runtime.scoring.encoders import StaticEmbedder, load_tokenizer
    from edgeroute.runtime.scoring.manifest import StaticEmbedderSpec, read_manifest
    from edgeroute.runtime.scoring.router import resolve_bundle

    manifest = read_manifest(resolve_bundle(bundle))
    if not isinstance(manifest.encoder, StaticEmbedderSpec) or manifest.tokenizer is None:
        raise SystemExit(f"{bundle}: not a static-tier router; pass --static-bundle")
    table = np.load(manifest.folder / manifest.encoder.file)
    tokenizer_file = manifest.folder / manifest.tokenizer.file
    cached = StaticEmbedder(table, load_tokenizer(tokenizer_file, manifest.max_length))
    plain = StaticEmbedder(table, load_tokenizer(tokenizer_file, manifest.max_length), fast=False)
    encode = plain._encode
    paths: dict[str, Callable[[list[str]], Any]] = {
        "tokenizer path (before)": plain,
        "chunk cache (after)": cached,
        "tokenizer alone": lambda prompts: encode(prompts, add_special_tokens=False),
        "whole router (after)": Router.load(bundle, threads=1).strong_win_rates,
    }
    samples, round_p50s = _interleaved_ns(paths, rounds, max(repeats // rounds, 1))
    prompts = [f"{MEDIUM} ({i})" for i in range(batch)]
    throughput = {}
    for name in ("tokenizer path (before)", "chunk cache (after)"):
        throughput[name] = batch / statistics.median(time_calls(partial(paths[name], prompts), max(repeats // 500, 5)))
    return {
        "bundle": manifest.name,
        "threads": 1,
        "samples_per_cell": max(repeats // rounds, 1) * rounds,
        "tokens": {label: len(cached.chunks.ids(prompt)) if cached.chunks else None for label, prompt in STATIC_LENGTHS.items()},
        "fast_path": cached.chunks is not None,
        "latency_batch1": {
            name: {label: percentiles([ns * 1e-9 for ns in values]) for label, values in rows.items()} for name, rows in samples.items()
        },
        f"batch{batch}_prompts_per_s": throughput,
        "medium_round_p50_us": round_p50s,
        "max_abs_diff": float(
            np.abs(cached(prompts + list(STATIC_LENGTHS.values())) - plain(prompts + list(STATIC_LENGTHS.values()))).max()
        ),
    }


def static_table(section: dict[str, Any]) -> str:
    """The static-tier breakdown as text."""
    lines = [
        f"static tier embedding, {section['bundle']}, 1 thread, {section['samples_per_cell']} calls per cell; tokens {section['tokens']}",
        f"{'path':26s} " + " ".join(f"{label + ' p50':>11s} {'p99':>7s}" for label in STATIC_LENGTHS),
    ]
    for name, rows in section["latency_batch1"].items():
        lines.append(f"{name:26s} " + " ".join(f"{rows[label]['p50_us']:10.1f}u {rows[label]['p99_us']:6.0f}u" for label in STATIC_LENGTHS))
    key = next(k for k in section if k.endswith("_prompts_per_s"))
    lines.append(f"{key}: " + ", ".join(f"{name} {value:.0f}" for name, value in section[key].items()))
    lines.append(f"max |cache - tokenizer| over the batch: {section['max_abs_diff']:.1e}")
    rounds = section.get("medium_round_p50_us")
    if rounds:  # a 2-vCPU VM runs stretches of a second or so at about half speed, whatever the code
        lines.append("medium p50 per round (us), in order: the machine's speed moves (a slow stretch slows whichever paths ran in it)")
        lines += [f"  {name:24s} " + " ".join(f"{value:6.1f}" for value in values) for name, values in rounds.items()]
    return "\n".join(lines)


def add_router_scorers(groups: dict[int, dict[str, Callable[[list[str]], Any]]], bundle: str | None, static_bundle: str | None) -> None:
    """Whole routers beside the bare graphs: the static tier (one thread) and the shipped transformer tier per thread count."""
    from edgeroute.runtime import Router

    if static_bundle:
        # The microsecond tier: a whole router (tokenize, static embedding, MF head, sigmoid), single-threaded.
        static = Router.load(static_bundle, threads=1).strong_win_rates
        for scorers in groups.values():
            scorers["static router"] = static
    if bundle:
        for count, scorers in groups.items():
            scorers[SHIPPED_TRANSFORMER] = Router.load(bundle, threads=count).strong_win_rates


def run(
    checkpoint: Path | None,
    threads: int,
    repeats: int,
    throughput_seconds: float,
    bundle: str | None,
    tiny: bool = False,
    static_bundle: str | None = None,
) -> dict[str, Any]:
    """Measure everything at 1 thread and at ``threads`` threads, interleaved; returns the JSON document.

    ``latency_batch1`` holds the figures at the larger thread count; ``latency_by_threads`` all of them.
    """
    thread_counts = sorted({1, threads})
    rounds = 1 if tiny else ROUNDS
    load_before = [round(v, 2) for v in os.getloadavg()]
    clock_before = cpu_clock()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        model, tokenizer, graphs = build_graphs(checkpoint, folder)
        max_length = 128 if tiny else 256
        groups = {t: backends(model, tokenizer, graphs, folder, t, max_length) for t in thread_counts}
        add_router_scorers(groups, bundle, static_bundle)
        by_threads = interleaved_latency(groups, rounds, max(repeats // rounds, 1))
        top = groups[thread_counts[-1]]
        rates = throughput({name: top[name] for name in MAIN_BACKENDS if name in top}, throughput_seconds)
        parity = int8_parity(groups[1], count=20 if tiny else 100)
        gpu, skipped = cuda_scorers(model, tokenizer, graphs, folder, max_length)
        cuda = {"rows": cuda_rows(gpu, repeats, throughput_seconds), "skipped": skipped}
        int8 = top["onnx int8"]
        document: dict[str, Any] = {
            "machine": machine(),
            "load_average_before": load_before,
            "threads": thread_counts,
            "repeats": repeats,
            "rounds": rounds,
            "weights": str(checkpoint or "all-MiniLM-L6-v2 + 3-label head (seeded random head)"),
            "max_length": max_length,
            "prompt_tokens": {
                label: len(tokenizer(prompt, truncation=True, max_length=max_length)["input_ids"]) for label, prompt in LENGTHS.items()
            },
            "latency_by_threads": by_threads,
            "latency_batch1": by_threads[str(thread_counts[-1])],
            "throughput_threads": thread_counts[-1],
            "throughput_prompts_per_s": rates,
            "tokenization": tokenization_share(int8, int8, repeats),
            "mf_head": mf_head_us(max(repeats, 1000)),
            "installed_size_mb": installed_size_mb(),
            "int8_parity_vs_fp32": parity,
            "cuda": cuda,
        }
    if static_bundle:
        document["static_tier"] = static_tier(static_bundle, max(repeats * 25, 100), rounds=2 if tiny else 10)
    if bundle:
        document["bundle"] = bundle
        document["cold_start"] = cold_start(bundle, threads)
    add_speedups(document)
    document["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    document["cpu_steal_share"] = steal_share(clock_before, cpu_clock())
    return document


def add_speedups(document: dict[str, Any]) -> None:
    """PyTorch eager p50 over each backend's p50, per thread count and prompt length; the int8 variant table."""
    speedups: dict[str, dict[str, dict[str, float]]] = {}
    for threads, rows in document["latency_by_threads"].items():
        eager = rows["pytorch eager fp32"]
        speedups[threads] = {
            name: {label: eager[label]["p50_us"] / values[label]["p50_us"] for label in LENGTHS} for name, values in rows.items()
        }
    document["speedup_vs_pytorch_p50"] = speedups
    document["paired_speedup_vs_pytorch"] = {
        threads: {
            name: {label: paired_speedup(rows["pytorch eager fp32"][label], values[label]) for label in LENGTHS}
            for name, values in rows.items()
        }
        for threads, rows in document["latency_by_threads"].items()
    }
    top = str(document["threads"][-1])
    document["speedup_vs_pytorch_medium_p50"] = {name: values["medium"] for name, values in speedups[top].items()}
    if "static router" in document["latency_batch1"]:
        document["static_vs_int8_medium_p50"] = (
            document["latency_batch1"]["onnx int8"]["medium"]["p50_us"] / document["latency_batch1"]["static router"]["medium"]["p50_us"]
        )
    variants = {}
    for name, figures in document["int8_parity_vs_fp32"].items():
        per_channel, reduce_range, sln = INT8_VARIANTS.get(name, INT8_VARIANTS["onnx int8"])
        label = "long" if "max_length" in name else "medium"
        variants[name] = {
            "per_channel": per_channel,
            "reduce_range": reduce_range,
            "skip_layer_norm": sln,
            "prompt": label,
            "max_length": int(name.rsplit(" ", 1)[1]) if "max_length" in name else document["max_length"],
            "speedup": {t: speedups[t][name][label] for t in speedups},
            "paired_speedup": {t: document["paired_speedup_vs_pytorch"][t][name][label] for t in speedups},
            "p50_us": {t: document["latency_by_threads"][t][name][label]["p50_us"] for t in speedups},
            **figures,
        }
    document["int8_variants"] = variants


def candidate_variants(document: dict[str, Any]) -> list[str]:
    """The int8 variants export could choose: same max_length, not the graph layout it replaced."""
    return [n for n in document["int8_variants"] if "max_length" not in n and "(before)" not in n]


def pooled_ratio(document: dict[str, Any], threads: str, name: str) -> str:
    """'pooled p50s X ms vs Y ms = Zx': the backend's medium p50 over all rounds against PyTorch eager's."""
    cells = document["latency_by_threads"][threads]
    ours, eager = cells[name]["medium"]["p50_us"], cells["pytorch eager fp32"]["medium"]["p50_us"]
    ratio = document["speedup_vs_pytorch_p50"][threads][name]["medium"]
    return f"pooled p50s {ours / 1e3:.2f} ms vs {eager / 1e3:.2f} ms = {ratio:.2f}x"


def targets(document: dict[str, Any], server: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """(target, measured, met / MISSED / not measured) for every target of issue 13 this run can speak to."""
    rows = []
    static = document.get("static_tier")
    if static:
        p50 = static["latency_batch1"]["whole router (after)"]["medium"]["p50_us"]
        rows.append(
            (
                f"fast tier ({static['bundle']}, whole router) ≤ 30 µs p50, medium prompt, 1 thread",
                f"{p50:.1f} µs",
                "met" if p50 <= 30 else "MISSED",
            )
        )
    for threads, values in document["paired_speedup_vs_pytorch"].items():
        paired = values["onnx int8"]["medium"]
        best = max(candidate_variants(document), key=lambda n: document["int8_variants"][n]["paired_speedup"][threads])
        rows.append(
            (
                f"int8 (export default: per-channel, reduce_range) ≥ 4x PyTorch eager, medium, {threads} thread(s)",
                f"{paired:.2f}x paired; {pooled_ratio(document, threads, 'onnx int8')}; best variant {best} "
                f"{document['int8_variants'][best]['paired_speedup'][threads]:.2f}x paired",
                ("met" if paired >= 4 else "MISSED")
                + (" (unreliable: machine oversubscribed)" if threads != "1" and oversubscribed(document) else ""),
            )
        )
    for threads, values in document["paired_speedup_vs_pytorch"].items():
        if SHIPPED_TRANSFORMER in values:
            paired = values[SHIPPED_TRANSFORMER]["medium"]
            rows.append(
                (
                    f"shipped transformer tier ({document.get('bundle', 'bundle')}, its own graph: a smaller "
                    f"model than the eager one) ≥ 4x PyTorch eager RouteLLM BERT router, medium, {threads} thread(s)",
                    f"{paired:.2f}x paired; {pooled_ratio(document, threads, SHIPPED_TRANSFORMER)}",
                    "met" if paired >= 4 else "MISSED",
                )
            )
    if server:
        from server_overhead import targets_rows

        rows += [(t, m, "met" if ok else "MISSED") for t, m, ok in targets_rows(server)]
    else:
        rows.append(("server overhead ≤ 1 ms p50 / ≤ 3 ms p99, 1 and 100 clients", "-", "not measured in this run"))
    cuda = document["cuda"]
    if cuda["rows"]:
        for name, row in cuda["rows"].items():
            rows.append(
                (
                    f"CUDA {name}: batch-1 p50 / batch-128 throughput",
                    f"{row['medium_batch1']['p50_us'] / 1e3:.2f} ms / {row['batch128_prompts_per_s']:.0f} prompts/s",
                    "measured",
                )
            )
    else:
        rows.append(("CUDA rows (fp32/fp16, IO binding; PyTorch eager CUDA)", "-", "not measured: " + "; ".join(cuda["skipped"])))
    return rows


def table(document: dict[str, Any]) -> str:
    """Batch-1 latency per thread count (p50/p90/p99, speedup over PyTorch) and throughput, as text."""
    lines = [
        f"prompt tokens {document['prompt_tokens']}; max_length {document['max_length']}; "
        f"{document['repeats']} samples per cell in {document['rounds']} interleaved rounds"
    ]
    for threads, rows in document["latency_by_threads"].items():
        speedups = document["speedup_vs_pytorch_p50"][threads]
        paired = document["paired_speedup_vs_pytorch"][threads]
        lines += [
            "",
            f"{threads} thread(s)",
            f"{'backend':26s} {'short p50':>10s} {'medium p50':>11s} {'p90':>9s} {'p99':>9s} {'long p50':>10s} "
            f"{'x torch':>8s} {'x paired':>8s} {'x long':>7s}",
        ]
        for name, values in rows.items():
            medium = values["medium"]
            lines.append(
                f"{name:26s} {values['short']['p50_us']:9.0f}u {medium['p50_us']:10.0f}u "
                f"{medium['p90_us']:8.0f}u {medium['p99_us']:8.0f}u {values['long']['p50_us']:9.0f}u "
                f"{speedups[name]['medium']:7.2f}x {paired[name]['medium']:7.2f}x {speedups[name]['long']:6.2f}x"
            )
    lines += [
        "",
        f"throughput, medium prompts/s, {document['throughput_threads']} thread(s)",
        f"{'backend':26s} " + " ".join(f"{'b' + str(b):>8s}" for b in BATCHES),
    ]
    for name, values in document["throughput_prompts_per_s"].items():
        lines.append(f"{name:26s} " + " ".join(f"{values[str(b)]:8.0f}" for b in BATCHES))
    lines.append(f"MF head alone: p50 {document['mf_head']['p50_us']:.2f} us")
    if "static_vs_int8_medium_p50" in document:
        lines.append(f"static router vs ONNX int8 transformer, medium p50: {document['static_vs_int8_medium_p50']:.1f}x faster")
    for label, share in document["tokenization"].items():
        lines.append(
            f"tokenization ({label}): {share['tokenize_us']:.0f} us of {share['total_us']:.0f} us ({share['share']:.0%}) with int8"
        )
    if "static_tier" in document:
        lines += ["", static_table(document["static_tier"])]
    if "cold_start" in document:
        cold = document["cold_start"]
        lines.append(
            f"cold start: import {cold['import_s']:.3f} s, load {cold['load_s']:.3f} s, first score "
            f"{cold['first_score_s']:.3f} s, total {cold['total_s']:.3f} s; peak RSS {cold['peak_rss_mb']:.0f} MB; "
            f"heavy modules imported: {cold['heavy_modules'] or 'none'}"
        )
    sizes = document["installed_size_mb"]
    lines.append("installed size: " + ", ".join(f"{k} {v:.0f} MB" for k, v in sizes.items()))
    return "\n".join(lines)


def variants_table(document: dict[str, Any]) -> list[str]:
    """The int8 variants as a markdown table: speedup over eager per thread count, parity with fp32."""
    threads = list(document["latency_by_threads"])
    lines = [
        "| variant | per-channel | reduce_range (7-bit) | SkipLayerNorm fused | max_length | prompt | "
        + " | ".join(f"p50 / x eager / x paired, {t} thr" for t in threads)
        + " | max abs Δ logit | max abs Δ win rate | decision agreement (min over 0.1..0.9) | argmax agreement |",
        "| --- " * (10 + len(threads)) + "|",
    ]
    for name, row in document["int8_variants"].items():
        cells = " | ".join(f"{row['p50_us'][t] / 1e3:.2f} ms / {row['speedup'][t]:.2f}x / {row['paired_speedup'][t]:.2f}x" for t in threads)
        lines.append(
            f"| {name} | {row['per_channel']} | {row['reduce_range']} | {row.get('skip_layer_norm', True)} | "
            f"{row['max_length']} | {row['prompt']} | "
            f"{cells} | {row['max_abs_logit_diff']:.3f} | {row['max_abs_win_rate_diff']:.4f} | "
            f"{row['min_decision_agreement']:.2%} | {row['argmax_agreement']:.2%} |"
        )
    return lines


def recommendation(document: dict[str, Any]) -> list[str]:
    """Which int8 variant export should use, from this run's figures (on this CPU) and the ISA argument (elsewhere)."""
    variants = {n: document["int8_variants"][n] for n in candidate_variants(document)}
    default = variants["onnx int8"]
    # Agreement on the 3-label argmax: the stricter test here (with a seeded random head the win rates sit
    # near 1/3, so decisions at thresholds 0.1..0.9 hardly ever change).
    safe = {n: v for n, v in variants.items() if v["argmax_agreement"] >= default["argmax_agreement"] - 0.01}
    threads = list(document["latency_by_threads"])
    fastest = max(safe, key=lambda n: sum(safe[n]["paired_speedup"][t] for t in threads))
    isa = "with VNNI" if document["machine"]["vnni"] else "without VNNI (AVX2 only)"
    gain = [safe[fastest]["paired_speedup"][t] / default["paired_speedup"][t] for t in threads]
    return [
        f"* Measured on this CPU ({isa}): the fastest variant whose argmax agreement with fp32 is within one "
        f"point of the export default's is **{fastest}** ({', '.join(f'{g:.2f}x' for g in gain)} the export "
        f"default's speed at {', '.join(threads)} thread(s)); differences under ~5% are within this machine's noise.",
        "* With VNNI (AVX512-VNNI / AVX-VNNI), `vpdpbusd` accumulates u8 x s8 products straight into int32: 8-bit "
        "weights cannot overflow, so reduce_range only costs precision; export could use 8-bit weights on such CPUs.",
        "* On AVX2-only CPUs, onnxruntime's u8s8 kernels use `vpmaddubsw`, which adds pairs of u8 x s8 products into "
        "a *saturating int16*: 2 x 255 x 127 = 64,770 > 32,767, so 8-bit weights can saturate and silently change "
        "logits. 7-bit weights (reduce_range=True, |w| ≤ 64) keep 2 x 255 x 64 = 32,640 in range. onnxruntime's "
        "`quantize_dynamic` documents reduce_range as 'quantize weights with 7-bits. It may improve the accuracy "
        "for some models running on non-VNNI machine, especially for per-channel mode'; OpenVINO documents the same "
        "saturation on pre-VNNI SSE/AVX2/AVX-512 CPUs. The shipped bundle's reduce_range=True is therefore the "
        "portable choice, and stays the export default: a bundle is built once and scored on CPUs we do not know.",
        "* Export defaults are unchanged by this run. Per-channel vs per-tensor on an AVX2-only CPU can only be "
        "measured there: run `python benchmarks/latency.py` on one (it reports the ISA in its header).",
    ]


def markdown(document: dict[str, Any], server: dict[str, Any] | None) -> str:
    """latency.md: machine, targets met/missed, backends, int8 variants, static tier, CUDA, server overhead."""
    machine = document["machine"]
    lines = [
        "# Router overhead",
        "",
        "Written by `python benchmarks/latency.py` (with `latency.json`, `latency.txt`, `latency.png`); do not "
        "edit by hand. Every backend scores the same weights "
        f"({document['weights']}) in one process, at {' and '.join(map(str, document['threads']))} thread(s), "
        "in interleaved rounds, so that ratios are comparable on a noisy machine.",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, CPU flags {', '.join(machine['cpu_flags'])} "
        f"(VNNI: {machine['vnni']}); Python {machine['python']}, onnxruntime {machine['onnxruntime']}, "
        f"providers {', '.join(machine['providers'])}. Load average (1/5/15 min) {document['load_average_before']} "
        f"at the start, {document['load_average_after']} at the end: the machine is shared, absolute figures "
        "are inflated, ratios less so." + steal_note(document.get("cpu_steal_share")) + oversubscribed(document),
        "",
        "## Targets (issue 13)",
        "",
        "| target | measured | status |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {t} | {m} | {status} |" for t, m, status in targets(document, server)]
    lines += [
        "",
        "## Backends",
        "",
        "```",
        table(document),
        "```",
        "",
        "`u` is microseconds; `x torch` is PyTorch eager's medium p50 over the backend's at the same thread "
        "count (pooled over all rounds), `x long` the same on the long prompt; `x paired` is the median over "
        "rounds of the same ratio taken within each round, where both were timed seconds apart. The targets "
        "use the paired ratio: this shared machine's speed drifts by up to 1.5x over a run, and a slow stretch "
        "moves one pooled p50 more than another, where it scales both sides of a round's ratio.",
        "",
        "![latency](latency.png)",
        "",
        "## int8 variants (issue 13, item 2)",
        "",
        "Dynamic int8 of the same fused graph, timed in the same rounds as the backends above; parity against "
        "ONNX fp32 on the first parity prompts of `export/parity.py`, one prompt per run.",
        "",
    ]
    lines += variants_table(document) + [""] + recommendation(document)
    lines += ["", "## CUDA", "", *cuda_section(document["cuda"])]
    if server:
        lines += ["", "## Server overhead (summary of `server_overhead.md`)", "", *server_summary(server)]
    return "\n".join(lines) + "\n"


def cuda_section(cuda: dict[str, Any]) -> list[str]:
    """The CUDA rows, or why there are none."""
    if not cuda["rows"]:
        return [
            "Not measured on this machine: "
            + "; ".join(cuda["skipped"])
            + ". `benchmarks/gpu_check.sh` runs this harness on a GPU machine."
        ]
    rows = [f"| {n} | {r['medium_batch1']['p50_us'] / 1e3:.3f} ms | {r['batch128_prompts_per_s']:.0f} |" for n, r in cuda["rows"].items()]
    return ["| backend | batch-1 medium p50 | batch-128 prompts/s |", "| --- | --- | --- |", *rows]


def server_summary(server: dict[str, Any]) -> list[str]:
    """One bullet per section and server target of the server report: added p50/p99 and requests/s."""
    from server_overhead import section_label

    lines = []
    for key, section in server["concurrency"].items():
        for name in ("server chat (proxied)", "server /v1/route"):
            if name not in section["added"]:  # /v1/route is left out where the upstream answers late
                continue
            row, extra = section["rows"][name], section["added"][name]
            lines.append(
                f"* {section_label(key)}, {name}: added p50 {extra['added_p50_us'] / 1e3:.2f} ms, "
                f"p99 {extra['added_p99_us'] / 1e3:.2f} ms, {row['requests_per_s']:.0f} requests/s"
            )
    return lines


def oversubscribed(document: dict[str, Any]) -> str:
    """A warning when the machine had more runnable work than cores: multi-thread figures then mislead."""
    cores = document["machine"]["cores"] or 1
    load = max(document["load_average_before"][0], document.get("load_average_after", [0])[0])
    if load <= cores:
        return ""
    return (
        f" **The machine was oversubscribed (load {load:.1f} on {cores} cores): figures at more than one "
        "thread are unreliable, PyTorch's OpenMP threads above all (they spin-wait for each other), so "
        "the speedups at more than 1 thread overstate int8's gain; the 1-thread column is the fair one.**"
    )


def render(out: Path) -> None:
    """Rewrite latency.{md,txt,png} from the latency.json (and server_overhead.json) already in ``out``."""
    document = json.loads((out / "latency.json").read_text())
    server_file = out / "server_overhead.json"
    server = json.loads(server_file.read_text()) if server_file.is_file() else None
    plot(document, out / "latency.png")
    (out / "latency.txt").write_text(table(document) + "\n")
    (out / "latency.md").write_text(markdown(document, server))
    if server:
        import server_overhead

        (out / "server_overhead.md").write_text(server_overhead.markdown(server))


def plot(document: dict[str, Any], path: Path) -> None:
    """Left: batch-1 p50 per backend and prompt length (log axis); right: throughput vs batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(15, 5.5))
    bars = [
        (name, threads)
        for threads in document["latency_by_threads"]
        for name in MAIN_BACKENDS
        if name in document["latency_by_threads"][threads] and (name != "static router" or threads == "1")
    ]
    x = np.arange(len(LENGTHS))
    width = 0.85 / len(bars)
    # One colour per backend, hatched at the larger thread count: no two bars share a legend entry's look.
    colours = {name: plt.get_cmap("tab10")(index % 10) for index, name in enumerate(MAIN_BACKENDS)}
    for index, (name, threads) in enumerate(bars):
        values = [document["latency_by_threads"][threads][name][label]["p50_us"] / 1000 for label in LENGTHS]
        hatch = "//" if threads != "1" else None
        left.bar(x + index * width, values, width, label=f"{name}, {threads} thr", color=colours[name], hatch=hatch, edgecolor="white")
    left.set_xticks(x + 0.425 - width / 2, [f"{k} ({document['prompt_tokens'][k]} tok)" for k in LENGTHS])
    left.set_ylabel("batch-1 p50 latency (ms, log)")
    left.set_yscale("log")
    left.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    for name, values in document["throughput_prompts_per_s"].items():
        right.plot(BATCHES, [values[str(b)] for b in BATCHES], marker="o", label=name, color=colours.get(name))
    right.set_xscale("log", base=2)
    right.set_yscale("log")
    right.set_xlabel("batch size (medium prompts)")
    right.set_ylabel(f"prompts / s, {document['throughput_threads']} threads (log)")
    right.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    machine = document["machine"]
    figure.suptitle(
        f"{machine['cpu']}, {machine['cores']} cores, flags {' '.join(machine['cpu_flags'])}; "
        f"load {document['load_average_before'][0]:.1f}",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


def main() -> None:
    """Command line: measure, write latency.{md,json,txt,png} (and server_overhead.{md,json}), print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None, help="RouteLLM BERT checkpoint folder")
    parser.add_argument("--bundle", default="bert-minilm-gpt4-mixtral", help="bundle for the cold-start measurement")
    parser.add_argument(
        "--static-bundle", default=None, help="static-tier router to time (default: the shipped default router, models/DEFAULT)"
    )
    parser.add_argument(
        "--static-only", action="store_true", help="only the static tier's breakdown (no torch needed); prints it, writes nothing"
    )
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count(), help="the larger thread count; 1 thread is always measured too, interleaved"
    )
    parser.add_argument("--repeats", type=int, default=200, help="batch-1 samples per backend, length and thread count")
    parser.add_argument("--throughput-seconds", type=float, default=3.0)
    parser.add_argument(
        "--server",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also run benchmarks/server_overhead.py (default: yes, except with --tiny)",
    )
    parser.add_argument("--server-rounds", type=int, default=8)
    parser.add_argument("--tiny", action="store_true", help="a seconds-long smoke run")
    parser.add_argument("--render", action="store_true", help="only rewrite the md/txt/png from the JSON in --out")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if args.render:
        render(args.out)
        return
    if args.tiny:
        args.repeats, args.throughput_seconds = 5, 0.05
    if args.static_bundle is None:
        args.static_bundle = default_static_bundle()
    if args.static_only:
        section = static_tier(args.static_bundle, max(args.repeats * 25, 100))
        print(json.dumps({"machine": machine(), "static_tier": section}, indent=2))
        print(static_table(section))
        return
    document = run(args.checkpoint, args.threads, args.repeats, args.throughput_seconds, args.bundle, args.tiny, args.static_bundle)
    document["peak_rss_mb_harness"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    args.out.mkdir(parents=True, exist_ok=True)
    server = None
    if args.server or (args.server is None and not args.tiny):
        import server_overhead

        server = server_overhead.run(
            2 if args.tiny else args.server_rounds, 20 if args.tiny else 200, variants=not args.tiny, profile_seconds=0 if args.tiny else 5
        )
        (args.out / "server_overhead.json").write_text(json.dumps(server, indent=2) + "\n")
        (args.out / "server_overhead.md").write_text(server_overhead.markdown(server))
    (args.out / "latency.json").write_text(json.dumps(document, indent=2) + "\n")
    plot(document, args.out / "latency.png")
    text = table(document)
    (args.out / "latency.txt").write_text(text + "\n")
    (args.out / "latency.md").write_text(markdown(document, server))
    print(text)


if __name__ == "__main__":
    main()
