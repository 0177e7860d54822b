"""N targets on a RouteLLM-format MF checkpoint of 64 Arena models, exported as RouteLLM ships it."""

from __future__ import annotations

import numpy as np

from edgeroute.runtime import Router
from edgeroute.runtime.scoring.targets import Target, Targets

THREE = ["gpt-4-1106-preview", "claude-2.1", "mixtral-8x7b-instruct-v0.1"]


def test_three_of_a_routellm_checkpoints_64_models(mf_bundle):
    router = Router.load(mf_bundle)
    assert len(router.manifest.head.model_names) == 64 and router.scores_every_model
    prompts = ["Prove Fermat's little theorem.", "hi", "Write a sonnet about the sea."]
    # Provider spellings resolve through the bundle's alias table, as strong_model/weak_model do.
    rows = router.model_rows(["openai/gpt-4-1106-preview", "anthropic/claude-2.1", "mistralai/Mixtral-8x7B-Instruct-v0.1"])
    assert np.array_equal(rows, router.model_rows(THREE))
    scores = router.model_scores(prompts, rows)
    pair = Router.load(mf_bundle, strong_model=THREE[0], weak_model=THREE[2]).strong_win_rates(prompts)
    assert np.allclose(1.0 / (1.0 + np.exp(-(scores[:, 0] - scores[:, 2]))), pair, atol=1e-5)
    targets = Targets(tuple(Target(name) for name in THREE))
    for row, rate in zip(scores, pair):
        # threshold just above or below the pair's win rate decides between the first and a cheaper target
        assert targets.choose(row, 40, threshold=min(1.0, rate + 1e-6)).index != 0 or rate >= 1.0 - 1e-6
        assert targets.choose(row, 40, threshold=max(0.0, rate - 1e-6)).index in (0, 1)
