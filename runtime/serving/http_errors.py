"""The server's one error-to-status table: each exception type to an HTTP status and an
OpenAI error kind. Handlers raise; ``server.guarded`` answers through ``error_reply``."""

from __future__ import annotations

from dataclasses import dataclass

from edgeroute.runtime.errors import EdgerouteError, InvalidInputError


class HTTPFailure(Exception):
    """A failure that carries its own answer: HTTP ``status``, OpenAI error ``kind``, message, headers."""

    def __init__(self, status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.headers = status, message, kind, headers


@dataclass(frozen=True)
class ErrorReply:
    """What the client gets for an exception."""

    status: int
    kind: str
    message: str
    headers: dict[str, str] | None = None


# First match wins, so subclasses come before their bases. TypeError, ValueError and OverflowError
# come from reading a client's JSON (odd types, huge integers): the request is at fault.
ERROR_TABLE: tuple[tuple[type[BaseException], int, str], ...] = (
    (InvalidInputError, 400, "invalid_request_error"),
    (EdgerouteError, 503, "router_error"),
    (TypeError, 400, "invalid_request_error"),
    (ValueError, 400, "invalid_request_error"),
    (OverflowError, 400, "invalid_request_error"),
)


def error_reply(exc: BaseException) -> ErrorReply | None:
    """The answer for ``exc`` by the table, or None for an unexpected exception (an internal error)."""
    if isinstance(exc, HTTPFailure):
        return ErrorReply(exc.status, exc.kind, exc.message, exc.headers)
    for error_type, status, kind in ERROR_TABLE:
        if isinstance(exc, error_type):
            # A router's own failure is named, not quoted: its message may hold a path or a value.
            message = f"router failed: {type(exc).__name__}" if kind == "router_error" else str(exc)
            return ErrorReply(status, kind, message)
    return None
