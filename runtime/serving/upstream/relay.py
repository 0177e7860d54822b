"""The server's calls to its upstreams: one slot per model, its wire format and transport, failures typed once.

``UpstreamRelay.call(slot, payload, stream)`` writes the request in the slot's wire format, sends it
through the slot's transport, and returns the answer as an OpenAI chat completion (a dict) or, for
streams, an ``UpstreamStream`` of OpenAI events. Every way a call can fail leaves here as one of the
typed failures (``failures.py``); which model gets the request next is the fallback rule's business
(``runtime/serving/fallback.py``), not the transport's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

from edgeroute.runtime.scoring.decision import Decision
from edgeroute.runtime.serving.fallback import Fallback, slot_of
from edgeroute.runtime.serving.upstream.config import UpstreamConfig, env_proxy
from edgeroute.runtime.serving.upstream.failures import (
    RequestNotRelayable,
    UpstreamError,
    UpstreamMalformed,
    UpstreamTimeout,
    rejection,
    transport_failure,
)
from edgeroute.runtime.serving.upstream.transport import AiohttpTransport, Answer, LeanTransport, Transport
from edgeroute.runtime.serving.upstream.wire import SSE_START, reencodable_answer, wire_format

# A non-streaming answer past this is no chat completion: the relay stops reading it.
MAX_ANSWER_BYTES = 64 * 1024 * 1024
T = TypeVar("T")


class UpstreamStreamBroken(Exception):
    """The upstream's stream broke after it started (reset, timeout, bad framing): the client's stream just ends."""


def _malformed(upstream: UpstreamConfig) -> UpstreamMalformed:
    return UpstreamMalformed(f"upstream {upstream.model} sent a malformed body")


def _is_header_text(value: str | None) -> bool:
    return value is None or (value.isascii() and value.isprintable())


class UpstreamStream:
    """An upstream's streaming answer, without its client library: content type, first bytes, the rest, close.

    ``chunks()`` yields the body's bytes as they arrive (transfer encoding removed; in OpenAI's event
    format, converted when the upstream speaks another) and raises ``UpstreamStreamBroken`` when the
    connection fails; ``aclose()`` gives the connection back to the pool when the body was read to its
    end, and closes it otherwise.
    """

    def __init__(
        self,
        response: Any,
        first: bytes,
        errors: tuple[type[BaseException], ...],
        convert: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self._response, self._errors, self._convert = response, errors, convert
        self.first = self._converted(first)
        self.content_type: str = (response.content_type or "text/event-stream") if convert is None else "text/event-stream"

    async def chunks(self) -> AsyncIterator[bytes]:
        """The bytes after ``first``."""
        try:
            while chunk := await self._response.readany():
                yield self._converted(chunk)
        except (*self._errors, UpstreamError) as exc:
            raise UpstreamStreamBroken(type(exc).__name__) from None

    async def aclose(self) -> None:
        """Release the connection (closed unless the body was read to its end)."""
        self._response.release()

    def _converted(self, chunk: bytes) -> bytes:
        """``chunk`` in OpenAI's event format; a converter's own failure is the upstream's (``UpstreamMalformed``)."""
        if self._convert is None:
            return chunk
        try:
            return self._convert(chunk)
        except (ValueError, TypeError, RecursionError) as exc:
            raise UpstreamMalformed(f"a stream event could not be translated ({type(exc).__name__})") from None


class UpstreamRelay:
    """The server's calls to its upstreams: strong and weak, or N targets; failures named by kind, the fallback rule.

    Plain-http upstreams without a proxy get the lean transport, the others aiohttp; ``client="aiohttp"``
    gives every upstream aiohttp (transport.py says why these two).
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

        self.aiohttp_transport = AiohttpTransport(timeout_s)
        self.lean_transport = LeanTransport(timeout_s)
        # Slots: "strong"/"weak" for two models; "0".."N-1" (the targets' order) for N targets.
        self.upstreams = {str(rank): upstream for rank, upstream in enumerate(targets)} or {"strong": strong, "weak": weak}
        self.names = {slot: upstream.model for slot, upstream in self.upstreams.items()}
        self.formats = {slot: wire_format(upstream.format) for slot, upstream in self.upstreams.items()}
        self.urls = {slot: upstream.base_url.rstrip("/") + self.formats[slot].path for slot, upstream in self.upstreams.items()}
        self.proxies = {slot: env_proxy(url) for slot, url in self.urls.items()}
        self.lean = {slot: client == "auto" and lean_client_fits(self.urls[slot], self.proxies[slot]) for slot in self.urls}
        self.timeout_s, self.metrics = timeout_s, metrics
        self.fallback = Fallback(
            fallback,
            self.names,
            lambda error: error.kind if isinstance(error, UpstreamError) else None,
            on_failure=lambda kind: metrics.inc("edgeroute_errors_total", kind=kind),
            on_fallback=lambda kind: metrics.inc("edgeroute_fallbacks_total", reason=kind),
            order=[upstream.model for upstream in targets],
        )
        # Headers per slot, worked out once: the key (read where the configuration was built, or from its variable
        # now), the wire format's version header, the content type.
        self.headers = {slot: {**upstream.headers(), "content-type": "application/json"} for slot, upstream in self.upstreams.items()}
        # What either transport raises when an upstream fails (timeouts first: aiohttp's read timeout is both).
        self.timeouts = self.aiohttp_transport.timeouts
        self.failures = self.aiohttp_transport.failures

    def transport(self, slot: str) -> Transport:
        """The slot's transport."""
        return self.lean_transport if self.lean[slot] else self.aiohttp_transport

    def pool(self) -> Any:
        """The lean client's connection pool (created on first use inside the running event loop)."""
        return self.lean_transport.pool()

    async def aclose(self) -> None:
        """Close the transports' connections."""
        await self.aiohttp_transport.aclose()
        await self.lean_transport.aclose()

    def _unreachable(self, upstream: UpstreamConfig, exc: BaseException, what: str = "unreachable") -> UpstreamError:
        return transport_failure(exc, upstream.model, self.timeouts, what)

    async def send(self, slot: str, payload: dict[str, Any]) -> Answer:
        """POST the request, in the slot's wire format, to its upstream; the answer once its headers arrived."""
        upstream = self.upstreams[slot]
        try:
            content = self.formats[slot].encode(payload, upstream.model)
        except (ValueError, TypeError, RecursionError) as exc:
            raise RequestNotRelayable(f"the request cannot be relayed as JSON ({type(exc).__name__})") from None
        try:
            return await self.transport(slot).post(self.urls[slot], self.headers[slot], content, self.proxies[slot])
        except self.timeouts + self.failures as exc:
            raise self._unreachable(upstream, exc) from None

    async def read(self, upstream: UpstreamConfig, response: Answer) -> bytes:
        """The whole body (at most ``MAX_ANSWER_BYTES``); the connection goes back to the pool."""
        parts, size = [], 0
        try:
            while chunk := await response.readany():
                size += len(chunk)
                if size > MAX_ANSWER_BYTES:
                    raise UpstreamMalformed(f"upstream {upstream.model} sent an answer over 64 MiB")
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
            raise UpstreamTimeout(f"upstream {upstream.model} timed out") from None

    async def call(self, slot: str, payload: dict[str, Any], stream: bool) -> Any:
        """The answer of the slot's upstream (``slot_of``): a chat completion, or for streams an ``UpstreamStream``."""
        upstream, wire = self.upstreams[slot], self.formats[slot]
        started = time.perf_counter()
        response = await self.within_deadline(upstream, self.send(slot, payload))
        if response.status >= 400:
            detail = (await self.within_deadline(upstream, self.read(upstream, response)))[:4000]
            raise rejection(upstream.model, upstream.key(), response.status, detail)
        if not stream:
            body = await self.within_deadline(upstream, self.read(upstream, response))
            try:
                data = wire.answer(reencodable_answer(body), upstream.model)
            except UpstreamError:
                raise
            except (ValueError, TypeError, AttributeError, RecursionError):
                raise _malformed(upstream) from None
            self.metrics.observe("edgeroute_upstream_seconds", time.perf_counter() - started, model=upstream.model)
            return data
        try:
            if not _is_header_text(response.content_type):  # relayed as the client's Content-Type: must be encodable
                raise _malformed(upstream)
            first = await self.within_deadline(upstream, self.first_chunk(upstream, response))
            if not first.lstrip().startswith(SSE_START):  # an empty or non-SSE body is no stream: same as non-streaming
                raise _malformed(upstream)
            relayed = UpstreamStream(response, first, self.timeouts + self.failures, wire.stream_converter(upstream.model, payload))
        except BaseException:  # cancelled too: the lean client's connections are only ever freed by release()
            response.release()
            raise
        self.metrics.observe("edgeroute_upstream_seconds", time.perf_counter() - started, model=upstream.model)
        return relayed

    async def first_chunk(self, upstream: UpstreamConfig, response: Answer) -> bytes:
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
        """The decided model's answer, or another's by the fallback rule."""
        return await self.fallback.acall(decision, lambda d: self.call(slot_of(d), payload, stream))
