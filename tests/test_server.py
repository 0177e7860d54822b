"""edgeroute serve over real HTTP on loopback, driven by the real openai client."""

from __future__ import annotations

import logging
import sys

import httpx
import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("starlette")

from edgeroute.runtime.serving.policy import RouterSet  # noqa: E402
from edgeroute.runtime.serving.server import UpstreamConfig, create_app  # noqa: E402
from servers import server_config, free_port, serving  # noqa: E402

SECRET_PROMPT = "my secret prompt about the merger"


@pytest.fixture(scope="module")
def routers(bert_bundle, mf_bundle):
    return RouterSet([bert_bundle, mf_bundle])


_config = server_config  # one configuration for every server test (tests/servers.py)


def _client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def _serve_command(bundle, port: int, upstream_url: str) -> list[str]:
    """``edgeroute serve`` in a fresh interpreter, both models on the test upstream."""
    models = ["--strong-model", "strong-llm", "--strong-base-url", upstream_url + "/v1"]
    models += ["--weak-model", "weak-llm", "--weak-base-url", upstream_url + "/v1"]
    return [sys.executable, "-m", "edgeroute.runtime.cli", "serve", "--router", str(bundle), "--port", str(port), *models]


def test_routes_to_the_upstream_chosen_by_the_threshold(server, upstream):
    client = _client(server)
    strong = client.chat.completions.create(model="router-bert_bundle-0", messages=[{"role": "user", "content": "hi"}])
    weak = client.chat.completions.create(model="router-bert-1", messages=[{"role": "user", "content": "hi"}])
    assert upstream.models_asked == ["strong-llm", "weak-llm"]
    assert strong.choices[0].message.content == "answer from strong-llm"
    routing = strong.model_extra["edgeroute"]
    assert routing["tier"] == "strong" and routing["threshold"] == 0 and routing["score_us"] > 0
    assert weak.model_extra["edgeroute"]["model"] == "weak-llm"


def test_mf_alias_and_calibrated_default(server, upstream):
    response = _client(server).chat.completions.with_raw_response.create(model="router-mf", messages=[{"role": "user", "content": "hi"}])
    assert response.headers["x-edgeroute-router"] == "mf_bundle"
    assert float(response.headers["x-edgeroute-threshold"]) == 0.5  # uncalibrated bundle
    assert response.headers["x-edgeroute-model"] in ("strong-llm", "weak-llm")


def test_streaming_passes_through(server, upstream):
    stream = _client(server).chat.completions.create(model="router-bert-0", messages=[{"role": "user", "content": "tell me"}], stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    assert text == "answer from strong-llm"


def test_streaming_reports_decision_in_headers(server):
    with httpx.stream(
        "POST",
        server + "/v1/chat/completions",
        json={"model": "router-bert-1", "stream": True, "messages": [{"role": "user", "content": "x"}]},
    ) as response:
        assert response.status_code == 200
        assert response.headers["x-edgeroute-tier"] == "weak"
        body = b"".join(response.iter_raw())
    assert body.endswith(b"data: [DONE]\n\n")


@pytest.mark.parametrize(
    "behaviour, kind",
    [("500", "upstream_error"), ("429", "upstream_rate_limited"), ("badjson", "upstream_malformed"), ("stall", "upstream_timeout")],
)
def test_upstream_faults_fall_back_to_the_other_model(server, upstream, behaviour, kind):
    upstream.behaviour["strong-llm"] = behaviour
    response = _client(server).chat.completions.create(model="router-bert-0", messages=[{"role": "user", "content": "hi"}])
    assert response.choices[0].message.content == "answer from weak-llm"
    assert response.model_extra["edgeroute"]["fallback"] == f"{kind} on strong-llm"


@pytest.mark.parametrize(
    "behaviour, status, kind",
    [
        ("500", 502, "upstream_error"),
        ("429", 429, "upstream_rate_limited"),
        ("badjson", 502, "upstream_malformed"),
        ("stall", 504, "upstream_timeout"),
        ("400", 400, "upstream_rejected"),
    ],
)
def test_upstream_faults_without_fallback_are_openai_errors(upstream, routers, behaviour, status, kind):
    upstream.reset()
    upstream.behaviour["strong-llm"] = behaviour
    with serving(create_app(_config(upstream, fallback=False), routers)) as url:
        with pytest.raises(openai.APIStatusError) as caught:
            _client(url).chat.completions.create(model="router-bert-0", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == status
    assert caught.value.body["type"] == kind


def test_refused_connection_is_502_or_fallback(upstream, routers):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    config = _config(upstream, strong=UpstreamConfig("strong-llm", dead, None), fallback=False)
    with serving(create_app(config, routers)) as url:
        with pytest.raises(openai.APIStatusError) as caught:
            _client(url).chat.completions.create(model="router-bert-0", messages=[{"role": "user", "content": "x"}])
        assert caught.value.status_code == 502 and caught.value.body["type"] == "upstream_unreachable"
    config.fallback = True
    with serving(create_app(config, routers)) as url:
        response = _client(url).chat.completions.create(model="router-bert-0", messages=[{"role": "user", "content": "x"}])
        assert response.model_extra["edgeroute"]["model"] == "weak-llm"


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]}, "is not a router model name"),
        ({"model": "router-bert-1.5", "messages": [{"role": "user", "content": "x"}]}, "threshold must be a number in [0, 1]"),
        ({"model": "router-nope-0.3", "messages": [{"role": "user", "content": "x"}]}, "router 'nope' is not loaded"),
        ({"model": 7, "messages": [{"role": "user", "content": "x"}]}, "'model' must be a string"),
        ({"model": "router-bert-0.3", "messages": []}, "'messages' must be a non-empty list"),
        ({"model": "router-bert-0.3", "messages": "hi"}, "'messages' must be a non-empty list"),
        ({"model": "router-bert-0.3", "messages": [{"role": "user", "content": "  "}]}, "has no text"),
        ({"model": "router-bert-0.3", "messages": [{"role": "system", "content": "x"}]}, "no message with role 'user'"),
        ({"model": "router-bert-0.3", "messages": [1, 2]}, "every message must be an object"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_invalid_requests_are_400_not_500(server, body, fragment):
    response = httpx.post(server + "/v1/chat/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert fragment in error["message"] and error["type"] == "invalid_request_error"


def test_body_that_is_not_json(server):
    response = httpx.post(server + "/v1/chat/completions", content=b"\xff\xfe{", headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["message"] == "request body is not valid JSON"


def test_route_endpoint_single_batch_and_errors(server):
    single = httpx.post(server + "/v1/route", json={"prompt": "hello", "router": "bert", "threshold": 0}).json()
    assert single["decisions"][0]["tier"] == "strong"
    batch = httpx.post(server + "/v1/route", json={"prompts": ["a", "b", "c"], "threshold": 1}).json()
    assert [d["tier"] for d in batch["decisions"]] == ["weak"] * 3
    for body in (
        {"prompts": []},
        {"prompt": ""},
        {"prompts": ["ok", 5]},
        {"prompt": "x", "threshold": "high"},
        {"prompt": "x", "threshold": 2},
        {"prompt": "x", "router": "../etc"},
    ):
        response = httpx.post(server + "/v1/route", json=body)
        assert response.status_code == 400, body


def test_models_health_and_metrics(server):
    ids = [m.id for m in _client(server).models.list().data]
    assert {"router-bert_bundle", "router-mf_bundle", "router-bert", "router-mf"} <= set(ids)
    assert httpx.get(server + "/health").json()["status"] == "ok"
    httpx.post(server + "/v1/route", json={"prompt": "hello"})
    _client(server).chat.completions.create(model="router-bert-0", messages=[{"role": "user", "content": "x"}])
    text = httpx.get(server + "/metrics").text
    assert 'edgeroute_decisions_total{model="strong-llm",router="bert_bundle"}' in text
    assert "edgeroute_scoring_seconds_bucket" in text and "edgeroute_upstream_seconds_count" in text


def test_prompts_are_not_logged(server, caplog):
    with caplog.at_level(logging.DEBUG):
        _client(server).chat.completions.create(model="router-bert-0", messages=[{"role": "user", "content": SECRET_PROMPT}])
    assert SECRET_PROMPT not in caplog.text


def test_bearer_token_and_body_limit(upstream, routers):
    config = _config(upstream, auth_token="s3cret", max_body_bytes=2000)
    with serving(create_app(config, routers)) as url:
        assert httpx.post(url + "/v1/route", json={"prompt": "hi"}).status_code == 401
        ok = httpx.post(url + "/v1/route", json={"prompt": "hi"}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        big = httpx.post(url + "/v1/route", json={"prompt": "x" * 5000}, headers={"Authorization": "Bearer s3cret"})
        assert big.status_code == 413


def test_edgeroute_serve_command_end_to_end(upstream, bert_bundle, tmp_path):
    import subprocess
    import time

    upstream.reset()
    port = free_port()
    process = subprocess.Popen(
        _serve_command(bert_bundle, port, upstream.url),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                if time.time() > deadline or process.poll() is not None:
                    raise AssertionError("server did not start: " + (process.stdout.read() if process.poll() is not None else ""))
                time.sleep(0.2)
        response = _client(url).chat.completions.create(model="router-bert-0", messages=[{"role": "user", "content": "hi"}])
        assert response.choices[0].message.content == "answer from strong-llm"
    finally:
        process.terminate()
        # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status still says why.
        assert process.wait(timeout=30) in (0, -15)
    assert "Application shutdown complete" in process.stdout.read()


def test_serve_refuses_to_start_with_a_broken_router(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "edgeroute.runtime.cli", "serve", "--router", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "no bundle folder at this path" in result.stderr


def test_cors_only_when_configured(upstream, routers):
    headers = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    with serving(create_app(_config(upstream), routers)) as url:
        assert "access-control-allow-origin" not in httpx.options(url + "/v1/route", headers=headers).headers
    with serving(create_app(_config(upstream, cors_origins=["https://app.example"]), routers)) as url:
        response = httpx.options(url + "/v1/route", headers=headers)
        assert response.headers["access-control-allow-origin"] == "https://app.example"


def test_prompt_and_message_limits(upstream, routers):
    with serving(create_app(_config(upstream, max_prompt_chars=100, max_messages=3), routers)) as url:
        long = httpx.post(
            url + "/v1/chat/completions", json={"model": "router-bert-0", "messages": [{"role": "user", "content": "x" * 101}]}
        )
        assert long.status_code == 400 and "the limit is 100" in long.json()["error"]["message"]
        many = httpx.post(url + "/v1/chat/completions", json={"model": "router-bert-0", "messages": [{"role": "user", "content": "x"}] * 4})
        assert many.status_code == 400 and "the limit is 3" in many.json()["error"]["message"]
        assert httpx.post(url + "/v1/route", json={"prompt": "y" * 101}).status_code == 400


def test_graceful_shutdown_finishes_in_flight_requests(upstream, bert_bundle):
    import subprocess
    import threading
    import time

    upstream.reset()
    upstream.behaviour["strong-llm"] = "slow"  # answers after 1 s
    port = free_port()
    process = subprocess.Popen(
        _serve_command(bert_bundle, port, upstream.url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                httpx.get(url + "/health")
                break
            except httpx.TransportError:
                assert time.time() < deadline and process.poll() is None
                time.sleep(0.2)
        results = []
        thread = threading.Thread(
            target=lambda: results.append(
                httpx.post(
                    url + "/v1/chat/completions",
                    timeout=30,
                    json={"model": "router-bert-0", "messages": [{"role": "user", "content": "x"}]},
                )
            )
        )
        thread.start()
        time.sleep(0.4)  # the request is now waiting on the slow upstream
        process.terminate()
        thread.join(timeout=30)
        assert results and results[0].status_code == 200
        assert results[0].json()["choices"][0]["message"]["content"] == "answer from strong-llm"
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_load_script_runs_bounded_with_no_failed_request():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "load.py"
    spec = importlib.util.spec_from_file_location("benchmarks_load", path)
    load = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(load)
    document = load.run(clients=10, requests=60, max_seconds=60, router="router-static-distilled-gpt4-mixtral", bundles=[])
    assert document["load"]["requests_sent"] == 60 and document["load"]["failed"] == 0
    assert document["load"]["fallbacks"] > 0  # the injected strong-upstream failures were absorbed
    assert document["server_memory"]["after_soak_mb"] > 0


def test_upstream_that_resets_the_connection(upstream, routers):
    import socket
    import struct
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    stop = threading.Event()

    def reset_everything():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                continue
            connection.recv(65536)
            # SO_LINGER 0: close with a TCP RST instead of a clean FIN.
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            connection.close()

    thread = threading.Thread(target=reset_everything, daemon=True)
    thread.start()
    resetting = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    try:
        config = _config(upstream, strong=UpstreamConfig("strong-llm", resetting, None), fallback=False)
        with serving(create_app(config, routers)) as url:
            response = httpx.post(
                url + "/v1/chat/completions", json={"model": "router-bert-0", "messages": [{"role": "user", "content": "x"}]}
            )
            assert response.status_code == 502 and response.json()["error"]["type"] == "upstream_unreachable"
        config.fallback = True
        with serving(create_app(config, routers)) as url:
            response = httpx.post(
                url + "/v1/chat/completions", json={"model": "router-bert-0", "messages": [{"role": "user", "content": "x"}]}
            )
            assert response.status_code == 200 and response.json()["edgeroute"]["model"] == "weak-llm"
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def test_strong_share_budget_holds_the_share_and_reports_it(upstream, routers):
    """serve --strong-share: requests without a threshold meet the budget's; it is in each decision and /metrics."""
    prompts = [f"question {i}: " + "why " * (i % 17) for i in range(120)]
    upstream.reset()  # no fault left by an earlier test: a fallback would change the tiers counted here
    with serving(create_app(_config(upstream, strong_share=0.3, budget_window=60), routers)) as url:
        client = _client(url)
        tiers = []
        for prompt in prompts:
            response = client.chat.completions.create(model="router-mf", messages=[{"role": "user", "content": prompt}])
            tiers.append(response.model_extra["edgeroute"]["tier"])
        routing = response.model_extra["edgeroute"]
        assert routing["budget"]["target"] == 0.3 and routing["budget"]["window"] == 60
        assert abs(tiers[60:].count("strong") / 60 - 0.3) <= 0.1  # the window's quantile, once it is full
        explicit = httpx.post(url + "/v1/route", json={"router": "mf", "prompt": "hi", "threshold": 0.0}).json()
        assert explicit["decisions"][0]["budget"] is None and explicit["decisions"][0]["tier"] == "strong"
        metrics = httpx.get(url + "/metrics").text
    assert 'edgeroute_strong_share_target{router="mf_bundle"} 0.3' in metrics
    assert "edgeroute_strong_share_observed{" in metrics and "edgeroute_budget_threshold{" in metrics


def test_strong_share_out_of_range_is_refused_at_start(upstream, routers):
    from edgeroute.runtime import InvalidInputError

    with pytest.raises(InvalidInputError) as caught:
        create_app(_config(upstream, strong_share=1.2), routers)
    assert str(caught.value) == "strong share must be a number strictly between 0 and 1, got 1.2"


def test_default_alias_is_models_default_when_loaded(mf_bundle):
    from edgeroute.runtime import default_router_name

    shipped = RouterSet(["bert-minilm-gpt4-mixtral", default_router_name()])
    assert shipped.default == default_router_name() and shipped.get("default").name == default_router_name()
    assert RouterSet([mf_bundle]).default == "mf_bundle"  # not loaded: the first --router


def test_strong_share_budget_threshold_stays_within_its_floor(upstream, routers):
    upstream.reset()
    with serving(create_app(_config(upstream, strong_share=0.5, budget_window=50, budget_floor=0.9), routers)) as url:
        decisions = [
            httpx.post(url + "/v1/route", json={"router": "mf", "prompt": f"q{i} " + "x " * i}).json()["decisions"][0] for i in range(60)
        ]
    assert all(d["threshold"] >= 0.9 and d["budget"]["threshold"] >= 0.9 for d in decisions)
