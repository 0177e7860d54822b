"""The server's transport wrapper sends a response's header block with its body in one write."""

from __future__ import annotations

import asyncio

from edgeroute.runtime.serving.coalesce import CoalescedWrites

HEADERS = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def write_eof(self) -> None:
        self.writes.append(b"<eof>")

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


def test_header_block_and_body_go_out_as_one_write():
    async def scenario() -> RecordingTransport:
        inner = RecordingTransport()
        wrapped = CoalescedWrites(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
        wrapped.write(HEADERS)
        assert inner.writes == []  # held until the body
        wrapped.write(b"{}")
        await asyncio.sleep(0)  # the scheduled flush finds nothing held
        return inner

    assert asyncio.run(scenario()).writes == [HEADERS + b"{}"]


def test_a_lone_header_block_goes_out_at_the_next_loop_step():
    async def scenario() -> list[bytes]:
        inner = RecordingTransport()
        wrapped = CoalescedWrites(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
        wrapped.write(HEADERS)  # a stream whose first chunk comes later
        await asyncio.sleep(0)
        first = list(inner.writes)
        wrapped.write(b"data: 1\n\n")
        return [*first, b"|", *inner.writes]

    assert asyncio.run(scenario()) == [HEADERS, b"|", HEADERS, b"data: 1\n\n"]


def test_other_writes_pass_straight_and_close_and_abort_handle_what_is_held():
    async def scenario() -> tuple[RecordingTransport, RecordingTransport]:
        loop = asyncio.get_running_loop()
        closing, aborting = RecordingTransport(), RecordingTransport()
        wrapped = CoalescedWrites(closing, loop)  # type: ignore[arg-type]
        wrapped.write(b"HTTP/1.1 body that is not a header block")
        wrapped.writelines([HEADERS])
        wrapped.close()  # sends the held header block first
        assert wrapped.get_extra_info("peername") == "info:peername"  # the rest is the wrapped transport's
        other = CoalescedWrites(aborting, loop)  # type: ignore[arg-type]
        other.write(HEADERS)
        other.abort()  # abort discards buffered bytes, the held ones too
        await asyncio.sleep(0)
        return closing, aborting

    closing, aborting = asyncio.run(scenario())
    assert closing.writes == [b"HTTP/1.1 body that is not a header block", HEADERS] and closing.closed
    assert aborting.writes == [] and aborting.aborted


def test_write_eof_sends_what_is_held_first():
    async def scenario() -> list[bytes]:
        inner = RecordingTransport()
        wrapped = CoalescedWrites(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
        wrapped.write(HEADERS)
        wrapped.write_eof()
        return inner.writes

    assert asyncio.run(scenario()) == [HEADERS, b"<eof>"]
