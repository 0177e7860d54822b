"""Fuzzing the upstream answer grammar (hypothesis), against both upstream clients: whatever an upstream
answers with (status line, headers, content-length or chunked framing, chunk extensions, trailers, cut
short or not), the server answers its own client with the upstream's answer, a fallback, or a typed
upstream error within its deadline; never a 500, never an answer meant for nobody, and it stays up."""

from __future__ import annotations

import json
import socket
import socketserver
import threading
import time

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeroute.runtime.serving.policy import RouterSet
from edgeroute.runtime.serving.server import UpstreamConfig, create_app
from servers import server_config, serving

ROUTER = "static-distilled-gpt4-mixtral"
TIMEOUT_S = 0.4
GRAMMAR = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
CONTENT = json.dumps({"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {"content": "fuzz"}}]}).encode()
STREAM = b'data: {"id":"x","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"fuzz"}}]}\n\ndata: [DONE]\n\n'


class ScriptedUpstream:
    """Answers every request with ``self.answer`` (raw bytes), then closes when ``self.close`` is set."""

    def __init__(self) -> None:
        outer = self
        self.answer, self.close = b"", True

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.settimeout(5)
                data = b""
                try:
                    while b"\r\n\r\n" not in data:
                        chunk = self.request.recv(65536)
                        if not chunk:
                            return
                        data += chunk
                    self.request.sendall(outer.answer)
                    if not outer.close:
                        time.sleep(2 * TIMEOUT_S + 0.5)  # hold the connection: the client's deadline ends it
                except OSError:
                    pass

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


status_lines = st.sampled_from(
    [
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 200",
        b"HTTP/1.0 200 OK",
        b"HTTP/1.1 502 Bad Gateway",
        b"HTTP/1.1 503 x",
        b"HTTP/2 200",
        b"HTP/1.1 200 OK",
    ]
    + [b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK", b"HTTP/1.1 99999 X", b"HTTP/1.1 200 OK\x00", b"HTTP/1.1 -1 X"]
) | st.binary(max_size=24)
header_names = st.sampled_from([b"content-type", b"x-junk", b"connection", b"content-encoding", b"Content-Type", b"x-\xff"]) | st.binary(
    min_size=1, max_size=12
)
header_values = st.sampled_from(
    [b"application/json", b"text/event-stream", b"close", b"keep-alive", b"gzip", b"\xe9\xff", b""]
) | st.binary(max_size=40)
chunk_extensions = st.sampled_from([b"", b";a=b", b";" + b"x" * 300, b" ", b";\x00"])


@st.composite
def upstream_answers(draw: st.DrawFn) -> bytes:
    """One upstream answer: a status line, headers, then a body framed by length, by chunks, or by closing."""
    stream = draw(st.booleans())
    body = draw(
        st.sampled_from([STREAM if stream else CONTENT, b"", b"{not json", b'{"score": 1e999}', b"\xff\xfe"]) | st.binary(max_size=64)
    )
    headers = draw(st.lists(st.tuples(header_names, header_values), max_size=4))
    lines = [draw(status_lines)] + [name + b": " + value for name, value in headers]
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    if framing == "length":
        lines.append(b"content-length: %d" % max(0, len(body) + draw(st.sampled_from([0, 0, 0, -1, 1, 1000]))))
        payload = body
    elif framing == "chunked":
        lines.append(b"transfer-encoding: chunked")
        payload = draw(chunked(body))
    else:
        payload = body
    return b"\r\n".join(lines) + b"\r\n\r\n" + payload


@st.composite
def chunked(draw: st.DrawFn, body: bytes) -> bytes:
    """``body`` in chunks (sizes right or wrong, with extensions), a last chunk or not, trailers or not."""
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=3)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)]) if b > a]
    out = b""
    for piece in pieces:
        size = len(piece) + draw(st.sampled_from([0, 0, 0, 1, -1]))
        out += b"%x%s\r\n%s\r\n" % (max(size, 0), draw(chunk_extensions), piece)
    if draw(st.booleans()):
        trailers = draw(st.lists(st.tuples(header_names, header_values), max_size=3))
        out += b"0\r\n" + b"".join(name + b": " + value + b"\r\n" for name, value in trailers) + b"\r\n"
    return out


@pytest.fixture(scope="module")
def scripted():
    return ScriptedUpstream()


@pytest.fixture(scope="module", params=["auto", "aiohttp"])
def fuzz_server(request, upstream, scripted):
    config = server_config(upstream, upstream_client=request.param, upstream_timeout_s=TIMEOUT_S)
    config.strong = UpstreamConfig("strong-llm", scripted.url)
    with serving(create_app(config, RouterSet([ROUTER]))) as url:
        yield url


@GRAMMAR
@given(answer=upstream_answers(), stream=st.booleans(), close=st.booleans())
def test_any_upstream_answer_is_relayed_or_a_fallback_never_a_500(fuzz_server, scripted, answer, stream, close):
    scripted.answer, scripted.close = answer, close
    body = {"model": f"router-{ROUTER}-0", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    started = time.monotonic()
    with httpx.Client(timeout=30) as client:
        response = client.post(fuzz_server + "/v1/chat/completions", json=body)
        text = response.text
        assert response.status_code != 500 and response.status_code < 600, (response.status_code, text[:300])
        if response.status_code == 200 and not stream:
            content = response.json()["choices"][0]["message"]["content"]
            assert content in ("fuzz", "answer from weak-llm"), content
        assert client.get(fuzz_server + "/health").status_code == 200
    # One deadline for the strong call and one for its fallback, plus slack for a busy machine.
    assert time.monotonic() - started < 2 * TIMEOUT_S + 5.0


def test_the_scripted_upstream_answers_what_it_is_given(scripted):
    """The fuzzed upstream sends exactly its script (the test above tests the server, not this helper)."""
    scripted.answer, scripted.close = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", True
    with socket.create_connection(("127.0.0.1", int(scripted.url.split(":")[2].split("/")[0])), timeout=5) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\ncontent-length: 0\r\n\r\n")
        assert sock.recv(100) == scripted.answer
