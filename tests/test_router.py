"""Runtime scoring: win rates, batching, routing rule, pair selection, devices and precisions."""

from __future__ import annotations

import numpy as np
import pytest

from edgeroute.runtime import (
    ConfigurationError,
    InvalidInputError,
    PrecisionUnavailableError,
    ProviderUnavailableError,
    Router,
    UnknownModelError,
)

PROMPTS = ["hi", "Prove that the square root of two is irrational.", "What is the capital of France?", "Write a quicksort in Rust " * 10]


@pytest.fixture(scope="module")
def bert_router(bert_bundle):
    return Router.load(bert_bundle)


def test_defaults_to_int8_on_cpu(bert_router):
    assert (bert_router.precision, bert_router.device, bert_router.kind) == ("int8", "cpu", "bert")


def test_win_rates_are_probabilities_and_batch_matches_single(bert_router, mf_bundle):
    for router in (bert_router, Router.load(mf_bundle)):
        batch = router.strong_win_rates(PROMPTS)
        assert batch.shape == (len(PROMPTS),) and batch.dtype == np.float64
        assert np.all((batch >= 0) & (batch <= 1))
        singles = np.array([router.strong_win_rate(p) for p in PROMPTS])
        np.testing.assert_allclose(batch, singles, atol=2e-3)  # padding must not change a prompt's score


def test_fp32_batch_matches_single_exactly(bert_bundle):
    router = Router.load(bert_bundle, precision="fp32")
    singles = np.array([router.strong_win_rate(p) for p in PROMPTS])
    np.testing.assert_allclose(router.strong_win_rates(PROMPTS), singles, atol=1e-5)


def test_route_follows_routellm_rule(bert_router):
    win_rate = bert_router.strong_win_rate("hello")
    assert bert_router.route("hello", win_rate).tier == "strong"  # at the threshold: strong
    assert bert_router.route("hello", min(1.0, win_rate + 1e-6)).tier == "weak"
    assert bert_router.route("hello", 0.0).tier == "strong"
    decision = bert_router.route("hello", 1.0)
    assert decision.tier == "weak" and decision.score_us > 0
    assert set(decision.to_dict()) == {"router", "tier", "model", "win_rate", "threshold", "score_us", "fallback", "budget"}


def test_empty_batch_gives_empty_array(bert_router):
    assert bert_router.strong_win_rates([]).shape == (0,)


def test_mf_pair_is_chosen_by_name(mf_bundle):
    default = Router.load(mf_bundle)
    assert (default.strong_model, default.weak_model) == ("gpt-4-1106-preview", "mixtral-8x7b-instruct-v0.1")
    swapped = Router.load(mf_bundle, strong_model="mixtral-8x7b-instruct-v0.1", weak_model="gpt-4-1106-preview")
    np.testing.assert_allclose(default.strong_win_rates(PROMPTS) + swapped.strong_win_rates(PROMPTS), 1.0, atol=1e-6)
    assert default.route("hi", 0.0).model == "gpt-4-1106-preview"


def test_unknown_mf_model_is_a_typed_error(mf_bundle):
    with pytest.raises(UnknownModelError) as caught:
        Router.load(mf_bundle, strong_model="gpt-5")
    assert str(caught.value).startswith("strong model 'gpt-5' is not in this MF router's 64 models (RWKV-4-Raven-14B,")
    with pytest.raises(ConfigurationError, match="pick two different models"):
        Router.load(mf_bundle, strong_model="vicuna-7b", weak_model="vicuna-7b")


def test_bert_router_refuses_a_model_pair(bert_bundle):
    with pytest.raises(ConfigurationError, match="choose the pair of an MF router"):
        Router.load(bert_bundle, strong_model="gpt-4")


def test_cuda_without_provider_is_a_clear_error(bert_bundle):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has CUDA; the error path needs a CPU-only onnxruntime")
    with pytest.raises(ProviderUnavailableError) as caught:
        Router.load(bert_bundle, device="cuda")
    assert str(caught.value).startswith("device 'cuda' needs onnxruntime's CUDAExecutionProvider, which this onnxruntime build lacks")


@pytest.mark.parametrize(
    "arguments, error",
    [
        ({"device": "tpu"}, ConfigurationError),
        ({"threads": 0}, ConfigurationError),
        ({"threads": True}, ConfigurationError),
        ({"precision": "int4"}, ConfigurationError),
        ({"precision": "fp16"}, PrecisionUnavailableError),
    ],
)
def test_bad_load_arguments(bert_bundle, arguments, error):
    with pytest.raises(error):
        Router.load(bert_bundle, **arguments)


def test_threads_are_applied(bert_bundle):
    router = Router.load(bert_bundle, threads=1)
    assert 0 <= router.strong_win_rate("hi") <= 1


def test_many_threads_score_like_one(bert_router):
    from concurrent.futures import ThreadPoolExecutor

    prompts = [f"question number {i}: what is {i} squared?" for i in range(40)]
    serial = [bert_router.strong_win_rate(p) for p in prompts]
    with ThreadPoolExecutor(8) as pool:
        parallel = list(pool.map(bert_router.strong_win_rate, prompts))
    assert parallel == serial


def test_length_bucketing_keeps_input_order(bert_bundle):
    router = Router.load(bert_bundle, precision="fp32")
    prompts = [("word " * (i % 17 + 1)) + str(i) for i in range(70)]
    bucketed = router.strong_win_rates(prompts, bucket_size=8)
    singles = np.array([router.strong_win_rate(p) for p in prompts])
    np.testing.assert_allclose(bucketed, singles, atol=1e-5)


def test_score_cache_is_off_by_default_and_bounded(bert_bundle):
    assert Router.load(bert_bundle)._cache is None
    router = Router.load(bert_bundle, cache_size=2)
    first = router.strong_win_rate("alpha")
    assert router.strong_win_rate("alpha") == first and len(router._cache) == 1
    router.strong_win_rate("beta")
    router.strong_win_rate("gamma")
    assert len(router._cache) == 2 and router._cache.get("alpha") is None  # least recent evicted
    with pytest.raises(ConfigurationError, match="cache_size must be a non-negative integer"):
        Router.load(bert_bundle, cache_size=-1)


def test_spinning_can_be_turned_off(bert_bundle):
    assert 0 <= Router.load(bert_bundle, spinning=False).strong_win_rate("hi") <= 1


def test_static_routers_score_on_the_event_loop_and_graph_routers_on_the_pool(bert_bundle):
    """A static router's microseconds never pay a thread hop; a graph router's milliseconds never block the loop."""
    import asyncio
    import threading

    from edgeroute.runtime.serving.policy import RouterSet, RoutingPolicy

    routers = RouterSet(["static-distilled-gpt4-mixtral", str(bert_bundle)])
    static, bert = routers.get("static-distilled-gpt4-mixtral"), routers.get("bert")
    assert static.scores_inline and not bert.scores_inline
    policy = RoutingPolicy(routers, "strong-llm", "weak-llm", score_budget_ms=1000)
    seen: dict[str, str] = {}
    for router in (static, bert):
        original = router.strong_win_rate

        def recording(prompt: str, router=router, original=original) -> float:
            seen[router.name] = threading.current_thread().name
            return original(prompt)

        router.strong_win_rate = recording  # type: ignore[method-assign]

    async def decide_both() -> str:
        messages = [{"role": "user", "content": "Prove that there are infinitely many primes."}]
        for name in (static.name, bert.name):
            decision = await policy.adecide(messages, name, 0.5)
            assert decision.fallback is None and 0.0 <= decision.win_rate <= 1.0
        return threading.current_thread().name

    try:
        loop_thread = asyncio.run(decide_both())
    finally:
        policy.close()
    assert seen[static.name] == loop_thread
    assert seen[bert.name] != loop_thread


def test_inline_scoring_keeps_its_budget_and_sends_batches_to_the_pool():
    """One prompt of a static router scores on the loop; past the budget it falls back; batches go to the pool."""
    import asyncio
    import threading

    from edgeroute.runtime.serving.policy import RouterSet, RoutingPolicy

    routers = RouterSet(["static-distilled-gpt4-mixtral"])
    router = routers.get("static-distilled-gpt4-mixtral")
    policy = RoutingPolicy(routers, "strong-llm", "weak-llm", score_budget_ms=1000)
    threads: list[str] = []

    def recording(prompts: list[str]) -> list[float]:
        threads.append(threading.current_thread().name)
        return [0.5] * len(prompts)

    async def both() -> str:
        await policy.ascore(router, ["one"])
        await policy.ascore(router, ["one", "two"])
        return threading.current_thread().name

    try:
        router.strong_win_rates = recording  # type: ignore[method-assign]
        loop_thread = asyncio.run(both())
        del router.strong_win_rates
        assert threads[0] == loop_thread and threads[1] != loop_thread
        policy.score_budget_s = 0.0  # any scoring time is past it
        decision = policy.decide([{"role": "user", "content": "Prove Fermat's little theorem."}], router.name, 0.5)
        assert decision.fallback == "score_budget_exceeded" and decision.win_rate is None
    finally:
        policy.close()


@pytest.mark.parametrize(
    ("calibration", "default"),
    [({}, 0.5), ({"precision": "int8"}, 0.5), ({"thresholds": {"0.9": 0.2, "0.7": 0.3}}, 0.5), ({"thresholds": {"0.5": 0.42}}, 0.42)],
)
def test_default_threshold_is_read_from_the_calibration_at_load(tmp_path, mf_bundle, calibration, default):
    # A section without thresholds, or a table without 50% in its range, falls back to 0.5.
    import json
    import shutil

    folder = tmp_path / "mf"
    shutil.copytree(mf_bundle, folder)
    data = json.loads((folder / "manifest.json").read_text())
    data["calibration"] = calibration
    (folder / "manifest.json").write_text(json.dumps(data))
    router = Router.load(folder)
    assert router.default_threshold() == default
    if not calibration.get("thresholds"):
        with pytest.raises(InvalidInputError, match="has no calibration table; run `edgeroute calibrate --write` or pass a threshold"):
            router.threshold_for(0.5)
    else:
        share, threshold = min(calibration["thresholds"].items())
        assert router.threshold_for(float(share)) == threshold


def test_the_lru_cache_keeps_its_most_recently_used_entries():
    """The one LRU map (a router's score cache, the server's sticky conversations): a read refreshes an entry."""
    from edgeroute.runtime.scoring.lru import LRUCache

    cache: LRUCache[str, float] = LRUCache(2)
    cache.put("a", 0.1)
    cache.put("b", 0.2)
    assert cache.get("a") == 0.1  # "a" is now newer than "b"
    cache.put("c", 0.3)
    assert (cache.get("a"), cache.get("b"), cache.get("c"), len(cache)) == (0.1, None, 0.3, 2)
