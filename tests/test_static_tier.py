"""The static tier: distilled token embeddings + MF head, scored by the runtime with numpy only."""

from __future__ import annotations

import numpy as np
import pytest

from checkpoints import make_mf_checkpoint
from edgeroute.export import CheckpointError, ExportOptions, export_mf
from edgeroute.export.checkpoints import read_mf_checkpoint
from edgeroute.export.static import save_static, static_embedder
from edgeroute.runtime import PrecisionUnavailableError, Router, read_manifest


@pytest.fixture(scope="module")
def static_bundle(tmp_path_factory, encoder_dir):
    folder = tmp_path_factory.mktemp("static")
    checkpoint = make_mf_checkpoint(folder / "ckpt", text_dim=16)
    save_static(encoder_dir, checkpoint, dims=16)
    export_mf(checkpoint, ExportOptions(out=folder / "bundle"), embedder="static")
    return checkpoint, folder / "bundle"


def test_static_table_shape_and_embedding(static_bundle):
    checkpoint, _ = static_bundle
    embed = static_embedder(checkpoint)
    assert embed.table.shape == (30522, 16)
    vectors = embed(["hello world", "a much longer prompt about integrals"])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_static_router_matches_routellm_formula(static_bundle):
    checkpoint, bundle = static_bundle
    router = Router.load(bundle)
    prompts = ["hi", "Prove that the square root of two is irrational.", "x " * 400]
    embeddings = static_embedder(checkpoint)(prompts)
    expected = read_mf_checkpoint(checkpoint).reference_win_rate(embeddings, "gpt-4-1106-preview", "mixtral-8x7b-instruct-v0.1")
    np.testing.assert_allclose(router.strong_win_rates(prompts), expected, atol=1e-3)  # float16 table
    data = read_manifest(bundle).data
    assert data["embedder"]["kind"] == "static" and data["embedder"]["storage"] == "float16"
    assert data["parity"]["precisions"]["static"]["max_abs_diff"] < 1e-3


def test_static_router_has_no_precision_choice(static_bundle):
    with pytest.raises(PrecisionUnavailableError, match="has no ONNX graph"):
        Router.load(static_bundle[1], precision="int8")


def test_static_export_needs_the_table(tmp_path):
    checkpoint = make_mf_checkpoint(tmp_path / "ckpt", text_dim=16)
    with pytest.raises(CheckpointError, match="train with `edgeroute train mf --encoder static`"):
        export_mf(checkpoint, ExportOptions(out=tmp_path / "bundle"), embedder="static")


def test_static_router_golden_scores_verify(static_bundle):
    from edgeroute.runtime.scoring.golden import check_golden

    report = check_golden(Router.load(static_bundle[1], verify=True))
    assert report["checked"] and report["precision"] == "static" and report["max_drift"] <= 1e-6
