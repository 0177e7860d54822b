"""The transformer tier's probe recipe: exact head layout, fitting, export with parity, cross-validation."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edgeroute.export import ExportOptions
from edgeroute.export.exporter import export_probe
from edgeroute.export.training.crossval import probe_embeddings, probe_scores
from edgeroute.export.checkpoints import CheckpointError
from edgeroute.export.training.probe import ProbeRecipe, as_scored, fit_probe, fit_ridge, linear_head, platt, reference_win_rates
from edgeroute.runtime import Router
from edgeroute.runtime.cli import main
from edgeroute.runtime.evaluation.data import load_protocol_data, protocol_splits
from edgeroute.runtime.scoring.heads import MLPHead
from edgeroute.runtime.scoring.router import CHARS_PER_TOKEN_BOUND
from layout import make_layout


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    return make_layout(tmp_path_factory.mktemp("evals"))


@pytest.fixture(scope="module")
def probe(tmp_path_factory, layout, encoder_dir):
    """``edgeroute train probe`` then ``edgeroute export probe`` on the tiny encoder, through the CLI."""
    folder = tmp_path_factory.mktemp("probe")
    assert (
        main(["train", "probe", "--data", str(layout), "--out", str(folder / "ckpt"), "--encoder", str(encoder_dir), "--layers", "1"]) == 0
    )
    # The tiny random encoder's int8 graph is not what these tests judge: its parity floors are lowered.
    assert (
        main(
            [
                "export",
                "probe",
                "--checkpoint",
                str(folder / "ckpt"),
                "--out",
                str(folder / "bundle"),
                "--int8-tolerance",
                "0.5",
                "--int8-min-agreement",
                "0",
            ]
        )
        == 0
    )
    return folder / "ckpt", folder / "bundle"


def test_linear_head_is_the_linear_score_exactly():
    rng = np.random.default_rng(0)
    weights, bias = rng.standard_normal(7), 0.3
    embeddings, lengths = rng.standard_normal((50, 7)), rng.random(50)
    hidden, output = linear_head(weights, bias)
    logits = MLPHead(hidden, output).feature_logits(embeddings, lengths)
    np.testing.assert_allclose(logits, embeddings @ weights + bias, rtol=1e-5, atol=1e-5)


def test_ridge_recovers_a_linear_target_and_shrinks_with_its_penalty():
    rng = np.random.default_rng(1)
    features = rng.standard_normal((400, 5)) * [1.0, 2.0, 0.5, 1.0, 3.0] + 4.0
    target = features @ np.array([1.0, -0.5, 2.0, 0.0, 0.2]) + 1.0
    weights, bias = fit_ridge(features, target, 1e-8)
    np.testing.assert_allclose(features @ weights + bias, target, atol=1e-5)
    shrunk, _ = fit_ridge(features, target, 10.0)
    assert np.linalg.norm(shrunk) < 0.2 * np.linalg.norm(weights)


def test_platt_scaling_finds_the_generating_sigmoid():
    rng = np.random.default_rng(2)
    scores = rng.standard_normal(20000)
    positive = rng.random(20000) < 1.0 / (1.0 + np.exp(-(1.5 * scores - 0.7)))
    a, b = platt(scores, positive)
    assert a == pytest.approx(1.5, abs=0.1) and b == pytest.approx(-0.7, abs=0.1)


def test_fitted_probe_is_calibrated_to_the_strong_win_share():
    rng = np.random.default_rng(3)
    embeddings = rng.standard_normal((600, 8)).astype(np.float32)
    strong = (rng.random(600) < 0.8).astype(float)
    weak = (rng.random(600) < 1.0 / (1.0 + np.exp(-2 * embeddings[:, 0]))).astype(float)
    prompts = ["x" * int(n) for n in rng.integers(1, 400, 600)]
    hidden, output = fit_probe(embeddings, prompts, strong, weak, ProbeRecipe(ridge=0.01, length_weight=0.5))
    assert hidden.shape == (3, 8 + 2) and output.shape == (1, 4)
    rates = MLPHead(hidden, output).win_rates(embeddings, prompts)
    # Platt scaling: the mean win rate equals the share of rows the strong model wins.
    assert rates.mean() == pytest.approx(float(np.mean(strong > weak)), abs=1e-3)
    assert np.corrcoef(rates, -embeddings[:, 0])[0, 1] > 0.3


def test_probe_bundle_passes_parity_and_truncates_where_training_did(probe):
    checkpoint, bundle = probe
    manifest = json.loads((bundle / "manifest.json").read_text())
    recipe = json.loads((checkpoint / "training.json").read_text())["recipe"]
    assert manifest["tokenizer"]["max_length"] == recipe["max_length"] == ProbeRecipe().max_length
    assert manifest["embedder"]["kind"] == "onnx" and manifest["head"]["kind"] == "mlp"
    assert manifest["source"]["checkpoint"] == "ckpt" and str(checkpoint.parent) not in json.dumps(manifest)
    router = Router.load(bundle, precision="fp32", verify=True)
    decision = router.route("Prove that there are infinitely many primes.", threshold=0.5)
    assert decision.tier in ("strong", "weak") and 0.0 <= decision.win_rate <= 1.0


def test_probe_reference_and_router_agree_past_the_cut(probe):
    checkpoint, bundle = probe
    router = Router.load(bundle, precision="fp32")
    limit = ProbeRecipe().max_length * CHARS_PER_TOKEN_BOUND
    prompts = ["hi", "word " * (limit // 2), "word " * limit + "tail"]  # short, just past the cut, far past it
    assert as_scored(prompts, ProbeRecipe().max_length)[2] == prompts[2][:limit]
    np.testing.assert_allclose(router.strong_win_rates(prompts), reference_win_rates(checkpoint, prompts), atol=1e-5)


def test_probe_parity_records_agreement_at_calibrated_shares(probe):
    int8 = json.loads((probe[1] / "manifest.json").read_text())["parity"]["precisions"]["int8"]
    assert set(int8["share_agreement"]) == {str(t / 10) for t in range(1, 10)}
    assert 0.0 <= int8["min_share_agreement"] <= 1.0 and -1.0 <= int8["rank_correlation"] <= 1.0


def test_export_probe_refuses_a_checkpoint_without_its_head(probe, tmp_path):
    checkpoint = tmp_path / "ckpt"
    shutil.copytree(probe[0], checkpoint)
    (checkpoint / "head_out.npy").unlink()
    with pytest.raises(CheckpointError) as caught:
        export_probe(checkpoint, ExportOptions(out=tmp_path / "bundle"))
    assert str(caught.value) == f"{checkpoint / 'head_out.npy'}: missing; write the checkpoint with `edgeroute train probe`"


def test_export_probe_refuses_another_max_length_than_training(probe, tmp_path):
    with pytest.raises(CheckpointError) as caught:
        export_probe(probe[0], ExportOptions(out=tmp_path / "bundle", max_length=64))
    assert str(caught.value) == (
        f"{probe[0]}: the probe was trained on 128-token prompts; --max-length 64 would serve other embeddings: omit it"
    )
    assert not (tmp_path / "bundle").exists()


def test_probe_split_scores_never_read_the_split_labels(layout, encoder_dir, tmp_path):
    data = load_protocol_data(layout)
    splits = {"fold0": protocol_splits(data)["fold0"]}
    recipe = ProbeRecipe(layers=1, max_length=16)
    embeddings = probe_embeddings(data, encoder_dir, recipe, tmp_path)
    before = probe_scores(embeddings, data, splits, recipe)["fold0"]
    test = splits["fold0"][1]
    data.strong_quality[test] = 1.0 - data.strong_quality[test]  # scramble only the held-out labels
    np.testing.assert_array_equal(probe_scores(embeddings, data, splits, recipe)["fold0"], before)


def test_probe_recipe_runs_per_split_with_cached_embeddings(layout, encoder_dir, tmp_path):
    data = load_protocol_data(layout)
    splits = {k: v for k, v in protocol_splits(data).items() if k in ("fold0", "gsm8k->mmlu")}
    recipe = ProbeRecipe(layers=1, max_length=16)
    embeddings = probe_embeddings(data, encoder_dir, recipe, tmp_path)
    assert embeddings.shape == (len(data), 32) and len(list(tmp_path.glob("probe-embeddings-*.npy"))) == 1
    np.testing.assert_array_equal(probe_embeddings(data, encoder_dir, recipe, tmp_path), embeddings)
    scores = probe_scores(embeddings, data, splits, recipe)
    assert set(scores) == set(splits)
    assert all(((0 < s) & (s < 1)).all() for s in scores.values())
