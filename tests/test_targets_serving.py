"""N targets end to end: a targets file -> ``serve`` -> the real openai client -> the chosen one of three loopback
upstreams, with fallback down the order; and the CLI's ``calibrate --target-cost`` and ``eval --correctness``."""

from __future__ import annotations

import contextlib
import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("starlette")

from edgeroute.runtime import Router  # noqa: E402
from edgeroute.runtime.cli import main  # noqa: E402
from edgeroute.runtime.errors import ConfigurationError  # noqa: E402
from edgeroute.runtime.scoring.targets import Target, Targets  # noqa: E402
from edgeroute.runtime.serving.policy import RouterSet  # noqa: E402
from nmodel import NAMES, make_n_model_bundle, synthetic_rows  # noqa: E402
from servers import FakeUpstream, server_config, serving  # noqa: E402

PROMPTS = [
    "hi there",
    "What is the capital of France?",
    "Prove that the square root of 2 is irrational.",
    "Write a limerick about a cat who learns to code.",
    "Explain how a transformer's attention works, step by step, with the equations.",
    "Sort these numbers: 5, 3, 9, 1.",
]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_n_model_bundle(tmp_path_factory.mktemp("serving") / "three-models", synthetic_rows(seed=4, scale=40.0))


@pytest.fixture(scope="module")
def upstreams():
    """Three fake upstreams, one per target, each on its own loopback port."""
    fakes = [FakeUpstream() for _ in NAMES]
    with contextlib.ExitStack() as stack:
        for fake in fakes:
            fake.url = stack.enter_context(serving(fake.app))
        yield fakes


def _targets(upstreams, threshold: float = 0.5) -> Targets:
    costs = (10.0, 2.0, 0.2)
    return Targets(
        tuple(Target(name, base_url=fake.url + "/v1", input_cost=c, output_cost=c) for name, fake, c in zip(NAMES, upstreams, costs)),
        threshold=threshold,
    )


@contextlib.contextmanager
def _server(bundle, upstreams, **overrides):
    from edgeroute.runtime.serving.server import create_app

    for fake in upstreams:
        fake.reset()
    config = server_config(upstreams[0], routers=[str(bundle)], targets=_targets(upstreams), **overrides)
    with serving(create_app(config, RouterSet([str(bundle)]))) as url:
        yield openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0), url


def test_each_request_reaches_the_target_the_policy_chose(bundle, upstreams):
    router = Router.load(bundle)
    targets = _targets(upstreams)
    scores = router.model_scores(PROMPTS, router.model_rows(targets.scored_as))
    expected = [targets.names[targets.choose(row, len(p)).index] for row, p in zip(scores, PROMPTS)]
    assert len(set(expected)) == 3, "the prompts should reach every target"
    with _server(bundle, upstreams) as (client, _):
        for prompt, model in zip(PROMPTS, expected):
            raw = client.chat.completions.with_raw_response.create(
                model="router-three-models", messages=[{"role": "user", "content": prompt}]
            )
            answer = raw.parse()
            assert answer.choices[0].message.content == f"answer from {model}"
            decision = answer.model_extra["edgeroute"]
            assert decision["model"] == model and decision["rank"] == NAMES.index(model)
            assert set(decision["candidates"]) == set(NAMES) and decision["cost"] > 0
            assert raw.headers["x-edgeroute-rank"] == str(NAMES.index(model))
        for fake, name in zip(upstreams, NAMES):
            assert fake.models_asked == [name] * expected.count(name)


def test_a_failing_target_falls_back_down_the_order(bundle, upstreams):
    prompt = PROMPTS[0]
    with _server(bundle, upstreams) as (client, _):
        # The threshold 1.0 accepts every target: the cheapest (last) is chosen, fails, and the order wraps to the first.
        upstreams[2].behaviour[NAMES[2]] = "500"
        answer = client.chat.completions.create(model="router-three-models-1.0", messages=[{"role": "user", "content": prompt}])
        assert answer.choices[0].message.content == f"answer from {NAMES[0]}"
        assert answer.model_extra["edgeroute"]["fallback"] == f"upstream_error on {NAMES[2]}"
        # Two failures: the chain goes on to the third target and records both.
        upstreams[0].behaviour[NAMES[0]] = "429"
        raw = client.chat.completions.with_raw_response.create(
            model="router-three-models-1.0", messages=[{"role": "user", "content": prompt}]
        )
        assert raw.parse().choices[0].message.content == f"answer from {NAMES[1]}"
        assert raw.headers["x-edgeroute-fallback"] == f"upstream_error on {NAMES[2]}; upstream_rate_limited on {NAMES[0]}"
        # All three failing: the last failure is the client's error, not a 500.
        upstreams[1].behaviour[NAMES[1]] = "500"
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="router-three-models-1.0", messages=[{"role": "user", "content": prompt}])
        assert caught.value.status_code == 502


def test_streams_and_route_only_calls_carry_the_n_target_decision(bundle, upstreams):
    with _server(bundle, upstreams) as (client, url):
        stream = client.chat.completions.create(
            model="router-three-models-1.0", messages=[{"role": "user", "content": "hello"}], stream=True
        )
        assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == f"answer from {NAMES[2]}"
        import httpx

        decisions = httpx.post(url + "/v1/route", json={"prompts": PROMPTS, "threshold": 1.0}).json()["decisions"]
        assert [d["model"] for d in decisions] == [NAMES[2]] * len(PROMPTS) and all(d["rank"] == 2 for d in decisions)
        assert httpx.get(url + "/health").json()["targets"] == list(NAMES)
        share = httpx.post(url + "/v1/route", json={"prompt": "hi", "strong_pct": 0.3})
        assert share.status_code == 400 and "needs two targets" in share.json()["error"]["message"]


def test_n_targets_refuse_a_pair_router_and_a_strong_share_budget(bundle, upstreams):
    from edgeroute.runtime.serving.server import create_app

    with pytest.raises(ConfigurationError, match="this router predicts one pair"):
        create_app(server_config(upstreams[0], targets=_targets(upstreams)), RouterSet(["static-distilled-gpt4-mixtral"]))
    with pytest.raises(ConfigurationError, match="with N targets, set the policy's threshold or cost weight"):
        create_app(server_config(upstreams[0], targets=_targets(upstreams), strong_share=0.3), RouterSet([str(bundle)]))


def test_calibrate_target_cost_and_the_quality_cost_curve_from_the_cli(bundle, upstreams, tmp_path, capsys):
    config = tmp_path / "targets.toml"
    lines = []
    for name, cost in zip(NAMES, (10.0, 2.0, 0.2)):
        lines += ["[[target]]", f'name = "{name}"', f"input_cost = {cost}", f"output_cost = {cost}"]
    config.write_text("\n".join(lines) + "\n")
    prompts = tmp_path / "prompts.txt"
    rng = np.random.default_rng(0)
    texts = [f"{p} ({' '.join(rng.choice(['why', 'how', 'prove', 'list', 'poem'], 4))})" for p in PROMPTS * 20]
    prompts.write_text("\n".join(texts) + "\n")
    assert main(["calibrate", "--router", str(bundle), "--config", str(config), "--prompts", str(prompts), "--target-cost", "0.002"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["policy"] == "cheapest_acceptable" and 0.0 <= result["threshold"] <= 1.0
    assert result["mean_cost_usd"] <= 0.002 and result["n_prompts"] == len(texts)
    table = tmp_path / "correct.csv"
    with open(table, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt", *NAMES])
        for text in texts:
            writer.writerow([text, *(bool(x) for x in rng.random(3) < (0.9, 0.7, 0.4))])
    out = tmp_path / "curve.json"
    assert main(["eval", "--router", str(bundle), "--config", str(config), "--correctness", str(table), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "cheapest_acceptable over large-llm, medium-llm, small-llm" in printed and "random" in printed
    assert len(json.loads(out.read_text())["points"]) == 41


def test_the_controller_routes_among_the_same_targets(bundle, upstreams, monkeypatch):
    from edgeroute.runtime.serving.controller import Controller, Endpoint

    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    for fake in upstreams:
        fake.reset()
    router = Router.load(bundle)
    targets = _targets(upstreams)
    expected = [router.route_targets(p, targets).model for p in PROMPTS]
    client = Controller(Endpoint("unused-strong"), Endpoint("unused-weak"), routers=[str(bundle)], targets=targets)
    for prompt, model in zip(PROMPTS, expected):
        answer = client.chat.completions.create(model="router-three-models", messages=[{"role": "user", "content": prompt}])
        assert answer.choices[0].message.content == f"answer from {model}" and answer.routing["model"] == model
        assert answer.routing["rank"] == NAMES.index(model)
    assert {a for fake in upstreams for a in fake.authorizations} == {"Bearer no-key"}  # no OpenAI key to loopback hosts
    upstreams[2].behaviour[NAMES[2]] = "500"  # the cheapest fails: down the order, wrapping to the most capable
    answer = client.chat.completions.create(model="router-three-models-1.0", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == f"answer from {NAMES[0]}" and answer.routing["fallback"] == f"upstream_error on {NAMES[2]}"


def test_the_spend_budget_counts_chat_calls_not_decisions_only(bundle, upstreams):
    import httpx

    with _server(bundle, upstreams, target_cost=0.00005) as (client, url):
        for _ in range(3):
            httpx.post(url + "/v1/route", json={"prompts": PROMPTS})
        metrics = httpx.get(url + "/metrics").text
        assert "edgeroute_spend_target_usd" not in metrics or 'edgeroute_spend_observed_usd{router="three-models"} 0' in metrics
        for prompt in PROMPTS:
            answer = client.chat.completions.create(model="router-three-models", messages=[{"role": "user", "content": prompt}])
        budget = answer.model_extra["edgeroute"]["budget"]
        assert budget["window"] == len(PROMPTS) and budget["target_usd"] == 0.00005
        assert 'edgeroute_spend_target_usd{router="three-models"} 5e-05' in httpx.get(url + "/metrics").text
        refused = httpx.post(url + "/v1/route", json={"prompt": "hi", "threshold": 0.5})
        assert refused.status_code == 200  # cheapest_acceptable takes a request's threshold


def test_a_threshold_is_refused_where_the_policy_has_none(bundle, upstreams):
    import httpx

    from edgeroute.runtime.serving.server import create_app

    targets = replace(_targets(upstreams), policy="quality_per_cost", cost_weight=10.0)
    config = server_config(upstreams[0], routers=[str(bundle)], targets=targets)
    with serving(create_app(config, RouterSet([str(bundle)]))) as url:
        answer = httpx.post(url + "/v1/route", json={"prompt": "hi", "threshold": 0.5})
        assert answer.status_code == 400
        assert (
            answer.json()["error"]["message"] == "a threshold sets the cheapest_acceptable rule; these targets choose by quality_per_cost"
        )
        assert httpx.post(url + "/v1/route", json={"prompt": "hi"}).json()["decisions"][0]["threshold"] is None
