"""The fallback rule, the policy's and not a transport's: which model gets a request after the chosen
one's call failed, shared by the server (``UpstreamRelay``) and the controller.

Transient failures (``FALLBACK_KINDS``: timeouts, unreachable, rate limited, 5xx, malformed answers)
move the request on; a rejected request (4xx) is not retried, since the next model would reject it too.
Two models: the other tier gets it once. N targets: the next target in order, wrapping around, up to
``MAX_ATTEMPTS`` calls in all (``targets.next_target``). The decision records why (``fallback``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from edgeroute.runtime.scoring.decision import Decision
from edgeroute.runtime.scoring.targets import next_target
from edgeroute.runtime.serving.upstream.failures import (
    UpstreamFailed,
    UpstreamMalformed,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnreachable,
)

# Upstream failures worth retrying on another model (a rejected request is not: the next model would reject it too).
FALLBACK_KINDS = frozenset(c.KIND for c in (UpstreamTimeout, UpstreamUnreachable, UpstreamRateLimited, UpstreamFailed, UpstreamMalformed))

# N targets: the chosen model and at most two more, so that a request's cost stays bounded (calls, time,
# a rate-limit storm multiplied) however many targets are configured.
MAX_ATTEMPTS = 3


def attempts_for(targets: int) -> int:
    """Upstream calls one request may cost with fallback on: two models (``targets`` 0), or N targets."""
    return min(targets, MAX_ATTEMPTS) if targets else 2


T = TypeVar("T")
KindOf = Callable[[Exception], "str | None"]


@dataclass(frozen=True)
class Fallback:
    """The fallback rule for one front end: on or off, the models' names, how to name a failure.

    ``kind_of`` names an upstream failure (``upstream_timeout``, ...) or returns None for an
    exception that is no upstream failure (re-raised as is). ``on_failure(kind)`` and
    ``on_fallback(kind)`` let the server count them. Two models (``order`` empty): the other tier
    gets the request once. N targets (``order``: their names, most capable first): the next target
    in order, wrapping around, up to ``MAX_ATTEMPTS`` calls in all.
    """

    enabled: bool
    names: Mapping[str, str | None]
    kind_of: KindOf
    on_failure: Callable[[str], None] | None = None
    on_fallback: Callable[[str], None] | None = None
    order: Sequence[str] = ()

    @property
    def attempts(self) -> int:
        """Calls a request may cost: the chosen model and those it may fall back to (at most ``MAX_ATTEMPTS``)."""
        return attempts_for(len(self.order))

    def after(self, decision: Decision, error: Exception) -> Decision:
        """The decision that sends the request to the next model; re-raises ``error`` when the rule says no."""
        kind = self.kind_of(error)
        if kind is None:
            raise error
        if self.on_failure:
            self.on_failure(kind)
        if not self.enabled or kind not in FALLBACK_KINDS:
            raise error
        if self.on_fallback:
            self.on_fallback(kind)
        if decision.rank is None:
            return decision.fallen_back(self.names, kind)
        following = next_target(decision.rank, len(self.order))
        return decision.moved_to(following, self.order[following], kind)

    def failed_again(self, error: Exception) -> None:
        """Count the last model's failure too (then the caller re-raises it)."""
        kind = self.kind_of(error)
        if kind is not None and self.on_failure:
            self.on_failure(kind)

    def call(self, decision: Decision, call: Callable[[Decision], T]) -> tuple[Decision, T]:
        """``call(decision)``, and again with the next model while the rule allows."""
        for attempt in range(self.attempts):
            try:
                return decision, call(decision)
            except Exception as error:  # noqa: BLE001 - after() re-raises what is not an upstream fault
                if attempt == self.attempts - 1:
                    self.failed_again(error)
                    raise
                decision = self.after(decision, error)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def acall(self, decision: Decision, call: Callable[[Decision], Awaitable[T]]) -> tuple[Decision, T]:
        """``call`` for coroutines."""
        for attempt in range(self.attempts):
            try:
                return decision, await call(decision)
            except Exception as error:  # noqa: BLE001 - after() re-raises what is not an upstream fault
                if attempt == self.attempts - 1:
                    self.failed_again(error)
                    raise
                decision = self.after(decision, error)
        raise AssertionError("unreachable: the last attempt returns or raises")


def slot_of(decision: Decision) -> str:
    """Which configured model a decision names: its tier for two models, its rank among N targets."""
    return decision.tier if decision.rank is None else str(decision.rank)
