"""Wire formats: how a chat request is written for an upstream and how its answer is read back.

Clients always speak OpenAI chat completions to edgeroute; an upstream speaks one ``WireFormat``:

* ``OpenAIChat``: the request as the client sent it (the upstream's model name set), the answer and
  its event stream relayed byte for byte.
* ``AnthropicMessages``: Anthropic's Messages API. System messages become ``system``, text parts
  become text blocks, ``max_tokens`` (required there) defaults to ``DEFAULT_MAX_TOKENS``, ``stop``
  becomes ``stop_sequences``; the answer becomes a chat completion (``finish_reason`` from
  ``stop_reason``, usage renamed), and its event stream becomes OpenAI's ``chat.completion.chunk``
  events ending in ``data: [DONE]``. Requests it cannot express (tool messages, images, ``n`` > 1)
  are refused with a 400 naming what, never silently changed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from edgeroute.runtime.serving.upstream.failures import RequestNotRelayable, UpstreamMalformed

# Server-Sent Events lines start with a field name or a comment; anything else is not a stream.
SSE_START = (b"data:", b"event:", b"id:", b"retry:", b":")
ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
# An event past this (the stream converter's buffer) is no Messages event: the stream is malformed.
MAX_EVENT_BYTES = 1 << 20


class WireFormat(Protocol):
    """One upstream wire format: where requests go, how they are written, how answers are read back."""

    name: str
    path: str  # appended to the base URL

    def headers(self, key: str | None) -> dict[str, str]:
        """The headers carrying ``key`` (and any version header)."""
        ...

    def encode(self, payload: dict[str, Any], model: str) -> bytes:
        """The client's chat request for the upstream's ``model``; ``RequestNotRelayable`` when it cannot be written."""
        ...

    def answer(self, data: dict[str, Any], model: str) -> dict[str, Any]:
        """The upstream's parsed answer as an OpenAI chat completion; ``UpstreamMalformed`` when it is none."""
        ...

    def stream_converter(self, model: str, payload: Mapping[str, Any]) -> Callable[[bytes], bytes] | None:
        """A function turning the upstream's stream bytes into OpenAI's, called on each chunk as it arrives, for the
        client's request ``payload`` (its ``stream_options``); None: bytes pass through."""
        ...


def encode_upstream_body(payload: dict[str, Any], model: str) -> bytes:
    """The client's request with the upstream's model name, as UTF-8 JSON.

    Text holding lone surrogates cannot be UTF-8: it is written with JSON escapes instead, as the
    client sent it.
    """
    return _dumps(dict(payload, model=model))


def _dumps(body: dict[str, Any]) -> bytes:
    try:
        return json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(body, ensure_ascii=True, allow_nan=False).encode("ascii")


class OpenAIChat:
    """OpenAI's chat completions: the request and the answer pass through."""

    name, path = "openai", "/chat/completions"

    def headers(self, key: str | None) -> dict[str, str]:
        """``Authorization: Bearer KEY`` when there is a key."""
        return {"Authorization": f"Bearer {key}"} if key else {}

    def encode(self, payload: dict[str, Any], model: str) -> bytes:
        """The client's request with the upstream's model name."""
        return encode_upstream_body(payload, model)

    def answer(self, data: dict[str, Any], model: str) -> dict[str, Any]:
        """The answer as it came."""
        return data

    def stream_converter(self, model: str, payload: Mapping[str, Any]) -> Callable[[bytes], bytes] | None:
        """None: the stream passes through byte for byte."""
        return None


_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls", "refusal": "content_filter"}
_PASSED = ("temperature", "top_p")
# OpenAI parameters with no Messages equivalent that change nothing about the answer's text: dropped
# (``metadata``: Anthropic's takes only a user id; ``stream_options``: read by ``stream_converter``, not sent).
_IGNORED = {
    "model",
    "messages",
    "stream",
    "stop",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "user",
    "stream_options",
    "metadata",
    *_PASSED,
}


class AnthropicMessages:
    """Anthropic's Messages API behind OpenAI chat completions."""

    name, path = "anthropic", "/messages"

    def headers(self, key: str | None) -> dict[str, str]:
        """The API version, and ``x-api-key`` when there is a key."""
        return {"anthropic-version": ANTHROPIC_VERSION, **({"x-api-key": key} if key else {})}

    def encode(self, payload: dict[str, Any], model: str) -> bytes:
        """The chat request as a Messages request; ``RequestNotRelayable`` naming what Messages cannot express."""
        unsupported = sorted(key for key in payload if key not in _IGNORED and payload[key] is not None)
        if unsupported:
            raise RequestNotRelayable(f"{', '.join(unsupported)}: not relayable to an Anthropic Messages upstream")
        if payload.get("n") not in (None, 1):
            raise RequestNotRelayable("n > 1 is not relayable to an Anthropic Messages upstream")
        system, messages = _anthropic_messages(payload.get("messages"))
        body: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": _max_tokens(payload)}
        if system:
            body["system"] = system
        stop = payload.get("stop")
        if stop is not None:
            body["stop_sequences"] = [stop] if isinstance(stop, str) else stop
        body.update({key: payload[key] for key in _PASSED if payload.get(key) is not None})
        if payload.get("stream"):
            body["stream"] = True
        return _dumps(body)

    def answer(self, data: dict[str, Any], model: str) -> dict[str, Any]:
        """A Messages answer as a chat completion (text blocks joined, ``stop_reason`` and usage renamed)."""
        content = data.get("content")
        if data.get("type") != "message" or not isinstance(content, list):
            raise UpstreamMalformed(f"upstream {model} sent no Messages answer")
        text = "".join(_block_text(block, model) for block in content if isinstance(block, Mapping) and block.get("type") == "text")
        usage: Mapping[str, Any] = data["usage"] if isinstance(data.get("usage"), Mapping) else {}
        prompt, completion = _count(usage.get("input_tokens")), _count(usage.get("output_tokens"))
        return {
            "id": str(data.get("id", "")),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(data.get("model", model)),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": _FINISH.get(str(data.get("stop_reason")), "stop"),
                }
            ],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        }

    def stream_converter(self, model: str, payload: Mapping[str, Any]) -> Callable[[bytes], bytes] | None:
        """A fresh ``MessagesStream``'s ``feed``: Messages events in, chat completion chunks out (and OpenAI's usage
        chunk before ``[DONE]`` when the client asked for it with ``stream_options.include_usage``)."""
        options = payload.get("stream_options")
        return MessagesStream(model, isinstance(options, Mapping) and options.get("include_usage") is True).feed


def _block_text(block: Mapping[str, Any], model: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise UpstreamMalformed(f"upstream {model} sent a text block without text")
    return text


def _max_tokens(payload: Mapping[str, Any]) -> int:
    value = payload.get("max_completion_tokens")
    value = payload.get("max_tokens") if value is None else value
    if value is None:
        return DEFAULT_MAX_TOKENS
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RequestNotRelayable(f"max_tokens must be a positive integer, got {value!r}")
    return value


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _text_of(content: Any, role: str) -> str:
    """A message's text: a string, or text parts joined; anything else is refused."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, Mapping) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content
    ):
        return "\n".join(p["text"] for p in content)
    raise RequestNotRelayable(f"a {role} message with non-text content is not relayable to an Anthropic Messages upstream")


def _is_text_part(part: Any) -> bool:
    return isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str)


def _anthropic_messages(messages: Any) -> tuple[str, list[dict[str, Any]]]:
    """(system text, alternating user/assistant messages): consecutive turns of one role are joined."""
    if not isinstance(messages, list):
        raise RequestNotRelayable("'messages' must be a list")
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role") if isinstance(message, Mapping) else None
        if role in ("system", "developer"):
            system.append(_text_of(message.get("content"), role))
            continue
        if role not in ("user", "assistant"):
            raise RequestNotRelayable(f"a {role!r} message is not relayable to an Anthropic Messages upstream")
        text = _text_of(message.get("content"), role)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += "\n\n" + text
        else:
            turns.append({"role": role, "content": text})
    if not turns or turns[0]["role"] != "user":
        raise RequestNotRelayable(
            "an Anthropic Messages upstream needs the conversation to open (after system messages) with a user message"
        )
    return "\n\n".join(system), turns


class MessagesStream:
    """Anthropic's Messages events, fed in any chunking, written out as OpenAI chat completion chunks."""

    def __init__(self, model: str, include_usage: bool = False) -> None:
        self.model, self.id, self._buffer = model, "", b""
        self.created = int(time.time())
        self.include_usage, self.input_tokens, self.output_tokens = include_usage, 0, 0

    def feed(self, data: bytes) -> bytes:
        """The OpenAI events for the complete Anthropic events in what arrived so far; a stream that ends without
        ``message_stop`` ends without ``[DONE]``, as a broken OpenAI stream would. Linear in what arrives: one
        split per chunk; only an unfinished event is kept, and it may not grow past ``MAX_EVENT_BYTES``."""
        pending = self._buffer + data
        held = b"\r" if pending.endswith(b"\r") else b""  # the first half of a CRLF cut by the chunking
        events = pending[: len(pending) - len(held)].replace(b"\r\n", b"\n").split(b"\n\n")
        self._buffer = events.pop() + held
        if len(self._buffer) > MAX_EVENT_BYTES:
            raise UpstreamMalformed(f"upstream {self.model} sent a stream event over {MAX_EVENT_BYTES} bytes")
        return b"".join(self._convert(event) for event in events)

    def _convert(self, event: bytes) -> bytes:
        lines = [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
        if not lines:
            return b""  # a comment or a bare event name
        try:
            data = json.loads(b"\n".join(lines))
        except (ValueError, RecursionError):
            raise UpstreamMalformed(f"upstream {self.model} sent a stream event that is not JSON") from None
        kind = data.get("type") if isinstance(data, Mapping) else None
        if kind == "message_start":
            message = data.get("message") if isinstance(data.get("message"), Mapping) else {}
            self.id = str(message.get("id", ""))
            self._count_usage(message.get("usage"))
            return self._chunk({"role": "assistant", "content": ""}, None)
        if kind == "content_block_delta":
            delta = data.get("delta") if isinstance(data.get("delta"), Mapping) else {}
            text = delta.get("text")
            return self._chunk({"content": text}, None) if isinstance(text, str) else b""
        if kind == "message_delta":
            delta = data.get("delta") if isinstance(data.get("delta"), Mapping) else {}
            self._count_usage(data.get("usage"))
            return self._chunk({}, _FINISH.get(str(delta.get("stop_reason")), "stop"))
        if kind == "message_stop":
            return (self._usage_chunk() if self.include_usage else b"") + b"data: [DONE]\n\n"
        if kind == "error":
            raise UpstreamMalformed(f"upstream {self.model} ended its stream with an error event")
        return b""  # ping, content_block_start/stop

    def _count_usage(self, usage: Any) -> None:
        # message_start holds the input tokens; message_delta the output tokens so far (cumulative).
        if isinstance(usage, Mapping):
            if "input_tokens" in usage:
                self.input_tokens = _count(usage["input_tokens"])
            if "output_tokens" in usage:
                self.output_tokens = _count(usage["output_tokens"])

    def _usage_chunk(self) -> bytes:
        """OpenAI's last chunk for ``include_usage``: no choices, the request's token counts."""
        usage = {"prompt_tokens": self.input_tokens, "completion_tokens": self.output_tokens}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return b"data: " + _dumps({**self._envelope(), "choices": [], "usage": usage}) + b"\n\n"

    def _envelope(self) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model}

    def _chunk(self, delta: dict[str, Any], finish: str | None) -> bytes:
        chunk = {**self._envelope(), "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return b"data: " + _dumps(chunk) + b"\n\n"


FORMATS: dict[str, WireFormat] = {format.name: format for format in (OpenAIChat(), AnthropicMessages())}


def wire_format(name: str) -> WireFormat:
    """The wire format called ``name`` (``UpstreamConfig.format``)."""
    return FORMATS[name]


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


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:20]} is beyond a float's range")
    return value
