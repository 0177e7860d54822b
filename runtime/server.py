"""``edgeroute serve``: an OpenAI-compatible routing server (ASGI, Starlette; served by uvicorn).

Endpoints: ``POST /v1/chat/completions`` (model ``router-NAME[-THRESHOLD]``, streaming included),
``GET /v1/models``, ``POST /v1/route`` (decisions only), ``GET /health``, ``GET /metrics``.
Needs the ``serve`` extra. Prompts are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import os
import re
import time
import traceback
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigurationError, EdgerouteError, InvalidInputError, require_extra
from .router import clean_prompt
from .routing import FALLBACK_KINDS, RouterSet, RoutingPolicy, RoutingRecord, message_chars, parse_model_field

log = logging.getLogger("edgeroute.server")
_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Server-Sent Events lines start with a field name or a comment; anything else is not a stream.
_SSE_START = (b"data:", b"event:", b"id:", b"retry:", b":")
# Long opaque runs with a digit or a mask character look like keys or tokens: never relayed.
_SECRET_LIKE = re.compile(r"[A-Za-z0-9_\-*.+/=]{20,}")


@dataclass
class UpstreamConfig:
    """One OpenAI-compatible upstream: base URL (ending in /v1), model name there, API key variable."""

    model: str
    base_url: str
    api_key_env: str | None = "OPENAI_API_KEY"

    def headers(self) -> dict[str, str]:
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        return {"Authorization": f"Bearer {key}"} if key else {}


@dataclass
class ServerConfig:
    """Everything ``create_app`` needs; the CLI fills it from flags."""

    strong: UpstreamConfig
    weak: UpstreamConfig
    routers: Sequence[str | Path] = ()
    fallback: bool = True
    upstream_timeout_s: float = 60.0
    route_on: Literal["last_user", "conversation"] = "last_user"
    sticky: bool = False
    score_budget_ms: float | None = None
    default_model: Literal["strong", "weak"] = "weak"
    auth_token: str | None = None
    max_body_bytes: int = 4 * 1024 * 1024
    max_messages: int = 1000
    max_batch: int = 1024
    # Characters of message text per request. A router reads at most its first max_length tokens
    # (a few thousand characters); this bounds what is parsed and relayed. Raise it for long-context upstreams.
    max_prompt_chars: int = 100_000
    client_timeout_s: float = 30.0  # to send the request headers, and then the body
    shutdown_grace_s: float | None = None  # None: long enough for an upstream call and its fallback
    cors_origins: Sequence[str] = ()
    device: str = "cpu"
    threads: int | None = None
    log_prompts: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class UpstreamError(Exception):
    """An upstream call failed; ``kind`` names how, ``status`` is what the client gets."""

    def __init__(self, kind: str, status: int, message: str) -> None:
        super().__init__(message)
        self.kind, self.status, self.message = kind, status, message


class Metrics:
    """Prometheus text-format counters and histograms, without a client library."""

    def __init__(self) -> None:
        self.counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = defaultdict(float)
        self.histograms: dict[tuple[str, tuple[tuple[str, str], ...]], list[float]] = {}
        self.help = {
            "edgeroute_decisions_total": "Routing decisions by router and routed model.",
            "edgeroute_requests_total": "HTTP requests by endpoint and status.",
            "edgeroute_errors_total": "Errors by kind.",
            "edgeroute_fallbacks_total": "Requests sent to another model than decided, by reason.",
            "edgeroute_scoring_seconds": "Router scoring time.",
            "edgeroute_upstream_seconds": "Upstream LLM latency by model.",
        }

    def inc(self, name: str, **labels: str) -> None:
        self.counters[(name, tuple(sorted(labels.items())))] += 1

    def observe(self, name: str, value: float, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        counts = self.histograms.setdefault(key, [0.0] * (len(_BUCKETS) + 2))
        for index, bound in enumerate(_BUCKETS):
            if value <= bound:
                counts[index] += 1
        counts[-2] += 1  # count
        counts[-1] += value  # sum

    def render(self) -> str:
        def label_text(labels: tuple[tuple[str, str], ...], extra: str = "") -> str:
            items = [f'{k}="{_escape_label(v)}"' for k, v in labels] + ([extra] if extra else [])
            return "{" + ",".join(items) + "}" if items else ""

        lines = []
        for name in sorted({n for n, _ in self.counters}):
            lines += [f"# HELP {name} {self.help.get(name, name)}", f"# TYPE {name} counter"]
            lines += [f"{name}{label_text(l)} {v:g}" for (n, l), v in sorted(self.counters.items()) if n == name]
        for name in sorted({n for n, _ in self.histograms}):
            lines += [f"# HELP {name} {self.help.get(name, name)}", f"# TYPE {name} histogram"]
            for (n, labels), counts in sorted(self.histograms.items()):
                if n != name:
                    continue
                for bound, count in [*zip(_BUCKETS, counts), ("+Inf", counts[-2])]:
                    bucket_labels = label_text(labels, 'le="' + str(bound) + '"')
                    lines.append(f"{name}_bucket{bucket_labels} {count:g}")
                lines.append(f"{name}_count{label_text(labels)} {counts[-2]:g}")
                lines.append(f"{name}_sum{label_text(labels)} {counts[-1]:.9f}")
        return "\n".join(lines) + "\n"


def _escape_label(value: Any) -> str:
    # Prometheus text format: backslash, double quote and newline are escaped in label values.
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def openai_error(status: int, message: str, kind: str, param: str | None = None,
                 headers: dict[str, str] | None = None):
    """An OpenAI-style error response."""
    from starlette.responses import JSONResponse

    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": kind}}, status_code=status,
                        headers=headers)


def parse_body(raw: bytes) -> Any:
    """Parse a request body as standard JSON.

    NaN and Infinity (not JSON), numbers past the float range (``1e999``) and nesting too deep
    for the parser are 400s here, so that nothing downstream meets them.
    """
    def constant(name: str) -> Any:
        raise _HTTPFailure(400, f"request body holds {name}, which JSON does not allow", "invalid_request_error")

    def finite_float(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise _HTTPFailure(400, f"request body holds the number {text[:30]}, beyond the range of a 64-bit float",
                               "invalid_request_error")
        return value

    try:
        return json.loads(raw, parse_constant=constant, parse_float=finite_float)
    except RecursionError:
        raise _HTTPFailure(400, "request body is nested too deeply", "invalid_request_error") from None
    except (UnicodeDecodeError, ValueError):  # ValueError: JSONDecodeError, or an integer of over 4,300 digits
        raise _HTTPFailure(400, "request body is not valid JSON", "invalid_request_error") from None


def encode_upstream_body(payload: dict[str, Any], model: str) -> bytes:
    """The client's request with the upstream's model name, as UTF-8 JSON.

    Text holding lone surrogates cannot be UTF-8: it is written with JSON escapes instead, as the
    client sent it.
    """
    body = dict(payload, model=model)
    try:
        return json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(body, ensure_ascii=True, allow_nan=False).encode("ascii")


def sanitized_upstream_message(detail: bytes, secrets: Sequence[str]) -> str:
    """The upstream error's own message, short, with anything that looks like a key masked."""
    try:
        message = json.loads(detail)["error"]["message"]
    except (ValueError, KeyError, TypeError, IndexError, RecursionError):
        return ""
    if not isinstance(message, str):
        return ""
    for secret in secrets:
        if secret:
            message = message.replace(secret, "[redacted]")
    message = _SECRET_LIKE.sub(lambda m: "[redacted]" if re.search(r"[0-9*]", m.group()) else m.group(), message)
    return message[:300]


class UpstreamRelay:
    """The server's calls to its strong and weak upstreams: errors mapped to kinds, one fallback."""

    def __init__(self, config: ServerConfig, metrics: Metrics) -> None:
        self.httpx = require_extra("httpx", "serve", "edgeroute serve")
        self.config, self.metrics = config, metrics
        self.upstreams = {"strong": config.strong, "weak": config.weak}
        self.names = {role: upstream.model for role, upstream in self.upstreams.items()}
        self._client: Any = None

    def client(self) -> Any:
        if self._client is None:  # created on first use, inside the running event loop
            self._client = self.httpx.AsyncClient(
                timeout=self.httpx.Timeout(self.config.upstream_timeout_s),
                limits=self.httpx.Limits(max_connections=1000, max_keepalive_connections=200))
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def send(self, role: str, payload: dict[str, Any], stream: bool) -> Any:
        upstream = self.upstreams[role]
        try:
            content = encode_upstream_body(payload, upstream.model)
        except (ValueError, TypeError, RecursionError) as exc:
            raise UpstreamError("invalid_request_error", 400,
                                f"the request cannot be relayed as JSON ({type(exc).__name__})") from None
        try:
            request = self.client().build_request("POST", upstream.base_url.rstrip("/") + "/chat/completions",
                                             content=content,
                                             headers={**upstream.headers(), "content-type": "application/json"})
            return await self.client().send(request, stream=stream)
        except self.httpx.TimeoutException:
            raise UpstreamError("upstream_timeout", 504, f"upstream {upstream.model} timed out") from None
        except (self.httpx.TransportError, self.httpx.InvalidURL, ValueError) as exc:
            raise UpstreamError("upstream_unreachable", 502,
                                f"upstream {upstream.model} unreachable ({type(exc).__name__})") from None

    async def reject(self, upstream: UpstreamConfig, response: Any) -> UpstreamError:
        """The error for an upstream answer of HTTP 4xx/5xx; the upstream's body is never relayed as is."""
        detail = (await response.aread())[:4000]
        await response.aclose()
        status, model = response.status_code, upstream.model
        if status == 429:
            return UpstreamError("upstream_rate_limited", 429, f"upstream {model} is rate limiting (429)")
        if status >= 500:
            return UpstreamError("upstream_error", 502, f"upstream {model} failed with HTTP {status}")
        if status in (401, 403, 407):  # the server's credentials, not the client's: never the client's 401
            return UpstreamError("upstream_rejected", 502, f"upstream {model} refused the server's credentials "
                                 f"(HTTP {status}); check the server's API key variable")
        key = (upstream.headers().get("Authorization") or "").removeprefix("Bearer ")
        message = sanitized_upstream_message(detail, [key])
        return UpstreamError("upstream_rejected", status, f"upstream {model} rejected the request (HTTP {status})"
                             + (f": {message}" if message else ""))

    async def call(self, role: str, payload: dict[str, Any], stream: bool) -> Any:
        upstream = self.upstreams[role]
        started = time.perf_counter()
        response = await self.send(role, payload, stream)
        if response.status_code >= 400:
            raise await self.reject(upstream, response)
        malformed = UpstreamError("upstream_malformed", 502, f"upstream {upstream.model} sent a malformed body")
        if not stream:
            try:
                # NaN/Infinity are not JSON, and the answer could not be re-encoded for the client.
                data = json.loads(response.content, parse_constant=_not_json)
                if not isinstance(data, dict):
                    raise ValueError("not an object")
            except (ValueError, RecursionError):
                raise malformed from None
            self.metrics.observe("edgeroute_upstream_seconds", time.perf_counter() - started, model=upstream.model)
            return data
        first, chunks = await self.first_chunk(upstream, response)
        if not first.lstrip().startswith(_SSE_START):  # an empty or non-SSE body is no stream: same as non-streaming
            await response.aclose()
            raise malformed
        self.metrics.observe("edgeroute_upstream_seconds", time.perf_counter() - started, model=upstream.model)
        return response, first, chunks

    async def first_chunk(self, upstream: UpstreamConfig, response: Any) -> tuple[bytes, Any]:
        chunks = response.aiter_raw()
        try:
            first = b""
            while not first.strip():  # skip keep-alive blank lines
                first += await chunks.__anext__()
            return first, chunks
        except StopAsyncIteration:
            return first, chunks
        except self.httpx.TimeoutException:
            await response.aclose()
            raise UpstreamError("upstream_timeout", 504, f"upstream {upstream.model} timed out") from None
        except self.httpx.HTTPError as exc:
            await response.aclose()
            raise UpstreamError("upstream_unreachable", 502,
                                f"upstream {upstream.model} broke the stream ({type(exc).__name__})") from None

    async def call_with_fallback(self, record: RoutingRecord, payload: dict[str, Any], stream: bool):
        try:
            return record, await self.call(record.model, payload, stream)
        except UpstreamError as error:
            self.metrics.inc("edgeroute_errors_total", kind=error.kind)
            if not self.config.fallback or error.kind not in FALLBACK_KINDS:
                raise
            self.metrics.inc("edgeroute_fallbacks_total", reason=error.kind)
            fallen = record.fallen_back(self.names, error.kind)
            try:
                return fallen, await self.call(fallen.model, payload, stream)
            except UpstreamError as second:
                self.metrics.inc("edgeroute_errors_total", kind=second.kind)
                raise


def create_app(config: ServerConfig, routers: RouterSet | None = None):
    """Build the ASGI app. Routers load here, once; a router that fails to load raises now."""
    require_extra("starlette", "serve", "edgeroute serve")
    httpx = require_extra("httpx", "serve", "edgeroute serve")
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import ClientDisconnect
    from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
    from starlette.routing import Route

    routers = routers or RouterSet(config.routers or None, device=config.device, threads=config.threads)
    policy = RoutingPolicy(
        routers, config.strong.model, config.weak.model, route_on=config.route_on, sticky=config.sticky,
        score_budget_ms=config.score_budget_ms, default_model=config.default_model,
    )
    metrics = Metrics()
    relay = UpstreamRelay(config, metrics)

    def fail(status: int, message: str, kind: str, endpoint: str, param: str | None = None,
             headers: dict[str, str] | None = None, count_error: bool = True):
        if count_error:  # upstream failures are counted where they happen, once each
            metrics.inc("edgeroute_errors_total", kind=kind)
        metrics.inc("edgeroute_requests_total", endpoint=endpoint, status=str(status))
        return openai_error(status, message, kind, param, headers)

    def guarded(endpoint: str, handler: Any) -> Any:
        """The last line of defence: an unexpected exception is a counted, OpenAI-style 500, logged without values."""
        async def run(request: Any) -> Any:
            try:
                return await handler(request)
            except _HTTPFailure as failure:
                return fail(failure.status, failure.message, failure.kind, endpoint, headers=failure.headers)
            except Exception as exc:  # noqa: BLE001 - deliberately everything: the client gets JSON, the log a trace
                # Only the code locations: an exception's message may quote the prompt.
                where = "\n".join(f"  {f.filename}:{f.lineno} in {f.name}" for f in traceback.extract_tb(exc.__traceback__))
                log.error("internal error %s on %s:\n%s", type(exc).__name__, endpoint, where)
                return fail(500, f"internal error ({type(exc).__name__}); see the server log", "internal_error", endpoint)

        return run

    def check_auth(request: Any) -> None:
        if config.auth_token is None:
            return
        scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), config.auth_token.encode()):
            raise _HTTPFailure(401, "missing or wrong bearer token", "unauthorized",
                               {"WWW-Authenticate": 'Bearer realm="edgeroute"'})

    async def read_body(request: Any) -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            chunks.append(chunk)
            size += len(chunk)
            if size > config.max_body_bytes:
                raise _HTTPFailure(413, f"request body over {config.max_body_bytes} bytes", "body_too_large")
        return b"".join(chunks)

    async def read_json(request: Any) -> dict[str, Any]:
        check_auth(request)
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > config.max_body_bytes:
            raise _HTTPFailure(413, f"request body over {config.max_body_bytes} bytes", "body_too_large")
        try:
            # A client that sends its body slowly or never holds a connection: bounded here.
            raw = await asyncio.wait_for(read_body(request), timeout=config.client_timeout_s)
        except asyncio.TimeoutError:
            raise _HTTPFailure(408, f"request body not received within {config.client_timeout_s:g} s",
                               "request_timeout", {"Connection": "close"}) from None
        except ClientDisconnect:
            raise _HTTPFailure(400, "client disconnected while sending the body", "client_disconnected") from None
        payload = parse_body(raw)
        if not isinstance(payload, dict):
            raise _HTTPFailure(400, "request body must be a JSON object", "invalid_request_error")
        return payload

    def check_messages(messages: Any) -> None:
        if isinstance(messages, list) and len(messages) > config.max_messages:
            raise InvalidInputError(f"'messages' holds {len(messages)} messages; the limit is {config.max_messages}")
        total = message_chars(messages)
        if total > config.max_prompt_chars:
            raise InvalidInputError(f"the messages hold {total} characters; the limit is {config.max_prompt_chars}")

    def record_headers(record: RoutingRecord) -> dict[str, str]:
        return {
            "x-edgeroute-router": record.router,
            "x-edgeroute-model": record.model_name,
            "x-edgeroute-decision": record.model,
            "x-edgeroute-win-rate": "" if record.win_rate is None else f"{record.win_rate:.6f}",
            "x-edgeroute-threshold": "" if record.threshold is None else f"{record.threshold:.6f}",
            "x-edgeroute-score-us": f"{record.score_us:.1f}",
            **({"x-edgeroute-fallback": record.fallback} if record.fallback else {}),
        }

    async def decide_chat(request: Any) -> tuple[dict[str, Any], RoutingRecord, bool]:
        payload = await read_json(request)
        messages = payload.get("messages")
        check_messages(messages)
        stream = payload.get("stream", False)
        if stream is not None and not isinstance(stream, bool):
            raise InvalidInputError(f"'stream' must be true or false, got {type(stream).__name__}")
        parsed = parse_model_field(payload.get("model"), routers.known())
        strong_pct = payload.pop("strong_pct", None)
        record = await policy.adecide(messages, parsed.router, parsed.threshold, strong_pct)
        return payload, record, bool(stream)

    async def chat_completions(request: Any) -> Any:
        endpoint = "/v1/chat/completions"
        try:
            payload, record, stream = await decide_chat(request)
        except (InvalidInputError, TypeError, ValueError, OverflowError) as exc:
            return fail(400, str(exc), "invalid_request_error", endpoint)
        count_decision(record)
        log.info("routed router=%s model=%s win_rate=%s score_us=%.0f", record.router, record.model_name,
                 record.win_rate, record.score_us)
        try:
            record, upstream = await relay.call_with_fallback(record, payload, stream)
        except UpstreamError as error:
            return fail(error.status, error.message, error.kind, endpoint, count_error=False)
        metrics.inc("edgeroute_requests_total", endpoint=endpoint, status="200")
        if not stream:
            upstream["edgeroute"] = record.to_dict()
            return JSONResponse(upstream, headers=record_headers(record))
        response, first, chunks = upstream

        async def pass_through():
            try:
                yield first
                async for chunk in chunks:
                    yield chunk
            except httpx.HTTPError:
                metrics.inc("edgeroute_errors_total", kind="upstream_stream_broken")
            finally:
                await response.aclose()

        return StreamingResponse(pass_through(), media_type=response.headers.get("content-type", "text/event-stream"),
                                 headers=record_headers(record))

    def count_decision(record: RoutingRecord) -> None:
        metrics.inc("edgeroute_decisions_total", router=record.router, model=record.model_name)
        metrics.observe("edgeroute_scoring_seconds", record.score_us / 1e6, router=record.router)
        if record.fallback:
            metrics.inc("edgeroute_fallbacks_total", reason=record.fallback.split(":")[0])

    async def score_prompts(router: Any, payload: dict[str, Any], threshold: float) -> list[RoutingRecord]:
        prompts = payload["prompts"] if "prompts" in payload else [payload.get("prompt")]
        if not isinstance(prompts, list) or not prompts:
            raise InvalidInputError("'prompts' must be a non-empty list of strings")
        if len(prompts) > config.max_batch:
            raise InvalidInputError(f"'prompts' holds {len(prompts)} prompts; the limit is {config.max_batch}")
        cleaned = [clean_prompt(p, i if len(prompts) > 1 else None) for i, p in enumerate(prompts)]
        if any(len(p) > config.max_prompt_chars for p in cleaned):
            raise InvalidInputError(f"a prompt is longer than {config.max_prompt_chars} characters")
        started = time.perf_counter()
        rates = await policy.arun(router.strong_win_rates, cleaned)
        score_us = (time.perf_counter() - started) * 1e6 / len(rates)
        return [RoutingRecord(router.name, "strong" if rate >= threshold else "weak",
                              policy.names["strong" if rate >= threshold else "weak"], float(rate), threshold, score_us)
                for rate in rates]

    async def route(request: Any) -> Any:
        endpoint = "/v1/route"
        try:
            payload = await read_json(request)
            router = routers.get(payload.get("router") or routers.default)
            threshold = policy.resolve_threshold(router, payload.get("threshold"), payload.get("strong_pct"))
            if "messages" in payload:
                check_messages(payload["messages"])
                records = [await policy.adecide(payload["messages"], router.name, threshold)]
            else:
                records = await score_prompts(router, payload, threshold)
        except (InvalidInputError, TypeError, ValueError, OverflowError) as exc:
            return fail(400, str(exc), "invalid_request_error", endpoint)
        except EdgerouteError as exc:
            return fail(503, f"router failed: {type(exc).__name__}", "router_error", endpoint)
        for record in records:
            count_decision(record)
        metrics.inc("edgeroute_requests_total", endpoint=endpoint, status="200")
        return JSONResponse({"decisions": [record.to_dict() for record in records]})

    async def models(request: Any) -> Any:
        check_auth(request)
        created = int(time.time())
        data = [{"id": f"router-{name}", "object": "model", "created": created, "owned_by": "edgeroute"}
                for name in routers.known()]
        metrics.inc("edgeroute_requests_total", endpoint="/v1/models", status="200")
        return JSONResponse({"object": "list", "data": data})

    async def health(_: Any) -> Any:
        # Open without the token (documented): load balancers probe it, and it tells nothing secret.
        return JSONResponse({"status": "ok", "routers": routers.names,
                             "strong_model": config.strong.model, "weak_model": config.weak.model})

    async def prometheus(request: Any) -> Any:
        check_auth(request)
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    paths = ("/v1/chat/completions", "/v1/route", "/v1/models", "/health", "/metrics")

    async def http_error(request: Any, exc: Any) -> Any:
        """404 and 405 as OpenAI-style JSON, like every other error."""
        status = getattr(exc, "status_code", 500)
        endpoint = request.url.path if request.url.path in paths else "other"
        kind = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
        message = {404: f"no endpoint at this path; endpoints: {', '.join(paths)}",
                   405: f"method {request.method} is not allowed here"}.get(status, "HTTP error")
        return fail(status, message, kind, endpoint, headers=getattr(exc, "headers", None))

    @contextlib.asynccontextmanager
    async def lifespan(_: Any):
        yield
        await relay.aclose()
        policy.close()

    middleware = []
    if config.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        middleware.append(Middleware(CORSMiddleware, allow_origins=list(config.cors_origins),
                                     allow_methods=["GET", "POST"], allow_headers=["*"]))
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", guarded("/v1/chat/completions", chat_completions), methods=["POST"]),
            Route("/v1/route", guarded("/v1/route", route), methods=["POST"]),
            Route("/v1/models", guarded("/v1/models", models), methods=["GET"]),
            Route("/health", guarded("/health", health), methods=["GET"]),
            Route("/metrics", guarded("/metrics", prometheus), methods=["GET"]),
        ],
        middleware=middleware,
        exception_handlers={404: http_error, 405: http_error},
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    app.state.policy = policy
    return app


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class _HTTPFailure(Exception):
    def __init__(self, status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.headers = status, message, kind, headers


def shutdown_grace_s(config: ServerConfig) -> float:
    """Seconds that in-flight requests get at SIGTERM: by default an upstream call, its fallback, and 5 s."""
    if config.shutdown_grace_s is not None:
        return config.shutdown_grace_s
    return config.upstream_timeout_s * (2 if config.fallback else 1) + 5.0


def header_timeout_protocol(timeout_s: float) -> type:
    """uvicorn's h11 protocol, closing connections that take over ``timeout_s`` to send a request's headers.

    uvicorn times out idle keep-alive connections, but not one that has started a request and
    stalls (a slow-loris client): without this, such sockets stay open indefinitely.
    """
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE:
                self._arm()  # the headers of a request are arriving: they have timeout_s from their first byte
            elif self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def connection_lost(self, exc: Exception | None) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(timeout_s, self._expire)

        def _expire(self) -> None:
            self._header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return HeaderTimeoutH11Protocol


def uvicorn_config(config: ServerConfig, app: Any, host: str = "127.0.0.1", port: int = 6060,
                   log_level: str = "info") -> Any:
    """The uvicorn settings of ``edgeroute serve``: client timeouts and a shutdown grace that fits the upstream timeout."""
    uvicorn = require_extra("uvicorn", "serve", "edgeroute serve")
    for name in ("upstream_timeout_s", "client_timeout_s", "shutdown_grace_s"):
        value = getattr(config, name)
        if value is None and name == "shutdown_grace_s":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ConfigurationError(f"{name.replace('_s', '').replace('_', ' ')} must be a positive number of seconds")
    # Keep-alive longer than clients' pools keep idle connections: otherwise a client can reuse a
    # connection in the instant the server closes it, and the request fails with a read error.
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                          timeout_graceful_shutdown=math.ceil(shutdown_grace_s(config)), timeout_keep_alive=75,
                          http=header_timeout_protocol(config.client_timeout_s))


def serve(config: ServerConfig, host: str = "127.0.0.1", port: int = 6060, log_level: str = "info") -> None:
    """Load the routers, then serve until interrupted (SIGINT/SIGTERM finish in-flight requests)."""
    uvicorn = require_extra("uvicorn", "serve", "edgeroute serve")
    uvicorn_config(config, None, host, port, log_level)  # settings are checked before the routers load
    app = create_app(config)
    uvicorn.Server(uvicorn_config(config, app, host, port, log_level)).run()  # exits non-zero when it cannot bind
