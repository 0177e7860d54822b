"""The lean HTTP/1.1 upstream client on its own, against asyncio upstreams that misbehave on purpose:
interim answers, close-delimited and oversized bodies, stray bytes, stale kept-alive connections,
the connection limit and the header checks."""

from __future__ import annotations

import asyncio
import gzip
import re
import zlib
from collections.abc import Awaitable, Callable

import pytest

pytest.importorskip("httptools")

from edgeroute.runtime.serving.http1 import SETTLE_S, Http1Pool, UpstreamProtocolError, lean_client_fits  # noqa: E402

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int, int], Awaitable[bool]]


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    """One request's body, or None at the connection's end."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    return await reader.readexactly(length)


class Upstream:
    """An asyncio upstream: ``handle(reader, writer, connection_number, request_number)`` answers each
    request and returns whether to keep the connection open."""

    def __init__(self, handle: Handler) -> None:
        self.handle, self.connections, self.closed = handle, 0, 0

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1/chat/completions"

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number, request = self.connections, 0
        try:
            while await read_request(reader) is not None:
                request += 1
                if not await self.handle(reader, writer, number, request):
                    break
            else:
                self.closed += 1  # the client closed it
        finally:
            writer.close()


def run(handle: Handler, client: Callable[[Http1Pool, str], Awaitable[object]], **pool: float) -> tuple[object, Upstream]:
    """``client(pool, url)`` against an ``Upstream`` answering with ``handle``; its result and the upstream."""
    upstream = Upstream(handle)

    async def main() -> object:
        async with upstream as url:
            connections = Http1Pool(**{"timeout_s": 1.0, **pool})  # type: ignore[arg-type]
            try:
                return await client(connections, url)
            finally:
                connections.close()
                await asyncio.sleep(0.05)

    return asyncio.run(main()), upstream


async def body(pool: Http1Pool, url: str) -> tuple[int, bytes]:
    answer = await pool.post(url, {"content-type": "application/json"}, b"{}")
    try:
        parts = []
        while chunk := await answer.readany():
            parts.append(chunk)
        return answer.status, b"".join(parts)
    finally:
        answer.release()


async def bodies(pool: Http1Pool, url: str, n: int = 3) -> list[tuple[int, bytes]]:
    return [await body(pool, url) for _ in range(n)]


def answering(*raw: bytes, keep: bool = True) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: int, request: int) -> bool:
        for part in raw:
            writer.write(part)
            await writer.drain()
        return keep

    return handle


def test_kept_alive_connection_is_reused_once_settled_and_closed_when_idle():
    async def spaced(pool: Http1Pool, url: str) -> list[tuple[int, bytes]]:
        answers = []
        for _ in range(3):
            answers.append(await body(pool, url))
            await asyncio.sleep(2 * SETTLE_S)
        return answers

    result, upstream = run(answering(ok(b'{"a":1}')), spaced)
    assert result == [(200, b'{"a":1}')] * 3
    assert upstream.connections == 1 and upstream.closed == 1


def test_a_connection_is_not_reused_before_it_settles():
    """Back to back, each request gets a connection that has been idle at least SETTLE_S, or a new one: an answer
    nobody asked for, sent just after the real one, then arrives while the connection is idle, where it is caught."""
    result, upstream = run(answering(ok(b"{}")), bodies, settle_s=60.0)  # long: no scheduling stall can reach it
    assert result == [(200, b"{}")] * 3 and upstream.connections == 3


def test_idle_connection_past_keepalive_is_not_reused():
    async def client(pool: Http1Pool, url: str) -> object:
        first = await body(pool, url)
        await asyncio.sleep(0.3)
        return [first, await body(pool, url)]

    result, upstream = run(answering(ok(b"{}")), client, keepalive_s=0.2)
    assert result == [(200, b"{}")] * 2 and upstream.connections == 2 and upstream.closed == 2


def test_interim_answer_is_skipped():
    result, _ = run(answering(b"HTTP/1.1 100 Continue\r\n\r\n", ok(b"{}")), bodies)
    assert result == [(200, b"{}")] * 3


def test_body_delimited_by_close_is_read_whole_and_not_reused():
    result, upstream = run(answering(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n", b'{"x":', b"2}", keep=False), bodies)
    assert result == [(200, b'{"x":2}')] * 3 and upstream.connections == 3


def test_compressed_chunked_body_is_decoded():
    packed = gzip.compress(b"data: x\n\n" * 1000)
    chunked = b"".join(f"{len(packed[i : i + 500]):x}\r\n".encode() + packed[i : i + 500] + b"\r\n" for i in range(0, len(packed), 500))
    head = b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n"
    result, upstream = run(answering(head, chunked, b"0\r\n\r\n"), bodies, settle_s=0)
    assert result == [(200, b"data: x\n\n" * 1000)] * 3 and upstream.connections == 1


def test_large_body_read_slowly_arrives_whole():
    payload = bytes(range(256)) * 16384  # 4 MiB: reading pauses past 1 MiB buffered, then resumes

    async def client(pool: Http1Pool, url: str) -> object:
        answer = await pool.post(url, {}, b"{}")
        received = b""
        while chunk := await answer.readany():
            received += chunk
            await asyncio.sleep(0.01)
        answer.release()
        return received == payload

    result, _ = run(answering(ok(payload)), client)
    assert result is True


def test_kept_alive_connection_closed_before_its_answer_is_not_sent_again():
    seen: list[tuple[int, int]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: int, request: int) -> bool:
        seen.append((connection, request))
        if request == 2:
            return False  # read, perhaps processed, then closed without an answer: the fallback rule's case
        writer.write(ok(b"{}"))
        return True

    with pytest.raises(ConnectionResetError, match="^the upstream closed the connection before its answer ended$"):
        run(handle, bodies, settle_s=0)
    assert seen == [(1, 1), (1, 2)]


def test_fresh_connection_closed_without_an_answer_is_an_error():
    with pytest.raises(ConnectionResetError, match="^the upstream closed the connection before its answer ended$"):
        run(answering(keep=False), body)


def test_truncated_body_is_an_error():
    with pytest.raises(ConnectionResetError, match="^the upstream closed the connection before its answer ended$"):
        run(answering(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{}", keep=False), body)


def test_bytes_after_the_answer_close_the_connection():
    result, upstream = run(answering(ok(b"{}") + b"HTTP/1.1 200 OK\r\n"), bodies)
    assert result == [(200, b"{}")] * 3 and upstream.connections == 3


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "the answer is not HTTP/1.1: Expected HTTP/, RTSP/ or ICE/"),
        (b"HTTP/1.1 200 OK\r\nx-long: " + b"a" * (300 * 1024), "the answer's headers exceed 256 KiB"),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n{}",
            "the answer is not HTTP/1.1: Transfer-Encoding can't be present with Content-Length",
        ),
        (b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: 2\r\n\r\n{}", "the compressed body is corrupt"),
        (
            b"HTTP/1.1 200 OK\r\ncontent-encoding: deflate\r\ncontent-length: 14\r\n\r\n" + zlib.compress(b"{}") + b"{}",
            "the upstream sent bytes after its compressed body",
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: 10\r\n\r\n" + gzip.compress(b"{}" * 100)[:10],
            "the compressed body ended before its end",
        ),
    ],
)
def test_answers_that_are_no_http_are_protocol_errors(raw, message):
    with pytest.raises(UpstreamProtocolError, match="^" + re.escape(message)):
        run(answering(raw), body)


def test_unsupported_content_encoding_fails_before_any_body_byte():
    async def client(pool: Http1Pool, url: str) -> object:
        return await pool.post(url, {}, b"{}")

    with pytest.raises(UpstreamProtocolError, match="^unsupported content-encoding 'br'$"):
        run(answering(b"HTTP/1.1 200 OK\r\ncontent-encoding: br\r\ncontent-length: 2\r\n\r\n{}"), client)


@pytest.mark.parametrize(
    ("coding", "packed"),
    [
        ("gzip", gzip.compress(b"data: x\n\n" * 50) + gzip.compress(b"data: y\n\n" * 50)),  # two gzip members
        ("deflate", zlib.compress(b"data: x\n\n" * 50) + b""),
        ("deflate", zlib.compress(b"data: x\n\n" * 50)[2:-4]),  # raw deflate, as some servers send it
    ],
    ids=["gzip-members", "zlib-deflate", "raw-deflate"],
)
def test_compressed_bodies_decode_as_aiohttp_decodes_them(coding, packed):
    head = f"HTTP/1.1 200 OK\r\ncontent-encoding: {coding}\r\ncontent-length: {len(packed)}\r\n\r\n".encode()
    result, _ = run(answering(head + packed[:1], packed[1:]), body)
    expected = b"data: x\n\n" * 50 + (b"data: y\n\n" * 50 if coding == "gzip" else b"")
    assert result == (200, expected)


def test_identity_transfer_encoding_body_delimited_by_close():
    raw = b"HTTP/1.1 200 OK\r\ntransfer-encoding: identity\r\n\r\n{}"
    result, _ = run(answering(raw, keep=False), body)
    assert result == (200, b"{}")


def test_answer_released_after_the_pool_closed_closes_its_connection():
    async def client(pool: Http1Pool, url: str) -> object:
        answer = await pool.post(url, {}, b"{}")
        while await answer.readany():
            pass
        pool.close()
        answer.release()
        await asyncio.sleep(0.05)
        return pool.closed

    result, upstream = run(answering(ok(b"{}")), client)
    assert result is True and upstream.closed == 1


def test_cancelled_stream_before_its_first_bytes_frees_its_connection():
    pytest.importorskip("aiohttp")
    from edgeroute.runtime.serving.upstream import UpstreamConfig, UpstreamRelay

    async def client(pool: Http1Pool, url: str) -> object:
        strong = UpstreamConfig("s", url.removesuffix("/chat/completions"), None)
        relay = UpstreamRelay(strong, strong, 5.0, False, None)
        call = asyncio.ensure_future(relay.call("strong", {"messages": []}, stream=True))
        await asyncio.sleep(0.2)  # headers in, no body byte yet
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await asyncio.sleep(0.05)
        return relay.pool().slots.locked()

    stalled = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: int, request: int) -> bool:
        writer.write(stalled)
        await reader.read()  # until the client closes
        return False

    result, upstream = run(handle, client)
    assert result is False and upstream.connections == 1


def test_header_stall_times_out():
    with pytest.raises(asyncio.TimeoutError):
        run(answering(b"HTTP/1.1 200 OK\r\n"), body, timeout_s=0.2)


def test_connection_limit_bounds_busy_connections():
    async def client(pool: Http1Pool, url: str) -> object:
        held = await pool.post(url, {}, b"{}")  # not released: holds the only slot
        with pytest.raises(asyncio.TimeoutError):
            await pool.post(url, {}, b"{}")
        held.release()
        return await body(pool, url)

    result, _ = run(answering(ok(b"{}")), client, limit=1, timeout_s=0.2)
    assert result == (200, b"{}")


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({"x-key": "a\r\nx-injected: 1"}, "holds a line break or is no header name"),
        ({"x-key\r\n": "a"}, "holds a line break or is no header name"),
        ({"x:y": "a"}, "holds a line break or is no header name"),
        ({"x y": "a"}, "holds a line break or is no header name"),
        ({"Content-Length": "0"}, "is written by the client itself"),
    ],
)
def test_header_that_could_split_the_request_is_refused(headers, why):
    async def client(pool: Http1Pool, url: str) -> object:
        return await pool.post(url, headers, b"{}")

    name = next(iter(headers))
    with pytest.raises(ValueError, match=re.escape(f"header {name!r} {why}") + "$"):
        run(answering(ok(b"{}")), client)


@pytest.mark.parametrize(
    ("url", "proxy", "fits"),
    [
        ("http://127.0.0.1:8000/v1/chat/completions", None, True),
        ("https://api.openai.com/v1/chat/completions", None, False),
        ("http://10.0.0.1/v1/chat/completions", "http://proxy:3128", False),
        ("http://user:secret@10.0.0.1/v1/chat/completions", None, False),
    ],
)
def test_lean_client_serves_plain_http_without_proxy_or_credentials(url, proxy, fits):
    assert lean_client_fits(url, proxy) is fits


@pytest.mark.parametrize(("client", "lean"), [("auto", {"strong": True, "weak": False}), ("aiohttp", {"strong": False, "weak": False})])
def test_relay_gives_plain_http_upstreams_the_lean_client(client, lean):
    pytest.importorskip("aiohttp")
    from edgeroute.runtime.serving.upstream import UpstreamConfig, UpstreamRelay

    strong, weak = UpstreamConfig("s", "http://127.0.0.1:9/v1", None), UpstreamConfig("w", "https://api.openai.com/v1", None)
    assert UpstreamRelay(strong, weak, 1.0, True, None, client).lean == lean
