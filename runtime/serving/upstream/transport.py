"""The transport interface and its two implementations: how bytes reach an upstream and come back.

A ``Transport`` posts a request and returns an ``Answer`` once the answer's headers arrived:
``status``, ``content_type``, ``readany()`` (the body's bytes as they arrive, ``b""`` at its end) and
``release()`` (back to the pool when read to its end, closed otherwise). Its ``timeouts`` and
``failures`` say which exceptions mean the upstream failed; the relay maps those, once, into the
typed failures of ``failures.py`` (``transport_failure``).

* ``LeanTransport``: the lean HTTP/1.1 client (runtime/serving/http1.py), for plain-http upstreams
  without a proxy: about 60 us of CPU per call against aiohttp's 170-225 us.
* ``AiohttpTransport``: aiohttp, for https, proxies and ``--upstream-client aiohttp``; aiohttp rather
  than httpx: on a loopback upstream httpx's own cost was ~0.9 ms per call, and its pool (httpcore)
  scans every pooled connection on each request (benchmarks/results/server_fixes.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Protocol

from edgeroute.runtime.errors import require_extra
from edgeroute.runtime.serving.idle_guard import guarded_connector


class Answer(Protocol):
    """An upstream's answer once its headers arrived."""

    status: int
    content_type: str | None

    async def readany(self) -> bytes:
        """The body's bytes that have arrived, waiting for some; ``b""`` at its end."""
        ...

    def release(self) -> None:
        """Back to the pool when read to its end, closed otherwise."""
        ...


class Transport(Protocol):
    """One way of sending requests to upstreams; created outside any event loop, connections opened inside one."""

    timeouts: tuple[type[BaseException], ...]
    failures: tuple[type[BaseException], ...]

    async def post(self, url: str, headers: Mapping[str, str], body: bytes, proxy: str | None) -> Answer:
        """POST ``body``; the answer once its headers arrived."""
        ...

    async def aclose(self) -> None:
        """Close every connection."""
        ...


class AiohttpAnswer:
    """An aiohttp response with the ``Answer`` interface."""

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


class AiohttpTransport:
    """aiohttp behind the ``Transport`` interface."""

    def __init__(self, timeout_s: float) -> None:
        self.aiohttp = require_extra("aiohttp", "serve", "edgeroute serve")
        self.timeout_s = timeout_s
        # Timeouts first: aiohttp's read timeout is both an asyncio.TimeoutError and a ClientError.
        self.timeouts: tuple[type[BaseException], ...] = (asyncio.TimeoutError,)
        self.failures: tuple[type[BaseException], ...] = (self.aiohttp.ClientError, OSError, ValueError)
        self._session: Any = None

    def session(self) -> Any:
        """The shared aiohttp session, created on first use inside the running event loop.

        ``--upstream-timeout`` bounds connecting (waiting for a pooled connection included) and each
        wait for bytes, not a whole stream (the relay's ``within_deadline`` adds one deadline of
        edgeroute's own around the answer's head). Bodies are not re-encoded; a body the upstream
        compressed is decompressed. Idle connections are guarded against answers nobody asked for (``idle_guard``).
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

    async def post(self, url: str, headers: Mapping[str, str], body: bytes, proxy: str | None) -> Answer:
        """POST through the shared session (and ``proxy``); the answer once its headers arrived."""
        return AiohttpAnswer(await self.session().post(url, data=body, proxy=proxy, headers=dict(headers)))

    async def aclose(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None


class LeanTransport:
    """The lean HTTP/1.1 client behind the ``Transport`` interface (no proxies: ``lean_client_fits`` decides)."""

    def __init__(self, timeout_s: float, failures: tuple[type[BaseException], ...] = (OSError, ValueError)) -> None:
        self.timeout_s = timeout_s
        self.timeouts: tuple[type[BaseException], ...] = (asyncio.TimeoutError,)
        self.failures = failures
        self._pool: Any = None

    def pool(self) -> Any:
        """The connection pool, created on first use inside the running event loop."""
        if self._pool is None:
            from edgeroute.runtime.serving.http1 import Http1Pool

            self._pool = Http1Pool(self.timeout_s)
        return self._pool

    async def post(self, url: str, headers: Mapping[str, str], body: bytes, proxy: str | None) -> Answer:
        """POST on a pooled connection (no proxy: ``lean_client_fits`` gave this upstream the lean client)."""
        answer: Answer = await self.pool().post(url, headers, body)
        return answer

    async def aclose(self) -> None:
        """Close the pool's connections."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
