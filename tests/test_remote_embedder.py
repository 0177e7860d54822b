"""MF routers with RouteLLM's remote embedder: an OpenAI-compatible /embeddings endpoint on loopback."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("starlette")

from checkpoints import make_mf_checkpoint  # noqa: E402
from edgeroute.export import ExportOptions, export_mf  # noqa: E402
from edgeroute.export.checkpoints import read_mf_checkpoint  # noqa: E402
from edgeroute.runtime import ConfigurationError, EmbeddingServiceError, PrecisionUnavailableError, Router  # noqa: E402
from servers import FakeUpstream, free_port, serving  # noqa: E402


@pytest.fixture(scope="module")
def remote_bundle(tmp_path_factory):
    folder = tmp_path_factory.mktemp("remote")
    checkpoint = make_mf_checkpoint(folder / "ckpt", text_dim=32)
    export_mf(checkpoint, ExportOptions(out=folder / "bundle"), embedder="openai:text-embedding-3-small")
    return checkpoint, folder / "bundle"


def test_remote_embedder_scores_like_routellm(remote_bundle, monkeypatch):
    checkpoint, bundle = remote_bundle
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    fake = FakeUpstream()
    with serving(fake.app) as url:
        router = Router.load(bundle, embeddings_base_url=url + "/v1", embeddings_api_key="k")
        prompts = ["hi", "a longer prompt"]
        rates = router.strong_win_rates(prompts)
    # The fake endpoint embeds a text as a constant vector of (len % 7) / 7.
    embeddings = np.array([[len(p) % 7 / 7.0] * 32 for p in prompts])
    expected = read_mf_checkpoint(checkpoint).reference_win_rate(embeddings, "gpt-4-1106-preview", "mixtral-8x7b-instruct-v0.1")
    np.testing.assert_allclose(rates, expected, atol=1e-5)
    assert router.manifest.data["embedder"] == {"kind": "openai", "model": "text-embedding-3-small", "dim": 32}


def test_remote_embedder_needs_a_key_at_load(remote_bundle, monkeypatch):
    for name in ("OPENAI_API_KEY", "EDGEROUTE_EMBEDDINGS_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigurationError, match="no API key is set"):
        Router.load(remote_bundle[1])
    with pytest.raises(PrecisionUnavailableError, match="has no ONNX graph"):
        Router.load(remote_bundle[1], precision="int8", embeddings_api_key="k")


def test_unreachable_embedder_is_a_typed_error(remote_bundle):
    router = Router.load(remote_bundle[1], embeddings_base_url=f"http://127.0.0.1:{free_port()}/v1", embeddings_api_key="k")
    with pytest.raises(EmbeddingServiceError, match="unreachable"):
        router.strong_win_rate("hi")
