"""The server's upstream clients (the lean HTTP/1.1 one and aiohttp) against a raw-socket upstream:
bytes, breaks, timeouts, reuse."""

from __future__ import annotations

import gzip
import json
import socket
import struct
import threading
import time
from collections.abc import Callable

import httpx
import pytest

pytest.importorskip("starlette")
pytest.importorskip("aiohttp")

from edgeroute.runtime.serving.http1 import SETTLE_S
from edgeroute.runtime.serving.policy import RouterSet  # noqa: E402
from edgeroute.runtime.serving.server import UpstreamConfig, create_app  # noqa: E402
from servers import server_config, serving  # noqa: E402

CHAT = "/v1/chat/completions"
STRONG = {"model": "router-bert-0", "messages": [{"role": "user", "content": "x"}]}
# Odd bytes on purpose: a blank keep-alive line first, non-ASCII, a comment, CRLF and a split chunk.
SSE = (
    b"\n",
    b': ping\n\ndata: {"choices":[{"delta":{"content":"\xc3\xa9t\xc3\xa9"}}]}\n\n',
    b'data: {"choices":[{"delta":{"con',
    b'tent":"!"}}]}\r\n\r\n',
    b"data: [DONE]\n\n",
)
COMPLETION = json.dumps(
    {
        "id": "x",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    }
).encode()


@pytest.fixture(scope="module")
def routers(bert_bundle):
    return RouterSet([bert_bundle])


class RawUpstream:
    """A keep-alive HTTP/1.1 upstream on a raw socket; ``answer(connection, body)`` writes each response."""

    def __init__(self, answer: Callable[[socket.socket, bytes], None]) -> None:
        self.answer, self.connections, self.requests = answer, 0, 0
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.listener.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/v1"
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                continue
            self.connections += 1
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        buffer = b""
        try:
            while not self.stopping.is_set():
                while b"\r\n\r\n" not in buffer:
                    data = connection.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
                while len(buffer) < length:
                    buffer += connection.recv(65536)
                body, buffer = buffer[:length], buffer[length:]
                self.requests += 1
                self.answer(connection, body)
        except OSError:
            return
        finally:
            connection.close()

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        self.listener.close()


def chunked(connection: socket.socket, parts: tuple[bytes, ...], pause_s: float = 0.0) -> None:
    connection.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n\r\n")
    for part in parts:
        connection.sendall(f"{len(part):x}\r\n".encode() + part + b"\r\n")
        time.sleep(pause_s)
    connection.sendall(b"0\r\n\r\n")


def reset(connection: socket.socket) -> None:
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()
    raise OSError("reset")


@pytest.fixture(params=["auto", "aiohttp"], ids=["lean", "aiohttp"])
def raw_server(request, upstream, routers):
    """A server whose strong model is a ``RawUpstream`` answering with the given function, through
    either upstream client."""
    opened: list[RawUpstream] = []

    def start(answer, **overrides):
        raw = RawUpstream(answer)
        opened.append(raw)
        strong = UpstreamConfig("strong-llm", raw.url, None)
        config = server_config(upstream, strong=strong, upstream_client=request.param, **overrides)
        return raw, serving(create_app(config, routers))

    yield start
    for raw in opened:
        raw.close()


def test_stream_is_relayed_byte_for_byte(raw_server):
    raw, running = raw_server(lambda connection, body: chunked(connection, SSE, pause_s=0.01))
    with running as url:
        with httpx.stream("POST", url + CHAT, json={**STRONG, "stream": True}) as response:
            relayed = b"".join(response.iter_raw())
        assert response.status_code == 200 and response.headers["x-edgeroute-model"] == "strong-llm"
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert relayed == b"".join(SSE)


def test_connections_to_the_upstream_are_reused(raw_server):
    def answer(connection, body):
        if json.loads(body).get("stream"):
            chunked(connection, SSE)
        else:
            connection.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                + str(len(COMPLETION)).encode()
                + b"\r\n\r\n"
                + COMPLETION
            )

    raw, running = raw_server(answer, fallback=False)
    with running as url:
        with httpx.Client() as client:
            for _ in range(5):
                assert client.post(url + CHAT, json=STRONG).status_code == 200
                time.sleep(2 * SETTLE_S)  # an idle connection is reused once settled (runtime/serving/http1.py)
                with client.stream("POST", url + CHAT, json={**STRONG, "stream": True}) as response:
                    assert response.read() == b"".join(SSE)
                time.sleep(2 * SETTLE_S)
    assert raw.requests == 10 and raw.connections == 1


def test_stream_reused_after_a_complete_stream(raw_server):
    raw, running = raw_server(lambda connection, body: chunked(connection, SSE), fallback=False)
    with running as url:
        for _ in range(3):
            with httpx.stream("POST", url + CHAT, json={**STRONG, "stream": True}) as response:
                assert b"".join(response.iter_raw()) == b"".join(SSE)
            time.sleep(2 * SETTLE_S)  # reused once settled, as above: without the pause a fast client can beat the settle
    assert raw.requests == 3 and raw.connections == 1


@pytest.mark.parametrize("break_with", ["reset", "stall"])
def test_stream_that_breaks_after_it_started_ends_and_is_counted(raw_server, break_with):
    def answer(connection, body):
        connection.sendall(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            + f"{len(SSE[1]):x}\r\n".encode()
            + SSE[1]
            + b"\r\n"
        )
        time.sleep(0.2)
        if break_with == "stall":
            time.sleep(1.5)  # past the 1 s upstream timeout
        reset(connection)

    raw, running = raw_server(answer, fallback=False)
    with running as url:
        with httpx.stream("POST", url + CHAT, json={**STRONG, "stream": True}) as response:
            relayed = b"".join(response.iter_raw())
        assert response.status_code == 200 and relayed == SSE[1]
        metrics = httpx.get(url + "/metrics").text
    assert 'edgeroute_errors_total{kind="upstream_stream_broken"} 1\n' in metrics


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_that_sends_headers_then_stalls_times_out(raw_server, stream):
    def answer(connection, body):
        connection.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: 100\r\n\r\n")
        time.sleep(3)

    raw, running = raw_server(answer, fallback=False)
    with running as url:
        started = time.perf_counter()
        response = httpx.post(url + CHAT, json={**STRONG, "stream": stream})
        assert time.perf_counter() - started < 2.8
    assert response.status_code == 504 and response.json()["error"]["type"] == "upstream_timeout"


def test_truncated_body_is_unreachable_and_falls_back(raw_server):
    def answer(connection, body):
        connection.sendall(b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{"id"')
        reset(connection)

    raw, running = raw_server(answer)
    with running as url:
        response = httpx.post(url + CHAT, json=STRONG)
    assert response.status_code == 200
    assert response.json()["edgeroute"]["fallback"] == "upstream_unreachable on strong-llm"


def test_garbage_instead_of_http_is_unreachable(raw_server):
    def answer(connection, body):
        connection.sendall(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        connection.close()
        raise OSError("done")

    raw, running = raw_server(answer, fallback=False)
    with running as url:
        response = httpx.post(url + CHAT, json=STRONG)
    assert response.status_code == 502 and response.json()["error"]["type"] == "upstream_unreachable"


def test_compressed_answer_is_decoded_as_before(raw_server):
    packed = gzip.compress(COMPLETION)

    def answer(connection, body):
        connection.sendall(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\n"
            b"content-length: " + str(len(packed)).encode() + b"\r\n\r\n" + packed
        )

    raw, running = raw_server(answer, fallback=False)
    with running as url:
        response = httpx.post(url + CHAT, json=STRONG)
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "ok"


def test_long_upstream_headers_are_accepted(raw_server):
    def answer(connection, body):
        connection.sendall(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-long: "
            + b"a" * 20000
            + b"\r\ncontent-length: "
            + str(len(COMPLETION)).encode()
            + b"\r\n\r\n"
            + COMPLETION
        )

    raw, running = raw_server(answer, fallback=False)
    with running as url:
        response = httpx.post(url + CHAT, json=STRONG)
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "ok"
