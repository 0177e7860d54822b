"""Every bad request gets a typed, documented error; nothing crashes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeroute.runtime import InvalidPromptError, InvalidThresholdError, Router


@pytest.fixture(scope="module")
def router(bert_bundle):
    return Router.load(bert_bundle)


@pytest.mark.parametrize("prompt, message", [
    ("", "prompt is empty or whitespace only"),
    ("   \n\t ", "prompt is empty or whitespace only"),
    (None, "prompt must be a string, got NoneType"),
    (42, "prompt must be a string, got int"),
    (b"bytes", "prompt must be a string, got bytes"),
    (["a list"], "prompt must be a string, got list"),
])
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
