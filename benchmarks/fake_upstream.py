"""A loopback OpenAI-compatible chat-completions upstream that answers in microseconds (or, with --delay-ms, late).

    python benchmarks/fake_upstream.py PORT        # serves http://127.0.0.1:PORT/v1/chat/completions
    python benchmarks/fake_upstream.py PORT --proxy UPSTREAM_PORT   # a null proxy in front of it
    python benchmarks/fake_upstream.py PORT --delay-ms 150          # each answer 150 ms late, like an LLM

A raw asyncio protocol (no framework, no JSON parsing of the request beyond a byte search for
``"stream": true``): HTTP/1.1 with keep-alive, a fixed small completion JSON, or a short SSE
stream when the request asks for one. ``GET /health`` answers ``ok``. It exists so that
`benchmarks/server_overhead.py` measures the routing server, not the upstream.

``--proxy`` serves a null proxy instead: every client connection gets its own keep-alive
connection to the upstream, and each request's bytes go there and the answer's bytes come back,
untouched. It is the floor of what any proxy adds on this machine: one more process hop each
way, with its socket calls and scheduler wake-ups, and no HTTP framework, JSON or scoring.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from typing import Any

COMPLETION = json.dumps(
    {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "fake-llm",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14},
    },
    separators=(",", ":"),
).encode()


def _chunk(delta: dict[str, Any], finish: str | None) -> bytes:
    body = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "fake-llm",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


STREAM = _chunk({"role": "assistant", "content": "Par"}, None) + _chunk({"content": "is."}, None) + _chunk({}, "stop") + b"data: [DONE]\n\n"
_STREAM_FLAG = re.compile(rb'"stream"\s*:\s*true')


def response_bytes(path: bytes, body: bytes) -> bytes:
    """The whole HTTP/1.1 response to one request."""
    if path.startswith(b"/health"):
        return b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"
    if not path.endswith(b"/chat/completions"):
        return b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
    if _STREAM_FLAG.search(body):  # chunked transfer encoding, one chunk for the whole stream
        return (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            + f"{len(STREAM):x}".encode()
            + b"\r\n"
            + STREAM
            + b"\r\n0\r\n\r\n"
        )
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: " + str(len(COMPLETION)).encode() + b"\r\n\r\n" + COMPLETION
    )


class FakeUpstream(asyncio.Protocol):
    """One keep-alive connection: parse each request's head and Content-Length body, answer at once
    (or ``delay_s`` later: requests then stay in flight the way LLM calls do)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.buffer = b""
        self.transport: Any = None
        self.delay_s = delay_s

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            path = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b"/"
            if self.delay_s and not path.startswith(b"/health"):
                asyncio.get_running_loop().call_later(self.delay_s, self.answer, response_bytes(path, body))
            else:
                self.transport.write(response_bytes(path, body))

    def answer(self, response: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(response)


async def serve(port: int, host: str = "127.0.0.1", delay_ms: float = 0.0) -> None:
    """Serve until cancelled, each answer ``delay_ms`` late."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: FakeUpstream(delay_ms / 1000), host, port, backlog=1024)
    async with server:
        await server.serve_forever()


async def _read_message(reader: asyncio.StreamReader) -> bytes:
    """One HTTP/1.1 message with a Content-Length body (or none), head and body together."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head + (await reader.readexactly(length) if length else b"")


async def null_proxy(port: int, upstream_port: int, host: str = "127.0.0.1") -> None:
    """Serve the null proxy until cancelled (non-streaming answers only)."""

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(host, upstream_port)
        try:
            while True:
                upstream_writer.write(await _read_message(reader))
                writer.write(await _read_message(upstream_reader))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            upstream_writer.close()
            writer.close()

    server = await asyncio.start_server(relay, host, port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        if "--proxy" in sys.argv:
            asyncio.run(null_proxy(int(sys.argv[1]), int(sys.argv[sys.argv.index("--proxy") + 1])))
        else:
            delay = float(sys.argv[sys.argv.index("--delay-ms") + 1]) if "--delay-ms" in sys.argv else 0.0
            asyncio.run(serve(int(sys.argv[1]), delay_ms=delay))
    except KeyboardInterrupt:
        pass
