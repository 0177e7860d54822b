"""``edgeroute serve``: an OpenAI-compatible routing server (ASGI, Starlette; served by uvicorn).

Endpoints: ``POST /v1/chat/completions`` (model ``router-NAME[-THRESHOLD]``, streaming included),
``GET /v1/models``, ``POST /v1/route`` (decisions only), ``GET /health``, ``GET /metrics``.
Needs the ``serve`` extra. Prompts are never logged.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import math
import os
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigurationError, EdgerouteError, InvalidInputError, require_extra
from .router import clean_prompt
from .routing import RouterSet, RoutingPolicy, RoutingRecord, parse_model_field

log = logging.getLogger("edgeroute.server")
_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_FALLBACK_KINDS = {"upstream_timeout", "upstream_unreachable", "upstream_rate_limited", "upstream_error",
                   "upstream_malformed"}


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
    max_prompt_chars: int = 1_000_000
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
            items = [f'{k}="{v}"' for k, v in labels] + ([extra] if extra else [])
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


def openai_error(status: int, message: str, kind: str, param: str | None = None):
    """An OpenAI-style error response."""
    from starlette.responses import JSONResponse

    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": kind}}, status_code=status)


def create_app(config: ServerConfig, routers: RouterSet | None = None):
    """Build the ASGI app. Routers load here, once; a router that fails to load raises now."""
    require_extra("starlette", "serve", "edgeroute serve")
    httpx = require_extra("httpx", "serve", "edgeroute serve")
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
    from starlette.routing import Route

    routers = routers or RouterSet(config.routers or None, device=config.device, threads=config.threads)
    policy = RoutingPolicy(
        routers, config.strong.model, config.weak.model, route_on=config.route_on, sticky=config.sticky,
        score_budget_ms=config.score_budget_ms, default_model=config.default_model,
    )
    upstreams = {"strong": config.strong, "weak": config.weak}
    metrics = Metrics()
    state: dict[str, Any] = {}

    def client() -> Any:
        if "client" not in state:  # created on first use, inside the running event loop
            state["client"] = httpx.AsyncClient(timeout=httpx.Timeout(config.upstream_timeout_s),
                                                limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200))
        return state["client"]

    def fail(status: int, message: str, kind: str, endpoint: str, param: str | None = None):
        metrics.inc("edgeroute_errors_total", kind=kind)
        metrics.inc("edgeroute_requests_total", endpoint=endpoint, status=str(status))
        return openai_error(status, message, kind, param)

    async def read_json(request: Any, endpoint: str) -> Any:
        if config.auth_token is not None:
            supplied = request.headers.get("authorization", "")
            if not hmac.compare_digest(supplied.encode(), f"Bearer {config.auth_token}".encode()):
                raise _HTTPFailure(401, "missing or wrong bearer token", "unauthorized")
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > config.max_body_bytes:
            raise _HTTPFailure(413, f"request body over {config.max_body_bytes} bytes", "body_too_large")
        chunks, size = [], 0
        async for chunk in request.stream():
            chunks.append(chunk)
            size += len(chunk)
            if size > config.max_body_bytes:
                raise _HTTPFailure(413, f"request body over {config.max_body_bytes} bytes", "body_too_large")
        try:
            payload = json.loads(b"".join(chunks))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise _HTTPFailure(400, "request body is not valid JSON", "invalid_request_error") from None
        if not isinstance(payload, dict):
            raise _HTTPFailure(400, "request body must be a JSON object", "invalid_request_error")
        return payload

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

    async def call_upstream(role: str, payload: dict[str, Any], stream: bool) -> Any:
        upstream = upstreams[role]
        body = dict(payload, model=upstream.model)
        request = client().build_request("POST", upstream.base_url.rstrip("/") + "/chat/completions",
                                         json=body, headers=upstream.headers())
        started = time.perf_counter()
        try:
            response = await client().send(request, stream=stream)
        except httpx.TimeoutException:
            raise UpstreamError("upstream_timeout", 504, f"upstream {upstream.model} timed out") from None
        except httpx.TransportError as exc:
            raise UpstreamError("upstream_unreachable", 502,
                                f"upstream {upstream.model} unreachable ({type(exc).__name__})") from None
        if response.status_code >= 400:
            detail = (await response.aread())[:2000]
            await response.aclose()
            if response.status_code == 429:
                raise UpstreamError("upstream_rate_limited", 429, f"upstream {upstream.model} is rate limiting (429)")
            if response.status_code >= 500:
                raise UpstreamError("upstream_error", 502,
                                    f"upstream {upstream.model} failed with HTTP {response.status_code}")
            raise UpstreamError("upstream_rejected", response.status_code,
                                f"upstream {upstream.model} rejected the request: {detail.decode('utf-8', 'replace')}")
        if not stream:
            try:
                data = response.json()
                if not isinstance(data, dict):
                    raise ValueError("not an object")
            except ValueError:
                raise UpstreamError("upstream_malformed", 502, f"upstream {upstream.model} sent a malformed body") from None
            metrics.observe("edgeroute_upstream_seconds", time.perf_counter() - started, model=upstream.model)
            return data
        metrics.observe("edgeroute_upstream_seconds", time.perf_counter() - started, model=upstream.model)
        return response

    async def call_with_fallback(record: RoutingRecord, payload: dict[str, Any], stream: bool):
        try:
            return record, await call_upstream(record.model, payload, stream)
        except UpstreamError as error:
            metrics.inc("edgeroute_errors_total", kind=error.kind)
            if not config.fallback or error.kind not in _FALLBACK_KINDS:
                raise
            other = "weak" if record.model == "strong" else "strong"
            metrics.inc("edgeroute_fallbacks_total", reason=error.kind)
            fallen = RoutingRecord(record.router, other, upstreams[other].model, record.win_rate, record.threshold,
                                   record.score_us, f"{error.kind} on {record.model_name}")
            return fallen, await call_upstream(other, payload, stream)

    async def chat_completions(request: Any) -> Any:
        endpoint = "/v1/chat/completions"
        try:
            payload = await read_json(request, endpoint)
            messages = payload.get("messages")
            if isinstance(messages, list) and len(messages) > config.max_messages:
                raise InvalidInputError(f"'messages' holds {len(messages)} messages; the limit is {config.max_messages}")
            _check_prompt_size(messages, config.max_prompt_chars)
            parsed = parse_model_field(payload.get("model"), routers.known())
            strong_pct = payload.pop("strong_pct", None) if "strong_pct" in payload else None
            record = await policy.adecide(messages, parsed.router, parsed.threshold, strong_pct)
        except _HTTPFailure as failure:
            return fail(failure.status, failure.message, failure.kind, endpoint)
        except (InvalidInputError, TypeError, ValueError) as exc:
            return fail(400, str(exc), "invalid_request_error", endpoint)
        metrics.inc("edgeroute_decisions_total", router=record.router, model=record.model_name)
        metrics.observe("edgeroute_scoring_seconds", record.score_us / 1e6, router=record.router)
        if record.fallback:
            metrics.inc("edgeroute_fallbacks_total", reason=record.fallback.split(":")[0])
        log.info("routed router=%s model=%s win_rate=%s score_us=%.0f", record.router, record.model_name,
                 record.win_rate, record.score_us)
        stream = bool(payload.get("stream"))
        try:
            record, upstream = await call_with_fallback(record, payload, stream)
        except UpstreamError as error:
            return fail(error.status, error.message, error.kind, endpoint)
        metrics.inc("edgeroute_requests_total", endpoint=endpoint, status="200")
        if not stream:
            upstream["edgeroute"] = record.to_dict()
            return JSONResponse(upstream, headers=record_headers(record))

        async def relay():
            try:
                async for chunk in upstream.aiter_raw():
                    yield chunk
            except httpx.HTTPError:
                metrics.inc("edgeroute_errors_total", kind="upstream_stream_broken")
            finally:
                await upstream.aclose()

        return StreamingResponse(relay(), media_type=upstream.headers.get("content-type", "text/event-stream"),
                                 headers=record_headers(record))

    async def route(request: Any) -> Any:
        endpoint = "/v1/route"
        try:
            payload = await read_json(request, endpoint)
            router = routers.get(payload.get("router") or routers.default)
            threshold = policy.resolve_threshold(router, payload.get("threshold"), payload.get("strong_pct"))
            if "messages" in payload:
                records = [await policy.adecide(payload["messages"], router.name, threshold)]
                return JSONResponse({"decisions": [r.to_dict() for r in records]})
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
            score_us = (time.perf_counter() - started) * 1e6
        except _HTTPFailure as failure:
            return fail(failure.status, failure.message, failure.kind, endpoint)
        except (InvalidInputError, TypeError, ValueError) as exc:
            return fail(400, str(exc), "invalid_request_error", endpoint)
        except EdgerouteError as exc:
            return fail(503, f"router failed: {type(exc).__name__}", "router_error", endpoint)
        decisions = []
        for rate in rates:
            model = "strong" if rate >= threshold else "weak"
            decisions.append({"router": router.name, "model": model, "model_name": upstreams[model].model,
                              "win_rate": float(rate), "threshold": threshold, "score_us": score_us / len(rates)})
            metrics.inc("edgeroute_decisions_total", router=router.name, model=upstreams[model].model)
        metrics.observe("edgeroute_scoring_seconds", score_us / 1e6, router=router.name)
        metrics.inc("edgeroute_requests_total", endpoint=endpoint, status="200")
        return JSONResponse({"decisions": decisions})

    async def models(_: Any) -> Any:
        created = int(time.time())
        data = [{"id": f"router-{name}", "object": "model", "created": created, "owned_by": "edgeroute"}
                for name in routers.known()]
        return JSONResponse({"object": "list", "data": data})

    async def health(_: Any) -> Any:
        return JSONResponse({"status": "ok", "routers": routers.names,
                             "strong_model": config.strong.model, "weak_model": config.weak.model})

    async def prometheus(_: Any) -> Any:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @contextlib.asynccontextmanager
    async def lifespan(_: Any):
        yield
        if "client" in state:
            await state["client"].aclose()
        policy.close()

    middleware = []
    if config.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        middleware.append(Middleware(CORSMiddleware, allow_origins=list(config.cors_origins),
                                     allow_methods=["GET", "POST"], allow_headers=["*"]))
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/route", route, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/metrics", prometheus, methods=["GET"]),
        ],
        middleware=middleware,
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    app.state.policy = policy
    return app


def _check_prompt_size(messages: Any, limit: int) -> None:
    if not isinstance(messages, list):
        return  # routing_text reports the shape error
    total = sum(len(m.get("content")) for m in messages if isinstance(m, dict) and isinstance(m.get("content"), str))
    if total > limit:
        raise InvalidInputError(f"the messages hold {total} characters; the limit is {limit}")


class _HTTPFailure(Exception):
    def __init__(self, status: int, message: str, kind: str) -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


def serve(config: ServerConfig, host: str = "127.0.0.1", port: int = 6060, log_level: str = "info") -> None:
    """Load the routers, then serve until interrupted (SIGINT/SIGTERM finish in-flight requests)."""
    uvicorn = require_extra("uvicorn", "serve", "edgeroute serve")
    if not math.isfinite(config.upstream_timeout_s) or config.upstream_timeout_s <= 0:
        raise ConfigurationError("upstream timeout must be a positive number of seconds")
    app = create_app(config)
    # Keep-alive longer than clients' pools keep idle connections: otherwise a client can reuse a
    # connection in the instant the server closes it, and the request fails with a read error.
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False, timeout_graceful_shutdown=30,
                timeout_keep_alive=75)
