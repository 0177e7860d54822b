"""A chat request's messages, read in one walk: the size limits, the text a router scores, and the
opening that keys a sticky conversation (``read_chat``)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgeroute.runtime.errors import InvalidInputError, InvalidPromptError

ROUTE_ON = ("last_user", "conversation")


@dataclass(frozen=True)
class ChatLimits:
    """The most messages, and characters of text in them, that one request may hold (``serve``'s limits)."""

    max_messages: int
    max_chars: int


@dataclass(frozen=True)
class ChatRequest:
    """A chat request's messages, walked once (``read_chat``): the characters of text in every message, and where
    the first and last user messages are. The walk refuses only what breaks the limits: a sticky conversation
    is known by its opening alone, so its remembered decision stands whatever its newest turn holds; the
    text to score (``routing_text``) is checked when a decision is to be made."""

    messages: Any
    chars: int
    objects: bool  # every message is an object
    first_user: int | None
    last_user: int | None

    def conversation_key(self) -> str | None:
        """The sticky key: a hash of the opening (system prompts and first user message); None without one."""
        if self.first_user is None:
            return None
        opening = self.messages[: self.first_user + 1]
        parts = [f"{message.get('role')}\x00{message_text(message)}" for message in opening if isinstance(message, Mapping)]
        return hashlib.sha256("\x01".join(parts).encode("utf-8", "replace")).hexdigest()

    def routing_text(self, route_on: str = "last_user", max_chars: int = 2048) -> str:
        """The text a router scores: the last user message (RouteLLM's choice), or the recent conversation, newest
        turns kept, up to ``max_chars`` characters. ``InvalidPromptError`` for messages that are not a non-empty
        list of objects or hold no user message."""
        if not isinstance(self.messages, list) or not self.messages:
            raise InvalidPromptError("'messages' must be a non-empty list of chat messages")
        if not self.objects:
            raise InvalidPromptError("every message must be an object with 'role' and 'content'")
        if route_on == "conversation":
            text = _conversation_text(self.messages, max_chars)
        elif self.last_user is None:
            raise InvalidPromptError("no message with role 'user' to route on")
        else:
            text = message_text(self.messages[self.last_user])
        return text


def message_text(message: Mapping[str, Any]) -> str:
    """A message's text: its string content, or its text content parts (OpenAI's list form) joined by newlines."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [part.get("text", "") for part in content if isinstance(part, Mapping) and part.get("type") == "text"]
        for text in texts:
            if not isinstance(text, str):
                raise InvalidPromptError(f"a text content part's 'text' must be a string, got {type(text).__name__}")
        return "\n".join(texts)
    return ""


def _content_chars(content: Any) -> int:
    # Counts every string 'text' of a part, whatever its type: the size limit bounds what is relayed, not what is scored.
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(len(part["text"]) for part in content if isinstance(part, Mapping) and isinstance(part.get("text"), str))
    return 0


def read_chat(messages: Any, limits: ChatLimits | None = None) -> ChatRequest:
    """Walk ``messages`` once; ``InvalidInputError`` (fit for an HTTP 400) past ``limits``."""
    if limits is not None and isinstance(messages, list) and len(messages) > limits.max_messages:
        raise InvalidInputError(f"'messages' holds {len(messages)} messages; the limit is {limits.max_messages}")
    chars, objects, first_user, last_user = 0, True, None, None
    for index, message in enumerate(messages if isinstance(messages, list) else ()):
        if not isinstance(message, Mapping):
            objects = False
            continue
        chars += _content_chars(message.get("content"))
        if message.get("role") == "user":
            first_user = index if first_user is None else first_user
            last_user = index
    if limits is not None and chars > limits.max_chars:
        raise InvalidInputError(f"the messages hold {chars} characters; the limit is {limits.max_chars}")
    return ChatRequest(messages, chars, objects, first_user, last_user)


def routing_text(messages: Any, route_on: str = "last_user", max_chars: int = 2048) -> str:
    """``read_chat(messages).routing_text(route_on, max_chars)``: the text a router scores."""
    return read_chat(messages).routing_text(route_on, max_chars)


def message_chars(messages: Any) -> int:
    """Characters of text in ``messages``: string contents and text content parts (for size limits)."""
    return read_chat(messages).chars


def _conversation_text(messages: Sequence[Mapping[str, Any]], max_chars: int) -> str:
    parts: list[str] = []
    used = 0
    for message in reversed(messages):
        text = f"{message.get('role', 'user')}: {message_text(message)}"
        if parts and used + len(text) > max_chars:
            break
        parts.append(text[-max_chars:])
        used += len(text)
    return "\n".join(reversed(parts))
