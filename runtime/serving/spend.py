"""A spend budget held on live traffic: the strong-call budget generalized to N targets with costs.

``serve --config targets.toml --target-cost USD`` keeps the average estimated cost per request near
``USD``: the budget keeps the router's per-target scores and the prompt lengths of the last ``window``
requests and, every ``every`` requests, sets the policy's threshold (cheapest acceptable) or cost
weight (quality per cost) to the value whose choices on that window average the target cost
(``calibrate_for_cost``, the same rule as ``edgeroute calibrate --target-cost``). Until ``MIN_OBSERVATIONS``
requests arrived it keeps the targets file's setting. Thread-safe; one per router (scores of
different routers are on different scales); per process.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import replace

import numpy as np

from edgeroute.runtime.errors import ConfigurationError, InvalidInputError
from edgeroute.runtime.scoring.decision import SpendState
from edgeroute.runtime.scoring.targets import Targets, calibrate_for_cost

MIN_OBSERVATIONS = 50
RECALIBRATE_EVERY = 50


class SpendBudget:
    """Keeps the average estimated USD per request near ``target_cost`` by re-setting the policy on a sliding window."""

    def __init__(
        self, targets: Targets, target_cost: float, window: int = 1000, every: int = RECALIBRATE_EVERY, background: bool = True
    ) -> None:
        if isinstance(target_cost, bool) or not isinstance(target_cost, (int, float)) or not math.isfinite(target_cost) or target_cost <= 0:
            raise InvalidInputError(f"target cost must be a positive number of USD per request, got {target_cost!r}")
        if isinstance(window, bool) or not isinstance(window, int) or window < MIN_OBSERVATIONS:
            raise InvalidInputError(f"budget window must be an integer of at least {MIN_OBSERVATIONS}, got {window!r}")
        self.targets, self.target_cost, self.window, self.every = targets, float(target_cost), window, every
        self._key = "threshold" if targets.policy == "cheapest_acceptable" else "cost_weight"
        self._tuned = targets
        self._scores: deque[np.ndarray] = deque(maxlen=window)
        self._chars: deque[float] = deque(maxlen=window)
        self._spent: deque[float] = deque(maxlen=window)
        self._since = 0
        self._lock = threading.Lock()
        # A re-fit takes milliseconds to tenths of a second (64 targets): off the caller's thread (a server's
        # event loop), one at a time, on a copy of the window; ``background=False`` re-fits in place (replays).
        self.background, self._fitting = background, False

    @property
    def setting(self) -> float:
        """The threshold or cost weight the policy applies now."""
        return float(getattr(self._tuned, self._key))

    def admit(self, scores: np.ndarray, chars: int, counted: bool = True) -> Targets:
        """The targets (with the current setting) to decide a request with; its scores and length join the window
        when it is ``counted`` (decisions-only calls are not)."""
        with self._lock:
            if not counted:
                return self._tuned
            self._scores.append(np.asarray(scores, dtype=np.float64))
            self._chars.append(float(chars))
            self._since += 1
            due = len(self._scores) >= MIN_OBSERVATIONS and self._since >= self.every and not self._fitting
            if due:
                self._since, self._fitting = 0, True
                window = (np.stack(self._scores), np.fromiter(self._chars, dtype=np.float64))
            tuned = self._tuned
        if due:
            if self.background:
                threading.Thread(target=self._refit, args=window, name="edgeroute-spend-fit", daemon=True).start()
            else:
                self._refit(*window)
                tuned = self._tuned
        return tuned

    def spent(self, cost: float) -> None:
        """Record the chosen target's estimated cost (what the observed average is made of)."""
        with self._lock:
            self._spent.append(cost)

    def _refit(self, scores: np.ndarray, chars: np.ndarray) -> None:
        try:
            setting = calibrate_for_cost(self.targets, scores, chars, self.target_cost)
        except ConfigurationError:  # the target is below the cheapest possible on this window: spend the least
            setting = 1.0 if self._key == "threshold" else 1e15
        tuned = replace(self.targets, **{self._key: setting})
        with self._lock:
            self._tuned, self._fitting = tuned, False

    def state(self) -> SpendState:
        """The budget as the decision and ``/metrics`` report it."""
        with self._lock:
            observed = float(np.mean(self._spent)) if self._spent else 0.0
            return SpendState(self.target_cost, observed, self.setting, len(self._scores))
