"""Every bad request gets a typed, documented error; nothing crashes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeroute.runtime import InvalidInputError, InvalidPromptError, InvalidThresholdError, Router


@pytest.fixture(scope="module")
def router(bert_bundle):
    return Router.load(bert_bundle)


@pytest.mark.parametrize(
    "prompt, message",
    [
        ("", "prompt is empty or whitespace only"),
        ("   \n\t ", "prompt is empty or whitespace only"),
        (None, "prompt must be a string, got NoneType"),
        (42, "prompt must be a string, got int"),
        (b"bytes", "prompt must be a string, got bytes"),
        (["a list"], "prompt must be a string, got list"),
    ],
)
def test_bad_prompts(router, prompt, message):
    with pytest.raises(InvalidPromptError) as caught:
        router.strong_win_rate(prompt)
    assert str(caught.value) == message
    assert isinstance(caught.value, ValueError)


def test_bad_prompt_in_batch_names_its_position(router):
    with pytest.raises(InvalidPromptError) as caught:
        router.strong_win_rates(["fine", "  "])
    assert str(caught.value) == "prompt at position 1 is empty or whitespace only"


def test_batch_must_be_a_sequence(router):
    with pytest.raises(InvalidPromptError, match="prompts must be a sequence of strings, got str"):
        router.strong_win_rates("not a list")


@pytest.mark.parametrize("threshold", [math.nan, math.inf, -0.01, 1.01, "0.5", True])
def test_bad_thresholds(router, threshold):
    with pytest.raises(InvalidThresholdError) as caught:
        router.route("hello", threshold)
    assert str(caught.value).startswith("threshold must be a number in [0, 1], got ")


def test_no_threshold_means_the_default_threshold(router):
    # None is "not given" (issue 11): the CLI's rule, calibrated 50% or else 0.5.
    assert router.route("hello", None).threshold == router.default_threshold() == 0.5


def test_numpy_threshold_is_accepted(router):
    assert router.route("hello", np.float32(0.5)).threshold == 0.5


def test_over_long_prompt_is_truncated_to_max_length(router, bert_bundle):
    from edgeroute.runtime import read_manifest

    max_length = read_manifest(bert_bundle).max_length
    long_prompt = "word " * 5000
    tokens = router.encoder.tokenize([long_prompt])["input_ids"]
    assert tokens.shape == (1, max_length)
    # Everything past the limit is ignored: the score equals that of the kept prefix.
    assert router.strong_win_rate(long_prompt) == pytest.approx(router.strong_win_rate("word " * 6000), abs=1e-9)


def test_megabyte_prompt_and_control_characters(router):
    assert 0 <= router.strong_win_rate("x" * 1_000_000) <= 1
    assert 0 <= router.strong_win_rate("\x00\x01\x1b[31m\u202e tricky \ufeff") <= 1


def test_lone_surrogate_is_replaced_not_fatal(router):
    assert 0 <= router.strong_win_rate("broken \ud800 text") <= 1


# --- issue 12: every bad argument is a typed error ----------------------------------------


def test_huge_integer_threshold_is_a_threshold_error(router):
    with pytest.raises(InvalidThresholdError) as caught:
        router.route("hi", 10**400)
    assert str(caught.value) == "threshold must be a number in [0, 1], got an integer too large for a float"


def test_huge_integer_strong_pct_is_an_input_error(mf_router_calibrated):
    with pytest.raises(InvalidInputError) as caught:
        mf_router_calibrated.threshold_for(10**400)
    assert str(caught.value) == "strong_share must be a number in [0, 1], got an integer too large for a float"


@pytest.mark.parametrize("bucket_size", [-1, 0, "8", None, 2.5, True])
def test_bad_bucket_size_is_an_input_error(router, bucket_size):
    with pytest.raises(InvalidInputError) as caught:
        router.strong_win_rates(["a prompt"] * 40, bucket_size=bucket_size)
    assert str(caught.value) == f"bucket_size must be a positive integer, got {bucket_size!r}"


def test_numpy_bucket_size_is_accepted(router):
    rates = router.strong_win_rates(["a", "bb", "ccc"] * 5, bucket_size=np.int64(4))
    # int8 activations are quantized per batch, so another bucketing moves scores slightly.
    assert np.allclose(rates, router.strong_win_rates(["a", "bb", "ccc"] * 5), atol=0.02)


def test_lone_surrogate_becomes_the_replacement_character(router):
    from edgeroute.runtime.scoring.router import clean_prompt

    assert clean_prompt("broken \ud83d text") == "broken \ufffd text"
    assert router.strong_win_rate("broken \ud83d text") == router.strong_win_rate("broken \ufffd text")


def test_long_prompts_are_cut_before_tokenizing_with_the_same_score(router, monkeypatch):
    from edgeroute.runtime.scoring.router import CHARS_PER_TOKEN_BOUND

    limit = router.manifest.max_length * CHARS_PER_TOKEN_BOUND
    seen = []
    original = router._win_rates
    monkeypatch.setattr(router, "_win_rates", lambda prompts: seen.extend(map(len, prompts)) or original(prompts))
    long_prompt = "Prove that there are infinitely many primes. " * 50_000
    assert router.strong_win_rate(long_prompt) == router.strong_win_rate(long_prompt[: limit + 1])
    assert max(seen) == limit
    # A flood of leading whitespace holds no tokens: the words after it are still scored.
    assert router.strong_win_rate(" " * 1_000_000 + "hello there") == router.strong_win_rate("hello there")


@pytest.fixture(scope="module")
def mf_router_calibrated(tmp_path_factory, mf_bundle):
    import json
    import shutil

    folder = tmp_path_factory.mktemp("calibrated") / "mf"
    shutil.copytree(mf_bundle, folder)
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    data["calibration"] = {"thresholds": {"0.1": 0.9, "0.5": 0.5, "0.9": 0.1}}
    path.write_text(json.dumps(data))
    return Router.load(folder)


def test_non_finite_win_rate_is_an_error_not_a_weak_decision(router):
    from edgeroute.runtime import BundleCorruptError

    class NaNScorer:  # a scorer gone wrong: every win rate NaN
        precision = strong_model = weak_model = encoder = embedder = None

        def win_rates(self, prompts):
            return np.full(len(prompts), np.nan)

    broken = Router(router.manifest, NaNScorer(), "cpu")
    with pytest.raises(BundleCorruptError, match="the router scored a non-finite win rate; re-export the bundle"):
        broken.route("hi", 0.0)
