"""Loopback test servers: a fake OpenAI-compatible upstream, and a runner for ASGI apps in a thread."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from contextlib import contextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


# A Messages stream opens with the input tokens (and one output token so far), as Anthropic's does.
USAGE_AT_START = {"input_tokens": 12, "output_tokens": 1}


class FakeUpstream:
    """Records the model each request asked for; ``behaviour[model]`` makes it stall, fail or misbehave.

    Behaviours: "ok" (default), "stall" (sleeps past any test timeout), "slow" (answers after 1 s),
    "500", "429", "badjson", "400", "401", "echo_key" (a 400 quoting the Authorization header),
    "emptystream" (200 event stream without a single event), "nanjson" (a body with NaN in it),
    "hugenumber" (1e999 in it), "surrogate" (a lone surrogate escape), "latin1type" (a stream whose
    Content-Type holds bytes 0x80-0xFF).
    """

    def __init__(self) -> None:
        self.models_asked: list[str] = []
        self.authorizations: list[str] = []  # each request's Authorization header ("" when none)
        self.behaviour: dict[str, str] = {}
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/embeddings", self._embeddings, methods=["POST"]),
                Route("/control", self._control, methods=["POST"]),
            ]
        )

    async def _control(self, request: Request) -> Response:
        """Set behaviours from another process: {"model": ..., "behaviour": ...} (behaviour null resets)."""
        body = await request.json()
        if body.get("behaviour") is None:
            self.behaviour.pop(body["model"], None)
        else:
            self.behaviour[body["model"]] = body["behaviour"]
        return JSONResponse({"behaviour": self.behaviour, "requests": len(self.models_asked)})

    def reset(self) -> None:
        self.models_asked.clear()
        self.authorizations.clear()
        self.behaviour.clear()

    async def _embeddings(self, request: Request) -> Response:
        body = await request.json()
        inputs = body["input"]
        return JSONResponse({"data": [{"index": i, "embedding": [float(len(t) % 7) / 7.0] * 32} for i, t in enumerate(inputs)]})

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        model = body["model"]
        self.models_asked.append(model)
        self.authorizations.append(request.headers.get("authorization", ""))
        behaviour = self.behaviour.get(model, "ok")
        if behaviour == "stall":
            await asyncio.sleep(5)
        if behaviour == "slow":
            await asyncio.sleep(1)
        if behaviour == "500":
            return JSONResponse({"error": {"message": "boom"}}, status_code=500)
        if behaviour == "429":
            return JSONResponse({"error": {"message": "slow down"}}, status_code=429)
        if behaviour == "400":
            return JSONResponse({"error": {"message": "bad parameter"}}, status_code=400)
        if behaviour == "401":
            return JSONResponse({"error": {"message": "Incorrect API key provided: sk-abc***xyz"}}, status_code=401)
        if behaviour == "echo_key":
            echoed = request.headers.get("authorization", "")
            return JSONResponse({"error": {"message": f"bad parameter 'temperature' (sent with {echoed})"}}, status_code=400)
        if behaviour == "emptystream":
            return StreamingResponse(iter(()), media_type="text/event-stream")
        if behaviour == "nanjson":
            return Response('{"choices": [], "score": NaN}', media_type="application/json")
        if behaviour == "badjson":
            return Response("{not json", media_type="application/json")
        if behaviour == "hugenumber":
            return Response('{"choices": [], "score": 1e999}', media_type="application/json")
        if behaviour == "surrogate":
            return Response('{"choices": [{"message": {"content": "\\ud800"}}]}', media_type="application/json")
        if behaviour == "latin1type":
            return StreamingResponse(self._stream(model, "x"), media_type="text/event-stream; note=\xe9\xff")
        text = f"answer from {model}"
        if body.get("stream"):
            return StreamingResponse(self._stream(model, text), media_type="text/event-stream")
        return JSONResponse(
            {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
            }
        )

    @staticmethod
    async def _stream(model: str, text: str):
        for index, word in enumerate(text.split(" ")):
            chunk = {
                "id": "chatcmpl-test",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [{"index": 0, "delta": {"content": (" " if index else "") + word}, "finish_reason": None}],
            }
            yield f"data: {json.dumps(chunk)}\n\n".encode()
        # As OpenAI ends a stream: a last chunk with an empty delta and the finish reason.
        last = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 0, "model": model}
        last["choices"] = [{"index": 0, "delta": {}, "finish_reason": "stop"}]
        yield f"data: {json.dumps(last)}\n\n".encode()
        yield b"data: [DONE]\n\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving(app):
    """Serve an ASGI app with uvicorn on a free loopback port; yields its base URL."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on")
    with _running(uvicorn.Server(config)):
        yield f"http://127.0.0.1:{port}"


@contextmanager
def _running(server):
    """Run a uvicorn server on a thread until the block ends (it must start within 10 s)."""
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 10
    while not server.started:
        if time.time() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def serving_as_edgeroute(app, config, parser=None):
    """Serve ``app`` with ``edgeroute serve``'s uvicorn settings (timeouts, header bounds); yields the port."""
    import uvicorn

    from edgeroute.runtime.serving.server import uvicorn_config

    port = free_port()
    with _running(uvicorn.Server(uvicorn_config(config, app, port=port, log_level="warning", parser=parser))):
        yield port


def calibrated_copy(bundle, folder, name):
    """A copy of ``bundle`` in ``folder`` named ``name``, with a made-up calibration table (10%: 0.9, 50%: 0.5, 90%: 0.1)."""
    import shutil

    shutil.copytree(bundle, folder)
    data = json.loads((folder / "manifest.json").read_text())
    data["name"] = name
    data["calibration"] = {"thresholds": {"0.1": 0.9, "0.5": 0.5, "0.9": 0.1}}
    (folder / "manifest.json").write_text(json.dumps(data))
    return folder


def main() -> None:
    """Serve a FakeUpstream on the given loopback port until killed (for load tests in another process)."""
    import sys

    import uvicorn

    uvicorn.run(FakeUpstream().app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False, timeout_keep_alive=75)


def server_config(upstream, **overrides):
    """A routing server's configuration with both models on the fake ``upstream``; ``overrides`` replace fields."""
    from edgeroute.runtime.serving.server import ServerConfig, UpstreamConfig

    values = dict(
        strong=UpstreamConfig("strong-llm", upstream.url + "/v1", None),
        weak=UpstreamConfig("weak-llm", upstream.url + "/v1", None),
        upstream_timeout_s=1.0,
    )
    values.update(overrides)
    return ServerConfig(**values)


class HostileUpstream:
    """A raw HTTP/1.1 upstream that answers each request by one ``behaviour`` and then keeps the exchange alive."""

    BODY = b'{"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}]}'

    def __init__(self, behaviour: str) -> None:
        import socketserver
        import threading

        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.settimeout(30)
                data = b""
                while b"\r\n\r\n" not in data:
                    data += self.request.recv(65536)
                try:
                    outer.answer(self.request)
                except OSError:
                    pass  # the client gave up, as it should

        self.behaviour = behaviour
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, sock: socket.socket) -> None:
        import time

        if self.behaviour == "early_hints":
            for _ in range(200):  # 1xx answers forever, each well within the read timeout
                sock.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
                time.sleep(0.2)
        elif self.behaviour == "trickle":
            sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(self.BODY))
            for byte in self.BODY:
                sock.sendall(bytes([byte]))
                time.sleep(0.2)
        elif self.behaviour == "huge_trailer":  # a whole answer, then a trailer block that never ends
            sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
            sock.sendall(b"%x\r\n%s\r\n0\r\nx-big: " % (len(self.BODY), self.BODY))
            for _ in range(64 * 16):  # 64 MiB in 64 KiB pieces
                sock.sendall(b"a" * 65536)
        elif self.behaviour == "late_trailer":
            sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
            sock.sendall(b"%x\r\n%s\r\n0\r\n" % (len(self.BODY), self.BODY))
            for n in range(200):
                sock.sendall(b"x-t%d: 1\r\n" % n)
                time.sleep(0.2)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ChattyUpstream:
    """Answers each request on a kept-alive connection with its own token, then sends an extra answer nobody asked for."""

    def __init__(self, delay_s: float) -> None:
        import socketserver
        import threading

        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                buffer = b""
                while True:
                    while b"\r\n\r\n" not in buffer:
                        try:
                            chunk = self.request.recv(65536)
                        except OSError:  # the client dropped a connection it no longer trusts
                            return
                        if not chunk:
                            return
                        buffer += chunk
                    head, _, buffer = buffer.partition(b"\r\n\r\n")
                    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
                    while len(buffer) < length:
                        buffer += self.request.recv(65536)
                    request, buffer = json.loads(buffer[:length]), buffer[length:]
                    try:
                        self.request.sendall(outer.answer(request["messages"][-1]["content"]))
                        threading.Timer(outer.delay_s, outer.send_quietly, [self.request, outer.answer("unsolicited")]).start()
                    except OSError:
                        return

        self.delay_s = delay_s
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def send_quietly(sock: socket.socket, data: bytes) -> None:
        try:
            sock.sendall(data)
        except OSError:
            pass  # the client closed the connection first

    @staticmethod
    def answer(text: str) -> bytes:
        body = json.dumps({"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {"content": text}}]}).encode()
        return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


def realistic_prompts(count: int, seed: int) -> list[str]:
    """Distinct chat-like prompts: the pair fixture's prompts with varied openings (not a training set)."""
    import random
    from pathlib import Path

    rows = [json.loads(line) for line in (Path(__file__).parent / "fixtures" / "content_pairs.jsonl").read_text().splitlines()]
    base = [row[side] for row in rows for side in ("hard", "easy")]
    openings = ["", "Quick question: ", "Please help. ", "For a class: ", "Hi! ", "At work today: ", "Thanks in advance. "]
    rng = random.Random(seed)
    return [f"{rng.choice(openings)}{rng.choice(base)} (case {seed}-{n})" for n in range(count)]


if __name__ == "__main__":
    main()


class FakeAnthropic:
    """A loopback Anthropic Messages API (POST /v1/messages): records each request's body and headers, answers
    with a message or its event stream (in small, odd-sized pieces); ``behaviour`` "529", "400" or "error_event"."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.behaviour = "ok"
        self.app = Starlette(routes=[Route("/v1/messages", self._messages, methods=["POST"])])

    def reset(self) -> None:
        self.requests.clear()
        self.headers.clear()
        self.behaviour = "ok"

    async def _messages(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        if self.behaviour == "529":
            return JSONResponse({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, status_code=529)
        if self.behaviour == "400":
            message = "max_tokens: 999999 > 4096, which is the maximum allowed"
            return JSONResponse({"type": "error", "error": {"type": "invalid_request_error", "message": message}}, status_code=400)
        text = f"claude says: {body['messages'][-1]['content'][:20]}"
        if body.get("stream"):
            return StreamingResponse(self._events(body["model"], text), media_type="text/event-stream")
        return JSONResponse(
            {
                "id": "msg_01",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "usage": {"input_tokens": 12, "output_tokens": 5},
            }
        )

    async def _events(self, model: str, text: str):
        events = [
            (
                "message_start",
                {
                    "type": "message_start",
                    "message": {"id": "msg_02", "type": "message", "role": "assistant", "model": model, "usage": USAGE_AT_START},
                },
            ),
            ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ("ping", {"type": "ping"}),
            *[
                (
                    "content_block_delta",
                    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text[i : i + 5]}},
                )
                for i in range(0, len(text), 5)
            ],
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 5}}),
        ]
        if self.behaviour == "error_event":
            events.append(("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}))
        else:
            events.append(("message_stop", {"type": "message_stop"}))
        raw = b"".join(f"event: {name}\r\ndata: {json.dumps(data)}\r\n\r\n".encode() for name, data in events)
        for start in range(0, len(raw), 37):  # pieces that cut events (and a \r\n) anywhere
            yield raw[start : start + 37]
            await asyncio.sleep(0)
