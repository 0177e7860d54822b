"""A lean HTTP/1.1 client for the server's plain ``http://`` upstreams: an asyncio protocol with
httptools' parser (``serve`` extra) and a keep-alive pool.

Why not aiohttp here: on a loopback upstream aiohttp's client cost 170-225 µs of the server's CPU
per proxied call, a quarter of all of it; this client does the same exchange for a fraction of
that (README "Performance"). It does only what the relay needs: POST a body, read the status and
content type, then the body as it arrives. HTTPS and proxied upstreams stay on aiohttp.

Limits, as the aiohttp session applied them: each ``timeout_s`` bounds connecting (waiting for a
free connection included) and each wait for bytes, not a whole stream. Every cost an answer can
cause is bounded: its header block (``MAX_HEAD_BYTES``), what is buffered before the reader takes
it (reading pauses past ``PAUSE_AT_BYTES``), and what one compressed chunk may expand to.
"""

from __future__ import annotations

import asyncio
import functools
import re
import socket
import time
import zlib
from collections import deque
from collections.abc import Mapping
from typing import Any, cast
from urllib.parse import quote, urlsplit

MAX_HEAD_BYTES = 256 * 1024
# An idle connection is reused only after this long: an answer nobody asked for, sent soon after the real one
# (and a backlog of such answers, each one request late), then arrives while it is idle, where it is caught.
SETTLE_S = 0.025
PAUSE_AT_BYTES = 1024 * 1024
MAX_INFLATED_CHUNK = 64 * 1024 * 1024
_DECODERS = ("gzip", "x-gzip", "deflate")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110's header name characters
_OWN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "user-agent", "accept-encoding"})
# A target's characters that stay as they are; anything else (a space, non-ASCII) is percent-encoded.
_TARGET_SAFE = "/?=&%:@!$'()*+,;~"


class UpstreamProtocolError(ConnectionError):
    """The upstream's bytes are no HTTP/1.1 answer the relay can use (bad framing, oversized headers, ...)."""


class _Inflater:
    """A gzip body (every member of it) or a deflate one (zlib-wrapped or raw, as servers send both),
    chunk by chunk, what one chunk expands to bounded."""

    def __init__(self, coding: str) -> None:
        self._gzip = coding != "deflate"
        self._inflater: Any = None
        self._pending = b""

    def feed(self, data: bytes) -> bytes:
        """What ``data`` decodes to."""
        data, out, size = self._pending + data, [], 0
        self._pending = b""
        try:
            while data:
                if self._inflater is not None and self._inflater.eof:
                    if not self._gzip:
                        raise UpstreamProtocolError("the upstream sent bytes after its compressed body")
                    self._inflater = None  # the next gzip member
                if self._inflater is None:
                    if not self._gzip and len(data) < 2:  # the zlib header's two bytes tell zlib from raw deflate
                        self._pending = data
                        break
                    self._inflater = zlib.decompressobj(self._wbits(data))
                chunk = self._inflater.decompress(data, MAX_INFLATED_CHUNK - size)
                size += len(chunk)
                if self._inflater.unconsumed_tail or size >= MAX_INFLATED_CHUNK:
                    raise UpstreamProtocolError("a compressed chunk expands past 64 MiB")
                out.append(chunk)
                data = self._inflater.unused_data if self._inflater.eof else b""
        except zlib.error as exc:
            raise UpstreamProtocolError(f"the compressed body is corrupt ({exc})") from None
        return b"".join(out)

    def finish(self) -> bytes:
        """The body ended: what is left; an error when the compressed stream was cut short."""
        if self._inflater is None and not self._pending:
            return b""
        if self._pending or not self._inflater.eof:
            raise UpstreamProtocolError("the compressed body ended before its end")
        return bytes(self._inflater.flush())

    def _wbits(self, data: bytes) -> int:
        if self._gzip:
            return 47  # gzip or zlib, whichever the bytes are
        zlib_header = data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
        return 15 if zlib_header else -15


class Answer:
    """One upstream answer: ``status`` and ``content_type`` once its headers arrived, then its body
    through ``readany()``; ``release()`` gives the connection back (read to its end) or closes it."""

    def __init__(self, connection: _Connection, timeout_s: float) -> None:
        self._connection: _Connection | None = connection
        self._loop = connection.loop
        self._timeout_s = timeout_s
        self._chunks: deque[bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._decoder: _Inflater | None = None
        self.status = 0
        self.headers: dict[str, str] = {}
        self.started = self.done = False
        self.buffered = self.received = 0  # body bytes waiting for the reader; all body bytes so far
        self.error: BaseException | None = None

    @property
    def content_type(self) -> str | None:
        """The answer's Content-Type header, if it sent one."""
        return self.headers.get("content-type")

    async def until_headers(self) -> None:
        """Wait for the status line and headers; raises what broke the exchange."""
        while not self.started and self.error is None:
            await self._wait()
        if self.error is not None:  # broken, or headers the relay cannot use (an unknown content-encoding)
            raise self.error

    async def readany(self) -> bytes:
        """The body's bytes that have arrived (decoded), waiting for some; ``b""`` at its end."""
        while True:
            if self._chunks:
                data = b"".join(self._chunks)
                self._chunks.clear()
                self.buffered = 0
                if self._connection is not None:
                    self._connection.resume()
                if self._decoder is not None:
                    data = self._decoder.feed(data)
                if data:
                    return data
            elif self.error is not None:
                raise self.error
            elif self.done:
                decoder, self._decoder = self._decoder, None
                return decoder.finish() if decoder is not None else b""
            else:
                await self._wait()

    def release(self) -> None:
        """Give the connection back to the pool when the body was read to its end; close it otherwise."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.finish(reusable=self.done and not self._chunks and self.error is None)

    # ---------------------------------------------------------------- fed by the connection
    def begin(self, status: int, headers: dict[str, str]) -> None:
        """The headers arrived."""
        self.status, self.headers, self.started = status, headers, True
        coding = headers.get("content-encoding", "identity").strip().lower()
        if coding in _DECODERS:
            self._decoder = _Inflater(coding)
        elif coding not in ("", "identity"):
            self.fail(UpstreamProtocolError(f"unsupported content-encoding {coding!r}"))
        self._wake()

    def feed(self, data: bytes) -> None:
        """Body bytes arrived."""
        self._chunks.append(data)
        self.buffered += len(data)
        self.received += len(data)
        self._wake()

    def end(self) -> None:
        """The body ended."""
        self.done = True
        self._wake()

    def fail(self, error: BaseException) -> None:
        """The exchange broke (the first error is the one reported)."""
        if self.error is None and not self.done:
            self.error = error
        self._wake()

    # ---------------------------------------------------------------- internals
    async def _wait(self) -> None:
        waiter = self._waiter = self._loop.create_future()
        timer = self._loop.call_later(self._timeout_s, _time_out, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


def _time_out(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(asyncio.TimeoutError())


class _Connection(asyncio.Protocol):
    """One keep-alive connection: httptools parses what arrives into the current ``Answer``."""

    def __init__(self, pool: Http1Pool, key: tuple[str, int], parser_type: Any) -> None:
        self.pool, self.key, self.loop = pool, key, asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = parser_type(self)
        self.answer: Answer | None = None
        self.closed = self.paused = self.keep_alive = False
        self.idle_since = 0.0
        self._head_bytes = self._frame_bytes = 0
        self._headers: dict[str, str] = {}
        self._interim = False

    # ---------------------------------------------------------------- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are no asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        answer = self.answer
        if answer is None:  # bytes nobody asked for: this connection's framing can no longer be trusted
            self.pool.distrust(self.key)
            self.close()
            return
        if not answer.started:
            self._head_bytes += len(data)
        body_before = answer.received
        try:
            self.parser.feed_data(data)
        except Exception as exc:  # noqa: BLE001 - httptools' parse and upgrade errors: the upstream spoke no HTTP/1.1
            self._broken(UpstreamProtocolError(f"the answer is not HTTP/1.1: {exc}"))
            return
        # Framing bytes that carry no body (trailers, chunk extensions) are bounded like headers: the
        # parser copies them as they grow.
        self._frame_bytes = 0 if answer.received != body_before or answer.done else self._frame_bytes + len(data)
        if not answer.started and self._head_bytes > MAX_HEAD_BYTES:
            self._broken(UpstreamProtocolError("the answer's headers exceed 256 KiB"))
        elif answer.started and self._frame_bytes > MAX_HEAD_BYTES:
            self._broken(UpstreamProtocolError("the answer's trailers or chunk framing exceed 256 KiB"))
        elif answer.buffered > PAUSE_AT_BYTES and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        answer = self.answer
        if answer is None or answer.done:
            return
        chunked = answer.headers.get("transfer-encoding", "").lower().rstrip().endswith("chunked")
        if answer.started and "content-length" not in answer.headers and not chunked:
            answer.end()  # a body delimited by the connection's close
        else:
            answer.fail(ConnectionResetError("the upstream closed the connection before its answer ended"))

    # ---------------------------------------------------------------- httptools callbacks
    def on_message_begin(self) -> None:
        if self.answer is None or self.answer.done:  # raised through feed_data: the connection is closed
            self.pool.distrust(self.key)
            raise UpstreamProtocolError("the upstream sent bytes after its answer")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # 100 Continue and friends: the real answer follows
            self._interim, self._headers = True, {}
            return
        headers, self._headers = self._headers, {}
        if self.answer is not None:
            self.answer.begin(status, headers)

    def on_body(self, body: bytes) -> None:
        if self.answer is not None:
            self.answer.feed(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self.keep_alive = self.parser.should_keep_alive()
        if self.answer is not None:
            self.answer.end()

    # ---------------------------------------------------------------- the pool's side
    def start(self, request: bytes, timeout_s: float) -> Answer:
        """Send one request; its answer."""
        assert self.transport is not None
        self.answer = Answer(self, timeout_s)
        self._head_bytes, self._frame_bytes, self._headers, self._interim, self.keep_alive = 0, 0, {}, False, False
        self.transport.write(request)
        return self.answer

    def usable(self) -> bool:
        """Open, as far as this side knows, with nothing unread: bytes waiting on an idle connection (an answer
        nobody asked for) or its end would go to the next request, so such a connection is dropped."""
        if self.closed or self.transport is None or self.transport.is_closing():
            return False
        sock = self.transport.get_extra_info("socket")
        if sock is None:
            return True
        raw = socket.socket(fileno=sock.fileno())  # the same descriptor (asyncio's wrapper has no recv), detached below
        try:
            raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return True  # nothing to read: the one state in which reuse is safe
        except OSError:
            return False
        finally:
            raw.detach()
        return False  # bytes waiting, or b"" (the upstream closed): never reused

    def resume(self) -> None:
        """The reader took the buffered bytes: read on."""
        if self.paused and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()

    def finish(self, reusable: bool) -> None:
        """The answer was released: back to the pool, or closed."""
        self.answer = None
        self.pool.busy.discard(self)
        if reusable and self.keep_alive and not self.closed and not self.paused:
            self.pool.put(self)
        else:
            self.close()
        self.pool.slots.release()

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def fail_untrusted(self) -> None:
        """Its upstream sent an answer nobody asked for (on this or another connection): the answer in flight fails."""
        self._broken(UpstreamProtocolError("the upstream sent an answer nobody asked for; its connections are no longer trusted"))

    def _broken(self, error: BaseException) -> None:
        if self.answer is not None:
            self.answer.fail(error)
        self.close()


class Http1Pool:
    """Keep-alive HTTP/1.1 connections to plain-http upstreams: at most ``limit`` busy at once, idle
    ones reused oldest first and only after ``SETTLE_S`` (an answer nobody asked for has had time to show,
    and such a connection is dropped), closed after ``keepalive_s``."""

    def __init__(self, timeout_s: float, limit: int = 1000, keepalive_s: float = 4.0, settle_s: float = SETTLE_S) -> None:
        import httptools  # the serve extra's parser; UpstreamRelay checks it imports before choosing this client

        self._parser_type = httptools.HttpResponseParser
        self.timeout_s, self.keepalive_s, self.settle_s = timeout_s, keepalive_s, settle_s
        self.slots = asyncio.Semaphore(limit)
        self._idle: dict[tuple[str, int], deque[_Connection]] = {}
        self.untrusted: set[tuple[str, int]] = set()  # upstreams that sent answers nobody asked for
        self.busy: set[_Connection] = set()
        self._sweep: asyncio.TimerHandle | None = None
        self.closed = False

    async def post(self, url: str, headers: Mapping[str, str], body: bytes) -> Answer:
        """POST ``body`` to ``url``; the answer once its headers arrived.

        Never sent twice: a kept-alive connection that closes before its answer is a failure for
        the fallback rule, as with aiohttp, because the upstream may have processed the request.
        Idle connections retire after ``keepalive_s`` (4 s), before common upstreams' 5 s.
        """
        host, port, request = _request(url, headers, body)
        connection = await self._connection((host, port))
        self.busy.add(connection)
        answer = connection.start(request, self.timeout_s)
        try:
            await answer.until_headers()
        except BaseException:
            answer.release()
            raise
        return answer

    def distrust(self, key: tuple[str, int]) -> None:
        """``key`` sent an answer nobody asked for: its connections are never reused again, since its next
        unsolicited answer could reach the next request on that connection; and those busy now are failed
        (their requests fall back), since one may already be reading an answer meant for another request,
        and then each later answer on it would be one request late."""
        if key in self.untrusted:
            return
        self.untrusted.add(key)
        for connection in self._idle.pop(key, ()):
            connection.close()
        for connection in [c for c in self.busy if c.key == key]:
            connection.fail_untrusted()

    def put(self, connection: _Connection) -> None:
        """An idle connection, ready for the next request (closed instead once the pool is, or when its
        upstream is untrusted)."""
        if self.closed or connection.key in self.untrusted:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        self._idle.setdefault(connection.key, deque()).append(connection)
        if self._sweep is None:
            self._sweep = connection.loop.call_later(self.keepalive_s, self._close_stale)

    def close(self) -> None:
        """Close every idle connection (busy ones close as their answers are released)."""
        self.closed = True
        for idle in self._idle.values():
            while idle:
                idle.pop().close()
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None

    async def _connection(self, key: tuple[str, int]) -> _Connection:
        """A free connection to ``key``: an idle one, else a new one; waiting for a slot and
        connecting share one ``timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        if self.slots.locked():
            await asyncio.wait_for(self.slots.acquire(), self.timeout_s)
        else:
            await self.slots.acquire()
        try:
            idle = self._idle.get(key) if key not in self.untrusted else None
            now = time.monotonic()
            while idle and now - idle[0].idle_since >= self.settle_s:  # oldest first; the newer ones are still settling
                connection = idle.popleft()
                if connection.usable() and now - connection.idle_since < self.keepalive_s:
                    return connection
                connection.close()
            _, protocol = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(self, key, self._parser_type), *key), max(deadline - loop.time(), 0.0)
            )
            return protocol
        except BaseException:
            self.slots.release()
            raise

    def _close_stale(self) -> None:
        self._sweep = None
        deadline = time.monotonic() - self.keepalive_s
        for idle in self._idle.values():
            while idle and (not idle[0].usable() or idle[0].idle_since <= deadline):
                idle.popleft().close()
        if any(self._idle.values()):
            self._sweep = asyncio.get_running_loop().call_later(self.keepalive_s, self._close_stale)


def lean_client_fits(url: str, proxy: str | None) -> bool:
    """Whether this client can serve ``url``: plain http, no proxy, no credentials in the URL, httptools installed."""
    parts = urlsplit(url)
    if parts.scheme != "http" or proxy or parts.username or parts.password or not parts.hostname:
        return False
    try:
        import httptools  # noqa: F401
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=64)
def _address(url: str) -> tuple[str, int, str]:
    """Host, port and the request's first lines for ``url`` (the same few URLs on every call)."""
    parts = urlsplit(url)
    target = quote((parts.path or "/") + (f"?{parts.query}" if parts.query else ""), safe=_TARGET_SAFE)
    head = f"POST {target} HTTP/1.1\r\nhost: {parts.netloc}\r\nuser-agent: edgeroute\r\naccept-encoding: gzip, deflate\r\n"
    return parts.hostname or "", parts.port or 80, head


def _request(url: str, headers: Mapping[str, str], body: bytes) -> tuple[str, int, bytes]:
    """Host, port and the request's bytes; header names and values that could split the request,
    or that this client writes itself, are refused."""
    host, port, head = _address(url)
    lines = [f"content-length: {len(body)}"]
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name) or any(c in value for c in "\r\n\0"):
            raise ValueError(f"header {name!r} holds a line break or is no header name")
        if name.lower() in _OWN_HEADERS:
            raise ValueError(f"header {name!r} is written by the client itself")
        lines.append(f"{name}: {value}")
    return host, port, (head + "\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
