"""A transport wrapper that sends a response's header block and its first body bytes in one write.

uvicorn writes a response's status line and headers when the app sends ``http.response.start``,
and the body in a second ``write`` when it sends ``http.response.body``: two ``send`` system calls
and two TCP segments (so two wake-ups of the client) for every small JSON answer. Starlette sends
both messages in the same event-loop step, so holding the header block until the next write, or
until the end of that step at the latest, halves the sends without delaying any byte past it.
"""

from __future__ import annotations

import asyncio
from typing import Any


class CoalescedWrites:
    """Wraps an asyncio transport: a header block is held until the next write or the next loop step.

    A header block is a write that starts with ``HTTP/1.`` and ends with a blank line. Holding
    anything else would only delay it by one loop step, never reorder it: every write, ``write_eof``
    and ``close`` sends what is held first (``abort`` drops it, as it drops buffered bytes).
    Everything else goes straight to the wrapped transport.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` after what is held; hold it instead if it is a header block."""
        if self._held is not None:
            data, self._held = self._held + bytes(data), None
        elif data[:7] == b"HTTP/1." and data[-4:] == b"\r\n\r\n":
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
            return
        self._transport.write(data)

    def writelines(self, chunks: Any) -> None:
        """Send ``chunks`` (an iterable of bytes) as one write."""
        self.write(b"".join(chunks))

    def flush(self) -> None:
        """Send what is held, if anything (a closed transport drops it, as it would the write)."""
        if self._held is not None:
            held, self._held = self._held, None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        """Send what is held, then close the transport."""
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        """Send what is held, then close the write side (delegated as is, it would overtake the held bytes)."""
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        """Drop what is held and abort the transport (abort discards buffered data too)."""
        self._held = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
