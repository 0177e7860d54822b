"""Targets as data and the N-model policies (runtime/scoring/targets.py), on a router whose every score is known."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from edgeroute.runtime import Router
from edgeroute.runtime.errors import ConfigurationError, UnknownModelError
from edgeroute.runtime.evaluation.targets import calibrate_cost, quality_cost_curve
from edgeroute.runtime.scoring.decision import is_strong
from edgeroute.runtime.scoring.targets import Target, Targets, calibrate_for_cost, load_targets, targets_from_mapping
from nmodel import NAMES, make_n_model_bundle, synthetic_rows

pytestmark = pytest.mark.runtime_only

PROMPTS = [
    "hi",
    "What is 2 + 2?",
    "Prove that there are infinitely many primes.",
    "Write a haiku about autumn leaves.",
    "Explain the difference between TCP and UDP in detail, with examples of where each is used.",
    "Translate 'good morning' into French.",
    "Derive the closed form of the sum of the first n squares and prove it by induction.",
    "List three fruits.",
]
PRICED = Targets(
    (Target("large-llm", input_cost=10.0, output_cost=30.0), Target("medium-llm", input_cost=1.0, output_cost=2.0), Target("small-llm")),
    output_tokens=100,
)


@pytest.fixture(scope="module")
def n_model_router(tmp_path_factory) -> Router:
    folder = make_n_model_bundle(tmp_path_factory.mktemp("nmodel") / "three-models", synthetic_rows(scale=40.0))
    return Router.load(folder)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def test_two_targets_decide_exactly_as_routellms_rule():
    rng = np.random.default_rng(0)
    scores = rng.normal(scale=3.0, size=(5000, 2))
    win_rates = _sigmoid(scores[:, 0] - scores[:, 1])
    for threshold in (0.0, 0.1, 0.3, 0.5, 0.7, 0.95, 1.0, float(win_rates[17])):
        chosen = Targets.pair("strong", "weak").choose_many(scores, np.full(len(scores), 100), threshold=threshold)
        assert ((chosen == 0) == is_strong(win_rates, threshold)).all(), threshold


def test_cheapest_acceptable_takes_the_cheapest_target_the_most_capable_does_not_beat_by_the_threshold():
    # P(large beats medium) = sigmoid(1) = 0.73, P(large beats small) = sigmoid(3) = 0.95
    scores = [0.0, -1.0, -3.0]
    assert PRICED.choose(scores, 400, threshold=0.96).index == 2
    assert PRICED.choose(scores, 400, threshold=0.9).index == 1
    assert PRICED.choose(scores, 400, threshold=0.5).index == 0
    choice = PRICED.choose(scores, 400, threshold=0.9)
    assert choice.quality == pytest.approx((0.5, _sigmoid(-1.0), _sigmoid(-3.0)))
    assert choice.cost == pytest.approx((400 / 4 * 1.0 + 100 * 2.0) / 1e6)
    assert choice.top_win_rate == pytest.approx(_sigmoid(3.0))


def test_quality_per_cost_trades_predicted_quality_against_price():
    targets = Targets(PRICED.targets, policy="quality_per_cost", output_tokens=100)
    scores = [0.0, -0.2, -3.0]  # medium nearly as good as large, small far worse
    costs = targets.costs(400)[0]
    assert targets.choose(scores, 400).index == 0  # weight 0: the best predicted quality
    value = [q - 500.0 * c for q, c in zip(_sigmoid(np.array(scores)), costs)]
    assert targets.choose_many(np.array([scores]), [400], cost_weight=500.0)[0] == int(np.argmax(value)) == 1
    assert targets.choose_many(np.array([scores]), [400], cost_weight=1e6)[0] == 2


def test_fallback_goes_down_the_order_and_wraps():
    assert PRICED.fallback_order(0) == [1, 2]
    assert PRICED.fallback_order(1) == [2, 0]
    assert Targets.pair("s", "w").fallback_order(1) == [0]


@pytest.mark.parametrize("policy", ["cheapest_acceptable", "quality_per_cost"])
def test_calibration_meets_a_target_cost(policy):
    rng = np.random.default_rng(1)
    scores, chars = rng.normal(scale=2.0, size=(3000, 3)), rng.integers(20, 2000, size=3000)
    targets = Targets(PRICED.targets, policy=policy, output_tokens=100)
    costs = targets.costs(chars)
    wanted = float(costs.min(axis=1).mean() + 0.3 * (costs.max(axis=1).mean() - costs.min(axis=1).mean()))
    setting = calibrate_for_cost(targets, scores, chars, wanted)
    key = "threshold" if policy == "cheapest_acceptable" else "cost_weight"
    spent = targets.mean_cost(scores, chars, **{key: setting})
    assert spent <= wanted and spent > 0.9 * wanted
    with pytest.raises(ConfigurationError, match="below the cheapest possible"):
        calibrate_for_cost(targets, scores, chars, -1.0)


def test_targets_file_round_trip_and_errors(tmp_path: Path):
    path = tmp_path / "targets.toml"
    path.write_text(
        'policy = "quality_per_cost"\ncost_weight = 20.0\noutput_tokens = 300\n'
        '[[target]]\nname = "gpt-4o"\nbase_url = "http://127.0.0.1:9001/v1"\ninput_cost = 2.5\noutput_cost = 10\n'
        '[[target]]\nname = "mixtral"\nrouter_model = "mixtral-8x7b-instruct-v0.1"\ninput_cost = 0.6\noutput_cost = 0.6\n'
    )
    targets = load_targets(path)
    assert targets.names == ["gpt-4o", "mixtral"] and targets.scored_as == ["gpt-4o", "mixtral-8x7b-instruct-v0.1"]
    assert (targets.policy, targets.cost_weight, targets.output_tokens) == ("quality_per_cost", 20.0, 300)
    with pytest.raises(ConfigurationError) as caught:
        targets_from_mapping({"target": [{"name": "a"}]}, "t.toml")
    assert str(caught.value) == "t.toml: give 2 to 64 targets, most capable first (got 1)"
    with pytest.raises(ConfigurationError) as caught:
        targets_from_mapping({"target": [{"name": "a"}, {"name": "b", "input_cost": -1}]}, "t.toml")
    assert str(caught.value) == "t.toml: target 'b': input_cost must be a non-negative number of USD per million tokens"
    with pytest.raises(ConfigurationError) as caught:
        targets_from_mapping({"polcy": "x", "target": []}, "t.toml")
    assert (
        str(caught.value)
        == "t.toml: unknown keys ['polcy']; the keys are ['policy', 'threshold', 'cost_weight', 'output_tokens', 'target']"
    )
    with pytest.raises(ConfigurationError, match="policy must be one of"):
        targets_from_mapping({"policy": "fastest", "target": [{"name": "a"}, {"name": "b"}]}, "t.toml")
    path.write_text("[[target]\n")
    with pytest.raises(ConfigurationError, match="not a TOML targets file"):
        load_targets(path)


def test_router_scores_every_model_exactly(n_model_router):
    rows = n_model_router.model_rows(list(NAMES))
    scores = n_model_router.model_scores(PROMPTS, rows)
    embeddings = n_model_router.embed(PROMPTS)
    expected = embeddings.astype(np.float64) @ np.load(n_model_router.manifest.folder / "head.npy").astype(np.float64).T
    assert scores.shape == (len(PROMPTS), 3) and np.allclose(scores, expected, atol=1e-5)
    # The pair's win rate is the same sigmoid of a score difference.
    assert np.allclose(_sigmoid(scores[:, 0] - scores[:, 2]), n_model_router.strong_win_rates(PROMPTS), atol=1e-6)
    with pytest.raises(UnknownModelError, match="model 'gpt-5' is not in this MF router's 3 models"):
        n_model_router.model_rows(["gpt-5"])


def test_a_router_that_predicts_one_pair_refuses_n_targets():
    router = Router.load("static-distilled-gpt4-mixtral")
    with pytest.raises(ConfigurationError) as caught:
        router.model_rows(["gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1"])
    assert str(caught.value) == (
        f"{router.manifest.folder}: this router predicts one pair (strong 'gpt-4-1106-preview' vs weak "
        "'mistralai/Mixtral-8x7B-Instruct-v0.1'), not a score per model; route among N targets with an MF router "
        "(edgeroute export mf), or configure two targets"
    )


def test_the_quality_cost_curve_on_a_synthetic_benchmark_where_the_best_choice_is_known(n_model_router):
    """Each target answers a prompt correctly with the probability its score says (sigmoid of its score), so the
    router knows the truth: at the same spend it must beat random and prompt length."""
    rng = np.random.default_rng(3)
    prompts = [
        f"{p} (variant {i}: {' '.join(rng.choice(['why', 'how', 'list', 'prove', 'poem', 'sum', 'code'], 3))})"
        for i, p in enumerate(PROMPTS * 60)
    ]
    scores = n_model_router.model_scores(prompts, n_model_router.model_rows(list(NAMES)))
    order = np.argsort(-scores.mean(axis=0))  # most capable first, as the targets file must list them
    targets = Targets(
        tuple(Target(NAMES[i], input_cost=cost, output_cost=cost) for i, cost in zip(order, (10.0, 3.0, 0.5))), output_tokens=200
    )
    correct = (rng.random(scores.shape) < _sigmoid(scores[:, order])).astype(float)
    curve = quality_cost_curve(n_model_router, targets, prompts, correct)
    middle = [
        p
        for p in curve["points"]
        if 0.2
        < (p["mean_cost"] - curve["points"][-1]["mean_cost"]) / (curve["points"][0]["mean_cost"] - curve["points"][-1]["mean_cost"] + 1e-12)
        < 0.8
    ]
    assert middle, "no curve points between the cheapest and the dearest spend"
    gain = np.mean([p["accuracy"] - p["random"] for p in middle])
    assert gain > 0.02 and np.mean([p["accuracy"] - p["length"] for p in middle]) > 0.0
    result = calibrate_cost(n_model_router, targets, prompts, target_cost=float(np.mean([p["mean_cost"] for p in middle])))
    assert result["mean_cost_usd"] <= result["target_cost_usd"] and math.isclose(sum(result["shares"].values()), 1.0)


def test_the_spend_budget_holds_the_average_cost_through_a_shift_in_traffic():
    from edgeroute.runtime.serving.spend import SpendBudget

    rng = np.random.default_rng(4)
    easy = rng.normal(scale=1.5, size=(3000, 3)) - [0.0, 0.5, 1.0]
    hard = rng.normal(scale=1.5, size=(3000, 3)) - [0.0, 2.0, 4.0]  # the cheap targets fall behind: a fixed setting spends more
    chars = rng.integers(50, 1500, size=6000)
    wanted = 0.0015
    fixed = Targets(PRICED.targets, threshold=calibrate_for_cost(PRICED, easy, chars[:3000], wanted), output_tokens=100)
    budget = SpendBudget(PRICED, wanted, window=1000, background=False)
    spent = []
    for row, length in zip(np.concatenate([easy, hard]), chars):
        choice = budget.admit(row, int(length)).choose(row, int(length))
        budget.spent(choice.cost)
        spent.append(choice.cost)
    drifted = fixed.mean_cost(hard, chars[3000:])
    assert drifted > 1.3 * wanted  # without the budget the shift costs more
    assert abs(np.mean(spent[-1500:]) - wanted) < 0.1 * wanted
    state = budget.state()
    assert state.target_usd == wanted and state.window == 1000 and abs(state.observed_usd - wanted) < 0.15 * wanted


def test_router_route_targets_gives_the_n_target_decision(n_model_router):
    targets = Targets(PRICED.targets, threshold=0.7, output_tokens=100)
    for prompt in PROMPTS:
        decision = n_model_router.route_targets(prompt, targets)
        row = n_model_router.model_scores([prompt], n_model_router.model_rows(targets.scored_as))[0]
        choice = targets.choose(row, len(prompt))
        assert (decision.rank, decision.model, decision.cost) == (choice.index, targets.names[choice.index], choice.cost)
        assert decision.tier == ("strong" if choice.index == 0 else "weak") and decision.threshold == 0.7
        assert set(decision.to_dict()) == {
            "router",
            "tier",
            "model",
            "win_rate",
            "threshold",
            "score_us",
            "fallback",
            "budget",
            "rank",
            "cost",
            "candidates",
        }
    from edgeroute.runtime.errors import InvalidThresholdError

    with pytest.raises(InvalidThresholdError):
        n_model_router.route_targets("hi", targets, threshold=1.5)
