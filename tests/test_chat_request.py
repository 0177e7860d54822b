"""A chat request is read once: one walk over its messages gives the size, the user messages' places and the
sticky key's opening; the router, the text and the threshold are each worked out once, in the order their
errors were always reported, and only when a decision is to be made."""

from __future__ import annotations

import asyncio

import pytest

from edgeroute.runtime.errors import InvalidInputError, InvalidPromptError
from edgeroute.runtime.serving.chat import ChatLimits, read_chat
from edgeroute.runtime.serving.policy import ParsedChat, RouterSet, RoutingPolicy


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
LIMITS = ChatLimits(max_messages=2, max_chars=100)
PROOF = {"role": "user", "content": "Prove Fermat's little theorem."}


@pytest.mark.runtime_only
def test_one_walk_gives_the_size_the_text_and_the_opening():
    CountingList.walks = 0
    chat = read_chat(CountingList(CONVERSATION), ChatLimits(max_messages=8, max_chars=10_000))
    assert chat.routing_text() == "And sqrt(3)?" and CountingList.walks == 1
    assert chat.chars == sum(len(m["content"]) for m in CONVERSATION[:3]) + len("And sqrt(3)?") + len("xyz")
    key = chat.conversation_key()
    assert CountingList.walks == 1 and key == read_chat(CONVERSATION[:2]).conversation_key()
    assert chat.routing_text("conversation", 60).endswith("user: And sqrt(3)?")


@pytest.mark.runtime_only
@pytest.mark.parametrize(
    "messages, message",
    [
        ([{"role": "user", "content": "hi"}] * 3, "'messages' holds 3 messages; the limit is 2"),
        ([{"role": "user", "content": "x" * 101}], "the messages hold 101 characters; the limit is 100"),
    ],
)
def test_the_walk_refuses_only_what_breaks_the_limits(messages, message):
    with pytest.raises(InvalidInputError) as caught:
        read_chat(messages, LIMITS)
    assert str(caught.value) == message
    assert read_chat([{"role": "user", "content": "  "}, 3], LIMITS).chars == 2  # the text is checked when needed


@pytest.mark.runtime_only
@pytest.mark.parametrize(
    "messages, message",
    [
        ([], "'messages' must be a non-empty list of chat messages"),
        ("hi", "'messages' must be a non-empty list of chat messages"),
        ([PROOF, 3], "every message must be an object with 'role' and 'content'"),
        ([{"role": "system", "content": "hi"}], "no message with role 'user' to route on"),
        ([{"role": "user", "content": "  "}], "the message to route on has no text"),
    ],
)
def test_text_errors_come_from_the_decision(messages, message):
    policy = RoutingPolicy(RouterSet(), "big", "small")
    with pytest.raises(InvalidPromptError) as caught:
        policy.decide(messages)
    assert str(caught.value) == message
    policy.close()


@pytest.mark.runtime_only
@pytest.mark.parametrize(
    "new_turn",
    [
        {"role": "user", "content": "   "},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]},
        "not an object",
    ],
)
def test_a_remembered_conversation_keeps_its_decision_whatever_its_newest_turn_holds(new_turn):
    policy = RoutingPolicy(RouterSet(), "big", "small", sticky=True)
    first = policy.decide([PROOF], None, 0.5)
    later = policy.decide([PROOF, {"role": "assistant", "content": "By induction..."}, new_turn], None, 0.5)
    assert later == first
    policy.close()


@pytest.mark.runtime_only
def test_the_router_is_looked_up_and_the_threshold_resolved_once(monkeypatch):
    policy = RoutingPolicy(RouterSet(), "big", "small")  # the shipped default router
    lookups, resolved = [], []
    get, request_threshold = policy.routers.get, policy.request_threshold
    monkeypatch.setattr(policy.routers, "get", lambda name: lookups.append(name) or get(name))
    monkeypatch.setattr(policy, "request_threshold", lambda *a, **k: resolved.append(a) or request_threshold(*a, **k))
    decision = policy.decide([PROOF], None, 0.5)
    assert decision.threshold == 0.5 and len(lookups) == 1 and len(resolved) == 1
    router = get(policy.routers.default)  # the unwrapped lookup: not counted
    asked = ParsedChat(read_chat([PROOF]), router, 0.25, resolved=True)  # /v1/route: worked out before the messages
    assert asyncio.run(policy.adecide_parsed(asked)).threshold == 0.25 and len(lookups) == 1 and len(resolved) == 1
    policy.close()


@pytest.mark.runtime_only
def test_the_old_share_name_still_works_everywhere_it_did():
    from edgeroute.runtime.serving.policy import message_chars, parse_model_field, routing_text

    policy = RoutingPolicy(RouterSet(), "big", "small")
    router = policy.routers.get(policy.routers.default)
    with pytest.warns(DeprecationWarning):
        assert router.threshold_for(strong_pct=0.3) == router.threshold_for(0.3)
    with pytest.warns(DeprecationWarning):
        assert policy.decide([PROOF], strong_pct=0.3).threshold == router.threshold_for(0.3)
    assert parse_model_field("router-mf-s30").strong_pct == 0.3
    assert routing_text([PROOF]) == PROOF["content"] and message_chars([PROOF]) == len(PROOF["content"])
    policy.close()
