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
from edgeroute.runtime.serving.policy import parse_model_field, routing_text

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
        assert not (
            isinstance(threshold, (int, float)) and not isinstance(threshold, bool) and math.isfinite(threshold) and 0 <= threshold <= 1
        )
        return
    expected = router.default_threshold() if threshold is None else float(threshold)  # None: the default
    assert decision.tier == ("strong" if decision.win_rate >= expected else "weak")


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

    from edgeroute.runtime.serving.policy import RouterSet
    from edgeroute.runtime.serving.server import ServerConfig, UpstreamConfig, create_app
    from servers import free_port

    dead = f"http://127.0.0.1:{free_port()}/v1"  # valid requests end as 502: no upstream listens there
    config = ServerConfig(UpstreamConfig("s", dead, None), UpstreamConfig("w", dead, None), fallback=False, upstream_timeout_s=0.5)
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
    response = app_client.post("/v1/chat/completions", json={"model": model, "messages": [{"role": role, "content": content}]})
    assert response.status_code in (400, 502), response.text


# --- issue 12: the full JSON grammar, hostile manifests, every Router argument -------------

_HOSTILE_NUMBERS = st.sampled_from(
    ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "9" * 400, "-" + "9" * 400, "9" * 5000, "1e-999", "0", "-0", "1", "0.5", "2"]
)
_json_string = st.text(max_size=30).map(lambda t: json.dumps(t)) | st.sampled_from(
    ['"\\ud83d"', '"a\\udc00b"', '"\\ud83d\\ude00"', '"\\u0000"', '"router-mf-2"', '"router-bert-0.3"', '"router-bert"', '"user"', '"text"']
)
json_text = st.recursive(
    st.sampled_from(["null", "true", "false"])
    | st.integers().map(str)
    | _HOSTILE_NUMBERS
    | st.floats(allow_nan=False, allow_infinity=False).map(repr)
    | _json_string,
    lambda children: (
        st.lists(children, max_size=4).map(lambda items: "[" + ",".join(items) + "]")
        | st.lists(st.tuples(_json_string, children), max_size=4).map(lambda pairs: "{" + ",".join(f"{k}:{v}" for k, v in pairs) + "}")
    ),
    max_leaves=10,
)


def _nested(depth: int, inner: str) -> str:
    return "[" * depth + inner + "]" * depth


_content = (
    json_text
    | _json_string
    | st.lists(
        st.fixed_dictionaries({"type": st.sampled_from(['"text"', '"image_url"']), "text": json_text | _json_string}).map(
            lambda part: "{" + ",".join(f'"{k}":{v}' for k, v in part.items()) + "}"
        ),
        max_size=3,
    ).map(lambda parts: "[" + ",".join(parts) + "]")
)
_message = st.fixed_dictionaries({"role": st.sampled_from(['"user"', '"system"', '"assistant"']) | json_text, "content": _content}).map(
    lambda m: "{" + ",".join(f'"{k}":{v}' for k, v in m.items()) + "}"
)
_FIELDS = {
    "model": st.sampled_from(['"router-bert-0"', '"router-bert"', '"router-bert-1"', '"router-mf-2"']) | json_text,
    "messages": st.lists(_message, min_size=1, max_size=3).map(lambda ms: "[" + ",".join(ms) + "]") | json_text,
    "stream": st.sampled_from(["true", "false", '"no"', "NaN", "null"]) | json_text,
    "temperature": _HOSTILE_NUMBERS | json_text,
    "strong_pct": _HOSTILE_NUMBERS | json_text,
    "threshold": _HOSTILE_NUMBERS | json_text,
    "router": json_text,
    "prompt": _json_string | json_text,
    "prompts": json_text,
}
request_body = st.one_of(
    st.dictionaries(st.sampled_from(sorted(_FIELDS)), st.just(None), max_size=6)
    .flatmap(lambda keys: st.fixed_dictionaries({k: _FIELDS[k] for k in keys}))
    .map(lambda fields: "{" + ",".join(f'"{k}":{v}' for k, v in fields.items()) + "}"),
    json_text,
    st.tuples(st.sampled_from([2, 100, 3000, 100_000]), json_text).map(lambda args: _nested(*args)),
)
SERVER_FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def live_app_client(bert_bundle, upstream):
    """The app in process, relaying to the loopback fake upstream: valid requests end as 200."""
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from edgeroute.runtime.serving.policy import RouterSet
    from edgeroute.runtime.serving.server import ServerConfig, UpstreamConfig, create_app

    config = ServerConfig(
        UpstreamConfig("strong-llm", upstream.url + "/v1", None),
        UpstreamConfig("weak-llm", upstream.url + "/v1", None),
        upstream_timeout_s=5,
    )
    with TestClient(create_app(config, RouterSet([bert_bundle]))) as client:
        yield client


@SERVER_FUZZ
@given(body=request_body, path=st.sampled_from(["/v1/chat/completions", "/v1/route"]))
def test_any_json_text_is_answered_without_a_server_error(live_app_client, body, path):
    response = live_app_client.post(path, content=body.encode("utf-8", "surrogatepass"), headers={"content-type": "application/json"})
    if response.status_code == 200:
        return
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    # 5xx only when the (fake) upstream failed; never the server's own.
    assert response.status_code < 500 or error["type"].startswith("upstream_"), (response.status_code, error)


ROUTER_FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
_any_argument = (
    st.integers()
    | st.integers(min_value=10**300, max_value=10**400)
    | st.floats()
    | st.text(max_size=5)
    | st.none()
    | st.booleans()
    | st.lists(st.integers(), max_size=2)
)


@ROUTER_FUZZ
@given(bucket_size=_any_argument, batch=st.lists(st.text(min_size=1, max_size=20).filter(str.strip), max_size=70))
def test_any_bucket_size_scores_or_is_an_input_error(routers, bucket_size, batch):
    try:
        rates = routers[1].strong_win_rates(batch, bucket_size=bucket_size)
    except InvalidInputError as error:
        assert str(error).startswith("bucket_size must be a positive integer")
        return
    assert rates.shape == (len(batch),) and np.all((rates >= 0) & (rates <= 1))


@ROUTER_FUZZ
@given(value=_any_argument)
def test_any_threshold_or_share_is_a_number_or_an_input_error(routers, value):
    router = routers[0]
    for call in (lambda: router.route("hi", value), lambda: router.threshold_for(value)):
        try:
            call()
        except InvalidInputError:
            pass


LOAD_FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@LOAD_FUZZ
@given(
    options=st.fixed_dictionaries(
        {},
        optional={
            "device": _any_argument | st.just("cuda"),
            "precision": _any_argument | st.sampled_from(["fp16", "fp32", "int8"]),
            "threads": _any_argument,
            "cache_size": _any_argument,
            "strong_model": _any_argument,
            "weak_model": _any_argument,
        },
    )
)
def test_any_load_option_loads_or_is_an_edgeroute_error(mf_bundle, options):
    from edgeroute.runtime import EdgerouteError

    try:
        Router.load(mf_bundle, **options)
    except EdgerouteError:
        pass


def _paths(value, prefix=()):
    """Every key path in a manifest (dictionaries only; lists are replaced whole)."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))


_HOSTILE_VALUES = st.sampled_from(
    [
        None,
        True,
        False,
        0,
        -1,
        1,
        3,
        10**400,
        1e308,
        float("nan"),
        float("inf"),
        "",
        "x" * 300,
        "../manifest.json",
        "tokenizer.json",
        "head.npy",
        "classifier.int8.onnx",
        "embedder.int8.onnx",
        [],
        [7],
        ["x"],
        [[[[]]]],
        {},
        {"kind": "softmax_complement", "labels": [99]},
        {"a": {"b": {"c": []}}},
        "DELETE",
    ]
)


def _manifest_fuzz(bundle_fixture):
    @LOAD_FUZZ
    @given(data=st.data())
    def check(request, tmp_path_factory, data):
        import copy
        import shutil

        from edgeroute.runtime import EdgerouteError

        source = request.getfixturevalue(bundle_fixture)
        folder = tmp_path_factory.mktemp("manifest_fuzz") / "bundle"
        shutil.copytree(source, folder)
        original = json.loads((folder / "manifest.json").read_text())
        path = data.draw(st.sampled_from([p for p in _paths(original) if p]))
        value = data.draw(_HOSTILE_VALUES)
        manifest = copy.deepcopy(original)
        parent = manifest
        for key in path[:-1]:
            parent = parent[key]
        if value == "DELETE":
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
        (folder / "manifest.json").write_text(json.dumps(manifest))
        try:
            router = Router.load(folder)
        except EdgerouteError:
            return
        finally:
            shutil.rmtree(folder)
        rate = router.strong_win_rate("hello")
        assert 0.0 <= rate <= 1.0

    return check


test_any_bert_manifest_field_loads_or_is_an_edgeroute_error = _manifest_fuzz("bert_bundle")
test_any_mf_manifest_field_loads_or_is_an_edgeroute_error = _manifest_fuzz("mf_bundle")
