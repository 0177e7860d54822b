"""Routing policy shared by the controller and the server: model-field parsing, a chat request parsed
once (``parse``: router, messages read by ``chat.read_chat``, threshold), sticky conversations, the
scoring time budget, and the ``Decision`` for a request."""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal

from edgeroute.runtime.scoring.decision import BudgetState, SpendState
from edgeroute.runtime.serving.budget import BudgetSettings, StrongShareBudget
from edgeroute.runtime.serving.budget_store import SharedWindowSync, WindowStore
from edgeroute.runtime.serving.spend import SpendBudget
from edgeroute.runtime.errors import ConfigurationError, EdgerouteError, InvalidInputError, InvalidPromptError
from edgeroute.runtime.scoring.decision import (
    Decision,
    check_threshold,
    decision_for,
    old_share_name,
    resolve_threshold,
    tier_of_rank,
)
from edgeroute.runtime.scoring.kinds import routellm_kinds
from edgeroute.runtime.scoring.lru import LRUCache
from edgeroute.runtime.scoring.targets import Targets, decision_for_targets
from edgeroute.runtime.scoring.router import Router, default_router_name
from edgeroute.runtime.serving.chat import ROUTE_ON, ChatLimits, ChatRequest, read_chat
from edgeroute.runtime.serving.chat import message_chars, routing_text  # noqa: F401 (their home before chat.py)

# The threshold part takes any decimal number, so that "router-mf-2" is a threshold error, not a router name.
# "-sPCT" is the share form: router-NAME-s30 sends 30% of calls strong, through the bundle's calibration.
_MODEL_FIELD = re.compile(r"^router-(?P<name>[A-Za-z0-9._-]+?)(?:-(?:s(?P<share>\d+(?:\.\d*)?)|(?P<threshold>\d+(?:\.\d*)?|\.\d+)))?$")


@dataclass(frozen=True)
class ModelField:
    """A parsed ``router-NAME[-THRESHOLD]`` or ``router-NAME-sPCT`` model name."""

    router: str
    threshold: float | None
    strong_share: float | None = None

    @property
    def strong_pct(self) -> float | None:
        """``strong_share``'s old name."""
        return self.strong_share


def parse_model_field(model: Any, known_routers: Sequence[str] = ()) -> ModelField:
    """Parse RouteLLM's ``router-NAME-THRESHOLD`` (or ``router-NAME``, for the calibrated default).

    A name that is itself a known router wins over reading its last part as a threshold.
    Raises ``InvalidInputError`` with a message fit for an HTTP 400.
    """
    if not isinstance(model, str):
        raise InvalidInputError(f"'model' must be a string like 'router-bert-0.3', got {type(model).__name__}")
    if model.startswith("router-") and model[len("router-") :] in known_routers:
        return ModelField(model[len("router-") :], None)
    match = _MODEL_FIELD.match(model)
    if not match:
        raise InvalidInputError(
            f"model {model!r} is not a router model name; use 'router-NAME-THRESHOLD' (e.g. 'router-bert-0.3') "
            "or 'router-NAME' for the router's calibrated default"
        )
    threshold, share = match.group("threshold"), match.group("share")
    if share is not None:
        if not 0.0 < float(share) < 100.0:
            raise InvalidInputError(f"model {model!r}: the share form 'router-NAME-sPCT' takes a percentage strictly between 0 and 100")
        return ModelField(match.group("name"), None, float(share) / 100.0)
    return ModelField(match.group("name"), check_threshold(float(threshold)) if threshold is not None else None)


class RouterSet:
    """Routers loaded once, by shipped name, alias (``bert``, ``mf``, ``default``) or path."""

    def __init__(self, routers: Sequence[str | Path] | None = None, **load_options: Any) -> None:
        names = list(routers) if routers else [default_router_name()]
        self._routers: dict[str, Router] = {}
        for entry in names:
            router = Router.load(entry, **load_options)
            self._routers[router.name] = router
        # `default` means what it means everywhere else (models/DEFAULT) when that router is loaded;
        # otherwise the first --router, the one requests without a router get.
        shipped_default = default_router_name()
        self.default = shipped_default if shipped_default in self._routers else next(iter(self._routers))
        # RouteLLM users write router-bert-… / router-mf-…: the first router that scores on that kind's scale.
        self._aliases = {"default": self.default}
        # Each RouteLLM kind (runtime/scoring/kinds.py) to the bundles that score on its threshold scale.
        self._routellm_kinds = routellm_kinds()
        for kind, scores_like in self._routellm_kinds.items():
            match = next((name for name, router in self._routers.items() if scores_like(router.manifest)), None)
            if match is not None:
                self._aliases[kind] = match

    @property
    def names(self) -> list[str]:
        return list(self._routers)

    def known(self) -> list[str]:
        return [*self._routers, *self._aliases]

    def get(self, name: str) -> Router:
        if not isinstance(name, str):
            raise InvalidInputError(f"'router' must be a string naming a loaded router (loaded: {', '.join(self.known())})")
        resolved = self._aliases.get(name, name)
        if resolved not in self._routers and name in self._routellm_kinds:
            raise InvalidInputError(
                f"router {name!r} names RouteLLM's {name} router, and no bundle of that kind is loaded here "
                f"(its thresholds would not fit another kind's scores); load one with --router, or name a loaded router: "
                f"{', '.join(self.known())}"
            )
        if resolved not in self._routers:
            raise InvalidInputError(f"router {name!r} is not loaded here (loaded: {', '.join(self.known())})")
        return self._routers[resolved]


@dataclass(frozen=True)
class ParsedChat:
    """A chat request read once (``RoutingPolicy.parse``): its messages walked (``ChatRequest``) and what it asks
    of the router, kept as asked until a decision is to be made (a sticky conversation's remembered decision
    needs none of it). ``router``: a loaded router, a name, or None for the default; ``threshold`` and
    ``strong_share`` as the request gave them, or with ``resolved`` the threshold already worked out."""

    chat: ChatRequest
    router: str | Router | None = None
    threshold: Any = None
    strong_share: Any = None
    counted: bool = True  # whether the strong-call budget counts it (route-only calls opt in)
    tenant: str | None = None  # the API key's name (serve --keys-file): whose budget it counts in
    resolved: bool = False


@dataclass(frozen=True)
class _Pending:
    """A chat request on its way to a score: its router, text and threshold (None: the budget sets it), sticky key
    and start time."""

    router: Router
    text: str
    threshold: float | None
    key: str | None
    started: float
    counted: bool = True
    tenant: str | None = None


class RoutingPolicy:
    """Decides strong or weak for chat requests; safe to call from many threads and coroutines.

    ``score_budget_ms``: when scoring takes longer, or the router fails, ``default_model`` gets
    the request and the decision says why. Scoring runs on a thread pool, never on an event loop,
    except one prompt of a static-table router (``Router.scores_inline``): microseconds, less than the hop.
    """

    def __init__(
        self,
        routers: RouterSet,
        strong_model_name: str,
        weak_model_name: str,
        route_on: str = "last_user",
        sticky: bool = False,
        score_budget_ms: float | None = None,
        default_model: Literal["strong", "weak"] = "weak",
        scoring_threads: int = 4,
        sticky_capacity: int = 10_000,
        budget: BudgetSettings | None = None,
        tenant_shares: Mapping[str, float] | None = None,
        tenant_settings: BudgetSettings | None = None,
        budget_store: WindowStore | None = None,
        targets: Targets | None = None,
        target_cost: float | None = None,
        spend_window: int = 1000,
    ) -> None:
        if route_on not in ROUTE_ON:
            raise InvalidInputError(f"route_on must be one of {ROUTE_ON}, got {route_on!r}")
        if default_model not in ("strong", "weak"):
            raise InvalidInputError(f"default_model must be 'strong' or 'weak', got {default_model!r}")
        self.routers = routers
        self.names = {"strong": strong_model_name, "weak": weak_model_name}
        self.route_on = route_on
        self.sticky = sticky
        self.score_budget_s = None if score_budget_ms is None else score_budget_ms / 1000.0
        self.default_model = default_model
        self._pool = ThreadPoolExecutor(max_workers=scoring_threads, thread_name_prefix="edgeroute-score")
        self._sticky: LRUCache[str, Decision] = LRUCache(sticky_capacity)
        self._lock = threading.Lock()
        if budget is not None:
            budget.budget(0.5)  # refuses bad settings now, not on a request
        self.budget = budget
        # Each tenant with a share of its own gets a budget of its own; the others share the server's. Without a
        # server-wide budget, ``tenant_settings`` still carries serve's window, floor and ceiling to the tenants'.
        base = budget or tenant_settings
        self.tenant_budgets = {name: replace(base or BudgetSettings(share), target=share) for name, share in (tenant_shares or {}).items()}
        for settings in self.tenant_budgets.values():
            settings.budget(0.5)
        self._budgets: dict[tuple[str, str | None], StrongShareBudget] = {}
        if budget_store is not None and budget is None and not self.tenant_budgets:
            raise ConfigurationError("--budget-store shares a strong-call budget: give --strong-share (or keys with a strong_share)")
        self.budget_store = budget_store
        self._syncs: dict[tuple[str, str | None], SharedWindowSync] = {}
        self.targets = targets
        # N targets: each loaded router's head rows for them, checked now (a router that predicts one pair is refused).
        self._target_rows = {} if targets is None else {name: routers.get(name).model_rows(targets.scored_as) for name in routers.names}
        # A spend budget per router (runtime/serving/spend.py) when a target cost per request is set.
        self.target_cost, self.spend_window = target_cost, spend_window
        self._spend: dict[str, SpendBudget] = {}
        if target_cost is not None:
            if targets is None:
                raise ConfigurationError("--target-cost holds a spend per request among N targets: give the targets file (--config)")
            SpendBudget(targets, target_cost, spend_window)  # refuses bad settings now, not on a request
        if targets is not None and (budget is not None or self.tenant_budgets):
            raise ConfigurationError(
                "a strong-call budget holds the share of the strong model of two; with N targets, set the "
                "policy's threshold or cost weight (edgeroute calibrate --target-cost) instead of --strong-share"
            )

    # ---------------------------------------------------------------- the strong-call budget
    def budget_settings(self, tenant: str | None = None) -> BudgetSettings | None:
        """The strong-call budget a request of ``tenant`` counts in: the tenant's own, else the server's (None: none)."""
        return self.tenant_budgets.get(tenant, self.budget) if tenant is not None else self.budget

    def budget_for(self, router: Router, tenant: str | None = None) -> StrongShareBudget:
        """``router``'s budget for ``tenant`` (one per router: win rates of different routers are on different
        scales; one per tenant with a share of its own, held on its traffic alone), started from the router's
        calibrated threshold for the target share when the bundle has one."""
        settings = self.budget_settings(tenant)
        if settings is None:
            raise ConfigurationError("no strong-call budget is set (serve --strong-share)")
        owner = tenant if tenant in self.tenant_budgets else None
        with self._lock:
            if (router.name, owner) not in self._budgets:
                try:
                    start = router.threshold_for(settings.target)
                    shares = router.calibrated_shares()
                    floor, ceiling = router.threshold_for(shares[-1]), router.threshold_for(shares[0])
                except EdgerouteError:  # an uncalibrated bundle: its default until the window fills, no clamp
                    start, floor, ceiling = router.default_threshold(), 0.0, 1.0
                budget = self._budgets[(router.name, owner)] = settings.budget(start, floor, ceiling)
                if self.budget_store is not None:
                    scope = "all" if owner is None else f"key={owner}"
                    key = f"edgeroute:budget:{router.name}:{scope}:{settings.target:g}:{settings.window}"
                    self._syncs[(router.name, owner)] = SharedWindowSync(budget, self.budget_store, key).start()
            return self._budgets[(router.name, owner)]

    def budget_store_up(self) -> dict[tuple[str, str | None], bool]:
        """(router name, tenant) -> whether its last exchange with the budget store worked (``serve --budget-store``)."""
        with self._lock:
            return {owner: bool(sync.up) for owner, sync in self._syncs.items()}

    def budget_states(self) -> dict[tuple[str, str | None], BudgetState]:
        """(router name, tenant with a budget of its own or None) -> that budget's state, for ``/metrics``."""
        with self._lock:
            budgets = dict(self._budgets)
        return {owner: budget.state() for owner, budget in budgets.items()}

    def request_threshold(self, router: Router, threshold: Any = None, strong_share: Any = None, tenant: str | None = None) -> float | None:
        """The threshold a request asks for, or None when the budget is to set it (a budget runs for the
        request's tenant and the request names neither a threshold nor a strong share)."""
        if self.budget_settings(tenant) is not None and threshold is None and strong_share is None:
            return None
        if self.targets is not None:  # the pair's calibration says nothing about N targets
            if strong_share is not None:
                raise InvalidInputError("the strong-share form (router-NAME-sPCT, strong_share) needs two targets; give a threshold")
            if threshold is None:
                return None if self.target_cost is not None else self.targets.threshold
            if self.targets.policy != "cheapest_acceptable":
                raise InvalidInputError(f"a threshold sets the cheapest_acceptable rule; these targets choose by {self.targets.policy}")
            return check_threshold(threshold)
        return resolve_threshold(router, threshold, strong_share)

    # ---------------------------------------------------------------- helpers
    def parse(
        self,
        messages: Any,
        router: str | Router | None = None,
        threshold: Any = None,
        strong_share: Any = None,
        tenant: str | None = None,
        limits: ChatLimits | None = None,
        counted: bool = True,
        resolved: bool = False,
    ) -> ParsedChat:
        """A chat request read once: its messages walked (``read_chat``; ``limits`` bound them) and what it asks.
        The router, the text and the threshold are each worked out once, by the decision (``decide_parsed``)."""
        return ParsedChat(read_chat(messages, limits), router, threshold, strong_share, counted, tenant, resolved)

    def _prepare(self, request: ParsedChat, key: str | None) -> _Pending:
        """The router, the text to score and the threshold, in the order their errors are reported."""
        router = request.router
        loaded = router if isinstance(router, Router) else self.routers.get(router or self.routers.default)
        text = request.chat.routing_text(self.route_on, loaded.max_chars)
        if not text.strip():
            raise InvalidPromptError("the message to route on has no text")
        threshold = request.threshold
        if not request.resolved:
            threshold = self.request_threshold(loaded, threshold, request.strong_share, request.tenant)
        return _Pending(loaded, text, threshold, key, time.perf_counter(), request.counted, request.tenant)

    def _decide(self, request: _Pending, win_rate: Any, score_us: float, fallback: str | None) -> Decision:
        router, threshold = request.router, request.threshold
        if self.targets is not None:
            return self._decide_target(request, win_rate, score_us, fallback)
        if fallback is not None or win_rate is None:  # the router was not heard: the default model
            tier = self.default_model
            budget = None if threshold is not None else self.budget_for(router, request.tenant).state()
            shown = threshold if budget is None else budget.threshold
            return Decision(router.name, tier, self.names[tier], win_rate, shown, score_us, fallback, budget)
        return self.scored(router, win_rate, threshold, score_us, request.text, request.counted, request.tenant)

    def _decide_target(self, request: _Pending, scores: Any, score_us: float, fallback: str | None) -> Decision:
        """An N-target decision: the policy's choice from the router's per-model scores, or the default
        (the most capable target for ``default_model='strong'``, else the last) when the router was not heard."""
        targets = self.targets
        assert targets is not None
        if fallback is not None or scores is None:
            rank = 0 if self.default_model == "strong" else len(targets.names) - 1
            return Decision(
                request.router.name, tier_of_rank(rank), targets.names[rank], None, request.threshold, score_us, fallback, rank=rank
            )
        return self.scored_targets(request.router, scores, len(request.text), request.threshold, score_us, request.counted)

    def scored_targets(
        self, router: Router, scores: Any, chars: int, threshold: float | None, score_us: float, counted: bool = True
    ) -> Decision:
        """The N-target decision for a prompt of ``chars`` characters whose per-model ``scores`` ``router`` gave;
        ``threshold`` None with a target cost: the router's spend budget sets the policy (and records the choice)."""
        targets = self.targets
        assert targets is not None
        spend = self.spend_budget(router) if threshold is None and self.target_cost is not None else None
        if spend is not None:
            targets = spend.admit(scores, chars, counted)
        decision = decision_for_targets(router.name, targets, scores, chars, threshold, score_us)
        if spend is None:
            return decision
        if counted:
            spend.spent(decision.cost or 0.0)
        return replace(decision, budget=spend.state())

    def spend_budget(self, router: Router) -> SpendBudget:
        """``router``'s spend budget (one per router: scores of different routers are on different scales)."""
        assert self.targets is not None and self.target_cost is not None
        with self._lock:
            if router.name not in self._spend:
                self._spend[router.name] = SpendBudget(self.targets, self.target_cost, self.spend_window)
            return self._spend[router.name]

    def spend_states(self) -> dict[str, SpendState]:
        """Router name -> its spend budget's state, for ``/metrics``."""
        with self._lock:
            budgets = dict(self._spend)
        return {name: budget.state() for name, budget in budgets.items()}

    def score_fn(self, router: Router) -> Callable[[str], Any]:
        """What scores one prompt for a decision: the pair's win rate, or with N targets each target's score."""
        if self.targets is None:
            return router.strong_win_rate
        rows = self._target_rows[router.name]
        return lambda text: router.model_scores([text], rows)[0]

    def score_targets(self, router: Router, prompts: list[str]) -> Any:
        """``[prompts, targets]`` scores of a batch (N targets)."""
        return router.model_scores(prompts, self._target_rows[router.name])

    def scored(
        self,
        router: Router,
        win_rate: float,
        threshold: float | None,
        score_us: float,
        text: str | None = None,
        counted: bool = True,
        tenant: str | None = None,
    ) -> Decision:
        """The decision for a prompt ``router`` scored, naming this policy's strong and weak models;
        ``threshold`` None: the strong-call budget of the router (and ``tenant``) sets it, and counts this
        prompt when ``counted`` (a repeated ``text`` counts once while it is in the window)."""
        if threshold is not None:
            return decision_for(router.name, win_rate, threshold, score_us, self.names)
        budget = self.budget_for(router, tenant)
        key = None if text is None else hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
        decision = decision_for(router.name, win_rate, budget.admit(win_rate, key, counted), score_us, self.names)
        return replace(decision, budget=budget.state())

    def _begin(self, request: ParsedChat) -> Decision | _Pending:
        """The remembered decision of a sticky conversation, or the request made ready to score."""
        key = self._sticky_key(request) if self.sticky else None
        remembered = None if key is None else self._sticky.get(key)
        if remembered is not None:
            return remembered
        return self._prepare(request, key)

    def _finish(self, pending: _Pending, win_rate: Any, fallback: str | None) -> Decision:
        score_us = (time.perf_counter() - pending.started) * 1e6
        decision = self._decide(pending, win_rate, score_us, fallback)
        if pending.key is not None:
            self._sticky.put(pending.key, decision)
        return decision

    def _sticky_key(self, request: ParsedChat) -> str | None:
        key = request.chat.conversation_key()
        if key is not None and request.tenant is not None:  # one team never sees (nor counts in) another's remembered decisions
            key = f"{request.tenant} {key}"
        return key

    # ---------------------------------------------------------------- decide
    def decide(
        self,
        messages: Any,
        router: str | None = None,
        threshold: float | None = None,
        strong_share: float | None = None,
        *,
        strong_pct: float | None = None,
    ) -> Decision:
        """Decide for one chat request (blocking). Input errors raise ``InvalidInputError``.
        ``strong_pct``: ``strong_share``'s old name, still accepted."""
        return self.decide_parsed(self.parse(messages, router, threshold, old_share_name(strong_share, strong_pct)))

    def decide_parsed(self, request: ParsedChat) -> Decision:
        """``decide`` for a request ``parse`` read."""
        pending = self._begin(request)
        if isinstance(pending, Decision):
            return pending
        return self._finish(pending, *self._score(pending.router, pending.text))

    def _score(self, router: Router, text: str) -> tuple[Any, str | None]:
        """The win rate, or why there is none: in the caller's thread without a budget or for an
        inline router (its budget checked after), else on a pool thread that the budget times out."""
        if self.score_budget_s is None or router.scores_inline:
            return self._score_here(router, text)
        try:
            return self._pool.submit(self.score_fn(router), text).result(self.score_budget_s), None
        except FutureTimeout:
            return None, "score_budget_exceeded"
        except EdgerouteError as exc:
            return None, f"router_error: {type(exc).__name__}"

    def _score_here(self, router: Router, text: str) -> tuple[Any, str | None]:
        started = time.perf_counter()
        try:
            rate = self.score_fn(router)(text)
        except EdgerouteError as exc:
            return None, f"router_error: {type(exc).__name__}"
        if self.score_budget_s is not None and time.perf_counter() - started > self.score_budget_s:
            return None, "score_budget_exceeded"
        return rate, None

    async def adecide(
        self,
        messages: Any,
        router: str | None = None,
        threshold: float | None = None,
        strong_share: float | None = None,
        counted: bool = True,
        tenant: str | None = None,
        *,
        strong_pct: float | None = None,
    ) -> Decision:
        """``decide`` for coroutines: scoring runs on the thread pool, the event loop stays free.
        ``counted``: whether the strong-call budget counts this request (False for decisions-only calls);
        ``tenant``: the caller's API key name (``serve --keys-file``), whose budget counts it."""
        share = old_share_name(strong_share, strong_pct)
        return await self.adecide_parsed(self.parse(messages, router, threshold, share, tenant, counted=counted))

    async def adecide_parsed(self, request: ParsedChat) -> Decision:
        """``adecide`` for a request ``parse`` read.

        A static-table router (``Router.scores_inline``) scores on the loop: tens of microseconds for
        plain text (a few hundred for a full non-ASCII cut), less than the hop to a thread and back.
        Its budget is checked after the fact: past it, the decision falls back as a timed-out one would.
        """
        pending = self._begin(request)
        if isinstance(pending, Decision):
            return pending
        if pending.router.scores_inline:
            return self._finish(pending, *self._score_here(pending.router, pending.text))
        future = asyncio.get_running_loop().run_in_executor(self._pool, self.score_fn(pending.router), pending.text)
        try:
            win_rate, fallback = await asyncio.wait_for(future, timeout=self.score_budget_s), None
        except asyncio.TimeoutError:
            win_rate, fallback = None, "score_budget_exceeded"
        except EdgerouteError as exc:
            win_rate, fallback = None, f"router_error: {type(exc).__name__}"
        return self._finish(pending, win_rate, fallback)

    async def ascore(self, router: Router, prompts: list[str]) -> Any:
        """``router.strong_win_rates(prompts)`` (with N targets: ``score_targets``) from a coroutine: on the policy's
        thread pool, or on the loop for one prompt of a router that scores inline (a batch could hold the loop for ms)."""
        score = router.strong_win_rates if self.targets is None else partial(self.score_targets, router)
        if router.scores_inline and len(prompts) == 1:
            return score(prompts)
        return await asyncio.get_running_loop().run_in_executor(self._pool, score, prompts)

    def close(self) -> None:
        """Stop the scoring threads and the budget store's."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            syncs = list(self._syncs.values())
        for sync in syncs:
            sync.stop()
