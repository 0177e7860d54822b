"""One routing decision, one rule, one threshold resolver: used by the CLI, ``Router.route``,
the controller and the server alike. Light on purpose: no onnxruntime, no tokenizers, no numpy.
"""

from __future__ import annotations

import bisect
import math
import numbers
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

from edgeroute.runtime.errors import InvalidInputError, InvalidThresholdError

Tier = Literal["strong", "weak"]
TIERS: tuple[Tier, Tier] = ("strong", "weak")
_TARGET_KEYS = ("rank", "cost", "candidates")


@dataclass(frozen=True)
class BudgetState:
    """A strong-call budget's state (``serve --strong-share``, ``runtime/serving/budget.py``): its target, the
    strong share it observed over its window, the threshold it applies now, and the window's size."""

    target: float
    observed_share: float
    threshold: float
    window: int
    resets: int = 0  # times a drift in the traffic mix cut the window short


@dataclass(frozen=True)
class SpendState:
    """A spend budget's state (``serve --target-cost``, ``runtime/serving/spend.py``): its target and the average
    it observed, in estimated USD per request, the policy's setting it applies now (threshold or cost weight),
    and the window's size."""

    target_usd: float
    observed_usd: float
    setting: float
    window: int


@dataclass(frozen=True)
class Decision:
    """Which tier and model get a prompt, and why.

    ``tier`` is ``strong`` or ``weak``; ``model`` is that tier's model name (None when the router
    does not know it); ``win_rate`` is None when the router was not consulted (time budget, router
    error); ``fallback`` says why another model than the decided one got the request, when one did.
    """

    router: str
    tier: Tier
    model: str | None
    win_rate: float | None
    threshold: float | None
    score_us: float
    fallback: str | None = None
    # The budget's state when a budget set the threshold: the strong-call budget's (``serve --strong-share``),
    # or with N targets the spend budget's (``serve --target-cost``).
    budget: BudgetState | SpendState | None = None
    # N targets (runtime/scoring/targets.py): the chosen target's place in the order (0: the most capable),
    # its estimated USD for this request, and each target's predicted win rate against the most capable one.
    # None for two-model decisions, whose JSON shape stays as it was.
    rank: int | None = None
    cost: float | None = None
    candidates: tuple[tuple[str, float], ...] | None = None  # (target, predicted win rate against the most capable)

    def to_dict(self, rounded: bool = False) -> dict[str, Any]:
        """The decision's JSON shape (the same keys everywhere; ``rank``, ``cost`` and ``candidates`` only for
        N-target decisions); ``rounded``: win rate and threshold to 6 decimals and ``score_us`` to 0.1."""
        # Field by field rather than dataclasses.asdict (a recursive deep copy): this runs on every request.
        data = dict(self.__dict__)
        for key in _TARGET_KEYS:
            if data[key] is None:
                del data[key]
        if self.budget is not None:
            data["budget"] = dict(self.budget.__dict__)
        if self.candidates is not None:
            data["candidates"] = dict(self.candidates)
        if rounded:
            for key in ("win_rate", "threshold"):
                if data[key] is not None:
                    data[key] = round(data[key], 6)
            data["score_us"] = round(data["score_us"], 1)
            if data["budget"] is not None:
                data["budget"] = {key: round(value, 6) for key, value in data["budget"].items()}
            if "candidates" in data:
                data["candidates"] = {key: round(value, 6) for key, value in data["candidates"].items()}
        return data

    def headers(self) -> dict[str, str]:
        """The decision as ``x-edgeroute-*`` HTTP headers: ``to_dict``'s keys, ``_`` written ``-``;
        numbers as in ``to_dict(rounded=True)``, None left out."""
        flat: dict[str, Any] = {}
        for key, value in self.to_dict(rounded=True).items():
            if key == "candidates":  # model names are no header names: the body's ``edgeroute`` object has them
                continue
            if isinstance(value, dict):  # the budget: x-edgeroute-budget-target, ...
                flat.update({f"{key}-{inner}": item for inner, item in value.items()})
            elif value is not None:
                flat[key] = value
        return {f"x-edgeroute-{key.replace('_', '-')}": str(value) for key, value in flat.items()}

    def fallen_back(self, names: Mapping[str, str | None], kind: str) -> Decision:
        """The decision after ``kind`` failed the chosen model's call: the other tier gets the request."""
        other = other_tier(self.tier)
        return replace(self, tier=other, model=names[other], fallback=f"{kind} on {self.model}")

    def moved_to(self, rank: int, model: str, kind: str) -> Decision:
        """The N-target decision after ``kind`` failed the chosen model's call: target ``rank`` gets the request
        (its cost is not estimated again: ``cost`` goes; the spend budget counted the planned target)."""
        failed = f"{kind} on {self.model}"
        chain = f"{self.fallback}; {failed}" if self.fallback else failed
        return replace(self, tier=tier_of_rank(rank), model=model, rank=rank, cost=None, fallback=chain)


def tier_of_rank(rank: int) -> Tier:
    """An N-target decision's tier: ``strong`` for the most capable target, ``weak`` for every cheaper one."""
    return "strong" if rank == 0 else "weak"


def other_tier(tier: Tier) -> Tier:
    """``weak`` for ``strong`` and back."""
    return "weak" if tier == "strong" else "strong"


def is_strong(win_rate: Any, threshold: float) -> Any:
    """RouteLLM's rule, the one place it is written: the win rate is at least the threshold.
    Works on a float (a bool back) and on a numpy array (a boolean array back)."""
    return win_rate >= threshold


def decide(win_rate: float, threshold: float) -> Tier:
    """The tier by RouteLLM's rule: strong when the win rate is at least the threshold, else weak."""
    return "strong" if is_strong(win_rate, threshold) else "weak"


def decision_for(router: str, win_rate: float, threshold: float, score_us: float, names: Mapping[str, str | None]) -> Decision:
    """The ``Decision`` for a scored prompt; ``names`` maps each tier to its model name."""
    tier = decide(win_rate, threshold)
    return Decision(router, tier, names[tier], float(win_rate), float(threshold), float(score_us))


def check_threshold(threshold: Any) -> float:
    """Return ``threshold`` as a float, or raise ``InvalidThresholdError`` unless it is finite and in [0, 1]."""
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):  # numpy numbers are Real
        raise InvalidThresholdError(f"threshold must be a number in [0, 1], got {type(threshold).__name__}")
    try:
        value = float(threshold)
    except OverflowError:  # an int too large for a float (JSON allows any number of digits)
        raise InvalidThresholdError("threshold must be a number in [0, 1], got an integer too large for a float") from None
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise InvalidThresholdError(f"threshold must be a number in [0, 1], got {value!r}")
    return value


def threshold_for_share(sorted_rates: Sequence[float], strong_share: float) -> float:
    """The one threshold-for-share rule (RouteLLM's): the ``1 - strong_share`` quantile of win rates sorted
    ascending, linear between neighbours, equal to ``numpy.quantile``'s default to the last bit on finite float64
    rates (the rates every caller passes; the arithmetic is Python's float64 whatever the input's type). Calibration,
    the live strong-call budget and the parity report all use it; constant time on sorted rates."""
    # The exact-type test first: the live budget takes a threshold on every request.
    if type(strong_share) is not float and (isinstance(strong_share, bool) or not isinstance(strong_share, numbers.Real)):
        raise InvalidInputError(f"strong share must be in [0, 1], got {strong_share}")
    if not 0.0 <= strong_share <= 1.0:
        raise InvalidInputError(f"strong share must be in [0, 1], got {strong_share}")
    count = len(sorted_rates)
    if not count:
        raise InvalidInputError("no win rates to take a threshold from")
    position = (1.0 - float(strong_share)) * (count - 1)
    low = int(position)  # floor: the position is never negative
    below, above = float(sorted_rates[low]), float(sorted_rates[min(low + 1, count - 1)])
    fraction = position - low
    # numpy's lerp: from the nearer end, so that equal neighbours give exactly their value.
    return below + (above - below) * fraction if fraction < 0.5 else above - (above - below) * (1.0 - fraction)


def threshold_from_table(shares: Sequence[float], thresholds: Sequence[float], strong_share: float) -> float:
    """A calibration table's threshold for ``strong_share`` (shares ascending, their thresholds descending):
    linear between the table's points, as the quantiles it holds are between win rates."""
    if math.isnan(strong_share):
        return math.nan
    if strong_share <= shares[0] or strong_share >= shares[-1]:  # numpy.interp's ends: the end values
        return float(thresholds[0] if strong_share <= shares[0] else thresholds[-1])
    index = bisect.bisect_left(shares, strong_share)
    if shares[index] == strong_share:  # inside the ends, so index is a point of the table
        return float(thresholds[index])
    low, high = index - 1, index
    slope = (thresholds[high] - thresholds[low]) / (shares[high] - shares[low])  # numpy.interp's order, to the last bit
    return float(slope * (strong_share - shares[low]) + thresholds[low])


class Calibrated(Protocol):
    """What the threshold resolver needs of a router."""

    def threshold_for(self, strong_share: float) -> float: ...

    def default_threshold(self) -> float: ...


def old_share_name(strong_share: Any, strong_pct: Any, warn: bool = True) -> Any:
    """``strong_share``, or ``strong_pct``, its old name: still accepted (``warn``: with a ``DeprecationWarning``)."""
    if strong_pct is None:
        return strong_share
    if strong_share is not None:
        raise InvalidInputError("give strong_share or its old name strong_pct, not both")
    if warn:
        warnings.warn("strong_pct is now called strong_share", DeprecationWarning, stacklevel=3)
    return strong_pct


def resolve_threshold(router: Calibrated, threshold: Any = None, strong_share: Any = None, *, strong_pct: Any = None) -> float:
    """The threshold to decide with: an explicit ``threshold``, else ``strong_share`` (``strong_pct``: its old name)
    through the router's calibration table, else the router's default (calibrated 50% strong, else 0.5)."""
    if strong_pct is not None:
        strong_share = old_share_name(strong_share, strong_pct)
    if threshold is not None and strong_share is not None:
        raise InvalidInputError("give either threshold or strong_share, not both")
    if threshold is not None:
        return check_threshold(threshold)
    if strong_share is not None:
        return router.threshold_for(strong_share)
    return router.default_threshold()
