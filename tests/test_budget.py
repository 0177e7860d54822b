"""The strong-call budget: the threshold follows a running quantile of recent win rates."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from edgeroute.runtime import InvalidInputError
from edgeroute.runtime.serving.budget import MIN_OBSERVATIONS, BudgetSettings, StrongShareBudget

pytestmark = pytest.mark.runtime_only


def _share(budget: StrongShareBudget, rates: np.ndarray) -> float:
    return float(np.mean([rate >= budget.admit(float(rate)) for rate in rates]))


def test_share_follows_the_target_through_a_shift():
    rng = np.random.default_rng(0)
    budget = StrongShareBudget(0.3, start_threshold=0.5, window=500)
    assert abs(_share(budget, rng.uniform(0.0, 1.0, 3000)) - 0.3) < 0.03
    # Traffic turns easy (win rates fall): a fixed 0.5 threshold would send 0%; the budget re-adapts.
    easy = rng.uniform(0.0, 0.4, 3000)
    _share(budget, easy[:1000])  # the window turns over
    assert abs(_share(budget, easy[1000:]) - 0.3) < 0.03
    state = budget.state()
    assert state.target == 0.3 and state.window == 500 and abs(state.observed_share - 0.3) < 0.05
    assert 0.2 < state.threshold < 0.35


def test_start_threshold_until_the_window_has_enough_and_clamps():
    budget = StrongShareBudget(0.5, start_threshold=0.9, window=100, floor=0.2, ceiling=0.6)
    assert budget.threshold() == 0.6  # the start threshold is clamped too
    for _ in range(MIN_OBSERVATIONS - 1):
        assert budget.admit(0.01) == 0.6
    budget.admit(0.01)
    assert budget.threshold() == 0.2  # the window's median is 0.01, the floor holds


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"target": 0.0}, "strong share must be a number strictly between 0 and 1, got 0.0"),
        ({"target": 1.5}, "strong share must be a number strictly between 0 and 1, got 1.5"),
        ({"window": 10}, f"budget window must be an integer of at least {MIN_OBSERVATIONS}, got 10"),
        ({"floor": 0.7, "ceiling": 0.6}, "threshold floor and ceiling must satisfy 0 <= floor <= ceiling <= 1, got 0.7 and 0.6"),
        ({"drift_probe": 10}, f"budget drift probe must be 0 (off) or an integer of at least {MIN_OBSERVATIONS}, got 10"),
    ],
)
def test_bad_budget_settings_are_refused_with_a_clear_message(arguments, message):
    with pytest.raises(InvalidInputError) as caught:
        StrongShareBudget(**{"target": 0.3, "start_threshold": 0.5, **arguments})
    assert str(caught.value) == message


def test_window_stays_bounded_and_consistent_under_threads():
    budget = StrongShareBudget(0.3, start_threshold=0.5, window=200)
    rng = np.random.default_rng(1)
    rates = rng.uniform(0, 1, (4, 2000))
    threads = [threading.Thread(target=lambda r=row: [budget.admit(float(x)) for x in r]) for row in rates]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert budget.state().window == 200
    assert budget._sorted == sorted(rate for rate, _, _ in budget._recent)


def _recovery(strong: np.ndarray, shift: int, target: float = 0.3) -> int | None:
    """Requests after ``shift`` until the share of the last 100 is first within 0.05 of the target."""
    return next((k for k in range(100, len(strong) - shift) if abs(strong[shift + k - 100 : shift + k].mean() - target) <= 0.05), None)


def _replay(budget: StrongShareBudget, rates: np.ndarray) -> np.ndarray:
    return np.array([rate >= budget.admit(float(rate)) for rate in rates])


def test_a_real_shift_is_tracked_within_300_requests_not_a_window():
    """Drift resets: after the mix shifts (twice), the share is back near the target within 300 requests; the
    pure sliding window (drift_probe=0) needs most of its 1,000-request window."""
    rng = np.random.default_rng(3)
    stream = np.concatenate([rng.beta(2, 6, 1500), rng.beta(2, 12, 1500), rng.beta(4, 5, 1500)])
    tracked = _replay(StrongShareBudget(0.3, 0.3, window=1000), stream)
    sliding = _replay(StrongShareBudget(0.3, 0.3, window=1000, drift_probe=0), stream)
    for shift in (1500, 3000):
        assert _recovery(tracked, shift) <= 300, shift
        assert _recovery(sliding, shift) > 600, shift


def test_steady_traffic_keeps_the_long_window():
    """On a stationary stream resets are rare and the share is as steady as with the pure sliding window."""
    stream = np.random.default_rng(4).beta(2, 6, 20000)
    tracked_budget = StrongShareBudget(0.3, 0.3, window=1000)
    tracked, sliding = _replay(tracked_budget, stream), _replay(StrongShareBudget(0.3, 0.3, window=1000, drift_probe=0), stream)
    assert tracked_budget.resets <= 1 and tracked_budget.state().resets == tracked_budget.resets

    def deviation(strong: np.ndarray) -> float:
        return float(np.abs(np.convolve(strong, np.ones(250) / 250, mode="valid")[1000:] - 0.3).mean())

    assert deviation(tracked) <= deviation(sliding) + 0.005


def test_drift_probe_is_part_of_the_settings_and_capped_by_the_window():
    budget = BudgetSettings(0.3, window=60).budget(0.5)
    assert budget._probe_size == 60
    assert BudgetSettings(0.3, drift_probe=0).budget(0.5)._probe_size == 0
