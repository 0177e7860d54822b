"""Issue 26, item 10: LiteLLM, a real client of this ecosystem, through `edgeroute serve` (sync and async,
streaming and not), against a fake upstream that ends answers with a finish reason as real ones do."""

from __future__ import annotations

import asyncio
import os

import pytest

pytest.importorskip("starlette")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch of a price list at import
litellm = pytest.importorskip("litellm")

from edgeroute.runtime.serving.policy import RouterSet  # noqa: E402
from edgeroute.runtime.serving.server import create_app  # noqa: E402
from servers import server_config, serving  # noqa: E402

MESSAGES = [{"role": "user", "content": "Prove that there are infinitely many primes."}]


@pytest.fixture(scope="module")
def routed(bert_bundle):
    return RouterSet([bert_bundle])


@pytest.fixture
def edgeroute_url(upstream, routed):
    upstream.reset()
    with serving(create_app(server_config(upstream), routed)) as url:
        yield url + "/v1"


@pytest.mark.parametrize("threshold, tier_model", [("0", "strong-llm"), ("1", "weak-llm")])
def test_completion_routes_and_answers(edgeroute_url, threshold, tier_model):
    response = litellm.completion(model=f"openai/router-bert-{threshold}", api_base=edgeroute_url, api_key="none", messages=MESSAGES)
    assert response.choices[0].message.content == f"answer from {tier_model}"
    assert response.choices[0].finish_reason == "stop"


def test_streaming_completion_ends_with_the_finish_reason(edgeroute_url):
    stream = litellm.completion(model="openai/router-bert-0", api_base=edgeroute_url, api_key="none", messages=MESSAGES, stream=True)
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert text == "answer from strong-llm"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_async_completion_streaming_and_not(edgeroute_url):
    async def both() -> tuple[str, str]:
        plain = await litellm.acompletion(model="openai/router-bert-1", api_base=edgeroute_url, api_key="none", messages=MESSAGES)
        stream = await litellm.acompletion(
            model="openai/router-bert-1", api_base=edgeroute_url, api_key="none", messages=MESSAGES, stream=True
        )
        streamed = "".join([chunk.choices[0].delta.content or "" async for chunk in stream])
        return plain.choices[0].message.content, streamed

    assert asyncio.run(both()) == ("answer from weak-llm", "answer from weak-llm")
