"""The upstream seam's second wire format: an Anthropic Messages upstream behind OpenAI chat completions,
tested on the translation itself and end to end against a loopback fake (streaming included)."""

from __future__ import annotations

import json

import pytest

from edgeroute.runtime.serving.upstream.failures import RequestNotRelayable, UpstreamMalformed
from edgeroute.runtime.serving.upstream.wire import DEFAULT_MAX_TOKENS, AnthropicMessages, MessagesStream

WIRE = AnthropicMessages()


def _encoded(payload: dict) -> dict:
    return json.loads(WIRE.encode(payload, "claude-x"))


def test_requests_become_messages_requests():
    body = _encoded(
        {
            "model": "router-bert",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": "there"}]},
                {"role": "user", "content": "again"},
                {"role": "assistant", "content": "Hi!"},
                {"role": "user", "content": "Why is the sky blue?"},
            ],
            "temperature": 0.2,
            "stop": "END",
            "max_tokens": 300,
            "stream": True,
            "user": "u-1",
        }
    )
    assert body == {
        "model": "claude-x",
        "messages": [
            {"role": "user", "content": "Hello\nthere\n\nagain"},
            {"role": "assistant", "content": "Hi!"},
            {"role": "user", "content": "Why is the sky blue?"},
        ],
        "max_tokens": 300,
        "system": "Be brief.",
        "stop_sequences": ["END"],
        "temperature": 0.2,
        "stream": True,
    }
    assert _encoded({"messages": [{"role": "user", "content": "hi"}]})["max_tokens"] == DEFAULT_MAX_TOKENS
    assert WIRE.headers("sk-ant") == {"anthropic-version": "2023-06-01", "x-api-key": "sk-ant"}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (
            {"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]},
            "tools: not relayable to an Anthropic Messages upstream",
        ),
        ({"messages": [{"role": "user", "content": "hi"}], "n": 2}, "n > 1 is not relayable to an Anthropic Messages upstream"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "a user message with non-text content is not relayable to an Anthropic Messages upstream",
        ),
        ({"messages": [{"role": "tool", "content": "42"}]}, "a 'tool' message is not relayable to an Anthropic Messages upstream"),
        (
            {"messages": [{"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "hi"}]},
            "an Anthropic Messages upstream needs the conversation to open (after system messages) with a user message",
        ),
        ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, "max_tokens must be a positive integer, got 0"),
    ],
)
def test_what_messages_cannot_express_is_refused_not_changed(payload, message):
    with pytest.raises(RequestNotRelayable) as caught:
        WIRE.encode(payload, "claude-x")
    assert str(caught.value) == message and caught.value.status == 400


def test_answers_become_chat_completions():
    answer = WIRE.answer(
        {
            "id": "msg_1",
            "type": "message",
            "model": "claude-x",
            "content": [{"type": "text", "text": "Rayleigh "}, {"type": "text", "text": "scattering."}],
            "stop_reason": "max_tokens",
            "usage": {"input_tokens": 10, "output_tokens": 3},
        },
        "claude-x",
    )
    assert answer["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": "Rayleigh scattering."}, "finish_reason": "length"}
    ]
    assert answer["usage"] == {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13} and answer["object"] == "chat.completion"
    with pytest.raises(UpstreamMalformed):
        WIRE.answer({"choices": []}, "claude-x")


def _events(*events: dict) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


def test_a_stream_converts_the_same_in_any_chunking():
    raw = _events(
        {"type": "message_start", "message": {"id": "msg_2"}},
        {"type": "ping"},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo ✓"}},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}},
        {"type": "message_stop"},
    )
    whole = MessagesStream("claude-x").feed(raw)
    stream = MessagesStream("claude-x")
    pieces = b"".join(stream.feed(raw[i : i + 1]) for i in range(len(raw)))
    strip = [json.loads(line[6:]) | {"created": 0} for line in whole.split(b"\n\n") if line.startswith(b"data: {")]
    assert [json.loads(line[6:]) | {"created": 0} for line in pieces.split(b"\n\n") if line.startswith(b"data: {")] == strip
    assert [c["choices"][0]["delta"] for c in strip] == [{"role": "assistant", "content": ""}, {"content": "Hel"}, {"content": "lo ✓"}, {}]
    assert strip[-1]["choices"][0]["finish_reason"] == "stop" and whole.endswith(b"data: [DONE]\n\n")
    with pytest.raises(UpstreamMalformed):
        MessagesStream("claude-x").feed(b"data: {not json\n\n")


def test_the_usage_chunk_counts_what_the_events_said_zero_included():
    raw = _events(
        {"type": "message_start", "message": {"id": "msg_3", "usage": {"input_tokens": 9, "output_tokens": 1}}},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 0}},
        {"type": "message_stop"},
    )
    written = MessagesStream("claude-x", include_usage=True).feed(raw)
    chunks = [json.loads(line[6:]) for line in written.split(b"\n\n") if line.startswith(b"data: {")]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {"prompt_tokens": 9, "completion_tokens": 0, "total_tokens": 9}
    bare = _events({"type": "message_start", "message": {"id": "m"}}, {"type": "message_stop"})
    last = MessagesStream("claude-x", include_usage=True).feed(bare).split(b"\n\n")[-3]
    assert json.loads(last[6:])["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


def test_stream_chunking_edge_cases_and_malformed_events():
    event = _events({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x" * 50}}).replace(b"\n", b"\r\n")
    cut = event.index(b"\r\n\r\n") + 1  # a CRLF cut between two chunks
    stream = MessagesStream("claude-x")
    assert stream.feed(event[:cut]) == b"" and b'"content": "' in stream.feed(event[cut:])
    many = event * (2 * (1 << 20) // len(event))  # over a MiB of complete events in one read: none left over
    assert MessagesStream("claude-x").feed(many).count(b"chat.completion.chunk") == many.count(b"event: ")
    with pytest.raises(UpstreamMalformed, match="over 1048576 bytes"):
        MessagesStream("claude-x").feed(b"data: " + b"x" * (1 << 20) + b"\n")
    with pytest.raises(UpstreamMalformed, match="not JSON"):
        MessagesStream("claude-x").feed(b"data: " + b"[" * 100_000 + b"\n\n")
    with pytest.raises(UpstreamMalformed, match="a text block without text"):
        WIRE.answer({"type": "message", "content": [{"type": "text", "text": 5}]}, "claude-x")


# ---------------------------------------------------------------- end to end
openai = pytest.importorskip("openai")
pytest.importorskip("starlette")


@pytest.fixture(scope="module")
def anthropic():
    from servers import FakeAnthropic, serving

    fake = FakeAnthropic()
    with serving(fake.app) as url:
        fake.url = url
        yield fake


@pytest.fixture
def client(anthropic, upstream, monkeypatch):
    """``serve`` with the strong model behind the fake Anthropic API and the weak one behind the fake OpenAI one."""
    from edgeroute.runtime.serving.policy import RouterSet
    from edgeroute.runtime.serving.server import create_app
    from edgeroute.runtime.serving.upstream import UpstreamConfig
    from servers import server_config, serving

    monkeypatch.setenv("TEST_ANTHROPIC_KEY", "sk-ant-test")
    anthropic.reset()
    upstream.reset()
    strong = UpstreamConfig("claude-x", anthropic.url + "/v1", "TEST_ANTHROPIC_KEY", format="anthropic")
    app = create_app(server_config(upstream, strong=strong), RouterSet(["static-distilled-gpt4-mixtral"]))
    with serving(app) as url:
        yield openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def test_chat_reaches_the_anthropic_upstream_and_comes_back_openai_shaped(client, anthropic):
    raw = client.chat.completions.with_raw_response.create(
        model="router-static-distilled-gpt4-mixtral-0.0",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why is the sky blue?"}],
    )
    answer = raw.parse()
    assert answer.choices[0].message.content == "claude says: Why is the sky blue?"
    assert answer.choices[0].finish_reason == "stop" and answer.usage.total_tokens == 17
    assert raw.headers["x-edgeroute-model"] == "claude-x"
    assert anthropic.requests[-1]["system"] == "Be brief." and anthropic.requests[-1]["model"] == "claude-x"
    sent = anthropic.headers[-1]
    assert sent["x-api-key"] == "sk-ant-test" and sent["anthropic-version"] == "2023-06-01" and "authorization" not in sent


def test_streams_are_translated_to_openai_chunks(client, anthropic):
    stream = client.chat.completions.create(
        model="router-static-distilled-gpt4-mixtral-0.0", messages=[{"role": "user", "content": "Tell me a story"}], stream=True
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "claude says: Tell me a story"
    assert chunks[-1].choices[0].finish_reason == "length"


def test_a_translated_stream_ends_with_openais_usage_chunk_when_asked(client, anthropic):
    messages = [{"role": "user", "content": "Tell me a story"}]
    model = "router-static-distilled-gpt4-mixtral-0.0"
    chunks = list(client.chat.completions.create(model=model, messages=messages, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump(include={"prompt_tokens", "completion_tokens", "total_tokens"}) == {
        "prompt_tokens": 12,
        "completion_tokens": 5,
        "total_tokens": 17,
    }
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == "claude says: Tell me a story"
    plain = list(client.chat.completions.create(model=model, messages=messages, stream=True))
    assert all(c.usage is None for c in plain) and plain[-1].choices[0].finish_reason == "length"


def test_an_overloaded_anthropic_upstream_falls_back_and_a_rejection_is_relayed(client, anthropic, upstream):
    anthropic.behaviour = "529"
    answer = client.chat.completions.create(model="router-static-distilled-gpt4-mixtral-0.0", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "answer from weak-llm"
    assert answer.model_extra["edgeroute"]["fallback"] == "upstream_error on claude-x"
    anthropic.behaviour = "400"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="router-static-distilled-gpt4-mixtral-0.0", messages=[{"role": "user", "content": "hi"}])
    assert "upstream claude-x rejected the request (HTTP 400): max_tokens: 999999 > 4096" in caught.value.message
    anthropic.behaviour = "ok"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="router-static-distilled-gpt4-mixtral-0.0",
            messages=[{"role": "user", "content": "hi"}],
            tools=[{"type": "function", "function": {"name": "f"}}],
        )
    assert "tools: not relayable to an Anthropic Messages upstream" in caught.value.message
