"""Export of RouteLLM-format checkpoints: parity with PyTorch, manifest contents, checkpoint errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from checkpoints import make_mf_checkpoint
from edgeroute.export import CheckpointError, ExportOptions, ExportParityError, export_bert, export_mf
from edgeroute.export.checkpoints import ROUTELLM_ARENA_MODELS, read_mf_checkpoint
from edgeroute.runtime import Router, read_manifest


def test_bert_bundle_manifest_is_self_describing(bert_bundle):
    data = read_manifest(bert_bundle).data
    assert data["kind"] == "bert" and data["schema_version"] == 1
    assert set(data["classifier"]["graphs"]) == {"fp32", "int8"}
    assert data["classifier"]["win_rate"] == {"kind": "softmax_complement", "labels": [1, 2], "formula": "1 - sum(softmax(logits)[labels])"}
    assert data["tokenizer"]["max_length"] == 128  # the tiny model's position limit
    assert data["quantization"]["int8"]["per_channel"] is True
    assert data["optimization"]["onnxruntime_fusions"]["Attention"] == 2
    # Add + LayerNormalization stay apart: onnxruntime's CPU SkipLayerNormalization kernel is the slower one.
    assert "SkipLayerNormalization" not in data["optimization"]["onnxruntime_fusions"]
    assert {"torch", "onnxruntime", "transformers", "edgeroute"} <= set(data["exporter"])
    for entry in data["files"].values():
        assert len(entry["sha256"]) == 64 and entry["bytes"] > 0


def test_bert_parity_figures_recorded_and_within_tolerance(bert_bundle):
    parity = read_manifest(bert_bundle).data["parity"]
    assert parity["n_prompts"] >= 32
    fp32, int8 = parity["precisions"]["fp32"], parity["precisions"]["int8"]
    assert fp32["max_abs_diff"] < 1e-4
    assert int8["max_abs_diff"] <= int8["tolerance"] == 0.05
    assert set(int8["agreement"]) == {str(t / 10) for t in range(1, 10)}


def test_exported_win_rates_match_pytorch(bert_checkpoint, bert_bundle):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    prompts = ["What is 2 + 2?", "Prove Fermat's little theorem.", "hello"]
    tokenizer = AutoTokenizer.from_pretrained(str(bert_checkpoint))
    model = AutoModelForSequenceClassification.from_pretrained(str(bert_checkpoint)).eval()
    with torch.no_grad():
        probabilities = torch.softmax(model(**tokenizer(prompts, padding=True, return_tensors="pt")).logits, -1)
    expected = 1 - (probabilities[:, 1] + probabilities[:, 2]).numpy()
    got = Router.load(bert_bundle, precision="fp32").strong_win_rates(prompts)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_mf_fold_equals_routellm_formula(mf_checkpoint):
    checkpoint = read_mf_checkpoint(mf_checkpoint)
    embeddings = np.random.default_rng(0).standard_normal((20, checkpoint.text_dim))
    folded = checkpoint.folded()
    strong, weak = "gpt-4-1106-preview", "mixtral-8x7b-instruct-v0.1"
    difference = folded[checkpoint.model_names.index(strong)] - folded[checkpoint.model_names.index(weak)]
    np.testing.assert_allclose(
        1 / (1 + np.exp(-(embeddings @ difference))), checkpoint.reference_win_rate(embeddings, strong, weak), atol=1e-5
    )


def test_mf_bundle_uses_routellm_names_and_default_pair(mf_bundle):
    data = read_manifest(mf_bundle).data
    assert data["head"]["model_names"] == ROUTELLM_ARENA_MODELS
    assert (data["head"]["default_strong"], data["head"]["default_weak"]) == ("gpt-4-1106-preview", "mixtral-8x7b-instruct-v0.1")
    assert data["parity"]["folded_head"]["max_abs_diff"] < 1e-5
    assert data["parity"]["precisions"]["fp32"]["max_abs_diff"] < 1e-4
    assert data["embedder"]["kind"] == "onnx" and data["embedder"]["output"] == "sentence_embedding"


def test_mf_torch_state_dict_without_projection(tmp_path, encoder_dir):
    checkpoint = make_mf_checkpoint(tmp_path / "ckpt", dim=32, use_proj=False, torch_format=True, num_models=3)
    (checkpoint / "model_ids.json").write_text(json.dumps({"big": 0, "small": 1, "mid": 2}))
    manifest = export_mf(checkpoint, ExportOptions(out=tmp_path / "bundle", precisions=("fp32",)), str(encoder_dir))
    router = Router.load(manifest.parent, strong_model="big", weak_model="mid")
    assert (router.strong_model, router.weak_model) == ("big", "mid")
    assert 0.0 <= router.strong_win_rate("hi") <= 1.0


def test_bert_checkpoint_needs_three_labels(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=100, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8, num_labels=2)
    BertForSequenceClassification(config).save_pretrained(str(tmp_path / "ckpt"))
    with pytest.raises(CheckpointError, match="has 3 labels .* this checkpoint has 2"):
        export_bert(tmp_path / "ckpt", ExportOptions(out=tmp_path / "bundle"))
    assert not (tmp_path / "bundle").exists()


def test_mf_checkpoint_errors_name_the_problem(tmp_path):
    with pytest.raises(CheckpointError, match="config.json: missing"):
        read_mf_checkpoint(tmp_path)
    checkpoint = make_mf_checkpoint(tmp_path / "ckpt", num_models=5)
    with pytest.raises(CheckpointError, match="5 model rows but 64 model names"):
        read_mf_checkpoint(checkpoint)


def test_mf_embedder_dimension_must_match(tmp_path, encoder_dir):
    checkpoint = make_mf_checkpoint(tmp_path / "ckpt", text_dim=48)
    with pytest.raises(CheckpointError, match="text_dim is 48"):
        export_mf(checkpoint, ExportOptions(out=tmp_path / "bundle"), str(encoder_dir))
    assert not any(tmp_path.glob(".bundle*"))


def test_parity_failure_is_loud_and_writes_nothing(tmp_path, bert_checkpoint):
    options = ExportOptions(out=tmp_path / "bundle", precisions=("int8",), int8_tolerance=0.0)
    with pytest.raises(ExportParityError, match="int8 graph: max"):
        export_bert(bert_checkpoint, options)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(tmp_path, bert_checkpoint):
    (tmp_path / "bundle").mkdir()
    with pytest.raises(CheckpointError, match="already exists; pass --overwrite"):
        export_bert(bert_checkpoint, ExportOptions(out=tmp_path / "bundle"))


def test_fp16_graph_exported_with_parity_record(tmp_path, bert_checkpoint):
    manifest = export_bert(bert_checkpoint, ExportOptions(out=tmp_path / "bundle", precisions=("fp16",)))
    figures = read_manifest(manifest.parent).data["parity"]["precisions"]["fp16"]
    # On a CPU-only machine the fp16 graph may not be runnable; then the record says so.
    assert figures["verified"] is False or figures["max_abs_diff"] <= 2e-2


def test_cpu_sessions_keep_add_and_layer_norm_apart(tmp_path, monkeypatch):
    """The runtime's CPU session does not re-fuse what export left apart (onnxruntime would, at load)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from edgeroute.runtime.scoring.encoders import make_session

    hidden = 8
    weights = [numpy_helper.from_array(np.full(hidden, value, dtype=np.float32), name) for name, value in (("g", 1.0), ("b", 0.0))]
    nodes = [helper.make_node("Add", ["x", "skip"], ["sum"]), helper.make_node("LayerNormalization", ["sum", "g", "b"], ["y"], axis=-1)]
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 4, hidden]) for name in ("x", "skip")]
    graph = helper.make_graph(nodes, "residual", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, hidden])], weights)
    path = tmp_path / "residual.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    seen = {}
    original = ort.InferenceSession

    def recording(*args, **kwargs):
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", recording)
    session = make_session(path, "cpu", 1)
    assert seen["disabled_optimizers"] == ["SkipLayerNormFusion"]
    x = np.random.default_rng(0).standard_normal((1, 4, hidden)).astype(np.float32)
    (y,) = session.run(None, {"x": x, "skip": x})
    centered = 2 * x - (2 * x).mean(axis=-1, keepdims=True)
    np.testing.assert_allclose(y, centered / np.sqrt((centered**2).mean(axis=-1, keepdims=True) + 1e-5), atol=1e-5)
    # onnxruntime ignores unknown optimizer names: the name must really stop the fusion (a control session fuses).
    monkeypatch.undo()
    fused_ops = {}
    for label, disabled in (("control", []), ("runtime", seen["disabled_optimizers"])):
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(tmp_path / f"{label}.onnx")
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)
        fused_ops[label] = {node.op_type for node in onnx.load(str(tmp_path / f"{label}.onnx")).graph.node}
    assert "SkipLayerNormalization" in fused_ops["control"]
    assert "SkipLayerNormalization" not in fused_ops["runtime"] and "LayerNormalization" in fused_ops["runtime"]


def test_selective_int8_keeps_the_most_sensitive_nodes_in_fp32_until_decisions_agree(tmp_path, monkeypatch):
    from edgeroute.export import selective

    # Three quantizable nodes; int8 on "b" moves win rates a lot, on "c" a little, on "a" not at all.
    noise = {"a": 0.0, "b": 0.2, "c": 0.004}
    monkeypatch.setattr(selective, "quantizable_nodes", lambda graph: list(noise))

    def fake_quantize(source, target, per_channel, reduce_range, keep_fp32=()):
        target.write_text(json.dumps(list(keep_fp32)))
        return {"method": "dynamic", **({"fp32_nodes": list(keep_fp32)} if keep_fp32 else {})}

    monkeypatch.setattr(selective, "quantize_graph", fake_quantize)
    reference = np.linspace(0.0, 1.0, 300)
    signs = np.where(np.arange(300) % 2, 1.0, -1.0)

    def win_rates(graph):
        kept = json.loads(graph.read_text())
        return reference + signs * sum(error for node, error in noise.items() if node not in kept)

    fused = tmp_path / "fused.onnx"
    fused.write_text("")
    settings = selective.selective_int8(fused, tmp_path / "int8.onnx", True, True, win_rates, reference, floor=0.97)
    selection = settings["selection"]
    assert selection["all_int8_min_share_agreement"] < 0.97 and settings["fp32_nodes"] == ["b"]
    assert [step["fp32_node"] for step in selection["steps"]] == ["b"] and selection["steps"][0]["min_share_agreement"] >= 0.97
    assert selection["fp32_share"] == pytest.approx(1 / 3)
    # When full int8 already agrees, nothing stays in fp32 and no sensitivity is measured.
    calm = selective.selective_int8(fused, tmp_path / "int8.onnx", True, True, lambda graph: reference, reference, floor=0.97)
    assert "fp32_nodes" not in calm and calm["selection"]["steps"] == []
    # With the parity tolerance too, the search goes on until every win rate is within it: "c" moves them by 0.004.
    strict = selective.selective_int8(fused, tmp_path / "int8.onnx", True, True, win_rates, reference, floor=0.97, tolerance=0.001)
    assert strict["fp32_nodes"] == ["b", "c"] and strict["selection"]["steps"][-1]["max_abs_diff"] <= 0.001
