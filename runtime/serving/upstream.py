"""Calls to the strong and weak LLMs: the one fallback rule that the controller and the server
share, and the server's HTTP client for its upstreams (``serve`` extra, imported on first use).

The fallback rule: when the chosen model's call fails in a transient way (``FALLBACK_KINDS``),
the other model gets the request once, and the decision records ``fallback="<kind> on <model>"``.
A rejected request (4xx) is not retried: the other model would reject it too.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar
from urllib.parse import urlsplit

from edgeroute.runtime.scoring.decision import Decision
from edgeroute.runtime.errors import ConfigurationError, require_extra
from edgeroute.runtime.serving.http_errors import HTTPFailure
from edgeroute.runtime.serving.idle_guard import guarded_connector

# Upstream failures worth retrying on the other model.
FALLBACK_KINDS = frozenset({"upstream_timeout", "upstream_unreachable", "upstream_rate_limited", "upstream_error", "upstream_malformed"})
# Server-Sent Events lines start with a field name or a comment; anything else is not a stream.
_SSE_START = (b"data:", b"event:", b"id:", b"retry:", b":")
# Long opaque runs with a digit or a mask character look like keys or tokens: never relayed.
_SECRET_LIKE = re.compile(r"[A-Za-z0-9_\-*.+/=]{20,}")

# A non-streaming answer past this is no chat completion: the relay stops reading it.
MAX_ANSWER_BYTES = 64 * 1024 * 1024

T = TypeVar("T")
KindOf = Callable[[Exception], "str | None"]


@dataclass(frozen=True)
class Fallback:
    """The fallback rule for one front end: on or off, the models' names, how to name a failure.

    ``kind_of`` names an upstream failure (``upstream_timeout``, ...) or returns None for an
    exception that is no upstream failure (re-raised as is). ``on_failure(kind)`` and
    ``on_fallback(kind)`` let the server count them. Two models (``order`` empty): the other tier
    gets the request once. N targets (``order``: their names, most capable first): the next target
    in order, wrapping around, until each was tried once (``Targets.fallback_order``).
    """

    enabled: bool
    names: Mapping[str, str | None]
    kind_of: KindOf
    on_failure: Callable[[str], None] | None = None
    on_fallback: Callable[[str], None] | None = None
    order: Sequence[str] = ()

    @property
    def attempts(self) -> int:
        """Calls a request may cost: the chosen model and each one it may fall back to."""
        return len(self.order) if self.order else 2

    def after(self, decision: Decision, error: Exception) -> Decision:
        """The decision that sends the request to the next model; re-raises ``error`` when the rule says no."""
        kind = self.kind_of(error)
        if kind is None:
            raise error
        if self.on_failure:
            self.on_failure(kind)
        if not self.enabled or kind not in FALLBACK_KINDS:
            raise error
        if self.on_fallback:
            self.on_fallback(kind)
        if decision.rank is None:
            return decision.fallen_back(self.names, kind)
        following = (decision.rank + 1) % len(self.order)
        return decision.moved_to(following, self.order[following], kind)

    def failed_again(self, error: Exception) -> None:
        """Count the last model's failure too (then the caller re-raises it)."""
        kind = self.kind_of(error)
        if kind is not None and self.on_failure:
            self.on_failure(kind)

    def call(self, decision: Decision, call: Callable[[Decision], T]) -> tuple[Decision, T]:
        """``call(decision)``, and again with the next model while the rule allows."""
        for attempt in range(self.attempts):
            try:
                return decision, call(decision)
            except Exception as error:  # noqa: BLE001 - after() re-raises what is not an upstream fault
                if attempt == self.attempts - 1:
                    self.failed_again(error)
                    raise
                decision = self.after(decision, error)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def acall(self, decision: Decision, call: Callable[[Decision], Awaitable[T]]) -> tuple[Decision, T]:
        """``call`` for coroutines."""
        for attempt in range(self.attempts):
            try:
                return decision, await call(decision)
            except Exception as error:  # noqa: BLE001 - after() re-raises what is not an upstream fault
                if attempt == self.attempts - 1:
                    self.failed_again(error)
                    raise
                decision = self.after(decision, error)
        raise AssertionError("unreachable: the last attempt returns or raises")


# ---------------------------------------------------------------- the server's upstream client
OPENAI_HOST = "api.openai.com"
OPENAI_KEY_ENV = "OPENAI_API_KEY"


def check_base_url(url: str, role: str) -> None:
    """Refuse a base URL that no request could reach: an http(s) scheme, a host and a valid port are required."""
    example = "e.g. http://127.0.0.1:8000/v1"
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        parts, port_ok = urlsplit(""), False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok or any(c.isspace() for c in url):
        raise ConfigurationError(f"{role} base URL {url!r} is not an http(s) URL with a host and a valid port ({example})")


@dataclass
class UpstreamConfig:
    """One OpenAI-compatible upstream: base URL (ending in /v1), model name there, API key variable.

    ``api_key_env=None`` sends ``OPENAI_API_KEY`` to api.openai.com only: a key goes to the base URL it
    was configured for, never to a custom one by default.
    """

    model: str
    base_url: str
    api_key_env: str | None = None
    # The key itself, read where the configuration was built (Ray Serve replicas get it with their configuration,
    # which Serve keeps in the cluster's own store, never in a runtime_env the dashboard shows); never printed.
    api_key: str | None = field(default=None, repr=False)

    def key_variable(self) -> str | None:
        """The variable whose key this upstream gets, or None when it gets none."""
        if self.api_key_env:
            return self.api_key_env
        return OPENAI_KEY_ENV if urlsplit(self.base_url).hostname == OPENAI_HOST else None

    def key(self) -> str | None:
        """The key this upstream is sent: ``api_key`` when resolved already, else its key variable's value."""
        variable = self.key_variable()
        return self.api_key or (os.environ.get(variable) if variable else None)

    def headers(self) -> dict[str, str]:
        """The Authorization header, when there is a key."""
        key = self.key()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def probe(self, role: str, timeout_s: float = 3.0) -> None:
        """Open (and close) one TCP connection to the base URL's host and port: ``serve --check-upstreams``."""
        import socket

        parts = urlsplit(self.base_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            socket.create_connection((parts.hostname or "", port), timeout=timeout_s).close()
        except OSError as exc:
            raise ConfigurationError(
                f"{role} upstream {self.base_url} is not reachable ({type(exc).__name__}); start it or fix --{role}-base-url"
            ) from None

    def check(self, role: str) -> None:
        """Fail at start, not per request: a base URL that cannot work, a named key variable that is unset."""
        check_base_url(self.base_url, role)
        if self.api_key_env and not self.api_key and not os.environ.get(self.api_key_env):
            raise ConfigurationError(f"{role} API key variable {self.api_key_env} is not set: set it, or name no variable to send no key")


class UpstreamError(HTTPFailure):
    """An upstream call failed; ``kind`` names how, ``status`` is what the client gets."""

    def __init__(self, kind: str, status: int, message: str) -> None:
        super().__init__(status, message, kind)


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


def rejection(upstream: UpstreamConfig, status: int, detail: bytes) -> UpstreamError:
    """The error for an upstream answer of HTTP 4xx/5xx; the upstream's body is never relayed as is."""
    model = upstream.model
    if status == 429:
        return UpstreamError("upstream_rate_limited", 429, f"upstream {model} is rate limiting (429)")
    if status >= 500:
        return UpstreamError("upstream_error", 502, f"upstream {model} failed with HTTP {status}")
    if status in (401, 403, 407):  # the server's credentials, not the client's: never the client's 401
        return UpstreamError(
            "upstream_rejected",
            502,
            f"upstream {model} refused the server's credentials (HTTP {status}); check the server's API key variable",
        )
    key = (upstream.headers().get("Authorization") or "").removeprefix("Bearer ")
    message = sanitized_upstream_message(detail, [key])
    return UpstreamError(
        "upstream_rejected", status, f"upstream {model} rejected the request (HTTP {status})" + (f": {message}" if message else "")
    )


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def env_proxy(url: str) -> str | None:
    """The proxy that HTTP(S)_PROXY / ALL_PROXY / NO_PROXY name for ``url``, if any (the usual rules of those variables)."""
    import urllib.request
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if not parts.hostname or urllib.request.proxy_bypass(parts.hostname):
        return None
    proxies = urllib.request.getproxies()
    return proxies.get(parts.scheme) or proxies.get("all")


class UpstreamStreamBroken(Exception):
    """The upstream's stream broke after it started (reset, timeout, bad framing): the client's stream just ends."""


def reencodable_answer(body: bytes) -> dict[str, Any]:
    """An upstream's JSON answer, parsed, that the server can encode again for its client; raises ``ValueError``.

    NaN, Infinity and numbers past a float's range (``1e999``) are not JSON, and a lone surrogate
    escape cannot become UTF-8: such an answer is the upstream's fault (``upstream_malformed``), not
    the client's.
    """
    data = json.loads(body, parse_constant=_not_json, parse_float=_finite_float)
    if not isinstance(data, dict):
        raise ValueError("not an object")
    json.dumps(data, ensure_ascii=False, allow_nan=False).encode("utf-8")  # UnicodeEncodeError is a ValueError
    return data


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:20]} is beyond a float's range")
    return value


def _is_header_text(value: str | None) -> bool:
    return value is None or (value.isascii() and value.isprintable())


class AiohttpAnswer:
    """An aiohttp response with the lean client's ``Answer`` interface (runtime/serving/http1.py):
    ``status``, ``content_type``, ``readany()``, ``release()``."""

    def __init__(self, response: Any) -> None:
        self._response, self.status = response, response.status
        self.content_type: str | None = response.headers.get("content-type")

    async def readany(self) -> bytes:
        """The body's bytes that have arrived, waiting for some; ``b""`` at its end."""
        try:
            return bytes(await self._response.content.readany())
        except RuntimeError as exc:  # aiohttp's "Connection closed." when the upstream's framing broke the connection
            raise ConnectionResetError(f"the upstream connection closed: {exc}") from None

    def release(self) -> None:
        """Back to the pool when read to its end, closed otherwise."""
        self._response.release()


class UpstreamStream:
    """An upstream's streaming answer, without its client library: content type, first bytes, the rest, close.

    ``chunks()`` yields the body's bytes as they arrive (transfer encoding removed, nothing else
    changed) and raises ``UpstreamStreamBroken`` when the connection fails; ``aclose()`` gives the
    connection back to the pool when the body was read to its end, and closes it otherwise.
    """

    def __init__(self, response: Any, first: bytes, errors: tuple[type[BaseException], ...]) -> None:
        self._response, self.first, self._errors = response, first, errors
        self.content_type: str = response.content_type or "text/event-stream"

    async def chunks(self) -> AsyncIterator[bytes]:
        """The bytes after ``first``."""
        try:
            while chunk := await self._response.readany():
                yield chunk
        except self._errors as exc:
            raise UpstreamStreamBroken(type(exc).__name__) from None

    async def aclose(self) -> None:
        """Release the connection (closed unless the body was read to its end)."""
        self._response.release()


class UpstreamRelay:
    """The server's calls to its strong and weak upstreams: failures named by kind, one fallback.

    Plain-http upstreams without a proxy get the lean HTTP/1.1 client (runtime/serving/http1.py),
    the others aiohttp; ``client="aiohttp"`` gives every upstream aiohttp. aiohttp rather than
    httpx: on a loopback upstream httpx's own cost was ~0.9 ms per call, and its pool (httpcore)
    scans every pooled connection on each request, which collapsed the server to ~50 requests/s at
    100 clients (benchmarks/results/server_fixes.md).
    """

    def __init__(
        self,
        strong: UpstreamConfig,
        weak: UpstreamConfig,
        timeout_s: float,
        fallback: bool,
        metrics: Any,
        client: str = "auto",
        targets: Sequence[UpstreamConfig] = (),
    ) -> None:
        from edgeroute.runtime.serving.http1 import lean_client_fits

        self.aiohttp = require_extra("aiohttp", "serve", "edgeroute serve")
        # Slots: "strong"/"weak" for two models; "0".."N-1" (the targets' order) for N targets.
        self.upstreams = {str(rank): upstream for rank, upstream in enumerate(targets)} or {"strong": strong, "weak": weak}
        self.names = {slot: upstream.model for slot, upstream in self.upstreams.items()}
        self.urls = {tier: upstream.base_url.rstrip("/") + "/chat/completions" for tier, upstream in self.upstreams.items()}
        self.proxies = {tier: env_proxy(url) for tier, url in self.urls.items()}
        self.lean = {tier: client == "auto" and lean_client_fits(self.urls[tier], self.proxies[tier]) for tier in self.urls}
        self.timeout_s, self.metrics = timeout_s, metrics
        self.fallback = Fallback(
            fallback,
            self.names,
            lambda error: error.kind if isinstance(error, UpstreamError) else None,
            on_failure=lambda kind: metrics.inc("edgeroute_errors_total", kind=kind),
            on_fallback=lambda kind: metrics.inc("edgeroute_fallbacks_total", reason=kind),
            order=[upstream.model for upstream in targets],
        )
        # Timeouts first: aiohttp's read timeout is both an asyncio.TimeoutError and a ClientError.
        self.timeouts: tuple[type[BaseException], ...] = (asyncio.TimeoutError,)
        self.failures: tuple[type[BaseException], ...] = (self.aiohttp.ClientError, OSError, ValueError)
        self._session: Any = None
        self._pool: Any = None

    def session(self) -> Any:
        """The shared aiohttp session, created on first use inside the running event loop.

        ``--upstream-timeout`` bounds connecting (waiting for a pooled connection included) and each
        wait for bytes, not a whole stream (``within_deadline`` adds one deadline of edgeroute's own
        around the answer's head). Bodies are not re-encoded; a body the upstream compressed is
        decompressed. Idle connections are guarded against answers nobody asked for (``idle_guard``).
        """
        if self._session is None or self._session.closed:
            aiohttp, timeout = self.aiohttp, self.timeout_s
            self._session = aiohttp.ClientSession(
                connector=guarded_connector(aiohttp, limit=1000, limit_per_host=0, keepalive_timeout=4.0),
                timeout=aiohttp.ClientTimeout(total=None, connect=timeout, sock_connect=timeout, sock_read=timeout),
                raise_for_status=False,
                # aiohttp refuses header lines over 8 KiB by default; h11 (httpx) took headers up to 100 KiB.
                max_line_size=65536,
                max_field_size=65536,
            )
        return self._session

    def pool(self) -> Any:
        """The lean client's connection pool, created on first use inside the running event loop."""
        if self._pool is None:
            from edgeroute.runtime.serving.http1 import Http1Pool

            self._pool = Http1Pool(self.timeout_s)
        return self._pool

    async def aclose(self) -> None:
        """Close the clients' connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _unreachable(self, upstream: UpstreamConfig, exc: BaseException, what: str = "unreachable") -> UpstreamError:
        if isinstance(exc, self.timeouts):
            return UpstreamError("upstream_timeout", 504, f"upstream {upstream.model} timed out")
        return UpstreamError("upstream_unreachable", 502, f"upstream {upstream.model} {what} ({type(exc).__name__})")

    async def send(self, tier: str, payload: dict[str, Any]) -> Any:
        """POST the request to the tier's upstream; the response once its headers arrived. Transport
        failures become ``UpstreamError``."""
        upstream = self.upstreams[tier]
        try:
            content = encode_upstream_body(payload, upstream.model)
        except (ValueError, TypeError, RecursionError) as exc:
            raise UpstreamError("invalid_request_error", 400, f"the request cannot be relayed as JSON ({type(exc).__name__})") from None
        headers = {**upstream.headers(), "content-type": "application/json"}
        try:
            if self.lean[tier]:
                return await self.pool().post(self.urls[tier], headers, content)
            response = await self.session().post(self.urls[tier], data=content, proxy=self.proxies[tier], headers=headers)
            return AiohttpAnswer(response)
        except self.timeouts + self.failures as exc:
            raise self._unreachable(upstream, exc) from None

    async def read(self, upstream: UpstreamConfig, response: Any) -> bytes:
        """The whole body (at most ``MAX_ANSWER_BYTES``); transport failures become ``UpstreamError``.
        The connection goes back to the pool."""
        parts, size = [], 0
        try:
            while chunk := await response.readany():
                size += len(chunk)
                if size > MAX_ANSWER_BYTES:
                    raise UpstreamError("upstream_malformed", 502, f"upstream {upstream.model} sent an answer over 64 MiB")
                parts.append(chunk)
            return b"".join(parts)
        except self.timeouts + self.failures as exc:
            raise self._unreachable(upstream, exc) from None
        finally:
            response.release()

    async def within_deadline(self, upstream: UpstreamConfig, step: Awaitable[T]) -> T:
        """``step`` (the answer's headers, a whole non-streaming body, a stream's first bytes) within
        ``timeout_s`` in all: edgeroute's own deadline, whatever the client library's timeouts allow
        (a body trickled a byte at a time, endless 1xx answers, a late trailer)."""
        try:
            return await asyncio.wait_for(step, self.timeout_s)
        except asyncio.TimeoutError:
            raise UpstreamError("upstream_timeout", 504, f"upstream {upstream.model} timed out") from None

    async def call(self, tier: str, payload: dict[str, Any], stream: bool) -> Any:
        """The answer of the slot's upstream (``slot_of``): a JSON object, or for streams an ``UpstreamStream``."""
        upstream = self.upstreams[tier]
        started = time.perf_counter()
        response = await self.within_deadline(upstream, self.send(tier, payload))
        if response.status >= 400:
            detail = (await self.within_deadline(upstream, self.read(upstream, response)))[:4000]
            raise rejection(upstream, response.status, detail)
        malformed = UpstreamError("upstream_malformed", 502, f"upstream {upstream.model} sent a malformed body")
        if not stream:
            body = await self.within_deadline(upstream, self.read(upstream, response))
            try:
                data = reencodable_answer(body)
            except (ValueError, RecursionError):
                raise malformed from None
            self.metrics.observe("edgeroute_upstream_seconds", time.perf_counter() - started, model=upstream.model)
            return data
        try:
            if not _is_header_text(response.content_type):  # relayed as the client's Content-Type: must be encodable
                raise malformed
            first = await self.within_deadline(upstream, self.first_chunk(upstream, response))
            if not first.lstrip().startswith(_SSE_START):  # an empty or non-SSE body is no stream: same as non-streaming
                raise malformed
        except BaseException:  # cancelled too: the lean client's connections are only ever freed by release()
            response.release()
            raise
        self.metrics.observe("edgeroute_upstream_seconds", time.perf_counter() - started, model=upstream.model)
        return UpstreamStream(response, first, self.timeouts + self.failures)

    async def first_chunk(self, upstream: UpstreamConfig, response: Any) -> bytes:
        """The stream's first non-blank bytes (all of them that have arrived, blank ones up to 64 KiB);
        empty when the stream ends first. The caller releases the response when this raises."""
        try:
            first = b""
            while not first.strip() and len(first) < 65536:  # skip keep-alive blank lines
                chunk = await response.readany()
                if not chunk:
                    return first
                first += chunk
            return first
        except self.timeouts + self.failures as exc:
            raise self._unreachable(upstream, exc, "broke the stream") from None

    async def call_with_fallback(self, decision: Decision, payload: dict[str, Any], stream: bool) -> tuple[Decision, Any]:
        """The decided tier's answer, or the other tier's by the fallback rule."""
        return await self.fallback.acall(decision, lambda d: self.call(slot_of(d), payload, stream))


def slot_of(decision: Decision) -> str:
    """The relay slot of a decision's model: its tier for two models, its rank among N targets."""
    return decision.tier if decision.rank is None else str(decision.rank)
