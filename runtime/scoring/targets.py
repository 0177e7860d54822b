"""Targets as data: the models a request can go to, in order, with their costs, and the rules that choose one.

A ``Targets`` is an ordered tuple of ``Target`` (most capable first; equal costs count the later one
as the cheaper) and the policy that chooses among them from a router's per-model scores (RouteLLM's
MF: one score ``s_m`` per model and prompt, the win rate of ``a`` over ``b`` is
``sigmoid(s_a - s_b)``):

* ``cheapest_acceptable``: the cheapest target whose predicted win rate *against* it by the most
  capable target stays under the threshold (the most capable one when none does). With two targets
  this is exactly RouteLLM's rule: the weak model unless ``P(strong beats weak) >= threshold``.
* ``quality_per_cost``: the target maximizing ``quality - cost_weight * cost`` where quality is the
  target's predicted win rate against the most capable one (0.5 for that one itself) and cost the
  request's estimated price in USD (input characters / 4 tokens, plus ``output_tokens``).

``fallback_order`` is the one fallback rule: the next target in order, wrapping around (with two
targets: the other one, as before). One place chooses (``choose``/``choose_many``), one place
falls back, and ``calibrate_for_cost`` sets the threshold or cost weight for a target average cost.
Configuration: ``[[target]]`` tables in a TOML file (``load_targets``), or ``Targets.pair`` for
today's strong/weak shorthand.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeroute.runtime.errors import ConfigurationError
from edgeroute.runtime.scoring.decision import BudgetState, Decision, tier_of_rank
from edgeroute.runtime.tomlfile import read_toml

POLICIES = ("cheapest_acceptable", "quality_per_cost")
# Characters per token for a cost estimate before any tokenizer of the target's own has run.
CHARS_PER_TOKEN = 4.0
MAX_TARGETS = 64  # a RouteLLM MF checkpoint scores 64 Arena models
_TARGET_KEYS = ("name", "router_model", "base_url", "api_key_env", "format", "input_cost", "output_cost")
_TOP_KEYS = ("policy", "threshold", "cost_weight", "output_tokens", "target")


@dataclass(frozen=True)
class Target:
    """One model a request can go to: its name upstream, the router's name for it, where it is, what it costs.

    ``input_cost``/``output_cost``: USD per million tokens. ``base_url``/``api_key_env``: its
    OpenAI-compatible upstream (None: the server's default upstream and key rule).
    """

    name: str
    router_model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    input_cost: float = 0.0
    output_cost: float = 0.0
    format: str = "openai"  # the upstream's wire format: "openai" (chat completions) or "anthropic" (Messages)
    # The key itself, resolved where the configuration was built (Ray Serve replicas get it with their configuration); never printed.
    api_key: str | None = field(default=None, repr=False, compare=False)

    @property
    def scored_as(self) -> str:
        """The name the router's head knows this model by."""
        return self.router_model or self.name

    def cost(self, input_chars: Any, output_tokens: int) -> Any:
        """Estimated USD of one request of ``input_chars`` characters (a number or an array)."""
        return (np.asarray(input_chars, dtype=np.float64) / CHARS_PER_TOKEN * self.input_cost + output_tokens * self.output_cost) / 1e6


@dataclass(frozen=True)
class Choice:
    """What ``Targets.choose`` decided for one prompt."""

    index: int  # the chosen target's position in the order (0: the most capable)
    quality: tuple[float, ...]  # each target's predicted win rate against the most capable one
    cost: float  # the chosen target's estimated USD for this request
    top_win_rate: float  # P(the most capable target beats the last one): RouteLLM's win rate for two targets


@dataclass(frozen=True)
class Targets:
    """The ordered targets and the policy choosing among them; validated when built."""

    targets: tuple[Target, ...]
    policy: str = "cheapest_acceptable"
    threshold: float = 0.5  # cheapest_acceptable
    cost_weight: float = 0.0  # quality_per_cost: quality given up per USD saved
    output_tokens: int = 256  # expected answer length, for the cost estimate
    source: str = field(default="targets", compare=False)  # where they were configured, for error messages

    def __post_init__(self) -> None:
        where = self.source
        if not 2 <= len(self.targets) <= MAX_TARGETS:
            raise ConfigurationError(f"{where}: give 2 to {MAX_TARGETS} targets, most capable first (got {len(self.targets)})")
        names = [target.name for target in self.targets]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"{where}: target names must differ; {sorted({n for n in names if names.count(n) > 1})} repeat")
        for target in self.targets:
            for what in ("input_cost", "output_cost"):
                value = getattr(target, what)
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                    raise ConfigurationError(
                        f"{where}: target {target.name!r}: {what} must be a non-negative number of USD per million tokens"
                    )
        if self.policy not in POLICIES:
            raise ConfigurationError(f"{where}: policy must be one of {POLICIES}, got {self.policy!r}")
        if not _number_in(self.threshold, 0.0, 1.0):
            raise ConfigurationError(f"{where}: threshold must be a number in [0, 1], got {self.threshold!r}")
        if not _number_in(self.cost_weight, 0.0, math.inf):
            raise ConfigurationError(f"{where}: cost_weight must be a non-negative number, got {self.cost_weight!r}")
        if isinstance(self.output_tokens, bool) or not isinstance(self.output_tokens, int) or not 0 <= self.output_tokens <= 1_000_000:
            raise ConfigurationError(f"{where}: output_tokens must be an integer in [0, 1000000], got {self.output_tokens!r}")

    @classmethod
    def pair(cls, strong: str, weak: str, threshold: float = 0.5) -> Targets:
        """Today's two-model shorthand: strong then weak, no costs (the weak one counts as the cheaper)."""
        return cls((Target(strong), Target(weak)), threshold=threshold)

    @property
    def names(self) -> list[str]:
        """The targets' names, in order."""
        return [target.name for target in self.targets]

    @property
    def scored_as(self) -> list[str]:
        """The names the router's head knows the targets by, in order."""
        return [target.scored_as for target in self.targets]

    def fallback_order(self, index: int) -> list[int]:
        """The targets to try after ``index`` failed: the next ones in order, wrapping around."""
        order = [next_target(index, len(self.targets))]
        while len(order) < len(self.targets) - 1:
            order.append(next_target(order[-1], len(self.targets)))
        return order

    def costs(self, input_chars: Any) -> np.ndarray:
        """Estimated USD per request: ``[n, targets]`` for ``n`` character counts."""
        chars = np.atleast_1d(np.asarray(input_chars, dtype=np.float64))
        return np.stack([target.cost(chars, self.output_tokens) for target in self.targets], axis=1)

    def choose_many(
        self, scores: np.ndarray, input_chars: Any, threshold: float | None = None, cost_weight: float | None = None
    ) -> np.ndarray:
        """The chosen target index per prompt, from ``[n, targets]`` router scores (logits)."""
        return self.pick(Scored.of(self, scores, input_chars), threshold, cost_weight)

    def pick(self, scored: Scored, threshold: float | None = None, cost_weight: float | None = None) -> np.ndarray:
        """The chosen target index per prompt of prompts already ``Scored`` (the one rule both policies are written in)."""
        if self.policy == "cheapest_acceptable":
            limit = self.threshold if threshold is None else threshold
            acceptable = scored.beaten < limit  # P(the most capable one beats the target) under the threshold
            acceptable[:, 0] = True
            value = np.where(acceptable, -scored.costs, -np.inf)
        else:
            weight = self.cost_weight if cost_weight is None else cost_weight
            value = scored.quality - weight * scored.costs
        # Ties go to the later target (the cheaper one when costs are equal): argmax over the reversed order.
        return (value.shape[1] - 1 - np.argmax(value[:, ::-1], axis=1)).astype(np.int64)

    def choose(self, scores: Sequence[float], input_chars: int, threshold: float | None = None) -> Choice:
        """The choice for one prompt, with every target's predicted quality and the chosen cost."""
        scored = Scored.of(self, np.asarray(scores, dtype=np.float64)[None, :], input_chars)
        index = int(self.pick(scored, threshold)[0])
        return Choice(index, tuple(float(q) for q in scored.quality[0]), float(scored.costs[0, index]), float(scored.beaten[0, -1]))

    def mean_cost(self, scores: np.ndarray, input_chars: Any, threshold: float | None = None, cost_weight: float | None = None) -> float:
        """The average estimated USD per request of the choices on these prompts."""
        return Scored.of(self, scores, input_chars).mean_cost(self, threshold, cost_weight)


@dataclass(frozen=True)
class Scored:
    """Prompts' router scores with what every choice among the targets reads, worked out once."""

    quality: np.ndarray  # [n, targets]: P(target beats the most capable one)
    beaten: np.ndarray  # [n, targets]: P(the most capable one beats the target)
    costs: np.ndarray  # [n, targets]: estimated USD per request

    @classmethod
    def of(cls, targets: Targets, scores: Any, input_chars: Any) -> Scored:
        scores = np.asarray(scores, dtype=np.float64)
        return cls(_sigmoid(scores - scores[:, :1]), _sigmoid(scores[:, :1] - scores), targets.costs(input_chars))

    def mean_cost(self, targets: Targets, threshold: float | None = None, cost_weight: float | None = None) -> float:
        """The average estimated USD per request of ``targets``' choices with this setting."""
        chosen = targets.pick(self, threshold, cost_weight)
        return float(self.costs[np.arange(len(chosen)), chosen].mean())


def next_target(rank: int, count: int) -> int:
    """The fallback rule over ``count`` targets: after target ``rank`` failed, the next in order, wrapping around."""
    return (rank + 1) % count


def decision_for_targets(
    router: str, targets: Targets, scores: Any, chars: int, threshold: float | None, score_us: float, budget: BudgetState | None = None
) -> Decision:
    """The N-target ``Decision`` for a prompt of ``chars`` characters and the router's per-target ``scores``: the chosen
    target, its rank and estimated cost, every target's predicted win rate against the most capable one."""
    choice = targets.choose(scores, chars, threshold)
    return Decision(
        router,
        tier_of_rank(choice.index),
        targets.names[choice.index],
        choice.top_win_rate,
        (targets.threshold if threshold is None else threshold) if targets.policy == "cheapest_acceptable" else None,
        score_us,
        budget=budget,
        rank=choice.index,
        cost=choice.cost,
        candidates=tuple(zip(targets.names, choice.quality)),
    )


def calibrate_for_cost(targets: Targets, scores: np.ndarray, input_chars: Any, target_cost: float) -> float:
    """The threshold (cheapest acceptable) or cost weight (quality per cost) whose choices on these prompts
    average at most ``target_cost`` USD per request, as close to it as 60 bisection steps get."""
    scored = Scored.of(targets, scores, input_chars)
    cheapest, dearest = float(scored.costs.min(axis=1).mean()), float(scored.costs.max(axis=1).mean())
    if not _number_in(target_cost, 0.0, math.inf) or target_cost < cheapest - 1e-15:
        raise ConfigurationError(
            f"target cost {target_cost!r} USD per request is below the cheapest possible on these prompts ({cheapest:.3g}); "
            "raise it or add a cheaper target"
        )
    if target_cost >= dearest:  # nothing to save: threshold 0 and weight 0 both keep the most capable choice
        return 0.0
    key = "threshold" if targets.policy == "cheapest_acceptable" else "cost_weight"
    low, high = 0.0, 1.0  # a higher threshold accepts more cheap targets, a higher weight prices them in: cost falls
    while key == "cost_weight" and scored.mean_cost(targets, cost_weight=high) > target_cost and high < 1e15:
        low, high = high, high * 4
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (low, middle) if scored.mean_cost(targets, **{key: middle}) <= target_cost else (middle, high)
    return high


def load_targets(path: str | Path) -> Targets:
    """The targets of a TOML file: ``policy``, ``threshold``, ``cost_weight``, ``output_tokens`` and ``[[target]]`` tables."""
    path = Path(path)
    document = read_toml(path, "targets file", "see README 'More than two models' for the format")
    return targets_from_mapping(document, str(path))


def targets_from_mapping(document: Mapping[str, Any], source: str = "targets") -> Targets:
    """``Targets`` from parsed configuration data (a TOML document, or the same structure in Python)."""
    unknown = sorted(set(document) - set(_TOP_KEYS))
    if unknown:
        raise ConfigurationError(f"{source}: unknown keys {unknown}; the keys are {list(_TOP_KEYS)}")
    tables = document.get("target")
    if not isinstance(tables, list) or not all(isinstance(t, Mapping) for t in tables):
        raise ConfigurationError(f"{source}: list the models as [[target]] tables, most capable first")
    targets = []
    for position, table in enumerate(tables):
        bad = sorted(set(table) - set(_TARGET_KEYS))
        if bad or not isinstance(table.get("name"), str) or not table["name"]:
            raise ConfigurationError(
                f"{source}: target {position + 1} needs a 'name' and only the keys {list(_TARGET_KEYS)} (got {sorted(table)})"
            )
        for key in ("router_model", "base_url", "api_key_env", "format"):
            if table.get(key) is not None and not isinstance(table[key], str):
                raise ConfigurationError(f"{source}: target {table['name']!r}: {key} must be a string")
        targets.append(Target(**{key: table[key] for key in _TARGET_KEYS if key in table}))
    settings = {key: document[key] for key in ("policy", "threshold", "cost_weight", "output_tokens") if key in document}
    return Targets(tuple(targets), source=source, **settings)


def _number_in(value: Any, low: float, high: float) -> bool:
    """A finite int or float (not a bool) in [low, high]."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(float(value)) and low <= value <= high


def _sigmoid(values: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-values))
