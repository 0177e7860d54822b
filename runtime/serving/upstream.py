"""Calls to the strong and weak LLMs: the one fallback rule that the controller and the server
share, and the server's HTTP client for its upstreams (``serve`` extra, imported on first use).

The fallback rule: when the chosen model's call fails in a transient way (``FALLBACK_KINDS``),
the other model gets the request once, and the decision records ``fallback="<kind> on <model>"``.
A rejected request (4xx) is not retried: the other model would reject it too.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from edgeroute.runtime.scoring.decision import Decision
from edgeroute.runtime.errors import require_extra
from edgeroute.runtime.serving.http_errors import HTTPFailure

# Upstream failures worth retrying on the other model.
FALLBACK_KINDS = frozenset({"upstream_timeout", "upstream_unreachable", "upstream_rate_limited", "upstream_error",
                            "upstream_malformed"})
# Server-Sent Events lines start with a field name or a comment; anything else is not a stream.
_SSE_START = (b"data:", b"event:", b"id:", b"retry:", b":")
# Long opaque runs with a digit or a mask character look like keys or tokens: never relayed.
_SECRET_LIKE = re.compile(r"[A-Za-z0-9_\-*.+/=]{20,}")

T = TypeVar("T")
KindOf = Callable[[Exception], "str | None"]


@dataclass(frozen=True)
class Fallback:
    """The fallback rule for one front end: on or off, the tiers' model names, how to name a failure.

    ``kind_of`` names an upstream failure (``upstream_timeout``, ...) or returns None for an
    exception that is no upstream failure (re-raised as is). ``on_failure(kind)`` and
    ``on_fallback(kind)`` let the server count them.
    """

    enabled: bool
    names: Mapping[str, str | None]
    kind_of: KindOf
    on_failure: Callable[[str], None] | None = None
    on_fallback: Callable[[str], None] | None = None

    def after(self, decision: Decision, error: Exception) -> Decision:
        """The decision that sends the request to the other model; re-raises ``error`` when the rule says no."""
        kind = self.kind_of(error)
        if kind is None:
            raise error
        if self.on_failure:
            self.on_failure(kind)
        if not self.enabled or kind not in FALLBACK_KINDS:
            raise error
        if self.on_fallback:
            self.on_fallback(kind)
        return decision.fallen_back(self.names, kind)

    def failed_again(self, error: Exception) -> None:
        """Count the other model's failure too (then the caller re-raises it)."""
        kind = self.kind_of(error)
        if kind is not None and self.on_failure:
            self.on_failure(kind)

    def call(self, decision: Decision, call: Callable[[Decision], T]) -> tuple[Decision, T]:
        """``call(decision)``, and once more with the other model when the rule allows."""
        try:
            return decision, call(decision)
        except Exception as error:  # noqa: BLE001 - after() re-raises what is not an upstream fault
            fallen = self.after(decision, error)
        try:
            return fallen, call(fallen)
        except Exception as error:
            self.failed_again(error)
            raise

    async def acall(self, decision: Decision, call: Callable[[Decision], Awaitable[T]]) -> tuple[Decision, T]:
        """``call`` for coroutines."""
        try:
            return decision, await call(decision)
        except Exception as error:  # noqa: BLE001 - after() re-raises what is not an upstream fault
            fallen = self.after(decision, error)
        try:
            return fallen, await call(fallen)
        except Exception as error:
            self.failed_again(error)
            raise


# ---------------------------------------------------------------- the server's upstream client
@dataclass
class UpstreamConfig:
    """One OpenAI-compatible upstream: base URL (ending in /v1), model name there, API key variable."""

    model: str
    base_url: str
    api_key_env: str | None = "OPENAI_API_KEY"

    def headers(self) -> dict[str, str]:
        """The Authorization header, when the key variable is set."""
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        return {"Authorization": f"Bearer {key}"} if key else {}


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
        return UpstreamError("upstream_rejected", 502, f"upstream {model} refused the server's credentials "
                             f"(HTTP {status}); check the server's API key variable")
    key = (upstream.headers().get("Authorization") or "").removeprefix("Bearer ")
    message = sanitized_upstream_message(detail, [key])
    return UpstreamError("upstream_rejected", status, f"upstream {model} rejected the request (HTTP {status})"
                         + (f": {message}" if message else ""))


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class UpstreamRelay:
    """The server's calls to its strong and weak upstreams (httpx): failures named by kind, one fallback."""

    def __init__(self, strong: UpstreamConfig, weak: UpstreamConfig, timeout_s: float, fallback: bool,
                 metrics: Any) -> None:
        self.httpx = require_extra("httpx", "serve", "edgeroute serve")
        self.upstreams = {"strong": strong, "weak": weak}
        self.names = {tier: upstream.model for tier, upstream in self.upstreams.items()}
        self.timeout_s, self.metrics = timeout_s, metrics
        self.fallback = Fallback(
            fallback, self.names, lambda error: error.kind if isinstance(error, UpstreamError) else None,
            on_failure=lambda kind: metrics.inc("edgeroute_errors_total", kind=kind),
            on_fallback=lambda kind: metrics.inc("edgeroute_fallbacks_total", reason=kind))
        self._client: Any = None

    def client(self) -> Any:
        """The shared httpx client, created on first use inside the running event loop."""
        if self._client is None:
            self._client = self.httpx.AsyncClient(
                timeout=self.httpx.Timeout(self.timeout_s),
                limits=self.httpx.Limits(max_connections=1000, max_keepalive_connections=200))
        return self._client

    async def aclose(self) -> None:
        """Close the client's connections."""
        if self._client is not None:
            await self._client.aclose()

    async def send(self, tier: str, payload: dict[str, Any], stream: bool) -> Any:
        """POST the request to the tier's upstream; transport failures become ``UpstreamError``."""
        upstream = self.upstreams[tier]
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

    async def call(self, tier: str, payload: dict[str, Any], stream: bool) -> Any:
        """The tier's answer: a JSON object, or for streams ``(response, first chunk, chunk iterator)``."""
        upstream = self.upstreams[tier]
        started = time.perf_counter()
        response = await self.send(tier, payload, stream)
        if response.status_code >= 400:
            detail = (await response.aread())[:4000]
            await response.aclose()
            raise rejection(upstream, response.status_code, detail)
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
        """The stream's first non-blank bytes and the iterator over the rest."""
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

    async def call_with_fallback(self, decision: Decision, payload: dict[str, Any], stream: bool) -> tuple[Decision, Any]:
        """The decided tier's answer, or the other tier's by the fallback rule."""
        return await self.fallback.acall(decision, lambda d: self.call(d.tier, payload, stream))
