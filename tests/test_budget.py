"""The strong-call budget: the threshold follows a running quantile of recent win rates."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from edgeroute.runtime import InvalidInputError
from edgeroute.runtime.serving.budget import MIN_OBSERVATIONS, StrongShareBudget

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
