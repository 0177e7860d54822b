"""Issue 25: hostile peers on both sides of the server, and what a request or an upstream may cost."""

from __future__ import annotations

import json
import logging
import socket

import httpx
import pytest

pytest.importorskip("starlette")

from edgeroute.runtime.errors import ConfigurationError  # noqa: E402
from edgeroute.runtime.serving.policy import RouterSet  # noqa: E402
from edgeroute.runtime.serving.server import MAX_HEADER_BYTES, ServerConfig, UpstreamConfig, create_app  # noqa: E402
from servers import ChattyUpstream, HostileUpstream, realistic_prompts, server_config, serving_as_edgeroute  # noqa: E402


@pytest.fixture(scope="module")
def routers(bert_bundle):
    return RouterSet([bert_bundle])


def _read_all(sock: socket.socket) -> bytes:
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except ConnectionResetError:
        pass  # closed with the flood unread: what was answered before is still here
    return answer


@pytest.mark.parametrize("parser", ["h11", "httptools"])
def test_header_flood_gets_431_before_auth_and_big_bodies_still_pass(upstream, routers, parser, monkeypatch):
    if parser == "httptools":
        pytest.importorskip("httptools")
    config = server_config(upstream, auth_token="secret")
    with serving_as_edgeroute(create_app(config, routers), config, parser) as port:
        with socket.create_connection(("127.0.0.1", port)) as flood:
            flood.settimeout(5)
            flood.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Flood: ")
            sent = 0
            try:
                while sent < 4 * MAX_HEADER_BYTES:  # a header value that never ends, in small pieces
                    flood.sendall(b"a" * 4096)
                    sent += 4096
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server closed first, as it should
            answer = _read_all(flood)
        assert answer.startswith(b"HTTP/1.1 431 ") and b'"code": "headers_too_large"' in answer
        assert sent <= MAX_HEADER_BYTES + 512 * 1024  # cut off within a read or two of the bound
        # Headers near the bound, then a body far past it, are an ordinary request.
        headers = {"authorization": "Bearer secret", "x-pad": "p" * (MAX_HEADER_BYTES // 2)}
        body = {"prompt": "hi", "padding": "z" * (2 * 1024 * 1024)}
        response = httpx.post(f"http://127.0.0.1:{port}/v1/route", json=body, headers=headers, timeout=10)
        assert response.status_code == 200, response.text


def test_a_key_goes_only_to_the_base_url_it_was_configured_for(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-0123456789")
    monkeypatch.setenv("MY_KEY", "sk-mine-0123456789")
    assert UpstreamConfig("m", "https://api.openai.com/v1").headers() == {"Authorization": "Bearer sk-openai-0123456789"}
    assert UpstreamConfig("m", "http://10.0.0.7:8000/v1").headers() == {}
    assert UpstreamConfig("m", "http://10.0.0.7:8000/v1", "MY_KEY").headers() == {"Authorization": "Bearer sk-mine-0123456789"}


def test_an_upstream_sent_no_key_is_named_at_start(upstream, routers, caplog):
    with caplog.at_level(logging.WARNING, logger="edgeroute.server"):
        create_app(server_config(upstream), routers)
    assert f"strong upstream {upstream.url}/v1: no API key is sent (name its key variable to send one)" in caplog.messages


@pytest.mark.parametrize(
    "url",
    ["notaurl", "ftp://host/v1", "http:///v1", "http://host:99999/v1", "http://host:0/v1", "http://ho st/v1"],
)
def test_base_urls_that_cannot_work_are_refused_at_start(url, routers):
    config = ServerConfig(UpstreamConfig("s", url), UpstreamConfig("w", "http://127.0.0.1:9/v1"))
    with pytest.raises(ConfigurationError) as error:
        create_app(config, routers)
    assert str(error.value) == f"strong base URL {url!r} is not an http(s) URL with a host and a valid port (e.g. http://127.0.0.1:8000/v1)"


def test_a_named_key_variable_that_is_unset_is_refused_at_start(routers, monkeypatch):
    monkeypatch.delenv("EDGEROUTE_NO_SUCH_KEY", raising=False)
    config = ServerConfig(
        UpstreamConfig("s", "http://127.0.0.1:9/v1"), UpstreamConfig("w", "http://127.0.0.1:9/v1", "EDGEROUTE_NO_SUCH_KEY")
    )
    with pytest.raises(ConfigurationError) as error:
        create_app(config, routers)
    assert str(error.value) == "weak API key variable EDGEROUTE_NO_SUCH_KEY is not set: set it, or name no variable to send no key"


LABEL_RULE = (
    "must be 1 to 200 printable ASCII characters (no control characters, no line breaks); re-export the bundle with `edgeroute export`"
)


@pytest.mark.parametrize(
    "change, where",
    [
        (lambda d: d.update(name="evil\r\nx-injected: 1"), "name"),
        (lambda d: d.update(name="n" * 201), "name"),
        (lambda d: d.update(name=""), "name"),
        (lambda d: d.update(name="r\u00e9sum\u00e9"), "name"),
        (lambda d: d["head"]["model_names"].__setitem__(0, "gpt\n4"), "head.model_names[0]"),
        (lambda d: d.update(models={"strong": "a\x00b", "weak": "w"}), "models.strong"),
    ],
)
def test_names_that_reach_headers_are_validated_at_load(change, where):
    from pathlib import Path

    from edgeroute.runtime import ManifestError
    from edgeroute.runtime.scoring.manifest import parse_manifest
    from edgeroute.runtime.scoring.router import models_dir

    data = json.loads((models_dir() / "static-distilled-gpt4-mixtral" / "manifest.json").read_text(encoding="utf-8"))
    change(data)
    with pytest.raises(ManifestError) as caught:
        parse_manifest(data, Path("/bundle/manifest.json"))
    assert str(caught.value) == f"/bundle/manifest.json: '{where}' {LABEL_RULE}"


@pytest.mark.parametrize("client", ["auto", "aiohttp"])
@pytest.mark.parametrize("behaviour, stream", [("hugenumber", False), ("surrogate", False), ("latin1type", True)])
def test_upstream_answers_that_cannot_be_relayed_are_upstream_malformed(upstream, routers, client, behaviour, stream):
    from servers import serving

    upstream.reset()
    upstream.behaviour["strong-llm"] = behaviour
    body = {"model": "router-bert-0", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    with serving(create_app(server_config(upstream, upstream_client=client), routers)) as url:
        response = httpx.post(url + "/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        assert response.headers["x-edgeroute-fallback"] == "upstream_malformed on strong-llm"
    with serving(create_app(server_config(upstream, upstream_client=client, fallback=False), routers)) as url:
        response = httpx.post(url + "/v1/chat/completions", json=body)
        assert response.status_code == 502 and response.json()["error"]["type"] == "upstream_malformed"
    upstream.reset()


# ------------------------------------------------------------------ the strong-call budget under attack
def _chat_share(client: httpx.Client, url: str, prompts: list[str]) -> float:
    tiers = []
    for prompt in prompts:
        body = {"model": "router-default", "messages": [{"role": "user", "content": prompt}]}
        tiers.append(client.post(url + "/v1/chat/completions", json=body).headers["x-edgeroute-tier"])
    return tiers.count("strong") / len(tiers)


ATTACKS = {
    "1,024 x 'hi' in one /v1/route batch": lambda c, u: c.post(u + "/v1/route", json={"prompts": ["hi"] * 1024}),
    "1,024 long padded prompts through /v1/route": lambda c, u: c.post(
        u + "/v1/route", json={"prompts": [f"{n} " + "padding words " * 300 for n in range(1024)]}
    ),
    "1,000 identical chat prompts": lambda c, u: [
        c.post(u + "/v1/chat/completions", json={"model": "router-default", "messages": [{"role": "user", "content": "hi"}]})
        for _ in range(1000)
    ],
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_no_client_can_steer_the_strong_call_budget(upstream, attack):
    from servers import serving

    upstream.reset()
    app = create_app(server_config(upstream, strong_share=0.3, budget_window=400), RouterSet(["static-distilled-gpt4-mixtral"]))
    with serving(app) as url, httpx.Client(timeout=30) as client:
        _chat_share(client, url, realistic_prompts(400, seed=1))  # a full window of real traffic
        before = _chat_share(client, url, realistic_prompts(200, seed=2))
        ATTACKS[attack](client, url)
        after = _chat_share(client, url, realistic_prompts(200, seed=3))
    print(f"budget attack {attack!r}: share of the next 200 real calls {before:.3f} before, {after:.3f} after")
    assert abs(after - before) <= 0.1, (attack, before, after)


# ------------------------------------------------------------------ upstreams that never finish
def _chat_past(hostile: HostileUpstream, upstream, routers, **config) -> tuple[httpx.Response, float]:
    """One chat call routed strong (to ``hostile``, the weak model on ``upstream``), and how long it took."""
    import time

    from servers import serving

    try:
        settings = server_config(upstream, **config)
        settings.strong = UpstreamConfig("strong-llm", hostile.url)
        with serving(create_app(settings, routers)) as url:
            started = time.monotonic()
            body = {"model": "router-bert-0", "messages": [{"role": "user", "content": "hi"}]}
            response = httpx.post(url + "/v1/chat/completions", json=body, timeout=60)
            return response, time.monotonic() - started
    finally:
        hostile.close()


@pytest.mark.parametrize("client", ["auto", "aiohttp"])
@pytest.mark.parametrize("behaviour", ["early_hints", "trickle", "late_trailer"])
def test_every_upstream_call_has_a_deadline_of_its_own(upstream, routers, client, behaviour):
    response, elapsed = _chat_past(HostileUpstream(behaviour), upstream, routers, upstream_client=client, upstream_timeout_s=1.0)
    assert response.status_code == 200 and response.headers["x-edgeroute-fallback"] == "upstream_timeout on strong-llm"
    assert elapsed < 4.0  # the headers' and the body's deadlines, 1 s each, and the weak model's answer


def test_lean_client_bounds_trailers(upstream, routers):
    response, elapsed = _chat_past(HostileUpstream("huge_trailer"), upstream, routers, upstream_client="auto", upstream_timeout_s=5.0)
    assert response.status_code == 200 and response.headers["x-edgeroute-fallback"] == "upstream_unreachable on strong-llm"
    assert elapsed < 3.0  # cut at 256 KiB of trailer, long before the upstream deadline


def test_a_connection_the_upstream_broke_is_the_upstreams_failure_never_a_500():
    """aiohttp raises RuntimeError("Connection closed.") when a body is read after the upstream's framing broke
    the connection (seen with an endless trailer and several calls at once: a 500, no fallback). It is the
    upstream's failure: upstream_unreachable, which falls back."""
    import asyncio

    from edgeroute.runtime.serving.upstream import AiohttpAnswer, UpstreamError, UpstreamRelay

    class Closed:
        async def readany(self) -> bytes:
            raise RuntimeError("Connection closed.")

    class Response:
        status, headers, content = 200, {"content-type": "application/json"}, Closed()

        def release(self) -> None:
            pass

    relay = UpstreamRelay(UpstreamConfig("s", "http://127.0.0.1:9/v1"), UpstreamConfig("w", "http://127.0.0.1:9/v1"), 1.0, True, None)
    with pytest.raises(UpstreamError) as caught:
        asyncio.run(relay.read(relay.upstreams["strong"], AiohttpAnswer(Response())))
    assert caught.value.kind == "upstream_unreachable"


@pytest.mark.parametrize("client", ["auto", "aiohttp"])
def test_an_unsolicited_answer_never_reaches_another_client(upstream, routers, client):
    import random
    import time

    from servers import serving

    chatty = ChattyUpstream(delay_s=0.01)
    wrong = []
    try:
        config = server_config(upstream, upstream_client=client, upstream_timeout_s=2.0)
        config.strong = UpstreamConfig("strong-llm", chatty.url)
        with serving(create_app(config, routers)) as url, httpx.Client(timeout=30) as client:
            rng = random.Random(0)
            for n in range(200):
                token = f"request-{n}"
                body = {"model": "router-bert-0", "messages": [{"role": "user", "content": token}]}
                answer = client.post(url + "/v1/chat/completions", json=body).json()
                content = answer["choices"][0]["message"]["content"]
                assert content == token or answer["edgeroute"]["fallback"], answer  # its own answer, or the weak model's
                if content == "unsolicited":
                    wrong.append(n)
                time.sleep(rng.uniform(0.0, 0.03))
    finally:
        chatty.server.shutdown()
        chatty.server.server_close()
    # The first unsolicited answer can meet a request already sent on that connection (HTTP/1.1 answers carry
    # no request id); once one is seen, that upstream's connections are never reused, and none reaches a client.
    assert len(wrong) <= 1, wrong


# ------------------------------------------------------------------ bundles from untrusted places: tokenizers
def _tokenizer_edit(bundle, change):
    from edgeroute.runtime.scoring.manifest import sha256_of

    path = bundle / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data), encoding="utf-8")
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    manifest["files"]["tokenizer.json"]["sha256"] = sha256_of(path)  # an attacker recomputes hashes
    (bundle / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return path


DOUBLING = {"type": "Sequence", "normalizers": [{"type": "Replace", "pattern": {"String": "a"}, "content": "aa"}] * 16}


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda d: d.update(normalizer=DOUBLING),
            "the normalizer makes text {x} times longer (at most 4 allowed: scoring cost must stay bounded)",
        ),
        (
            lambda d: d.update(pre_tokenizer={"type": "Split", "pattern": {"Regex": "(a+)+$"}, "behavior": "Isolated", "invert": False}),
            "pre_tokenizer 'Split' uses a regex pattern, which edgeroute does not run",
        ),
        (
            lambda d: d.update(normalizer={"type": "Lowercase2"}),
            "normalizer 'Lowercase2' is not one edgeroute runs (allowed: ",
        ),
    ],
)
def test_tokenizers_that_cost_without_bound_are_refused_at_load(tmp_path, change, message):
    import re
    import shutil

    from edgeroute.runtime import BundleCorruptError, Router
    from edgeroute.runtime.scoring.router import models_dir

    bundle = tmp_path / "static"
    shutil.copytree(models_dir() / "static-distilled-gpt4-mixtral", bundle)
    path = _tokenizer_edit(bundle, change)
    with pytest.raises(BundleCorruptError) as caught:
        Router.load(bundle)
    expected = re.escape(f"{path}: {message}").replace(r"\{x\}", r"\d+")
    assert re.match(expected, str(caught.value)), str(caught.value)
    assert str(caught.value).endswith("re-export the bundle")


def test_a_tokenizer_panic_is_a_typed_error_not_a_bare_exception(tmp_path):
    from edgeroute.runtime import BundleCorruptError, Router
    from edgeroute.runtime.scoring.router import _finite

    class PanicException(BaseException):  # what pyo3 raises for a Rust panic inside tokenizers
        pass

    def panicking(prompts):
        raise PanicException("regex backtrack limit")

    router = Router.load("static-distilled-gpt4-mixtral")
    router._win_rates = _finite(panicking, tmp_path)
    with pytest.raises(BundleCorruptError) as caught:
        router.strong_win_rates(["hi", "there"])
    assert str(caught.value) == f"{tmp_path}: the tokenizer panicked on a prompt; re-export the bundle"


def test_an_answer_released_before_its_end_does_not_distrust_its_upstream():
    """A client that stops reading (a cancelled stream, a deadline) releases a half-read aiohttp answer: that
    connection closes at once; the rest of its stream is not an answer nobody asked for, and the upstream stays
    trusted (before, the connection waited 25 ms as if idle and the next chunk distrusted the upstream for good)."""
    import asyncio
    import socketserver
    import threading
    import time

    import aiohttp

    from edgeroute.runtime.serving.idle_guard import guarded_connector

    class Streaming(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.recv(65536)
            try:
                self.request.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
                for _ in range(200):  # a chunk every 5 ms for a second
                    self.request.sendall(b"6\r\ndata:x\r\n")
                    time.sleep(0.005)
            except OSError:
                pass

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Streaming)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()

    async def main() -> set:
        connector = guarded_connector(aiohttp, limit=10, keepalive_timeout=4.0)
        async with aiohttp.ClientSession(connector=connector) as session:
            response = await session.post(f"http://127.0.0.1:{server.server_address[1]}/v1/chat/completions", json={})
            await response.content.readany()
            response.release()  # read no further
            await asyncio.sleep(0.3)
            return set(connector.distrusted)

    try:
        assert asyncio.run(main()) == set()
    finally:
        server.shutdown()
        server.server_close()
