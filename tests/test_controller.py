"""The OpenAI-shaped controller, sync and async, against the loopback test upstream."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("openai")

from edgeroute.runtime.serving.controller import AsyncController, Controller, Endpoint  # noqa: E402
from edgeroute.runtime.errors import ConfigurationError, InvalidInputError  # noqa: E402


def _endpoints(upstream):
    return (
        Endpoint("strong-llm", base_url=upstream.url + "/v1", api_key="k"),
        Endpoint("weak-llm", base_url=upstream.url + "/v1", api_key="k"),
    )


@pytest.fixture
def controller(upstream, bert_bundle):
    upstream.reset()
    strong, weak = _endpoints(upstream)
    return Controller(strong, weak, routers=[bert_bundle])


def test_model_field_and_keywords(controller, upstream):
    messages = [{"role": "user", "content": "hello"}]
    response = controller.chat.completions.create(model="router-bert-0", messages=messages)
    assert response.choices[0].message.content == "answer from strong-llm"
    assert response.routing["tier"] == "strong" and response.routing["score_us"] > 0
    response = controller.chat.completions.create(router="bert", threshold=1.0, messages=messages)
    assert response.routing["model"] == "weak-llm"
    assert upstream.models_asked == ["strong-llm", "weak-llm"]


def test_streaming_is_unchanged_and_carries_the_decision(controller):
    stream = controller.chat.completions.create(model="router-bert-1", messages=[{"role": "user", "content": "x"}], stream=True)
    assert stream.routing["model"] == "weak-llm"
    assert "".join(c.choices[0].delta.content or "" for c in stream) == "answer from weak-llm"


def test_routes_on_last_user_message_by_default(controller):
    messages = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "second"}]
    router = controller.policy.routers.get("bert")
    expected = router.strong_win_rate("second")
    response = controller.chat.completions.create(model="router-bert-0.5", messages=messages)
    assert response.routing["win_rate"] == pytest.approx(expected, abs=1e-9)


def test_sticky_conversation_keeps_its_first_model(upstream, bert_bundle):
    strong, weak = _endpoints(upstream)
    controller = Controller(strong, weak, routers=[bert_bundle], sticky=True)
    first = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "opening question"}]
    assert controller.chat.completions.create(model="router-bert-0", messages=first).routing["tier"] == "strong"
    later = first + [{"role": "assistant", "content": "a"}, {"role": "user", "content": "follow-up"}]
    # Threshold 1 would pick the weak model, but the conversation stays where it started.
    assert controller.chat.completions.create(model="router-bert-1", messages=later).routing["tier"] == "strong"


def test_score_budget_falls_back_to_default_model(upstream, bert_bundle, monkeypatch):
    import time

    strong, weak = _endpoints(upstream)
    controller = Controller(strong, weak, routers=[bert_bundle], score_budget_ms=20, default_model="strong")
    router = controller.policy.routers.get("bert")
    monkeypatch.setattr(router, "strong_win_rate", lambda prompt: time.sleep(0.3) or 0.0)  # a stalled scorer
    response = controller.chat.completions.create(model="router-bert-1", messages=[{"role": "user", "content": "x"}])
    assert response.routing["fallback"] == "score_budget_exceeded"
    assert response.routing["model"] == "strong-llm"

    def broken(prompt):
        raise __import__("edgeroute.runtime").runtime.BundleCorruptError("graph vanished")

    monkeypatch.setattr(router, "strong_win_rate", broken)
    response = controller.chat.completions.create(model="router-bert-1", messages=[{"role": "user", "content": "x"}])
    assert response.routing["fallback"] == "router_error: BundleCorruptError"


def test_conversation_mode_scores_recent_turns(upstream, bert_bundle):
    strong, weak = _endpoints(upstream)
    controller = Controller(strong, weak, routers=[bert_bundle], route_on="conversation")
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
    expected = controller.policy.routers.get("bert").strong_win_rate("user: a\nassistant: b\nuser: c")
    response = controller.chat.completions.create(model="router-bert-0.5", messages=messages)
    assert response.routing["win_rate"] == pytest.approx(expected, abs=1e-9)


def test_async_controller_under_concurrency(upstream, bert_bundle):
    strong, weak = _endpoints(upstream)
    controller = AsyncController(strong, weak, routers=[bert_bundle])
    router = controller.policy.routers.get("bert")
    prompts = [f"question {i} about {'proofs' if i % 2 else 'poems'}" for i in range(30)]
    threshold = 0.5 * (router.strong_win_rate(prompts[0]) + router.strong_win_rate(prompts[1]))

    async def run():
        return await asyncio.gather(
            *[
                controller.chat.completions.create(model=f"router-bert-{threshold:.6f}", messages=[{"role": "user", "content": p}])
                for p in prompts
            ]
        )

    responses = asyncio.run(run())
    for prompt, response in zip(prompts, responses):
        expected = "strong-llm" if router.strong_win_rate(prompt) >= round(threshold, 6) else "weak-llm"
        assert response.routing["model"] == expected
        assert response.choices[0].message.content == f"answer from {expected}"


def test_bad_requests_and_missing_keys(upstream, bert_bundle, monkeypatch):
    strong, weak = _endpoints(upstream)
    controller = Controller(strong, weak, routers=[bert_bundle])
    with pytest.raises(InvalidInputError, match="is not a router model name"):
        controller.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(InvalidInputError, match="threshold must be a number"):
        controller.chat.completions.create(router="bert", threshold=float("nan"), messages=[{"role": "user", "content": "x"}])
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    keyless = Controller(Endpoint("strong-llm", base_url=upstream.url + "/v1"), weak, routers=[bert_bundle])
    with pytest.raises(ConfigurationError, match="no API key for model 'strong-llm'"):
        keyless.chat.completions.create(model="router-bert-0", messages=[{"role": "user", "content": "x"}])


@pytest.mark.parametrize(
    "behaviour, kind",
    [("500", "upstream_error"), ("429", "upstream_rate_limited"), ("badjson", "upstream_malformed"), ("stall", "upstream_timeout")],
)
def test_upstream_faults_fall_back_like_the_server(upstream, bert_bundle, behaviour, kind):
    upstream.reset()
    upstream.behaviour["strong-llm"] = behaviour
    strong = Endpoint("strong-llm", base_url=upstream.url + "/v1", api_key="k", timeout_s=1.0)
    weak = Endpoint("weak-llm", base_url=upstream.url + "/v1", api_key="k")
    controller = Controller(strong, weak, routers=[bert_bundle])
    response = controller.chat.completions.create(model="router-bert-0", messages=[{"role": "user", "content": "x"}])
    assert response.choices[0].message.content == "answer from weak-llm"
    assert response.routing["fallback"] == f"{kind} on strong-llm" and response.routing["model"] == "weak-llm"

    async def run():
        client = AsyncController(strong, weak, routers=[bert_bundle])
        return await client.chat.completions.create(model="router-bert-0", messages=[{"role": "user", "content": "x"}])

    assert asyncio.run(run()).routing["fallback"] == f"{kind} on strong-llm"


def test_without_fallback_or_on_4xx_the_error_is_raised(upstream, bert_bundle):
    import openai

    upstream.reset()
    strong, weak = _endpoints(upstream)
    upstream.behaviour["strong-llm"] = "500"
    with pytest.raises(openai.InternalServerError):
        Controller(strong, weak, routers=[bert_bundle], fallback=False).chat.completions.create(
            model="router-bert-0", messages=[{"role": "user", "content": "x"}]
        )
    upstream.behaviour["strong-llm"] = "400"
    with pytest.raises(openai.BadRequestError):
        Controller(strong, weak, routers=[bert_bundle]).chat.completions.create(
            model="router-bert-0", messages=[{"role": "user", "content": "x"}]
        )
    assert upstream.models_asked == ["strong-llm", "strong-llm"]  # never retried on the weak model


def test_controller_fallback_is_the_shared_rule_and_keeps_the_decision(upstream, bert_bundle):
    import socket

    from edgeroute.runtime.serving.upstream import Fallback

    with socket.socket() as probe:  # a port nothing listens on: the strong upstream is unreachable
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    upstream.reset()
    strong = Endpoint("strong-llm", base_url=f"http://127.0.0.1:{dead_port}/v1", api_key="k", timeout_s=2.0)
    weak = Endpoint("weak-llm", base_url=upstream.url + "/v1", api_key="k")
    controller = Controller(strong, weak, routers=[bert_bundle])
    assert isinstance(controller.fallback, Fallback)  # the rule the server's relay uses too
    messages = [{"role": "user", "content": "hello"}]
    response = controller.chat.completions.create(model="router-bert-0", messages=messages)
    expected = controller.policy.routers.get("bert").strong_win_rate("hello")
    assert response.choices[0].message.content == "answer from weak-llm"
    assert list(response.routing) == ["router", "tier", "model", "win_rate", "threshold", "score_us", "fallback", "budget"]
    assert response.routing["tier"] == "weak" and response.routing["model"] == "weak-llm"
    assert response.routing["fallback"] == "upstream_unreachable on strong-llm"
    assert response.routing["threshold"] == 0 and response.routing["win_rate"] == pytest.approx(expected, abs=1e-9)
    assert upstream.models_asked == ["weak-llm"]
