"""A chat request is read once: one walk over its messages gives the size, the text to score and
the sticky key's opening; the router and the threshold are worked out once per request."""

from __future__ import annotations

import pytest

from edgeroute.runtime.errors import InvalidInputError, InvalidPromptError
from edgeroute.runtime.serving.chat import ChatLimits, read_chat


class CountingList(list):
    """A message list that counts the walks over it."""

    walks = 0

    def __iter__(self):
        type(self).walks += 1
        return super().__iter__()


CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Prove that sqrt(2) is irrational."},
    {"role": "assistant", "content": "Suppose sqrt(2) = p/q in lowest terms..."},
    {"role": "user", "content": [{"type": "text", "text": "And sqrt(3)?"}, {"type": "image_url", "text": "xyz"}]},
]


@pytest.mark.runtime_only
def test_one_walk_gives_the_size_the_text_and_the_opening():
    CountingList.walks = 0
    chat = read_chat(CountingList(CONVERSATION), "last_user", 2048, ChatLimits(max_messages=8, max_chars=10_000))
    assert CountingList.walks == 1
    assert chat.text == "And sqrt(3)?"
    assert chat.chars == sum(len(m["content"]) for m in CONVERSATION[:3]) + len("And sqrt(3)?") + len("xyz")
    key = chat.conversation_key()
    assert CountingList.walks == 1 and key == read_chat(CONVERSATION[:2]).conversation_key()
    assert read_chat(CONVERSATION, "conversation", 60).text.endswith("user: And sqrt(3)?")


LIMITS = ChatLimits(max_messages=2, max_chars=100)


@pytest.mark.runtime_only
@pytest.mark.parametrize(
    "messages, limits, error, message",
    [
        ([{"role": "user", "content": "hi"}] * 3, LIMITS, InvalidInputError, "'messages' holds 3 messages; the limit is 2"),
        ([{"role": "user", "content": "x" * 101}], LIMITS, InvalidInputError, "the messages hold 101 characters; the limit is 100"),
        ([], None, InvalidPromptError, "'messages' must be a non-empty list of chat messages"),
        ("hi", None, InvalidPromptError, "'messages' must be a non-empty list of chat messages"),
        ([{"role": "user", "content": "hi"}, 3], None, InvalidPromptError, "every message must be an object with 'role' and 'content'"),
        ([{"role": "system", "content": "hi"}], None, InvalidPromptError, "no message with role 'user' to route on"),
        ([{"role": "user", "content": "  "}], None, InvalidPromptError, "the message to route on has no text"),
    ],
)
def test_bad_messages_are_refused_with_the_old_messages(messages, limits, error, message):
    with pytest.raises(error) as caught:
        read_chat(messages, limits=limits)
    assert str(caught.value) == message


@pytest.mark.runtime_only
def test_the_policy_looks_the_router_up_and_resolves_the_threshold_once(monkeypatch):
    from edgeroute.runtime.serving.policy import RouterSet, RoutingPolicy

    policy = RoutingPolicy(RouterSet(), "big", "small")  # the shipped default router
    lookups, resolved = [], []
    get, request_threshold = policy.routers.get, policy.request_threshold
    monkeypatch.setattr(policy.routers, "get", lambda name: lookups.append(name) or get(name))
    monkeypatch.setattr(policy, "request_threshold", lambda *a, **k: resolved.append(a) or request_threshold(*a, **k))
    decision = policy.decide([{"role": "user", "content": "Prove Fermat's little theorem."}], None, 0.5)
    assert decision.threshold == 0.5 and len(lookups) == 1 and len(resolved) == 1
    policy.close()
