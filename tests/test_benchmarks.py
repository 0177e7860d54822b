"""The latency harness runs end to end on a tiny setting (speed itself is never asserted here)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_latency_harness_on_a_tiny_model(bert_checkpoint, bert_bundle, tmp_path):
    latency = _load("latency")
    document = latency.run(bert_checkpoint, threads=1, repeats=3, throughput_seconds=0.01, bundle=str(bert_bundle),
                           tiny=True, static_bundle="static-distilled-gpt4-mixtral")
    backends = {"pytorch eager fp32", "onnx fp32", "onnx fused", "onnx int8", "static router"}
    assert document["static_vs_int8_medium_p50"] > 0
    assert backends <= set(document["latency_batch1"])
    for values in document["latency_batch1"].values():
        assert set(values) == {"short", "medium", "long"}
        assert 0 < values["medium"]["p50_us"] <= values["medium"]["p99_us"]
    assert set(document["throughput_prompts_per_s"]["onnx int8"]) == {"1", "8", "32", "128"}
    assert document["cold_start"]["heavy_modules"] == []  # the runtime process never imports torch
    assert document["cold_start"]["peak_rss_mb"] > 0 and document["mf_head"]["p50_us"] > 0
    assert document["installed_size_mb"]["runtime_total"] > 0
    assert 0 < document["tokenization"]["medium"]["share"] < 1.5
    assert "pytorch eager fp32" in latency.table(document)
    latency.plot(document, tmp_path / "latency.png")
    assert (tmp_path / "latency.png").read_bytes()[:4] == b"\x89PNG"
    json.dumps(document)  # the document is plain JSON
