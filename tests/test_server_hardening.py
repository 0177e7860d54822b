"""Issue 12: hostile bodies, auth, upstream faults and slow clients; never a 500, never unbounded."""

from __future__ import annotations

import json
import logging
import socket
import time

import httpx
import pytest

pytest.importorskip("starlette")

from edgeroute.runtime.serving.policy import RouterSet  # noqa: E402
from edgeroute.runtime.serving.prometheus import Metrics  # noqa: E402
from edgeroute.runtime.serving.server import (  # noqa: E402
    ServerConfig,
    UpstreamConfig,
    create_app,
    shutdown_grace_s,
    uvicorn_config,
)
from edgeroute.runtime.serving.upstream import sanitized_upstream_message  # noqa: E402
from servers import calibrated_copy, free_port, server_config, serving, serving_as_edgeroute  # noqa: E402

CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def calibrated_mf(tmp_path_factory, mf_bundle):
    return calibrated_copy(mf_bundle, tmp_path_factory.mktemp("hardening") / "mf_calibrated", "mf_calibrated")


@pytest.fixture(scope="module")
def routers(bert_bundle, calibrated_mf):
    return RouterSet([bert_bundle, calibrated_mf])


_config = server_config  # one configuration for every server test (tests/servers.py)


def _post_raw(url, path, text):
    return httpx.post(url + path, content=text.encode("utf-8", "surrogatepass"), headers={"content-type": "application/json"})


def _error(response, status):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


@pytest.mark.parametrize(
    "number, message",
    [
        ("NaN", "request body holds NaN, which JSON does not allow"),
        ("Infinity", "request body holds Infinity, which JSON does not allow"),
        ("-Infinity", "request body holds -Infinity, which JSON does not allow"),
        ("1e999", "request body holds the number 1e999, beyond the range of a 64-bit float"),
    ],
)
@pytest.mark.parametrize("field", ["temperature", "stream"])
def test_non_finite_numbers_are_400(server, number, message, field):
    body = f'{{"model": "router-bert-0", "messages": [{{"role": "user", "content": "hi"}}], "{field}": {number}}}'
    assert _error(_post_raw(server, CHAT, body), 400)["message"] == message
    assert _error(_post_raw(server, "/v1/route", f'{{"prompt": "hi", "threshold": {number}}}'), 400)["message"] == message


def test_lone_surrogate_in_a_chat_body_is_relayed(server, upstream):
    body = '{"model": "router-bert-0", "messages": [{"role": "user", "content": "broken \\ud83d emoji"}]}'
    response = _post_raw(server, CHAT, body)
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "answer from strong-llm"


@pytest.mark.parametrize("path", [CHAT, "/v1/route"])
def test_deep_nesting_is_400(server, path):
    error = _error(_post_raw(server, path, "[" * 100_000 + "]" * 100_000), 400)
    assert error["message"] == "request body is nested too deeply"
    error = _error(_post_raw(server, path, '{"prompt": ' + "[" * 100_000 + "]" * 100_000 + "}"), 400)
    assert error["message"] == "request body is nested too deeply"


@pytest.mark.parametrize(
    "body, message",
    [
        ({"prompt": "hi", "threshold": 10**400}, "threshold must be a number in [0, 1], got an integer too large for a float"),
        (
            {"prompt": "hi", "router": "mf_calibrated", "strong_pct": 10**400},
            "strong_share must be a number in [0, 1], got an integer too large for a float",
        ),
        ('{"prompt": "hi", "threshold": ' + "9" * 5000 + "}", "request body is not valid JSON"),  # past Python's limit
        ({"prompt": "hi", "router": ["mf"]}, "'router' must be a string naming a loaded router"),
    ],
)
def test_route_argument_errors_are_clean_400s(server, body, message):
    text = body if isinstance(body, str) else json.dumps(body)
    assert _error(_post_raw(server, "/v1/route", text), 400)["message"].startswith(message)


@pytest.mark.parametrize(
    "body, message",
    [
        ({"model": "router-bert-0", "messages": USER, "stream": "no"}, "'stream' must be true or false, got str"),
        ({"model": "router-bert-0", "messages": USER, "stream": 1}, "'stream' must be true or false, got int"),
        ({"model": "router-mf-2", "messages": USER}, "threshold must be a number in [0, 1], got 2.0"),
        (
            {"model": "router-bert-0", "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
            "a text content part's 'text' must be a string, got int",
        ),
        (
            {"model": "router-mf_calibrated", "messages": USER, "strong_pct": 10**400},
            "strong_share must be a number in [0, 1], got an integer too large for a float",
        ),
    ],
)
def test_chat_argument_errors_are_clean_400s(server, body, message):
    assert _error(httpx.post(server + CHAT, json=body), 400)["message"] == message


def test_unknown_paths_and_methods_are_openai_json(server):
    error = _error(httpx.get(server + "/nope"), 404)
    assert error["type"] == "not_found" and "/v1/chat/completions" in error["message"]
    error = _error(httpx.get(server + CHAT), 405)
    assert error["type"] == "method_not_allowed" and error["message"] == "method GET is not allowed here"
    metrics = httpx.get(server + "/metrics").text
    assert 'edgeroute_requests_total{endpoint="other",status="404"} 1' in metrics
    assert f'edgeroute_requests_total{{endpoint="{CHAT}",status="405"}} 1' in metrics


def test_hostile_requests_are_counted_in_metrics(server):
    _post_raw(server, CHAT, '{"model": "router-bert-0", "messages": [], "temperature": NaN}')
    _post_raw(server, "/v1/route", "[" * 100_000)
    metrics = httpx.get(server + "/metrics").text
    assert f'edgeroute_requests_total{{endpoint="{CHAT}",status="400"}} 1' in metrics
    assert 'edgeroute_requests_total{endpoint="/v1/route",status="400"} 1' in metrics


def test_content_parts_count_against_the_prompt_limit(upstream, routers):
    with serving(create_app(_config(upstream, max_prompt_chars=100), routers)) as url:
        parts = [{"role": "user", "content": [{"type": "text", "text": "x" * 60}, {"type": "text", "text": "y" * 60}]}]
        error = _error(httpx.post(url + CHAT, json={"model": "router-bert-0", "messages": parts}), 400)
        assert error["message"] == "the messages hold 120 characters; the limit is 100"
        error = _error(httpx.post(url + "/v1/route", json={"messages": parts}), 400)
        assert error["message"] == "the messages hold 120 characters; the limit is 100"


def test_chat_errors_keep_their_order_limits_first_then_the_request_then_the_messages(upstream, routers):
    with serving(create_app(_config(upstream, max_messages=2), routers)) as url:
        three = USER * 3
        for body in ({"model": "router-bert-0", "messages": three, "stream": "yes"}, {"model": "gpt-4", "messages": three}):
            assert _error(httpx.post(url + CHAT, json=body), 400)["message"] == "'messages' holds 3 messages; the limit is 2"
        error = _error(httpx.post(url + CHAT, json={"model": "router-mf_calibrated-s99", "messages": []}), 400)
        assert error["message"] == "'messages' must be a non-empty list of chat messages"


def test_default_prompt_limit_is_sized_for_a_router():
    assert ServerConfig(UpstreamConfig("s", "http://x/v1"), UpstreamConfig("w", "http://x/v1")).max_prompt_chars == 100_000


@pytest.mark.parametrize("behaviour", ["badjson", "emptystream"])
def test_malformed_stream_falls_back_like_non_streaming(server, upstream, behaviour):
    upstream.behaviour["strong-llm"] = behaviour
    with httpx.stream("POST", server + CHAT, json={"model": "router-bert-0", "stream": True, "messages": USER}) as response:
        body = b"".join(response.iter_raw())
        assert response.status_code == 200
        assert response.headers["x-edgeroute-fallback"] == "upstream_malformed on strong-llm"
    assert body.endswith(b"data: [DONE]\n\n") and b"weak-llm" in body


def test_upstream_body_with_nan_is_malformed_not_a_500(server, upstream):
    upstream.behaviour["strong-llm"] = "nanjson"
    response = httpx.post(server + CHAT, json={"model": "router-bert-0", "messages": USER})
    assert response.status_code == 200 and response.json()["edgeroute"]["fallback"] == "upstream_malformed on strong-llm"


def test_malformed_stream_without_fallback_is_502(upstream, routers):
    upstream.reset()
    upstream.behaviour["strong-llm"] = "emptystream"
    with serving(create_app(_config(upstream, fallback=False), routers)) as url:
        response = httpx.post(url + CHAT, json={"model": "router-bert-0", "stream": True, "messages": USER})
        error = _error(response, 502)
        assert error["type"] == "upstream_malformed"
        metrics = httpx.get(url + "/metrics").text
    assert 'edgeroute_errors_total{kind="upstream_malformed"} 1\n' in metrics  # counted once


def test_auth_covers_models_and_metrics_but_not_health(upstream, routers):
    with serving(create_app(_config(upstream, auth_token="s3cret"), routers)) as url:
        for method, path in (("GET", "/v1/models"), ("GET", "/metrics"), ("POST", "/v1/route"), ("POST", CHAT)):
            response = httpx.request(method, url + path, json={"prompt": "hi"})
            assert _error(response, 401)["message"] == "missing or wrong bearer token"
            assert response.headers["www-authenticate"] == 'Bearer realm="edgeroute"'
            wrong = httpx.request(method, url + path, json={"prompt": "hi"}, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
        assert httpx.get(url + "/health").status_code == 200
        for spelling in ("Bearer s3cret", "bearer s3cret", "BEARER  s3cret"):
            assert httpx.get(url + "/v1/models", headers={"Authorization": spelling}).status_code == 200
            assert httpx.get(url + "/metrics", headers={"Authorization": spelling}).status_code == 200


def test_upstream_4xx_never_relays_the_key(upstream, routers, monkeypatch):
    upstream.reset()
    monkeypatch.setenv("EDGEROUTE_TEST_KEY", "sk-live-0123456789abcdefghij")
    strong = UpstreamConfig("strong-llm", upstream.url + "/v1", "EDGEROUTE_TEST_KEY")
    with serving(create_app(_config(upstream, strong=strong, fallback=False), routers)) as url:
        upstream.behaviour["strong-llm"] = "echo_key"
        response = httpx.post(url + CHAT, json={"model": "router-bert-0", "messages": USER})
        error = _error(response, 400)
        assert "0123456789" not in response.text and error["type"] == "upstream_rejected"
        assert error["message"] == (
            "upstream strong-llm rejected the request (HTTP 400): bad parameter 'temperature' (sent with Bearer [redacted])"
        )
        upstream.behaviour["strong-llm"] = "401"
        error = _error(httpx.post(url + CHAT, json={"model": "router-bert-0", "messages": USER}), 502)
        assert error["message"] == ("upstream strong-llm refused the server's credentials (HTTP 401); check the server's API key variable")


def test_sanitizer_masks_key_like_runs():
    detail = json.dumps({"error": {"message": "Incorrect API key provided: sk-proj-AbC1234567890xyzXYZ123."}}).encode()
    assert sanitized_upstream_message(detail, []) == "Incorrect API key provided: [redacted]"
    assert sanitized_upstream_message(b"<html>secret</html>", []) == ""
    assert sanitized_upstream_message(b'{"error": {"message": "context_length_exceeded_for_model"}}', []) == (
        "context_length_exceeded_for_model"
    )


def test_errors_are_counted_once_without_fallback(upstream, routers):
    upstream.reset()
    upstream.behaviour["strong-llm"] = "500"
    with serving(create_app(_config(upstream, fallback=False), routers)) as url:
        assert httpx.post(url + CHAT, json={"model": "router-bert-0", "messages": USER}).status_code == 502
        metrics = httpx.get(url + "/metrics").text
    assert 'edgeroute_errors_total{kind="upstream_error"} 1\n' in metrics


def test_route_with_messages_is_counted_and_shaped_like_prompts(server):
    by_messages = httpx.post(server + "/v1/route", json={"messages": USER, "router": "bert", "threshold": 0}).json()
    by_prompt = httpx.post(server + "/v1/route", json={"prompt": "hi", "router": "bert", "threshold": 0}).json()
    assert set(by_messages["decisions"][0]) == set(by_prompt["decisions"][0])
    assert by_messages["decisions"][0]["fallback"] is None and by_prompt["decisions"][0]["fallback"] is None
    metrics = httpx.get(server + "/metrics").text
    assert 'edgeroute_requests_total{endpoint="/v1/route",status="200"} 2' in metrics
    assert 'edgeroute_decisions_total{model="strong-llm",router="bert_bundle"} 2' in metrics


def test_prometheus_label_values_are_escaped():
    metrics = Metrics()
    metrics.inc("edgeroute_decisions_total", router="r", model='evil"model\\\nname')
    assert 'model="evil\\"model\\\\\\nname"' in metrics.render()


def test_prometheus_page_parses_back_with_the_reference_parser():
    parser = pytest.importorskip("prometheus_client.parser")
    metrics = Metrics()
    metrics.help["edgeroute_errors_total"] = "Errors by kind \\ with a\nnewline."
    metrics.inc("edgeroute_decisions_total", router="r", model='evil"model\\\nname')
    metrics.inc("edgeroute_errors_total", kind="k")
    metrics.observe("edgeroute_scoring_seconds", 0.003, router="r")
    families = {family.name: family for family in parser.text_string_to_metric_families(metrics.render())}
    (decision,) = families["edgeroute_decisions"].samples
    assert decision.labels == {"router": "r", "model": 'evil"model\\\nname'} and decision.value == 1
    assert families["edgeroute_errors"].documentation == "Errors by kind \\ with a\nnewline."
    buckets = [s for s in families["edgeroute_scoring_seconds"].samples if s.name.endswith("_bucket")]
    assert [s.value for s in buckets if s.labels["le"] in ("0.0025", "0.005", "+Inf")] == [0, 1, 1]


def test_unexpected_exception_is_a_counted_json_500_without_prompt_in_log(upstream, routers, caplog):
    app = create_app(_config(upstream), routers)

    async def broken(*args, **kwargs):
        raise KeyError("my secret prompt")

    app.state.policy.adecide_parsed = broken  # the server decides on the request it parsed once
    with serving(app) as url, caplog.at_level(logging.ERROR, logger="edgeroute.server"):
        error = _error(httpx.post(url + CHAT, json={"model": "router-bert-0", "messages": USER}), 500)
        assert error == {
            "message": "internal error (KeyError); see the server log",
            "type": "internal_error",
            "param": None,
            "code": "internal_error",
        }
        assert f'edgeroute_requests_total{{endpoint="{CHAT}",status="500"}} 1' in httpx.get(url + "/metrics").text
    assert "internal error KeyError" in caplog.text and "my secret prompt" not in caplog.text


def test_shutdown_grace_covers_an_upstream_call_and_its_fallback():
    strong, weak = UpstreamConfig("s", "http://x/v1"), UpstreamConfig("w", "http://x/v1")
    assert shutdown_grace_s(ServerConfig(strong, weak)) == 125.0
    assert shutdown_grace_s(ServerConfig(strong, weak, fallback=False, upstream_timeout_s=10)) == 15.0
    assert uvicorn_config(ServerConfig(strong, weak), None).timeout_graceful_shutdown == 125


def test_serve_freezes_what_is_loaded_before_serving_and_create_app_does_not(monkeypatch):
    # Full collections walked the loaded process (26.7 ms each on a 2-core VM); frozen, they skip it.
    # create_app alone leaves the collector alone: it may be mounted in someone else's process.
    import gc

    import uvicorn

    from edgeroute.runtime.serving import server

    frozen_at_run = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: frozen_at_run.append(gc.get_freeze_count()))
    strong, weak = UpstreamConfig("s", "http://127.0.0.1:9/v1"), UpstreamConfig("w", "http://127.0.0.1:9/v1")
    config = ServerConfig(strong, weak, routers=["static-distilled-gpt4-mixtral"])
    gc.unfreeze()
    try:
        server.create_app(config)
        assert gc.get_freeze_count() == 0
        gc.collect()  # count what is loaded, not the garbage earlier tests left for the collector
        loaded = len(gc.get_objects())  # modules and one app's routers, all tracked
        server.serve(config, port=free_port())
        assert frozen_at_run and frozen_at_run[0] >= 0.9 * loaded
    finally:
        gc.unfreeze()


@pytest.mark.parametrize("parser", ["h11", "httptools"])
def test_slow_clients_are_cut_off(upstream, routers, parser):
    if parser == "httptools":
        pytest.importorskip("httptools")
    config = _config(upstream, client_timeout_s=0.5)
    with serving_as_edgeroute(create_app(config, routers), config, parser) as port:
        # Headers that never finish: the connection is closed.
        with socket.create_connection(("127.0.0.1", port)) as stalled:
            stalled.sendall(b"POST /v1/route HTTP/1.1\r\nHost: x\r\n")
            stalled.settimeout(5)
            started = time.time()
            assert stalled.recv(1024) == b"" and time.time() - started < 3
        # A body that never finishes: 408, and the connection is closed.
        with socket.create_connection(("127.0.0.1", port)) as slow:
            slow.sendall(b'POST /v1/route HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"prompt"')
            slow.settimeout(5)
            answer = b""
            while chunk := slow.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 408") and b"request body not received within 0.5 s" in answer
        # Idle keep-alive connections are not cut by the header timeout.
        with httpx.Client() as client:
            assert client.post(f"http://127.0.0.1:{port}/v1/route", json={"prompt": "hi"}).status_code == 200
            time.sleep(1.0)
            assert client.post(f"http://127.0.0.1:{port}/v1/route", json={"prompt": "hi"}).status_code == 200


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("upstream_timeout_s", float("nan"), "upstream timeout must be a positive number of seconds"),
        ("client_timeout_s", 0, "client timeout must be a positive number of seconds"),
        ("shutdown_grace_s", -1, "shutdown grace must be a positive number of seconds"),
    ],
)
def test_server_timeouts_are_checked(field, value, message):
    from edgeroute.runtime import ConfigurationError

    with pytest.raises(ConfigurationError) as caught:  # refused when the configuration is built, before uvicorn's
        ServerConfig(UpstreamConfig("s", "http://x/v1"), UpstreamConfig("w", "http://x/v1"), **{field: value})
    assert str(caught.value) == message
