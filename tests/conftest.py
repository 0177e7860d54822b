"""Shared fixtures: tiny RouteLLM-format checkpoints and the bundles exported from them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from checkpoints import make_bert_checkpoint, make_encoder, make_mf_checkpoint

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "routellm-evals"


# The tiny random test models give near-tied win rates, where decisions at calibrated shares are a coin
# toss under int8: their exports lower that floor deliberately (tests of the floor itself set it).
TINY_INT8 = {"int8_min_share_agreement": 0.0}


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("edgeroute")


@pytest.fixture(scope="session")
def bert_checkpoint(workdir) -> Path:
    return make_bert_checkpoint(workdir / "bert_checkpoint")


@pytest.fixture(scope="session")
def encoder_dir(workdir) -> Path:
    return make_encoder(workdir / "tiny_encoder")


@pytest.fixture(scope="session")
def mf_checkpoint(workdir) -> Path:
    return make_mf_checkpoint(workdir / "mf_checkpoint")


@pytest.fixture(scope="session")
def bert_bundle(workdir, bert_checkpoint) -> Path:
    from edgeroute.export import ExportOptions, export_bert

    return export_bert(bert_checkpoint, ExportOptions(out=workdir / "bert_bundle", **TINY_INT8)).parent


@pytest.fixture(scope="session")
def mf_bundle(workdir, mf_checkpoint, encoder_dir) -> Path:
    from edgeroute.export import ExportOptions, export_mf

    return export_mf(mf_checkpoint, ExportOptions(out=workdir / "mf_bundle", **TINY_INT8), embedder=str(encoder_dir)).parent


@pytest.fixture
def bundle_copy(tmp_path, bert_bundle) -> Path:
    """A private copy of the BERT bundle that a test may damage."""
    target = tmp_path / "bundle"
    shutil.copytree(bert_bundle, target)
    return target


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "mmlu" / "responses").is_dir():
        pytest.skip(f"shared RouteLLM data not found at {SHARED_DATA} (see ../shared/data/README.md)")
    return SHARED_DATA


@pytest.fixture(scope="module")
def upstream():
    """The fake OpenAI-compatible upstream (tests/servers.py) on a loopback port."""
    pytest.importorskip("starlette")
    from servers import FakeUpstream, serving

    fake = FakeUpstream()
    with serving(fake.app) as url:
        fake.url = url
        yield fake


@pytest.fixture
def server(upstream, routers):
    """``create_app`` on a loopback port over the test module's ``routers``, both models on ``upstream``."""
    from edgeroute.runtime.serving.server import create_app
    from servers import server_config, serving

    upstream.reset()
    with serving(create_app(server_config(upstream), routers)) as url:
        yield url
