"""Issue 10, "export you can trust": RouteLLM parity on a few hundred prompts, batch-independent
int8, golden scores re-checked on the CPU at hand, model-name aliases, bad checkpoints refused."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from checkpoints import make_bert_checkpoint, make_mf_checkpoint
from edgeroute.export import CheckpointError, ExportOptions, ExportParityError, export_bert
from edgeroute.export.checkpoints import read_mf_checkpoint
from edgeroute.export.parity import GOLDEN_PROMPTS, PARITY_PROMPTS, parity_figures
from edgeroute.runtime import ParityDriftError, Router, UnknownModelError, read_manifest
from edgeroute.runtime.cli import main
from edgeroute.runtime.scoring.golden import check_golden

MIXED = [
    "hi",
    "Explain the difference between TCP and UDP in two sentences.",
    "word " * 400,
    "日本の首都はどこですか？",
    "Prove that there are infinitely many prime numbers.",
]


@pytest.fixture
def one_torch_thread():
    """Batch-1 PyTorch runs: extra intra-op threads only wait on each other on a busy CI machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------- 4. the bigger export check
def test_parity_prompts_are_hundreds_and_span_past_max_length(bert_bundle):
    assert len(PARITY_PROMPTS) >= 300 and len(set(PARITY_PROMPTS)) == len(PARITY_PROMPTS)
    parity = read_manifest(bert_bundle).data["parity"]
    assert parity["n_prompts"] == len(PARITY_PROMPTS)
    assert parity["n_over_max_length"] >= 30  # long prompts exercise truncation
    for figures in parity["precisions"].values():
        assert {"max_abs_diff", "p99_abs_diff", "mean_abs_diff", "agreement", "min_agreement"} <= set(figures)
        assert figures["finite"] is True and figures["p99_abs_diff"] <= figures["max_abs_diff"]


def _routellm_bert_win_rates(checkpoint, prompts):
    """RouteLLM's BERTRouter.calculate_strong_win_rate, as written upstream (one prompt per call)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
    model = AutoModelForSequenceClassification.from_pretrained(str(checkpoint), num_labels=3).eval()
    rates = []
    with torch.no_grad():
        for prompt in prompts:
            # RouteLLM passes truncation=True: the tokenizer's model_max_length, capped here at the
            # tiny model's 128 positions (the real model's limit, 512, equals its tokenizer's).
            inputs = tokenizer(prompt, truncation=True, max_length=128, padding=True, return_tensors="pt")
            probs = torch.softmax(model(**inputs).logits, dim=-1)[0].numpy()
            rates.append(1 - (probs[-2] + probs[-1]))
    return np.array(rates)


def test_bert_parity_with_routellm_formula_on_hundreds_of_prompts(bert_checkpoint, bert_bundle, one_torch_thread):
    expected = _routellm_bert_win_rates(bert_checkpoint, PARITY_PROMPTS)
    fp32 = Router.load(bert_bundle, precision="fp32").strong_win_rates(PARITY_PROMPTS)
    assert np.abs(fp32 - expected).max() < 1e-5
    int8 = Router.load(bert_bundle, precision="int8").strong_win_rates(PARITY_PROMPTS)
    figures = parity_figures(expected, int8)
    assert figures["max_abs_diff"] <= read_manifest(bert_bundle).data["parity"]["precisions"]["int8"]["tolerance"]


def test_mf_parity_with_routellm_formula_on_hundreds_of_prompts(mf_checkpoint, encoder_dir, mf_bundle, one_torch_thread):
    import torch
    from transformers import AutoModel, AutoTokenizer

    mf = read_mf_checkpoint(mf_checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(str(encoder_dir))
    encoder = AutoModel.from_pretrained(str(encoder_dir)).eval()
    # RouteLLM's MFModel: P (Embedding), text_proj and classifier (Linear, no bias).
    P = torch.nn.Embedding.from_pretrained(torch.from_numpy(mf.model_embeddings))
    text_proj = torch.nn.Linear(mf.text_dim, mf.projection.shape[0], bias=False)
    classifier = torch.nn.Linear(mf.projection.shape[0], 1, bias=False)
    text_proj.weight.data = torch.from_numpy(mf.projection)
    classifier.weight.data = torch.from_numpy(mf.classifier[None, :])
    ids = torch.tensor([mf.model_names.index("gpt-4-1106-preview"), mf.model_names.index("mixtral-8x7b-instruct-v0.1")])
    expected = []
    with torch.no_grad():
        for prompt in PARITY_PROMPTS:
            batch = tokenizer(prompt, truncation=True, max_length=128, return_tensors="pt")
            hidden = encoder(**batch).last_hidden_state[0]
            embedding = torch.nn.functional.normalize(hidden.mean(dim=0), dim=0)
            model_embed = torch.nn.functional.normalize(P(ids), p=2, dim=1)
            logits = classifier(model_embed * text_proj(embedding)).squeeze()
            expected.append(torch.sigmoid(logits[0] - logits[1]).item())
    got = Router.load(mf_bundle, precision="fp32").strong_win_rates(PARITY_PROMPTS)
    assert np.abs(got - np.array(expected)).max() < 1e-5


def test_non_finite_win_rates_never_count_as_parity(tmp_path):
    from edgeroute.export.exporter import _check_finite_parity

    figures = parity_figures(np.array([0.2, 0.5]), np.array([0.2, np.nan]))
    assert figures["finite"] is False and figures["max_abs_diff"] == np.inf
    with pytest.raises(ExportParityError) as caught:
        _check_finite_parity("int8", figures, ExportOptions(out=tmp_path / "bundle"))
    assert str(caught.value) == (
        f"int8 graph: some win rates are NaN or infinite on the {len(PARITY_PROMPTS)} parity prompts (a NaN never "
        f"counts as verified); nothing was written to {tmp_path / 'bundle'}. Check the checkpoint's weights and re-export"
    )


# ----------------------------------------------------------------- 1. truncation length
def test_bert_truncates_like_routellm_not_like_sentence_transformers(tmp_path):
    checkpoint = make_bert_checkpoint(tmp_path / "ckpt")
    (checkpoint / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64}))
    config = json.loads((checkpoint / "tokenizer_config.json").read_text())
    config["model_max_length"] = int(1e30)  # a tokenizer without a limit
    (checkpoint / "tokenizer_config.json").write_text(json.dumps(config))
    manifest = export_bert(checkpoint, ExportOptions(out=tmp_path / "bundle", precisions=("fp32",)))
    # Neither sentence_bert_config's 64 nor 1e30: capped at the model's 128 position embeddings.
    assert read_manifest(manifest.parent).max_length == 128


def test_bert_tokenizer_limit_below_positions_is_used(tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from edgeroute.export.exporter import _classifier_max_length

    checkpoint = make_bert_checkpoint(tmp_path / "ckpt")
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint), model_max_length=96)
    model = AutoModelForSequenceClassification.from_pretrained(str(checkpoint))
    assert _classifier_max_length(model, tokenizer, None) == 96
    assert _classifier_max_length(model, tokenizer, 40) == 40


# ----------------------------------------------------------------- 2. batch-independent int8
@pytest.mark.parametrize("bundle_fixture,precision", [("bert_bundle", "int8"), ("mf_bundle", "int8"), ("bert_bundle", "fp32")])
def test_win_rate_does_not_depend_on_the_batch(bundle_fixture, precision, request):
    router = Router.load(request.getfixturevalue(bundle_fixture), precision=precision)
    prompts = MIXED + PARITY_PROMPTS[40:100:6]
    alone = np.array([router.strong_win_rate(prompt) for prompt in prompts])
    for batch in (prompts, prompts[::-1], [prompts[0]] * 3 + prompts):
        rates = router.strong_win_rates(batch)
        expected = np.array([alone[prompts.index(p)] for p in batch])
        assert np.abs(rates - expected).max() <= 1e-6
    assert np.abs(router.strong_win_rates(prompts, bucket_size=4) - alone).max() <= 1e-6
    settings = read_manifest(router.manifest.folder).data["quantization"]["int8"]
    assert settings["method"] == "dynamic" and settings["reduce_range"] is True
    assert settings["scoring"].startswith("one prompt per graph run")


def test_dynamic_int8_graph_itself_depends_on_the_batch(bert_bundle):
    """Why the runtime scores dynamic int8 one prompt per run: batched runs share activation scales."""
    encoder = Router.load(bert_bundle, precision="int8").encoder
    assert encoder.per_row is True
    batched = encoder.run_tokens(encoder.tokenize(MIXED))
    alone = np.concatenate([encoder.run_tokens(encoder.tokenize([p])) for p in MIXED])
    assert np.abs(batched - alone).max() > 1e-6
    assert Router.load(bert_bundle, precision="fp32").encoder.per_row is False


# ----------------------------------------------------------------- 3. golden scores
def test_golden_scores_recorded_and_verified(bert_bundle, capsys):
    golden = read_manifest(bert_bundle).data["golden"]
    assert golden["prompts"] == GOLDEN_PROMPTS and 16 <= len(GOLDEN_PROMPTS) <= 32
    assert set(golden["precisions"]) == {"fp32", "int8"} and len(golden["reference"]) == len(GOLDEN_PROMPTS)
    report = check_golden(Router.load(bert_bundle, verify=True))
    assert report["checked"] and report["precision"] == "int8" and report["max_drift"] <= 1e-6
    assert main(["info", str(bert_bundle), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "verify int8: ok, max drift" in out and "verify fp32: ok" in out and "p99" in out


def _drift(bundle, precision, delta):
    path = bundle / "manifest.json"
    data = json.loads(path.read_text())
    data["golden"]["precisions"][precision]["win_rates"][3] += delta
    path.write_text(json.dumps(data))


def test_golden_drift_is_a_typed_error(bundle_copy, capsys):
    _drift(bundle_copy, "int8", 0.25)
    with pytest.raises(ParityDriftError) as caught:
        Router.load(bundle_copy, precision="int8", verify=True)
    drift = float(str(caught.value).split("by up to ")[1].split(" ")[0])
    assert str(caught.value) == (
        f"{bundle_copy}: on this CPU the int8 win rates of the {len(GOLDEN_PROMPTS)} golden prompts in "
        f"manifest.json differ from those recorded at export by up to {drift:.3g} (tolerance 0.002); its "
        "kernels do not reproduce the export: load with precision='fp32' if the bundle has it, or re-export "
        "with `edgeroute export ... --reduce-range`"
    )
    assert 0.2 < drift < 0.3
    Router.load(bundle_copy, precision="fp32", verify=True)  # the fp32 record is intact
    assert main(["info", str(bundle_copy), "--verify"]) == 1
    assert "verify int8: DRIFTED" in capsys.readouterr().out


def test_nan_golden_score_never_verifies(bundle_copy):
    _drift(bundle_copy, "fp32", float("nan"))
    with pytest.raises(ParityDriftError, match="by up to inf"):
        Router.load(bundle_copy, precision="fp32", verify=True)


def test_malformed_golden_section_is_a_manifest_error(bundle_copy):
    from edgeroute.runtime import ManifestError

    path = bundle_copy / "manifest.json"
    data = json.loads(path.read_text())
    data["golden"]["precisions"]["int8"]["win_rates"] = [0.5]
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError) as caught:
        Router.load(bundle_copy, verify=True)
    assert str(caught.value) == (
        f"{path}: 'golden' must hold non-empty 'prompts', and per precision 'win_rates' of the same length and a "
        "'tolerance'; re-export the bundle with `edgeroute export`"
    )
    Router.load(bundle_copy)  # without verify=True the golden section is not read


def test_bundle_without_golden_scores_still_loads(bundle_copy, capsys):
    path = bundle_copy / "manifest.json"
    data = json.loads(path.read_text())
    del data["golden"]
    path.write_text(json.dumps(data))
    router = Router.load(bundle_copy, verify=True)
    assert check_golden(router) == {
        "precision": "int8",
        "checked": False,
        "reason": "no golden scores in the manifest (exported by an older edgeroute: re-export to add them)",
    }
    assert main(["info", str(bundle_copy), "--verify"]) == 0
    assert "verify int8: not checked" in capsys.readouterr().out


# ----------------------------------------------------------------- 5. name aliases
def test_mf_accepts_provider_ids_and_arena_names(mf_bundle, tmp_path):
    head = read_manifest(mf_bundle).data["head"]
    assert head["aliases"]["mistralai/Mixtral-8x7B-Instruct-v0.1"] == "mixtral-8x7b-instruct-v0.1"
    assert head["aliases"]["openai/gpt-4-1106-preview"] == "gpt-4-1106-preview"
    default = Router.load(mf_bundle, precision="fp32")
    for strong, weak in [
        ("openai/gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1"),
        ("GPT-4-1106-preview", "mixtral-8x7b-instruct-v0.1"),
    ]:
        router = Router.load(mf_bundle, precision="fp32", strong_model=strong, weak_model=weak)
        assert (router.strong_model, router.weak_model) == ("gpt-4-1106-preview", "mixtral-8x7b-instruct-v0.1")
        np.testing.assert_array_equal(router.strong_win_rates(MIXED), default.strong_win_rates(MIXED))
    # A bundle exported before alias tables: both spellings still work; unknown names still fail.
    old = tmp_path / "old"
    shutil.copytree(mf_bundle, old)
    data = json.loads((old / "manifest.json").read_text())
    del data["head"]["aliases"]
    (old / "manifest.json").write_text(json.dumps(data))
    assert Router.load(old, weak_model="mistralai/Mixtral-8x7B-Instruct-v0.1").weak_model == "mixtral-8x7b-instruct-v0.1"
    with pytest.raises(UnknownModelError, match="strong model 'mistralai/gpt-5' is not in"):
        Router.load(old, strong_model="mistralai/gpt-5")


def test_bert_accepts_either_spelling_of_its_own_pair(bundle_copy):
    from edgeroute.runtime import ConfigurationError

    path = bundle_copy / "manifest.json"
    data = json.loads(path.read_text())
    data["models"] = {"strong": "gpt-4-1106-preview", "weak": "mistralai/Mixtral-8x7B-Instruct-v0.1"}
    data["aliases"] = {"mixtral-8x7b-instruct-v0.1": "mistralai/Mixtral-8x7B-Instruct-v0.1"}
    path.write_text(json.dumps(data))
    router = Router.load(bundle_copy, strong_model="openai/gpt-4-1106-preview", weak_model="mixtral-8x7b-instruct-v0.1")
    assert router.weak_model == "mistralai/Mixtral-8x7B-Instruct-v0.1"
    with pytest.raises(ConfigurationError, match="choose the pair of an MF router"):
        Router.load(bundle_copy, strong_model="claude-2.1")


# ----------------------------------------------------------------- 6. bad checkpoints refused
def _save_bert(folder, mutate):
    import torch
    from transformers import BertForSequenceClassification

    model = BertForSequenceClassification.from_pretrained(str(folder))
    with torch.no_grad():
        mutate(model)
    model.save_pretrained(str(folder))


@pytest.fixture
def bert_ckpt(tmp_path, bert_checkpoint):
    return shutil.copytree(bert_checkpoint, tmp_path / "ckpt")


def test_bert_nan_weights_refused(bert_ckpt, tmp_path):
    _save_bert(bert_ckpt, lambda m: m.bert.encoder.layer[0].output.dense.weight.__setitem__((0, 0), float("nan")))
    with pytest.raises(CheckpointError) as caught:
        export_bert(bert_ckpt, ExportOptions(out=tmp_path / "bundle"))
    assert str(caught.value) == (
        f"{bert_ckpt}: weights bert.encoder.layer.0.output.dense.weight hold NaN or infinite values; the "
        "checkpoint is damaged or training diverged: export a checkpoint from before the divergence"
    )
    assert not (tmp_path / "bundle").exists()


def test_bert_non_finite_win_rates_refused(bert_ckpt, tmp_path):
    def huge(model):  # finite weights whose logits overflow: pooled outputs near 1, times 3e38, summed
        model.bert.pooler.dense.bias.fill_(10.0)
        model.classifier.weight.fill_(3e38)

    _save_bert(bert_ckpt, huge)
    with pytest.raises(ExportParityError) as caught:
        export_bert(bert_ckpt, ExportOptions(out=tmp_path / "bundle", precisions=("fp32",)))
    assert str(caught.value) == (
        f"the PyTorch reference gives NaN or infinite win rates; nothing was written to {tmp_path / 'bundle'}. "
        "The checkpoint's weights or config are broken: re-export a healthy checkpoint"
    )


def test_bert_without_classifier_head_refused(tmp_path):
    from transformers import BertModel

    from checkpoints import _save_tokenizer, _tiny_config

    folder = tmp_path / "ckpt"
    BertModel(_tiny_config()).save_pretrained(str(folder))
    _save_tokenizer(folder)
    data = json.loads((folder / "config.json").read_text())
    data["id2label"] = {"0": "a", "1": "b", "2": "c"}
    (folder / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError) as caught:
        export_bert(folder, ExportOptions(out=tmp_path / "bundle"))
    assert str(caught.value) == (
        f"{folder}: the weights lack classifier.bias, classifier.weight; transformers would initialize them "
        "at random: export the trained checkpoint, not its base model"
    )


def test_three_label_bert_without_label_config_loads_like_routellm(bert_ckpt, tmp_path):
    data = json.loads((bert_ckpt / "config.json").read_text())
    for key in ("id2label", "label2id", "num_labels"):
        data.pop(key, None)
    (bert_ckpt / "config.json").write_text(json.dumps(data))
    manifest = export_bert(bert_ckpt, ExportOptions(out=tmp_path / "bundle", precisions=("fp32",)))
    assert read_manifest(manifest.parent).data["parity"]["precisions"]["fp32"]["max_abs_diff"] < 1e-5


def test_bert_weights_not_matching_config_refused(bert_ckpt, tmp_path):
    data = json.loads((bert_ckpt / "config.json").read_text())
    data["intermediate_size"] = 48
    (bert_ckpt / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError) as caught:
        export_bert(bert_ckpt, ExportOptions(out=tmp_path / "bundle"))
    assert str(caught.value).startswith(f"{bert_ckpt}: the weights do not fit config.json (")
    assert str(caught.value).endswith("); use the config.json that was saved with these weights")


def test_bert_without_tokenizer_refused(bert_ckpt, tmp_path):
    for name in ("tokenizer.json", "vocab.txt"):
        (bert_ckpt / name).unlink()
    with pytest.raises(CheckpointError) as caught:
        export_bert(bert_ckpt, ExportOptions(out=tmp_path / "bundle"))
    assert str(caught.value) == (
        f"{bert_ckpt}: no tokenizer (tokenizer.json, vocab.txt, vocab.json, tokenizer.model, spiece.model are all "
        "missing); save the tokenizer next to the weights: "
        "AutoTokenizer.from_pretrained(BASE_MODEL).save_pretrained(CHECKPOINT)"
    )


def test_mf_config_not_json_or_dim_not_a_number(tmp_path):
    checkpoint = make_mf_checkpoint(tmp_path / "ckpt")
    config_path = checkpoint / "config.json"
    good = json.loads(config_path.read_text())
    config_path.write_text("{dim: 16")
    with pytest.raises(CheckpointError) as caught:
        read_mf_checkpoint(checkpoint)
    assert str(caught.value) == (
        f"{config_path}: not valid JSON (Expecting property name enclosed in double quotes: line 1 column 2 "
        "(char 1)); restore the checkpoint's config.json"
    )
    config_path.write_text(json.dumps({**good, "dim": "sixteen"}))
    with pytest.raises(CheckpointError) as caught:
        read_mf_checkpoint(checkpoint)
    assert str(caught.value) == f"{config_path}: 'dim' must be a positive integer, got 'sixteen'"
    config_path.write_text(json.dumps(good))
    (checkpoint / "model_ids.json").write_text("not json")
    with pytest.raises(CheckpointError, match=r"model_ids.json: not a readable JSON file \(Expecting value"):
        read_mf_checkpoint(checkpoint)


def test_mf_truncated_safetensors_refused(tmp_path):
    checkpoint = make_mf_checkpoint(tmp_path / "ckpt")
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(CheckpointError) as caught:
        read_mf_checkpoint(checkpoint)
    assert str(caught.value).startswith(f"{weights}: not a readable safetensors file (")
    assert str(caught.value).endswith("the download or copy is probably truncated: fetch the checkpoint again")


class Opaque:
    """A pickled object that is not a state dict."""


def test_mf_torch_file_with_non_tensors_refused(tmp_path):
    import torch

    checkpoint = make_mf_checkpoint(tmp_path / "ckpt", torch_format=True)
    path = checkpoint / "pytorch_model.bin"
    torch.save({"P.weight": "not a tensor", "classifier.0.weight": torch.ones(1, 16)}, path)
    with pytest.raises(CheckpointError) as caught:
        read_mf_checkpoint(checkpoint)
    assert str(caught.value) == (
        f"{path}: entries P.weight are not tensors; save the weights with torch.save(model.state_dict(), ...) or as model.safetensors"
    )
    torch.save(Opaque(), path)  # an arbitrary object: weights_only refuses to unpickle it
    with pytest.raises(CheckpointError, match=r"pytorch_model.bin: not a torch state dict of tensors \("):
        read_mf_checkpoint(checkpoint)


def test_mf_nan_weights_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    checkpoint = make_mf_checkpoint(tmp_path / "ckpt")
    weights = load_file(str(checkpoint / "model.safetensors"))
    weights["text_proj.0.weight"][2, 3] = float("inf")
    save_file(weights, str(checkpoint / "model.safetensors"))
    with pytest.raises(CheckpointError) as caught:
        read_mf_checkpoint(checkpoint)
    assert str(caught.value) == (
        f"{checkpoint}: weights text_proj hold NaN or infinite values; the checkpoint is damaged or training "
        "diverged: export a checkpoint from before the divergence"
    )


def test_int8_export_refuses_decisions_that_move_at_calibrated_shares(bert_checkpoint, tmp_path):
    options = ExportOptions(out=tmp_path / "bundle", precisions=("int8",), int8_min_share_agreement=1.01)
    with pytest.raises(ExportParityError) as caught:
        export_bert(bert_checkpoint, options)
    assert "at some calibrated share (floor 101%)" in str(caught.value) and not (tmp_path / "bundle").exists()
