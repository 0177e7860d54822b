"""Fuzzing (hypothesis): arbitrary prompts, thresholds, chat bodies. Each input gets a correct answer or a
documented error; nothing crashes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeroute.runtime import InvalidInputError, Router
from edgeroute.runtime.routing import parse_model_field, routing_text

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def routers(bert_bundle, mf_bundle):
    return Router.load(bert_bundle), Router.load(mf_bundle)


@FUZZ
@given(prompt=st.text(alphabet=st.characters(codec=None), max_size=400))
def test_any_unicode_prompt_scores_or_is_rejected(routers, prompt):
    for router in routers:
        try:
            rate = router.strong_win_rate(prompt)
        except InvalidInputError:
            assert not prompt.strip()
            continue
        assert 0.0 <= rate <= 1.0 and math.isfinite(rate)


@FUZZ
@given(threshold=st.floats(allow_nan=True, allow_infinity=True) | st.integers() | st.text(max_size=3) | st.none())
def test_any_threshold_routes_or_is_rejected(routers, threshold):
    router = routers[0]
    try:
        decision = router.route("hello", threshold)
    except InvalidInputError:
        assert not (isinstance(threshold, (int, float)) and not isinstance(threshold, bool)
                    and math.isfinite(threshold) and 0 <= threshold <= 1)
        return
    expected = router.default_threshold() if threshold is None else float(threshold)  # None: the default
    assert decision.model == ("strong" if decision.win_rate >= expected else "weak")


@FUZZ
@given(batch=st.lists(st.text(max_size=50) | st.integers() | st.none(), max_size=40))
def test_any_batch_scores_or_names_the_bad_position(routers, batch):
    try:
        rates = routers[0].strong_win_rates(batch)
    except InvalidInputError as error:
        assert "position" in str(error) or "sequence" in str(error)
        return
    assert rates.shape == (len(batch),) and np.all((rates >= 0) & (rates <= 1))


@FUZZ
@given(messages=json_values)
def test_any_messages_value_gives_text_or_an_input_error(messages):
    for mode in ("last_user", "conversation"):
        try:
            text = routing_text(messages, mode)
        except InvalidInputError:
            continue
        assert isinstance(text, str)


@FUZZ
@given(model=json_values)
def test_any_model_field_parses_or_is_an_input_error(model):
    try:
        parsed = parse_model_field(model, ["bert"])
    except InvalidInputError:
        return
    assert parsed.threshold is None or 0.0 <= parsed.threshold <= 1.0


def test_huge_batch_and_megabyte_prompt_stay_bounded(routers):
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rates = routers[0].strong_win_rates(["x" * 1_000_000] * 4 + ["short"] * 500)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert rates.shape == (504,)
    assert grown_mb < 500  # truncation to max_length keeps memory bounded


@pytest.fixture(scope="module")
def app_client(bert_bundle):
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from edgeroute.runtime.routing import RouterSet
    from edgeroute.runtime.server import ServerConfig, UpstreamConfig, create_app
    from servers import free_port

    dead = f"http://127.0.0.1:{free_port()}/v1"  # valid requests end as 502: no upstream listens there
    config = ServerConfig(UpstreamConfig("s", dead, None), UpstreamConfig("w", dead, None), fallback=False,
                          upstream_timeout_s=0.5)
    with TestClient(create_app(config, RouterSet([bert_bundle]))) as client:
        yield client


@FUZZ
@given(body=json_values, path=st.sampled_from(["/v1/chat/completions", "/v1/route"]))
def test_any_json_body_is_answered_without_a_500(app_client, body, path):
    # json.dumps writes NaN/Infinity, which strict clients would refuse to send: a harder input.
    response = app_client.post(path, content=json.dumps(body), headers={"content-type": "application/json"})
    assert response.status_code in (200, 400, 502), response.text
    if response.status_code != 200:
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


@FUZZ
@given(model=st.text(max_size=30), content=st.text(max_size=200), role=st.sampled_from(["user", "system", "x"]))
def test_chat_bodies_of_the_right_shape(app_client, model, content, role):
    response = app_client.post("/v1/chat/completions",
                               json={"model": model, "messages": [{"role": role, "content": content}]})
    assert response.status_code in (400, 502), response.text
