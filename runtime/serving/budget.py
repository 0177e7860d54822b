"""A strong-call budget held on live traffic: the threshold follows a running quantile of recent win rates.

A threshold calibrated once keeps its share of strong calls only while traffic looks like the
calibration prompts; when the mix drifts (harder prompts arrive), the share drifts with it. The
budget instead keeps the last ``window`` win rates and sets the threshold so that a share
``target`` of them would have gone to the strong model: the ``1 - target`` quantile of the window,
clamped to ``[floor, ceiling]`` so that a burst of odd traffic cannot send everything one way.

A long window holds the share steadily but forgets a real shift slowly (a whole window: about
1,000 requests). So the budget also watches its last ``drift_probe`` decisions: when their strong
share strays from the target by more than ``DRIFT_SIGMAS`` binomial standard deviations, the mix
has moved, and the window drops all but its newest ``MIN_OBSERVATIONS`` win rates (a reset).
In steady traffic that test almost never fires, so the long window's low noise is kept
(``benchmarks/results/budget.md``).

State is per process (per server replica) unless a store shares it (``budget_store.py``, ``serve
--budget-store``): then the threshold is the quantile of the one window every replica writes to.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import deque
from dataclasses import dataclass

from edgeroute.runtime.scoring.decision import BudgetState, is_strong, threshold_for_share
from edgeroute.runtime.errors import InvalidInputError

DEFAULT_WINDOW = 1000
# Below this many observations the window's quantile is too coarse; the start threshold is used.
MIN_OBSERVATIONS = 50
DEFAULT_DRIFT_PROBE = 100
# Four standard deviations: about one false reset per 100,000 requests of steady synthetic traffic (three gave 23),
# and a real shift is still caught within about 100 requests; a false one costs only a shorter window for a while.
DRIFT_SIGMAS = 4.0


@dataclass(frozen=True)
class BudgetSettings:
    """``serve --strong-share``: the target share, the window, and the threshold's floor and ceiling."""

    target: float
    window: int = DEFAULT_WINDOW
    # None: the bundle's calibrated thresholds for 90% and 10% strong calls (0 and 1 for an uncalibrated one),
    # so that no burst of odd traffic can push the share past the calibrated range.
    floor: float | None = None
    ceiling: float | None = None
    # Whether /v1/route calls (decisions only, no LLM call) enter the window; a batch counts at most this many.
    count_route_calls: bool = False
    batch_weight: int = 8
    # Decisions the drift test looks at (0: never reset the window, a pure sliding quantile).
    drift_probe: int = DEFAULT_DRIFT_PROBE

    def budget(self, start_threshold: float, floor: float = 0.0, ceiling: float = 1.0) -> StrongShareBudget:
        """A budget with these settings, starting from ``start_threshold``; ``floor``/``ceiling`` stand in for unset
        ones. Bad settings raise ``InvalidInputError``."""
        low = floor if self.floor is None else self.floor
        high = ceiling if self.ceiling is None else self.ceiling
        return StrongShareBudget(self.target, start_threshold, self.window, low, high, self.drift_probe)


class StrongShareBudget:
    """Keeps the share of strong calls near ``target`` (thread-safe; O(window) per call, ~µs at 1,000)."""

    def __init__(
        self,
        target: float,
        start_threshold: float,
        window: int = DEFAULT_WINDOW,
        floor: float = 0.0,
        ceiling: float = 1.0,
        drift_probe: int = DEFAULT_DRIFT_PROBE,
    ) -> None:
        if not (isinstance(target, (int, float)) and 0.0 < target < 1.0):
            raise InvalidInputError(f"strong share must be a number strictly between 0 and 1, got {target!r}")
        if not (isinstance(window, int) and window >= MIN_OBSERVATIONS):
            raise InvalidInputError(f"budget window must be an integer of at least {MIN_OBSERVATIONS}, got {window!r}")
        if not (0.0 <= floor <= ceiling <= 1.0):
            raise InvalidInputError(f"threshold floor and ceiling must satisfy 0 <= floor <= ceiling <= 1, got {floor!r} and {ceiling!r}")
        if not (isinstance(drift_probe, int) and (drift_probe == 0 or drift_probe >= MIN_OBSERVATIONS)):
            raise InvalidInputError(f"budget drift probe must be 0 (off) or an integer of at least {MIN_OBSERVATIONS}, got {drift_probe!r}")
        drift_probe = min(drift_probe, window)
        self.target, self.floor, self.ceiling = float(target), float(floor), float(ceiling)
        self._probe: deque[bool] = deque()  # the newest counted decisions, for the drift test
        self._probe_size, self._probe_strong = drift_probe, 0
        self._drift_bound = DRIFT_SIGMAS * math.sqrt(self.target * (1.0 - self.target) / max(drift_probe, 1))
        self.resets = 0
        # Shared mode (budget_store.SharedWindowSync): admitted entries wait here for the next exchange, and the
        # threshold comes from the shared window last read.
        self._sharing = False  # set by SharedWindowSync before the first admit
        self._pending: deque[tuple[float, bool]] = deque(maxlen=window)
        self._pending_keep: int | None = None
        self._shared_sorted: list[float] | None = None
        self._shared_strong = 0
        self._shared_checked_from = drift_probe  # shared entries needed before the next drift test
        self._start = min(max(float(start_threshold), self.floor), self.ceiling)
        self._window = window
        self._recent: deque[tuple[float, bool, str | None]] = deque()  # (win rate, sent strong, prompt key), oldest first
        self._keys: dict[str, int] = {}  # prompt keys in the window: a repeated prompt counts once
        self._sorted: list[float] = []
        self._n_strong = 0  # strong decisions in the window, kept as it moves (state() is on the request path)
        self._lock = threading.Lock()

    def threshold(self) -> float:
        """The threshold the next prompt will meet."""
        with self._lock:
            return self._threshold()

    @property
    def window_size(self) -> int:
        return self._window

    def _threshold(self) -> float:
        shared = self._shared_sorted
        values = shared if shared is not None and len(shared) >= MIN_OBSERVATIONS else self._sorted
        count = len(values)
        if count < MIN_OBSERVATIONS:
            return self._start
        return min(max(threshold_for_share(values, self.target), self.floor), self.ceiling)

    def admit(self, win_rate: float, key: str | None = None, counted: bool = True) -> float:
        """The threshold for this prompt (decided before it joins the window); then record it, unless it is not
        ``counted`` or its ``key`` (a hash of the prompt) is in the window already."""
        with self._lock:
            threshold = self._threshold()
            if not counted or (key is not None and key in self._keys):
                return threshold
            if len(self._recent) == self._window:
                self._forget_oldest()
            strong = bool(is_strong(win_rate, threshold))
            self._recent.append((win_rate, strong, key))
            bisect.insort(self._sorted, win_rate)
            self._n_strong += strong
            if key is not None:
                self._keys[key] = self._keys.get(key, 0) + 1
            if self._sharing:  # the shared window's drift test runs on the whole application's decisions instead
                self._pending.append((win_rate, strong))
            elif self._probe_size:
                self._watch_drift(strong)
            return threshold

    def _strays(self, share: float) -> bool:
        """The drift test: a probe's strong share further from the target than chance allows."""
        return abs(share - self.target) > self._drift_bound

    def _watch_drift(self, strong: bool) -> None:
        self._probe.append(strong)
        self._probe_strong += strong
        if len(self._probe) > self._probe_size:
            self._probe_strong -= self._probe.popleft()
        if len(self._probe) == self._probe_size and self._strays(self._probe_strong / self._probe_size):
            while len(self._recent) > MIN_OBSERVATIONS:
                self._forget_oldest()
            self._probe.clear()  # decisions taken under the old threshold say nothing about the new one
            self._probe_strong = 0
            self.resets += 1

    def _forget_oldest(self) -> None:
        oldest, was_strong, key = self._recent.popleft()
        del self._sorted[bisect.bisect_left(self._sorted, oldest)]
        self._n_strong -= was_strong
        if key is not None:
            self._keys[key] -= 1
            if not self._keys[key]:
                del self._keys[key]

    def share(self) -> None:
        """Shared mode from now on (``budget_store.SharedWindowSync``): admitted entries wait for the next exchange."""
        with self._lock:
            self._sharing = True

    def take_pending(self) -> tuple[list[tuple[float, bool]], int | None]:
        """Shared mode: the entries admitted since the last exchange, and how many the shared window is to keep
        after a drift reset (None: its whole length); both cleared."""
        with self._lock:
            entries, keep = list(self._pending), self._pending_keep
            self._pending.clear()
            self._pending_keep = None
            return entries, keep

    def use_shared(self, entries: list[tuple[float, bool]]) -> None:
        """Shared mode: the window every replica writes to, as last read; the threshold comes from it. The drift
        test runs on its newest decisions (one replica's own share may stray by design: its slice of traffic
        differs from the whole)."""
        with self._lock:
            if self._shared_drifted(entries):
                entries = entries[-MIN_OBSERVATIONS:]
            self._shared_sorted = sorted(rate for rate, _ in entries)
            self._shared_strong = sum(strong for _, strong in entries)

    def _shared_drifted(self, entries: list[tuple[float, bool]]) -> bool:
        probe = self._probe_size
        if not probe or len(entries) < self._shared_checked_from:
            return False
        if not self._strays(sum(strong for _, strong in entries[-probe:]) / probe):
            self._shared_checked_from = probe
            return False
        self.resets += 1
        self._pending_keep = MIN_OBSERVATIONS  # the store cuts the shared window at the next exchange
        # Then waits for a probe of decisions taken after the cut (as many as the window can hold).
        self._shared_checked_from = min(MIN_OBSERVATIONS + probe, self._window)
        return True

    def state(self) -> BudgetState:
        """A consistent snapshot for ``/metrics`` and decisions (of the shared window, in shared mode)."""
        with self._lock:
            if self._shared_sorted is not None and self._shared_sorted:
                count = len(self._shared_sorted)
                return BudgetState(self.target, self._shared_strong / count, self._threshold(), count, self.resets)
            share = self._n_strong / len(self._recent) if self._recent else 0.0
            return BudgetState(self.target, share, self._threshold(), len(self._recent), self.resets)
