"""A drop-in for the OpenAI client that routes each chat request to a strong or a weak model.

    from edgeroute.runtime.serving.controller import Controller, Endpoint
    client = Controller(strong=Endpoint("gpt-4o", api_key_env="OPENAI_API_KEY"),
                        weak=Endpoint("llama3", base_url="http://localhost:8000/v1", api_key="none"))
    response = client.chat.completions.create(model="router-bert-0.3", messages=[...])
    response.routing   # Decision.to_dict(): {"router", "tier", "model", "win_rate", "threshold", "score_us", "fallback"}

Needs the ``openai`` extra. No client is created until the first request. Upstream timeouts,
connection failures, 429s, 5xx and malformed answers are retried once on the other model by the
same rule as ``edgeroute serve`` (``runtime/serving/fallback.py``; ``fallback=False`` turns it off);
``routing["fallback"]`` says why. ``targets=Targets(...)`` (``runtime/scoring/targets.py``) routes among
N models with an MF router, as ``serve --config`` does: each target's base URL and key variable, the
strong endpoint's where a target names none, and fallback down the order.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from edgeroute.runtime.errors import ConfigurationError, require_extra
from edgeroute.runtime.scoring.decision import Decision, old_share_name
from edgeroute.runtime.serving.policy import RouterSet, RoutingPolicy, parse_model_field
from edgeroute.runtime.scoring.targets import Targets
from edgeroute.runtime.serving.fallback import Fallback, slot_of
from edgeroute.runtime.serving.upstream.config import UpstreamConfig
from edgeroute.runtime.serving.upstream.failures import (
    UpstreamError,
    UpstreamFailed,
    UpstreamMalformed,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnreachable,
)


@dataclass(frozen=True)
class Endpoint:
    """One OpenAI-compatible model: its name there, base URL, and where its API key comes from."""

    model: str
    base_url: str | None = None
    api_key: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = 60.0

    def resolved_key(self) -> str:
        key = self.api_key or os.environ.get(self.api_key_env)
        if not key:
            raise ConfigurationError(f"no API key for model {self.model!r}: pass Endpoint(api_key=...) or set {self.api_key_env}")
        return key


class _Routed:
    """Routing options and the policy, shared by the sync and async controllers."""

    def __init__(
        self,
        strong: Endpoint,
        weak: Endpoint,
        routers: Sequence[str | Path] | None = None,
        route_on: Literal["last_user", "conversation"] = "last_user",
        sticky: bool = False,
        score_budget_ms: float | None = None,
        default_model: Literal["strong", "weak"] = "weak",
        device: str = "cpu",
        threads: int | None = None,
        fallback: bool = True,
        targets: Targets | None = None,
    ) -> None:
        require_extra("openai", "openai", "edgeroute's controller")
        # Slots as the server's relay has them: strong/weak, or "0".."N-1" for N targets (each target's base URL
        # and key variable, the strong endpoint's where the target names none).
        self.endpoints = {"strong": strong, "weak": weak} if targets is None else _target_endpoints(targets, strong)
        self.policy = RoutingPolicy(
            RouterSet(routers, device=device, threads=threads),
            strong.model,
            weak.model,
            route_on=route_on,
            sticky=sticky,
            score_budget_ms=score_budget_ms,
            default_model=default_model,
            targets=targets,
        )
        order = () if targets is None else targets.names
        self.fallback = Fallback(fallback, self.policy.names, upstream_failure_kind, order=order)
        self._clients: dict[str, Any] = {}

    def _targets(self, model: str | None, router: str | None, threshold: float | None) -> tuple[str | None, float | None]:
        # RouteLLM's two spellings: model="router-NAME-T", or router=/threshold= keywords.
        if model is not None and router is None:
            parsed = parse_model_field(model, self.policy.routers.known())
            if parsed.strong_share is not None and threshold is None:  # router-NAME-sPCT: the bundle's calibrated threshold
                return parsed.router, self.policy.routers.get(parsed.router).threshold_for(parsed.strong_share)
            return parsed.router, parsed.threshold if threshold is None else threshold
        return router, threshold

    def _client(self, role: str, factory_name: str) -> Any:
        if role not in self._clients:
            openai = require_extra("openai", "openai", "edgeroute's controller")
            endpoint = self.endpoints[role]
            factory = getattr(openai, factory_name)
            self._clients[role] = factory(
                base_url=endpoint.base_url, api_key=endpoint.resolved_key(), timeout=endpoint.timeout_s, max_retries=0
            )
        return self._clients[role]


def _target_endpoints(targets: Targets, default: Endpoint) -> dict[str, Endpoint]:
    """Each target's endpoint by its rank ("0" is the most capable), keys by the server's rule: a target on the
    default endpoint's host gets its key; one with a base URL of its own gets its named variable, or the key
    variable of its host (api.openai.com's), or none."""
    endpoints = {}
    for rank, target in enumerate(targets.targets):
        if target.format != "openai":
            raise ConfigurationError(
                f"target {target.name!r} speaks {target.format!r}; the controller calls its models through the OpenAI SDK: "
                "route to it with edgeroute serve, which translates"
            )
        if not target.base_url:
            key, variable = target.api_key or default.api_key, target.api_key_env or default.api_key_env
        else:
            variable = UpstreamConfig(target.name, target.base_url, target.api_key_env).key_variable()
            key = target.api_key or ("no-key" if variable is None else None)  # the SDK sends a bearer token: not a secret
        endpoints[str(rank)] = Endpoint(
            target.name, target.base_url or default.base_url, key, variable or default.api_key_env, default.timeout_s
        )
    return endpoints


class _MalformedResponse(ValueError):
    """The upstream answered 200 with something that is not a chat completion."""


def as_upstream_failure(error: Exception) -> UpstreamError | None:
    """An OpenAI SDK failure as the server's typed upstream failure (runtime/serving/upstream/failures.py), or None
    for an exception that is no upstream failure; the one place the controller maps them."""
    openai = require_extra("openai", "openai", "edgeroute's controller")
    if isinstance(error, openai.APITimeoutError):  # before APIConnectionError, its base class
        return UpstreamTimeout(str(error))
    if isinstance(error, openai.APIConnectionError):
        return UpstreamUnreachable(str(error))
    if isinstance(error, openai.RateLimitError):
        return UpstreamRateLimited(str(error))
    if isinstance(error, openai.APIStatusError):
        return UpstreamFailed(str(error)) if error.status_code >= 500 else None
    if isinstance(error, (openai.APIResponseValidationError, json.JSONDecodeError, _MalformedResponse)):
        return UpstreamMalformed(str(error))
    return None


def upstream_failure_kind(error: Exception) -> str | None:
    """The fallback rule's name (``upstream_timeout``, ``upstream_error``, ...) for an OpenAI SDK failure, or None."""
    failure = as_upstream_failure(error)
    return None if failure is None else failure.kind


def _checked(response: Any, stream: bool) -> Any:
    # The SDK hands back a bare string for a body it cannot parse as a completion.
    if not stream and not hasattr(response, "choices"):
        raise _MalformedResponse("the upstream's answer is not a chat completion")
    return response


class RoutedStream:
    """The upstream stream, unchanged, with the routing decision on ``.routing``."""

    def __init__(self, stream: Any, routing: dict[str, Any]) -> None:
        self._stream = stream
        self.routing = routing

    def __iter__(self) -> Iterator[Any]:
        return iter(self._stream)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._stream.__aiter__()

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close:
            close()


def _attach(response: Any, decision: Decision, stream: bool) -> Any:
    routing = decision.to_dict()
    if stream:
        return RoutedStream(response, routing)
    response.routing = routing  # the SDK's response models accept extra attributes
    return response


class _Completions:
    def __init__(self, owner: Controller) -> None:
        self._owner = owner

    def create(
        self,
        *,
        messages: list[dict[str, Any]],
        model: str | None = None,
        router: str | None = None,
        threshold: float | None = None,
        strong_share: float | None = None,
        strong_pct: float | None = None,
        **kwargs: Any,
    ) -> Any:
        """Route on ``messages`` and call the chosen model; all other keywords pass through.
        ``strong_share``: send that share strong by the bundle's calibration (``strong_pct``: its old name)."""
        owner = self._owner
        router_name, chosen = owner._targets(model, router, threshold)
        decision = owner.policy.decide(messages, router_name, chosen, old_share_name(strong_share, strong_pct))
        stream = bool(kwargs.get("stream"))

        def call(d: Decision) -> Any:
            client = owner._client(slot_of(d), "OpenAI")
            return _checked(client.chat.completions.create(model=d.model, messages=messages, **kwargs), stream)

        decision, response = owner.fallback.call(decision, call)
        return _attach(response, decision, stream)


class _AsyncCompletions:
    def __init__(self, owner: AsyncController) -> None:
        self._owner = owner

    async def create(
        self,
        *,
        messages: list[dict[str, Any]],
        model: str | None = None,
        router: str | None = None,
        threshold: float | None = None,
        strong_share: float | None = None,
        strong_pct: float | None = None,
        **kwargs: Any,
    ) -> Any:
        """Async twin of ``Controller.chat.completions.create``."""
        owner = self._owner
        router_name, chosen = owner._targets(model, router, threshold)
        decision = await owner.policy.adecide(messages, router_name, chosen, old_share_name(strong_share, strong_pct))
        stream = bool(kwargs.get("stream"))

        async def call(d: Decision) -> Any:
            return _checked(
                await owner._client(slot_of(d), "AsyncOpenAI").chat.completions.create(model=d.model, messages=messages, **kwargs), stream
            )

        decision, response = await owner.fallback.acall(decision, call)
        return _attach(response, decision, stream)


class _Chat:
    def __init__(self, completions: Any) -> None:
        self.completions = completions


class Controller(_Routed):
    """Synchronous controller with the OpenAI client's shape: ``client.chat.completions.create``."""

    def __init__(self, strong: Endpoint, weak: Endpoint, **options: Any) -> None:
        super().__init__(strong, weak, **options)
        self.chat = _Chat(_Completions(self))


class AsyncController(_Routed):
    """Asynchronous controller: ``await client.chat.completions.create(...)``."""

    def __init__(self, strong: Endpoint, weak: Endpoint, **options: Any) -> None:
        super().__init__(strong, weak, **options)
        self.chat = _Chat(_AsyncCompletions(self))
