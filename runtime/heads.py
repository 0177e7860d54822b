"""The MLP head of a distilled static router: a prompt's win rate from its static embedding.

A distilled router (``head.kind == "mlp"`` in its manifest) scores

    features = [embedding (L2-normalized mean of token rows), log1p(characters) / LENGTH_SCALE]
    win_rate = sigmoid(w2 · relu(W1 · features + b1) + b2)

with ``head.npy`` holding ``[W1 | b1]`` (``[hidden, dim + 2]``) and ``head_out.npy`` holding
``[w2 | b2]`` (``[1, hidden + 1]``). The length feature is computed on the prompt as given
(before any truncation), so a long prompt is seen as long even past ``max_length`` tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LENGTH_SCALE = 8.0
MLP_FEATURES = ("embedding", "log1p_chars")


def length_feature(prompts: Sequence[str]) -> np.ndarray:
    """The head's length input: log1p(number of characters) / LENGTH_SCALE, one value per prompt."""
    return np.log1p(np.fromiter((len(p) for p in prompts), dtype=np.float64, count=len(prompts))) / LENGTH_SCALE


@dataclass(frozen=True)
class MLPHead:
    """A one-hidden-layer ReLU network over [embedding, length], stored as two float32 matrices."""

    hidden: np.ndarray  # [hidden, dim + 2]: input weights, then the length weight, then the bias
    output: np.ndarray  # [1, hidden + 1]: output weights, then the bias

    @property
    def dim(self) -> int:
        return int(self.hidden.shape[1] - 2)

    def logits(self, embeddings: np.ndarray, prompts: Sequence[str]) -> np.ndarray:
        """The pre-sigmoid score of each prompt (float64, one per row of ``embeddings``)."""
        weights = self.hidden[:, : self.dim]
        length_weight, bias = self.hidden[:, self.dim], self.hidden[:, self.dim + 1]
        activations = np.asarray(embeddings, dtype=np.float32) @ weights.T + bias
        activations += np.outer(length_feature(prompts), length_weight).astype(np.float32)
        np.maximum(activations, 0.0, out=activations)
        return (activations @ self.output[0, :-1] + self.output[0, -1]).astype(np.float64)

    def win_rates(self, embeddings: np.ndarray, prompts: Sequence[str]) -> np.ndarray:
        """sigmoid(logits): the predicted probability that the strong model wins."""
        return 1.0 / (1.0 + np.exp(-self.logits(embeddings, prompts)))
