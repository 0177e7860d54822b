"""Typed upstream failures: every client maps what went wrong into one of these, once, at its boundary.

``UpstreamError`` carries its own answer (HTTP status, OpenAI error ``kind``, message) for the server;
each subclass is one ``kind``. The lean client and aiohttp map transport errors (``transport_failure``),
HTTP answers map by status (``rejection``), the controller maps the OpenAI SDK's exceptions
(``controller.as_upstream_failure``); the fallback rule (``runtime/serving/fallback.py``) reads ``kind``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import ClassVar

from edgeroute.runtime.serving.http_errors import HTTPFailure

# Long opaque runs with a digit or a mask character look like keys or tokens: never relayed.
_SECRET_LIKE = re.compile(r"[A-Za-z0-9_\-*.+/=]{20,}")


class UpstreamError(HTTPFailure):
    """An upstream call failed; ``kind`` names how, ``status`` is what the client gets."""

    def __init__(self, kind: str, status: int, message: str) -> None:
        super().__init__(status, message, kind)


class _Typed(UpstreamError):
    """A failure class with a fixed kind and client status."""

    KIND: ClassVar[str]
    STATUS: ClassVar[int]

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(self.KIND, self.STATUS if status is None else status, message)


class UpstreamTimeout(_Typed):
    """No answer (or no next bytes) within the upstream timeout."""

    KIND, STATUS = "upstream_timeout", 504


class UpstreamUnreachable(_Typed):
    """No connection, or the connection broke."""

    KIND, STATUS = "upstream_unreachable", 502


class UpstreamRateLimited(_Typed):
    """HTTP 429."""

    KIND, STATUS = "upstream_rate_limited", 429


class UpstreamFailed(_Typed):
    """HTTP 5xx (529, Anthropic's overloaded, included)."""

    KIND, STATUS = "upstream_error", 502


class UpstreamMalformed(_Typed):
    """An answer that is no chat completion (not JSON, not encodable, not a stream, over the size limit)."""

    KIND, STATUS = "upstream_malformed", 502


class UpstreamRejected(_Typed):
    """HTTP 4xx: the request (or the server's credentials, then 502) was refused; never retried elsewhere."""

    KIND, STATUS = "upstream_rejected", 502


class RequestNotRelayable(_Typed):
    """The client's request cannot be written in the upstream's format (a 400 for the client)."""

    KIND, STATUS = "invalid_request_error", 400


def transport_failure(
    exc: BaseException, model: str, timeouts: tuple[type[BaseException], ...], what: str = "unreachable"
) -> UpstreamError:
    """A transport exception of either client as its typed failure (timeouts first: aiohttp's read timeout is both)."""
    if isinstance(exc, timeouts):
        return UpstreamTimeout(f"upstream {model} timed out")
    return UpstreamUnreachable(f"upstream {model} {what} ({type(exc).__name__})")


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


def rejection(model: str, key: str | None, status: int, detail: bytes) -> UpstreamError:
    """The failure for an upstream answer of HTTP 4xx/5xx; the upstream's body is never relayed as is."""
    if status == 429:
        return UpstreamRateLimited(f"upstream {model} is rate limiting (429)")
    if status >= 500:
        return UpstreamFailed(f"upstream {model} failed with HTTP {status}")
    if status in (401, 403, 407):  # the server's credentials, not the client's: never the client's 401
        return UpstreamRejected(f"upstream {model} refused the server's credentials (HTTP {status}); check the server's API key variable")
    message = sanitized_upstream_message(detail, [key or ""])
    return UpstreamRejected(f"upstream {model} rejected the request (HTTP {status})" + (f": {message}" if message else ""), status)
