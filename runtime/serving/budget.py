"""A strong-call budget held on live traffic: the threshold follows a running quantile of recent win rates.

A threshold calibrated once keeps its share of strong calls only while traffic looks like the
calibration prompts; when the mix drifts (harder prompts arrive), the share drifts with it. The
budget instead keeps the last ``window`` win rates and sets the threshold so that a share
``target`` of them would have gone to the strong model: the ``1 - target`` quantile of the window,
clamped to ``[floor, ceiling]`` so that a burst of odd traffic cannot send everything one way.

State is per process (per server replica): each replica holds its own window, which for a
quantile of a shared traffic stream converges to the same threshold.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import deque
from dataclasses import dataclass

from edgeroute.runtime.scoring.decision import BudgetState, is_strong
from edgeroute.runtime.errors import InvalidInputError

DEFAULT_WINDOW = 1000
# Below this many observations the window's quantile is too coarse; the start threshold is used.
MIN_OBSERVATIONS = 50


@dataclass(frozen=True)
class BudgetSettings:
    """``serve --strong-share``: the target share, the window, and the threshold's floor and ceiling."""

    target: float
    window: int = DEFAULT_WINDOW
    floor: float = 0.0
    ceiling: float = 1.0

    def budget(self, start_threshold: float) -> StrongShareBudget:
        """A budget with these settings, starting from ``start_threshold``; bad settings raise ``InvalidInputError``."""
        return StrongShareBudget(self.target, start_threshold, self.window, self.floor, self.ceiling)


class StrongShareBudget:
    """Keeps the share of strong calls near ``target`` (thread-safe; O(window) per call, ~µs at 1,000)."""

    def __init__(
        self, target: float, start_threshold: float, window: int = DEFAULT_WINDOW, floor: float = 0.0, ceiling: float = 1.0
    ) -> None:
        if not (isinstance(target, (int, float)) and 0.0 < target < 1.0):
            raise InvalidInputError(f"strong share must be a number strictly between 0 and 1, got {target!r}")
        if not (isinstance(window, int) and window >= MIN_OBSERVATIONS):
            raise InvalidInputError(f"budget window must be an integer of at least {MIN_OBSERVATIONS}, got {window!r}")
        if not (0.0 <= floor <= ceiling <= 1.0):
            raise InvalidInputError(f"threshold floor and ceiling must satisfy 0 <= floor <= ceiling <= 1, got {floor!r} and {ceiling!r}")
        self.target, self.floor, self.ceiling = float(target), float(floor), float(ceiling)
        self._start = min(max(float(start_threshold), self.floor), self.ceiling)
        self._window = window
        self._recent: deque[tuple[float, bool]] = deque()  # (win rate, sent strong), oldest first
        self._sorted: list[float] = []
        self._n_strong = 0  # strong decisions in the window, kept as it moves (state() is on the request path)
        self._lock = threading.Lock()

    def threshold(self) -> float:
        """The threshold the next prompt will meet."""
        with self._lock:
            return self._threshold()

    def _threshold(self) -> float:
        count = len(self._sorted)
        if count < MIN_OBSERVATIONS:
            return self._start
        # The smallest window value with at most `target` of the window at or above it.
        rank = min(count - 1, max(0, math.ceil((1.0 - self.target) * count)))
        return min(max(self._sorted[rank], self.floor), self.ceiling)

    def admit(self, win_rate: float) -> float:
        """The threshold for this prompt (decided before it joins the window); then record it."""
        with self._lock:
            threshold = self._threshold()
            if len(self._recent) == self._window:
                oldest, was_strong = self._recent.popleft()
                del self._sorted[bisect.bisect_left(self._sorted, oldest)]
                self._n_strong -= was_strong
            strong = bool(is_strong(win_rate, threshold))
            self._recent.append((win_rate, strong))
            bisect.insort(self._sorted, win_rate)
            self._n_strong += strong
            return threshold

    def state(self) -> BudgetState:
        """A consistent snapshot for ``/metrics`` and decisions."""
        with self._lock:
            share = self._n_strong / len(self._recent) if self._recent else 0.0
            return BudgetState(self.target, share, self._threshold(), len(self._recent))
