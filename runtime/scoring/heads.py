"""The MLP head of a distilled static router: a prompt's win rate from its static embedding.

A distilled router (``head.kind == "mlp"`` in its manifest) scores

    features = [embedding (L2-normalized mean of token rows), log1p(characters) / LENGTH_SCALE]
    win_rate = sigmoid(w2 · relu(W1 · features + b1) + b2)

with ``head.npy`` holding ``[W1 | b1]`` (``[hidden, dim + 2]``) and ``head_out.npy`` holding
``[w2 | b2]`` (``[1, hidden + 1]``). The length feature is computed on the prompt as the router
scores it: cleaned and cut to ``max_length * CHARS_PER_TOKEN_BOUND`` characters (``Router._prepare``),
not to ``max_length`` tokens, so a long prompt is seen as long well past its last scored token.
Training computes it on prompts cut the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
import numpy as np

LENGTH_SCALE = 8.0
MLP_FEATURES = ("embedding", "log1p_chars")


def length_feature(prompts: Sequence[str]) -> np.ndarray:
    """The head's length input: log1p(number of characters) / LENGTH_SCALE, one value per prompt."""
    return np.log1p(np.array([len(p) for p in prompts], dtype=np.float64)) / LENGTH_SCALE


class MLPHead:
    """A one-hidden-layer ReLU network over [embedding, length], stored as two float32 matrices.

    ``hidden`` is ``[hidden, dim + 2]`` (input weights, the length weight, the bias) and ``output``
    ``[1, hidden + 1]`` (output weights, the bias). The pieces are laid out once at construction so that
    scoring one prompt is two small matrix products and no copies (the head is on the microsecond path).
    """

    def __init__(self, hidden: np.ndarray, output: np.ndarray) -> None:
        self.hidden, self.output = hidden, output
        dim = hidden.shape[1] - 2
        self._input_weights = np.ascontiguousarray(hidden[:, :dim].T, dtype=np.float32)  # [dim, hidden]
        self._length_weight = np.ascontiguousarray(hidden[:, dim], dtype=np.float32)
        self._bias = np.ascontiguousarray(hidden[:, dim + 1], dtype=np.float32)
        self._output_weights = np.ascontiguousarray(output[0, :-1], dtype=np.float32)
        self._output_bias = float(output[0, -1])
        self._length_terms: np.ndarray | None = None  # see precompute_length_terms

    def precompute_length_terms(self, max_chars: int) -> None:
        """Lay out ``bias + length_weight * length feature`` for every prompt length up to ``max_chars``.

        One row per length, each the same float32 values the batch-1 path computes per call, so that
        path spends one row lookup on them instead of three numpy calls (``[max_chars + 1, hidden]``:
        2 MB for 8,192 characters and 64 hidden units).
        """
        features = np.array([math.log1p(n) / LENGTH_SCALE for n in range(max_chars + 1)], dtype=np.float32)
        self._length_terms = self._bias + self._length_weight * features[:, None]

    @property
    def dim(self) -> int:
        return int(self.hidden.shape[1] - 2)

    def logits(self, embeddings: np.ndarray, prompts: Sequence[str]) -> np.ndarray:
        """The pre-sigmoid score of each prompt (float64, one per row of ``embeddings``)."""
        return self.feature_logits(embeddings, length_feature(prompts))

    def feature_logits(self, embeddings: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """``logits`` from the embeddings and the length feature already computed (one per row)."""
        activations = np.asarray(embeddings, dtype=np.float32) @ self._input_weights
        activations += np.asarray(lengths, dtype=np.float32)[:, None] * self._length_weight
        activations += self._bias
        np.maximum(activations, 0.0, out=activations)
        return (activations @ self._output_weights).astype(np.float64) + self._output_bias

    def win_rates(self, embeddings: np.ndarray, prompts: Sequence[str]) -> np.ndarray:
        """sigmoid(logits): the predicted probability that the strong model wins."""
        if len(prompts) == 1:
            return np.array([self._one(np.asarray(embeddings, dtype=np.float32)[0], prompts[0])])
        return 1.0 / (1.0 + np.exp(-self.logits(embeddings, prompts)))

    def _one(self, embedding: np.ndarray, prompt: str) -> float:
        return self._activate(embedding @ self._input_weights, prompt)

    def projected_win_rate(self, summed: np.ndarray, prompt: str) -> float:
        """The win rate from ``[sum of embedding rows, sum of their projections]`` (``project_rows``), one prompt.

        ``summed`` is overwritten.

        The first layer is linear, so projecting each table row once and normalizing after the sum
        gives the same pre-activations as projecting the normalized mean, with no matrix product per call.
        """
        dim = self._input_weights.shape[0]
        embedding = summed[:dim]
        norm = math.sqrt(embedding @ embedding)
        activations = summed[dim:]  # in place below: ``summed`` is the caller's scratch
        if norm > 0.0:
            activations /= norm
        else:
            activations[:] = 0.0
        return self._activate(activations, prompt)

    def project_rows(self, table: np.ndarray) -> np.ndarray:
        """Each row of ``table`` through the first layer's input weights: ``[rows, hidden]`` float32."""
        return np.asarray(table, dtype=np.float32) @ self._input_weights

    def _activate(self, activations: np.ndarray, prompt: str) -> float:
        # Batch 1, the common case: Python floats where numpy's per-call cost would dominate.
        terms = self._length_terms
        if terms is not None and len(prompt) < len(terms):
            activations += terms[len(prompt)]
        else:
            activations += self._bias + self._length_weight * np.float32(math.log1p(len(prompt)) / LENGTH_SCALE)
        np.maximum(activations, 0.0, out=activations)
        logit = float(activations @ self._output_weights) + self._output_bias
        return 1.0 / (1.0 + math.exp(-logit)) if logit > -700.0 else 0.0  # math.exp overflows past 709
