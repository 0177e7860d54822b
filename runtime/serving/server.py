"""``edgeroute serve``: an OpenAI-compatible routing server (ASGI, Starlette; served by uvicorn).

Endpoints: ``POST /v1/chat/completions`` (model ``router-NAME[-THRESHOLD]``, streaming included),
``GET /v1/models``, ``POST /v1/route`` (decisions only), ``GET /health``, ``GET /metrics``.
Needs the ``serve`` extra. Prompts are never logged.

The pieces: ``Handlers`` (one method per endpoint), ``http_errors`` (the one error-to-status
table), ``upstream`` (the upstream client and the fallback rule), ``prometheus`` (``/metrics``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import json
import logging
import math
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from edgeroute.runtime.scoring.decision import Decision, old_share_name
from edgeroute.runtime.errors import InvalidInputError, require_extra
from edgeroute.runtime.serving.http_errors import HTTPFailure, error_reply
from edgeroute.runtime.serving.coalesce import CoalescedWrites
from edgeroute.runtime.serving.prometheus import Metrics
from edgeroute.runtime.scoring.router import clean_prompt
from edgeroute.runtime.serving.budget import BudgetSettings
from edgeroute.runtime.serving.budget_store import open_store
from edgeroute.runtime.serving.config import ServerConfig
from edgeroute.runtime.serving.fallback import attempts_for
from edgeroute.runtime.serving.chat import ChatLimits, read_chat
from edgeroute.runtime.serving.policy import ParsedChat, RouterSet, RoutingPolicy, parse_model_field
from edgeroute.runtime.serving.upstream import UpstreamConfig, UpstreamError, UpstreamRelay, UpstreamStream, UpstreamStreamBroken

__all__ = [
    "ServerConfig",
    "UpstreamConfig",
    "Handlers",
    "create_app",
    "serve",
    "uvicorn_config",
    "shutdown_grace_s",
    "parse_body",
    "openai_error",
]

log = logging.getLogger("edgeroute.server")
TENANT = "edgeroute.tenant"  # the request scope key of the caller's API key name (check_auth)
T = TypeVar("T")
ENDPOINTS = ("/v1/chat/completions", "/v1/route", "/v1/models", "/health", "/metrics")
# A request's header block past this is refused (431) before it is parsed: the bound on what
# headers may cost, checked before authentication.
MAX_HEADER_BYTES = 64 * 1024
_HEADERS_TOO_LARGE_BODY = json.dumps(
    {
        "error": {
            "message": f"request headers over {MAX_HEADER_BYTES} bytes",
            "type": "invalid_request_error",
            "param": None,
            "code": "headers_too_large",
        }
    }
).encode()
HEADERS_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\nconnection: close\r\n"
    + f"content-length: {len(_HEADERS_TOO_LARGE_BODY)}\r\n\r\n".encode()
    + _HEADERS_TOO_LARGE_BODY
)


def openai_error(status: int, message: str, kind: str, param: str | None = None, headers: dict[str, str] | None = None) -> Any:
    """An OpenAI-style error response."""
    from starlette.responses import JSONResponse

    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": kind}}, status_code=status, headers=headers)


def parse_body(raw: bytes) -> Any:
    """Parse a request body as standard JSON.

    NaN and Infinity (not JSON), numbers past the float range (``1e999``) and nesting too deep
    for the parser are 400s here, so that nothing downstream meets them.
    """

    def constant(name: str) -> Any:
        raise HTTPFailure(400, f"request body holds {name}, which JSON does not allow", "invalid_request_error")

    def finite_float(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise HTTPFailure(
                400, f"request body holds the number {text[:30]}, beyond the range of a 64-bit float", "invalid_request_error"
            )
        return value

    try:
        return json.loads(raw, parse_constant=constant, parse_float=finite_float)
    except RecursionError:
        raise HTTPFailure(400, "request body is nested too deeply", "invalid_request_error") from None
    except (UnicodeDecodeError, ValueError):  # ValueError: JSONDecodeError, or an integer of over 4,300 digits
        raise HTTPFailure(400, "request body is not valid JSON", "invalid_request_error") from None


async def within(seconds: float, awaitable: Awaitable[T]) -> T:
    """``awaitable``'s result, or ``asyncio.TimeoutError`` after ``seconds``.

    ``asyncio.timeout`` where there is one (3.11+): ``wait_for`` on 3.11 wraps the coroutine in a task, one
    more trip through the event loop on every request (3.12's ``wait_for`` is ``asyncio.timeout`` itself).
    """
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await awaitable
    return await asyncio.wait_for(awaitable, seconds)


def requested_share(payload: dict[str, Any], pop: bool = False) -> Any:
    """The strong share a request body names (``strong_share``, or its old name ``strong_pct``);
    ``pop`` takes them out (a chat body goes upstream without them)."""
    take = payload.pop if pop else payload.get
    return old_share_name(take("strong_share", None), take("strong_pct", None), warn=False)


class Handlers:
    """The endpoints' handlers over one policy, relay and metrics. Handlers raise; ``guarded``
    turns what they raise into an OpenAI-style answer by ``http_errors.ERROR_TABLE``."""

    def __init__(self, config: ServerConfig, routers: RouterSet, policy: RoutingPolicy, metrics: Metrics, relay: UpstreamRelay) -> None:
        from starlette.requests import ClientDisconnect
        from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse

        self.config, self.routers, self.policy, self.metrics, self.relay = config, routers, policy, metrics, relay
        self._json, self._text, self._stream = JSONResponse, PlainTextResponse, StreamingResponse
        self._disconnect = ClientDisconnect
        self.limits = ChatLimits(config.max_messages, config.max_prompt_chars)

    # ---------------------------------------------------------------- answers and errors
    def ok(self, endpoint: str, body: Any, headers: dict[str, str] | None = None) -> Any:
        """A counted 200 JSON answer."""
        self.metrics.inc("edgeroute_requests_total", endpoint=endpoint, status="200")
        return self._json(body, headers=headers)

    def fail(
        self, status: int, message: str, kind: str, endpoint: str, headers: dict[str, str] | None = None, count_error: bool = True
    ) -> Any:
        """A counted OpenAI-style error answer."""
        if count_error:  # upstream failures are counted where they happen, once each
            self.metrics.inc("edgeroute_errors_total", kind=kind)
        self.metrics.inc("edgeroute_requests_total", endpoint=endpoint, status=str(status))
        return openai_error(status, message, kind, None, headers)

    def guarded(self, endpoint: str, handler: Any) -> Any:
        """The handler with every exception answered: by the error table, else a counted 500 logged without values."""

        async def run(request: Any) -> Any:
            try:
                return await handler(request)
            except Exception as exc:  # noqa: BLE001 - deliberately everything: the client gets JSON, the log a trace
                reply = error_reply(exc)
                if reply is not None:
                    return self.fail(
                        reply.status, reply.message, reply.kind, endpoint, reply.headers, count_error=not isinstance(exc, UpstreamError)
                    )
                # Only the code locations: an exception's message may quote the prompt.
                where = "\n".join(f"  {f.filename}:{f.lineno} in {f.name}" for f in traceback.extract_tb(exc.__traceback__))
                log.error("internal error %s on %s:\n%s", type(exc).__name__, endpoint, where)
                return self.fail(500, f"internal error ({type(exc).__name__}); see the server log", "internal_error", endpoint)

        return run

    async def http_error(self, request: Any, exc: Any) -> Any:
        """404 and 405 as OpenAI-style JSON, like every other error."""
        status = getattr(exc, "status_code", 500)
        endpoint = request.url.path if request.url.path in ENDPOINTS else "other"
        kind = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
        message = {
            404: f"no endpoint at this path; endpoints: {', '.join(ENDPOINTS)}",
            405: f"method {request.method} is not allowed here",
        }.get(status, "HTTP error")
        return self.fail(status, message, kind, endpoint, headers=getattr(exc, "headers", None))

    # ---------------------------------------------------------------- reading requests
    def check_auth(self, request: Any) -> str | None:
        """Raise 401 unless the bearer token is the server's or one of ``--keys-file`` (when either is configured);
        the key's name when it is one of those (the tenant), else None."""
        token_wanted, keys = self.config.auth_token, self.config.keys
        if token_wanted is None and keys is None:
            return None
        scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer":
            key = keys.identify(token) if keys is not None else None
            if key is not None:
                return key.name
            if token_wanted is not None and hmac.compare_digest(token.encode("utf-8", "surrogatepass"), token_wanted.encode()):
                return None
        raise HTTPFailure(401, "missing or wrong bearer token", "unauthorized", {"WWW-Authenticate": 'Bearer realm="edgeroute"'})

    async def read_body(self, request: Any) -> bytes:
        """The body, refused with 413 past ``max_body_bytes``."""
        chunks, size, limit = [], 0, self.config.max_body_bytes
        async for chunk in request.stream():
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise HTTPFailure(413, f"request body over {limit} bytes", "body_too_large")
        return b"".join(chunks)

    async def read_json(self, request: Any) -> dict[str, Any]:
        """The authorized request's JSON object body, within the size and time limits; the caller's key name
        (``check_auth``) is kept in the request's scope as ``TENANT``."""
        request.scope[TENANT] = self.check_auth(request)
        config = self.config
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > config.max_body_bytes:
            raise HTTPFailure(413, f"request body over {config.max_body_bytes} bytes", "body_too_large")
        try:
            # A client that sends its body slowly or never holds a connection: bounded here.
            raw = await within(config.client_timeout_s, self.read_body(request))
        except asyncio.TimeoutError:
            raise HTTPFailure(
                408, f"request body not received within {config.client_timeout_s:g} s", "request_timeout", {"Connection": "close"}
            ) from None
        except self._disconnect:
            raise HTTPFailure(400, "client disconnected while sending the body", "client_disconnected") from None
        payload = parse_body(raw)
        if not isinstance(payload, dict):
            raise HTTPFailure(400, "request body must be a JSON object", "invalid_request_error")
        return payload

    def count_decision(self, decision: Decision) -> None:
        """Count a decision, its scoring time and its fallback, if any."""
        self.metrics.inc("edgeroute_decisions_total", router=decision.router, model=str(decision.model))
        self.metrics.observe("edgeroute_scoring_seconds", decision.score_us / 1e6, router=decision.router)
        if decision.fallback:
            self.metrics.inc("edgeroute_fallbacks_total", reason=decision.fallback.split(":")[0])

    # ---------------------------------------------------------------- /v1/chat/completions
    async def decide_chat(self, request: Any) -> tuple[dict[str, Any], Decision, bool]:
        """The request's payload, its decision, and whether it streams."""
        payload = await self.read_json(request)
        chat = read_chat(payload.get("messages"), self.limits)
        stream = payload.get("stream", False)
        if stream is not None and not isinstance(stream, bool):
            raise InvalidInputError(f"'stream' must be true or false, got {type(stream).__name__}")
        parsed = parse_model_field(payload.get("model"), self.routers.known())
        share = requested_share(payload, pop=True) if "strong_share" in payload or "strong_pct" in payload else None
        if parsed.strong_share is not None:
            if share is not None:
                raise InvalidInputError("give the share either in the model name (router-NAME-sPCT) or as strong_share, not both")
            share = parsed.strong_share
        asked = ParsedChat(chat, parsed.router, parsed.threshold, share, tenant=request.scope[TENANT])
        return payload, await self.policy.adecide_parsed(asked), bool(stream)

    async def chat_completions(self, request: Any) -> Any:
        """Route, then forward to the chosen upstream (its fallback by the rule); the decision rides along."""
        endpoint = "/v1/chat/completions"
        payload, decision, stream = await self.decide_chat(request)
        self.count_decision(decision)
        log.info(
            "routed router=%s tier=%s model=%s win_rate=%s score_us=%.0f",
            decision.router,
            decision.tier,
            decision.model,
            decision.win_rate,
            decision.score_us,
        )
        decision, upstream = await self.relay.call_with_fallback(decision, payload, stream)
        if not stream:
            upstream["edgeroute"] = decision.to_dict()
            return self.ok(endpoint, upstream, decision.headers())
        self.metrics.inc("edgeroute_requests_total", endpoint=endpoint, status="200")
        return self.pass_through(decision, upstream)

    def pass_through(self, decision: Decision, upstream: UpstreamStream) -> Any:
        """The upstream's stream, byte for byte, with the decision in the headers."""

        async def relay() -> Any:
            try:
                yield upstream.first
                async for chunk in upstream.chunks():
                    yield chunk
            except UpstreamStreamBroken:
                self.metrics.inc("edgeroute_errors_total", kind="upstream_stream_broken")
            finally:
                await upstream.aclose()

        return self._stream(relay(), media_type=upstream.content_type, headers=decision.headers())

    # ---------------------------------------------------------------- /v1/route
    async def score_prompts(
        self, router: Any, payload: dict[str, Any], threshold: float | None, counted: bool = False, tenant: str | None = None
    ) -> list[Decision]:
        """Decisions for ``prompt`` or ``prompts``, scored in one batch (``RoutingPolicy.ascore`` says where).
        ``counted``: the strong-call budget counts at most ``batch_weight`` prompts of the batch, evenly spaced."""
        config = self.config
        prompts = payload["prompts"] if "prompts" in payload else [payload.get("prompt")]
        if not isinstance(prompts, list) or not prompts:
            raise InvalidInputError("'prompts' must be a non-empty list of strings")
        if len(prompts) > config.max_batch:
            raise InvalidInputError(f"'prompts' holds {len(prompts)} prompts; the limit is {config.max_batch}")
        cleaned = [clean_prompt(p, i if len(prompts) > 1 else None) for i, p in enumerate(prompts)]
        if any(len(p) > config.max_prompt_chars for p in cleaned):
            raise InvalidInputError(f"a prompt is longer than {config.max_prompt_chars} characters")
        started = time.perf_counter()
        rates = await self.policy.ascore(router, cleaned)
        score_us = (time.perf_counter() - started) * 1e6 / len(rates)
        settings = self.policy.budget_settings(tenant)
        weight = settings.batch_weight if settings is not None else 0
        step = max(1, math.ceil(len(rates) / weight)) if counted and weight else 0
        if self.policy.targets is not None:
            return [
                self.policy.scored_targets(router, row, len(text), threshold, score_us, bool(step) and index % step == 0)
                for index, (row, text) in enumerate(zip(rates, cleaned))
            ]
        return [
            self.policy.scored(router, float(rate), threshold, score_us, text, bool(step) and index % step == 0, tenant)
            for index, (rate, text) in enumerate(zip(rates, cleaned))
        ]

    async def route(self, request: Any) -> Any:
        """Decisions only: ``prompt``, ``prompts`` or ``messages``, with optional router and threshold."""
        payload = await self.read_json(request)
        tenant = request.scope[TENANT]
        router = self.routers.get(payload.get("router") or self.routers.default)
        settings = self.policy.budget_settings(tenant)
        counted = settings is not None and settings.count_route_calls
        threshold = self.policy.request_threshold(router, payload.get("threshold"), requested_share(payload), tenant)
        if "messages" in payload:
            asked = ParsedChat(read_chat(payload["messages"], self.limits), router, threshold, None, counted, tenant, resolved=True)
            decisions = [await self.policy.adecide_parsed(asked)]
        else:
            decisions = await self.score_prompts(router, payload, threshold, counted, tenant)
        for decision in decisions:
            self.count_decision(decision)
        return self.ok("/v1/route", {"decisions": [decision.to_dict() for decision in decisions]})

    # ---------------------------------------------------------------- the rest
    async def models(self, request: Any) -> Any:
        """``router-NAME`` for each loaded router and alias."""
        self.check_auth(request)
        created = int(time.time())
        data = [{"id": f"router-{name}", "object": "model", "created": created, "owned_by": "edgeroute"} for name in self.routers.known()]
        return self.ok("/v1/models", {"object": "list", "data": data})

    async def health(self, _: Any) -> Any:
        """Status and loaded routers; open without the token (load balancers probe it; it names no secret)."""
        if self.config.targets is not None:
            return self._json({"status": "ok", "routers": self.routers.names, "targets": self.config.targets.names})
        return self._json(
            {"status": "ok", "routers": self.routers.names, "strong_model": self.config.strong.model, "weak_model": self.config.weak.model}
        )

    async def prometheus(self, request: Any) -> Any:
        """The metrics in Prometheus text format."""
        self.check_auth(request)
        for owner, state in self.policy.budget_states().items():
            labels = _budget_labels(*owner)
            self.metrics.set_gauge("edgeroute_strong_share_target", state.target, **labels)
            self.metrics.set_gauge("edgeroute_strong_share_observed", state.observed_share, **labels)
            self.metrics.set_gauge("edgeroute_budget_threshold", state.threshold, **labels)
            self.metrics.set_gauge("edgeroute_budget_resets", state.resets, **labels)
        for router, state in self.policy.spend_states().items():
            self.metrics.set_gauge("edgeroute_spend_target_usd", state.target_usd, router=router)
            self.metrics.set_gauge("edgeroute_spend_observed_usd", state.observed_usd, router=router)
            self.metrics.set_gauge("edgeroute_spend_setting", state.setting, router=router)
        for owner, up in self.policy.budget_store_up().items():
            self.metrics.set_gauge("edgeroute_budget_store_up", float(up), **_budget_labels(*owner))
        return self._text(self.metrics.render(), media_type="text/plain; version=0.0.4")


def _budget_labels(router: str, tenant: str | None) -> dict[str, str]:
    """A budget's /metrics labels: its router, and its team key when it has one of its own."""
    return {"router": router} if tenant is None else {"router": router, "key": tenant}


def check_upstreams(config: ServerConfig) -> None:
    """Refuse upstream settings that cannot work, and say which upstream is sent no API key."""
    for role, upstream in config.upstream_roles():
        upstream.check(role)
        if upstream.key_variable() is None:
            log.warning("%s upstream %s: no API key is sent (name its key variable to send one)", role, upstream.base_url)


def policy_for(config: ServerConfig, routers: RouterSet) -> RoutingPolicy:
    """The routing policy a server with ``config`` runs: models, stickiness, scoring budget, strong-call or spend budget."""
    # serve's --budget-* options; the target is the server's --strong-share, or each key's own strong_share.
    budget_options = BudgetSettings(
        config.strong_share or 0.5, config.budget_window, config.budget_floor, config.budget_ceiling, config.budget_counts_route
    )
    return RoutingPolicy(
        routers,
        config.strong.model,
        config.weak.model,
        route_on=config.route_on,
        sticky=config.sticky,
        score_budget_ms=config.score_budget_ms,
        default_model=config.default_model,
        tenant_shares=None if config.keys is None else config.keys.shares(),
        budget_store=None if config.budget_store is None else open_store(config.budget_store),
        targets=config.targets,
        target_cost=config.target_cost,
        spend_window=config.budget_window,
        budget=None if config.strong_share is None else budget_options,
        tenant_settings=budget_options,
    )


def create_app(config: ServerConfig, routers: RouterSet | None = None) -> Any:
    """Build the ASGI app. Routers load here, once; a router or upstream setting that cannot work raises now."""
    require_extra("starlette", "serve", "edgeroute serve")
    require_extra("aiohttp", "serve", "edgeroute serve")
    check_upstreams(config)
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.routing import Route

    routers = routers or RouterSet(config.routers or None, device=config.device, threads=config.threads)
    policy = policy_for(config, routers)
    metrics = Metrics()
    relay = UpstreamRelay(
        config.strong, config.weak, config.upstream_timeout_s, config.fallback, metrics, config.upstream_client, config.target_upstreams()
    )
    handlers = Handlers(config, routers, policy, metrics, relay)

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> Any:
        yield
        await relay.aclose()
        policy.close()

    middleware = []
    if config.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        middleware.append(
            Middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST"], allow_headers=["*"])
        )
    endpoints = [
        ("/v1/chat/completions", handlers.chat_completions, "POST"),
        ("/v1/route", handlers.route, "POST"),
        ("/v1/models", handlers.models, "GET"),
        ("/health", handlers.health, "GET"),
        ("/metrics", handlers.prometheus, "GET"),
    ]
    app = Starlette(
        routes=[Route(path, handlers.guarded(path, handler), methods=[method]) for path, handler, method in endpoints],
        middleware=middleware,
        exception_handlers={404: handlers.http_error, 405: handlers.http_error},
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    app.state.policy = policy
    return app


def shutdown_grace_s(config: ServerConfig) -> float:
    """Seconds that in-flight requests get at SIGTERM: by default an upstream call, its fallback, and 5 s."""
    if config.shutdown_grace_s is not None:
        return config.shutdown_grace_s
    calls = attempts_for(0 if config.targets is None else len(config.targets.targets)) if config.fallback else 1
    return config.upstream_timeout_s * calls + 5.0


class _HeaderTimer:
    """Mixed into uvicorn's HTTP protocols: closes a connection whose request headers take over
    ``header_timeout_s`` or pass ``MAX_HEADER_BYTES``; ``awaiting_headers()`` says whether headers are due."""

    header_timeout_s: float
    _header_timer: asyncio.TimerHandle | None = None
    _header_bytes = 0  # of the request whose headers are arriving
    loop: Any
    transport: Any

    def awaiting_headers(self) -> bool:
        raise NotImplementedError

    def connection_made(self, transport: Any) -> None:
        # One send for a response's headers and body (see coalesce.py): 2 -> 1 system call per answer.
        super().connection_made(CoalescedWrites(transport, self.loop))  # type: ignore[misc]
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        if self.awaiting_headers():
            # Neither parser bounds a header block (both keep copying it as it grows): past
            # MAX_HEADER_BYTES, at most one read (256 KiB) later, the connection gets 431 and closes.
            self._header_bytes += len(data)
            if self._header_bytes > MAX_HEADER_BYTES:
                self._refuse_headers()
                return
            self._arm()  # the headers of a request are arriving: they have the timeout from their first byte
        else:
            self._header_bytes = 0
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

    def _refuse_headers(self) -> None:
        if not self.transport.is_closing():
            self.transport.write(HEADERS_TOO_LARGE)
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._expire)

    def _expire(self) -> None:
        self._header_timer = None
        if self.awaiting_headers() and not self.transport.is_closing():
            self.transport.close()


def _httptools_header_timer() -> type:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HeaderTimeoutHttpToolsProtocol(_HeaderTimer, HttpToolsProtocol):
        _in_headers = True  # from the connection's opening, and from each message's first byte

        def awaiting_headers(self) -> bool:
            return self._in_headers

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_headers = True

        def on_headers_complete(self) -> None:
            self._in_headers = False
            super().on_headers_complete()

    return HeaderTimeoutHttpToolsProtocol


def _h11_header_timer() -> type:
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutH11Protocol(_HeaderTimer, H11Protocol):
        def awaiting_headers(self) -> bool:
            return self.conn.their_state is h11.IDLE

    return HeaderTimeoutH11Protocol


# Each parser's protocol with the header timer; built on first use, so importing the server loads neither parser.
_HEADER_TIMER_PROTOCOLS: dict[str, Callable[[], type]] = {"httptools": _httptools_header_timer, "h11": _h11_header_timer}


def header_timeout_protocol(timeout_s: float, parser: str = "h11") -> type:
    """uvicorn's HTTP protocol (``h11`` or ``httptools``), closing connections that take over
    ``timeout_s`` to send a request's headers.

    uvicorn times out idle keep-alive connections, but not one that has started a request and
    stalls (a slow-loris client): without this, such sockets stay open indefinitely. The timer
    runs from a connection's opening, and from the first byte of each later request's headers,
    to the end of those headers.
    """
    base = _HEADER_TIMER_PROTOCOLS["httptools" if parser == "httptools" else "h11"]()
    return type(base.__name__, (base,), {"header_timeout_s": timeout_s})


def http_parser() -> str:
    """The HTTP parser that ``edgeroute serve`` runs: ``httptools`` (C, the serve extra) when installed, else ``h11``.

    benchmarks/results/server_overhead.md has both side by side.
    """
    import importlib.util

    return "httptools" if importlib.util.find_spec("httptools") is not None else "h11"


def uvicorn_config(
    config: ServerConfig, app: Any, host: str = "127.0.0.1", port: int = 6060, log_level: str = "info", parser: str | None = None
) -> Any:
    """The uvicorn settings of ``edgeroute serve``: client timeouts and a shutdown grace that fits the upstream
    timeout; ``parser`` (``h11`` or ``httptools``) overrides ``http_parser()``."""
    uvicorn = require_extra("uvicorn", "serve", "edgeroute serve")
    # Keep-alive longer than clients' pools keep idle connections: otherwise a client can reuse a
    # connection in the instant the server closes it, and the request fails with a read error.
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=math.ceil(shutdown_grace_s(config)),
        timeout_keep_alive=75,
        http=header_timeout_protocol(config.client_timeout_s, parser or http_parser()),
        # h11 has a bound of its own (16 KiB, a bare 400): set past MAX_HEADER_BYTES and a read so that
        # both parsers answer an oversized header block the same way, 431.
        h11_max_incomplete_event_size=MAX_HEADER_BYTES + 256 * 1024,
    )


def serve(config: ServerConfig, host: str = "127.0.0.1", port: int = 6060, log_level: str = "info") -> None:
    """Load the routers, then serve until interrupted (SIGINT/SIGTERM finish in-flight requests)."""
    uvicorn = require_extra("uvicorn", "serve", "edgeroute serve")
    app = create_app(config)  # the configuration checked itself when built (ServerConfig.__post_init__)
    server = uvicorn.Server(uvicorn_config(config, app, host, port, log_level))
    # What is loaded by now (modules, routers) lives as long as the process: frozen out of the collector's
    # sight, full collections stop walking it. With the shipped static router loaded, one took 26.7 ms
    # on a 2-core VM (0.0 ms frozen), every few seconds under load, stalling every request meanwhile.
    # Here, not in create_app: an app mounted in someone else's process leaves its collector alone.
    gc.collect()
    gc.freeze()
    server.run()  # exits non-zero when it cannot bind
