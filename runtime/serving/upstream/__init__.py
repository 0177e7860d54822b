"""The upstream seam: everything between a routing decision and the chosen model's answer.

* ``config``: where an upstream is and how it is called (``UpstreamConfig``: base URL, model, key
  source, wire format);
* ``wire``: the wire formats (``OpenAIChat`` passes through; ``AnthropicMessages`` translates
  OpenAI chat requests, answers and streams to and from Anthropic's Messages API);
* ``transport``: the ``Transport`` interface and its two implementations (the lean HTTP/1.1 client
  and aiohttp);
* ``failures``: the typed failures every client maps into once (``UpstreamTimeout``, ...);
* ``relay``: the server's calls, slot by slot (``UpstreamRelay``).

The fallback rule is the policy's (``runtime/serving/fallback.py``), re-exported here for the
callers that imported it from this module.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeroute.runtime.serving.fallback import FALLBACK_KINDS, Fallback
    from edgeroute.runtime.serving.upstream.config import (
        ANTHROPIC_KEY_ENV,
        OPENAI_HOST,
        OPENAI_KEY_ENV,
        WIRE_FORMATS,
        UpstreamConfig,
        check_base_url,
        env_proxy,
    )
    from edgeroute.runtime.serving.upstream.failures import (
        RequestNotRelayable,
        UpstreamError,
        UpstreamFailed,
        UpstreamMalformed,
        UpstreamRateLimited,
        UpstreamRejected,
        UpstreamTimeout,
        UpstreamUnreachable,
        rejection,
        sanitized_upstream_message,
    )
    from edgeroute.runtime.serving.fallback import slot_of
    from edgeroute.runtime.serving.upstream.relay import MAX_ANSWER_BYTES, UpstreamRelay, UpstreamStream, UpstreamStreamBroken
    from edgeroute.runtime.serving.upstream.transport import AiohttpAnswer, AiohttpTransport, Answer, LeanTransport, Transport
    from edgeroute.runtime.serving.upstream.wire import AnthropicMessages, OpenAIChat, WireFormat, encode_upstream_body, reencodable_answer

_LAZY = {
    "ANTHROPIC_KEY_ENV": "edgeroute.runtime.serving.upstream.config",
    "AiohttpAnswer": "edgeroute.runtime.serving.upstream.transport",
    "AiohttpTransport": "edgeroute.runtime.serving.upstream.transport",
    "Answer": "edgeroute.runtime.serving.upstream.transport",
    "AnthropicMessages": "edgeroute.runtime.serving.upstream.wire",
    "FALLBACK_KINDS": "edgeroute.runtime.serving.fallback",
    "Fallback": "edgeroute.runtime.serving.fallback",
    "LeanTransport": "edgeroute.runtime.serving.upstream.transport",
    "MAX_ANSWER_BYTES": "edgeroute.runtime.serving.upstream.relay",
    "OPENAI_HOST": "edgeroute.runtime.serving.upstream.config",
    "OPENAI_KEY_ENV": "edgeroute.runtime.serving.upstream.config",
    "OpenAIChat": "edgeroute.runtime.serving.upstream.wire",
    "RequestNotRelayable": "edgeroute.runtime.serving.upstream.failures",
    "Transport": "edgeroute.runtime.serving.upstream.transport",
    "UpstreamConfig": "edgeroute.runtime.serving.upstream.config",
    "UpstreamError": "edgeroute.runtime.serving.upstream.failures",
    "UpstreamFailed": "edgeroute.runtime.serving.upstream.failures",
    "UpstreamMalformed": "edgeroute.runtime.serving.upstream.failures",
    "UpstreamRateLimited": "edgeroute.runtime.serving.upstream.failures",
    "UpstreamRejected": "edgeroute.runtime.serving.upstream.failures",
    "UpstreamRelay": "edgeroute.runtime.serving.upstream.relay",
    "UpstreamStream": "edgeroute.runtime.serving.upstream.relay",
    "UpstreamStreamBroken": "edgeroute.runtime.serving.upstream.relay",
    "UpstreamTimeout": "edgeroute.runtime.serving.upstream.failures",
    "UpstreamUnreachable": "edgeroute.runtime.serving.upstream.failures",
    "WIRE_FORMATS": "edgeroute.runtime.serving.upstream.config",
    "WireFormat": "edgeroute.runtime.serving.upstream.wire",
    "check_base_url": "edgeroute.runtime.serving.upstream.config",
    "encode_upstream_body": "edgeroute.runtime.serving.upstream.wire",
    "env_proxy": "edgeroute.runtime.serving.upstream.config",
    "reencodable_answer": "edgeroute.runtime.serving.upstream.wire",
    "rejection": "edgeroute.runtime.serving.upstream.failures",
    "sanitized_upstream_message": "edgeroute.runtime.serving.upstream.failures",
    "slot_of": "edgeroute.runtime.serving.fallback",
}


def __getattr__(name: str) -> Any:
    """The re-exported names, imported on first use: ``upstream.config`` stays cheap to import (the CLI builds
    ``serve``'s flags from it on every call) while the relay and its HTTP clients load only for a server."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ANTHROPIC_KEY_ENV",
    "FALLBACK_KINDS",
    "MAX_ANSWER_BYTES",
    "OPENAI_HOST",
    "OPENAI_KEY_ENV",
    "WIRE_FORMATS",
    "AiohttpAnswer",
    "AiohttpTransport",
    "AnthropicMessages",
    "Answer",
    "Fallback",
    "LeanTransport",
    "OpenAIChat",
    "RequestNotRelayable",
    "Transport",
    "UpstreamConfig",
    "UpstreamError",
    "UpstreamFailed",
    "UpstreamMalformed",
    "UpstreamRateLimited",
    "UpstreamRejected",
    "UpstreamRelay",
    "UpstreamStream",
    "UpstreamStreamBroken",
    "UpstreamTimeout",
    "UpstreamUnreachable",
    "WireFormat",
    "check_base_url",
    "encode_upstream_body",
    "env_proxy",
    "reencodable_answer",
    "rejection",
    "sanitized_upstream_message",
    "slot_of",
]
