"""Features shared by the fast-tier (distilled) and transformer-tier (probe) recipes and the exporter.

What a student or probe head reads (an embedding and the length feature), the prompts cut as the
runtime cuts them, the exact length term folded into a fitted head, and the float64 reference the
exporter checks a head's bundle against. It imports neither a recipe nor the exporter, so that
those import it and never each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeroute.runtime import Router
from edgeroute.runtime.scoring.heads import MLPHead, length_feature
from edgeroute.runtime.scoring.layout import HEAD_FILE, HEAD_OUT_FILE
from edgeroute.runtime.scoring.router import cut_prompt


def as_scored(prompts: list[str], max_length: int | None) -> list[str]:
    """The prompts cut as ``Router`` cuts them before scoring (so the length feature matches serving)."""
    return [cut_prompt(prompt, max_length) for prompt in prompts]


def student_features(embeddings: np.ndarray, prompts: list[str]) -> np.ndarray:
    """The head's inputs: the runtime's static embeddings and the length feature, as float32."""
    return np.concatenate([embeddings, length_feature(prompts)[:, None]], axis=1).astype(np.float32)


def static_features(router: Router, prompts: list[str]) -> np.ndarray:
    """Student inputs for ``prompts`` computed by the runtime itself (so training matches serving)."""
    embeddings = np.concatenate([router.embed(prompts[i : i + 1024]) for i in range(0, len(prompts), 1024)])
    return student_features(embeddings, as_scored(prompts, router.manifest.max_length))


def fold_length(
    hidden: np.ndarray, output: np.ndarray, features: np.ndarray, teacher_logits: np.ndarray, length_weight: float
) -> tuple[np.ndarray, np.ndarray]:
    """Add prompt length to a fitted student *outside* its network, as one exact linear term.

    The score becomes ``z(student) + length_weight * z(length)`` (z: standardized on ``features``, the
    training rows), rescaled to the teacher's logit scale so that sigmoid(score) stays a readable win
    rate. Length enters linearly, so it extrapolates to prompts longer or shorter than any seen in
    training, where a network fitted to a length-mixed target does not. The term is stored as one more
    hidden unit (weight on the length input only, bias 0): the length input is never negative, so
    that unit's ReLU is the identity and the runtime's head format is unchanged.
    """
    student = MLPHead(hidden, output).feature_logits(features[:, :-1], features[:, -1])
    length = features[:, -1].astype(np.float64)
    teacher = np.asarray(teacher_logits, dtype=np.float64)
    norm = np.sqrt(1.0 + length_weight**2)
    scale = teacher.std() / (student.std() * norm)
    length_scale = teacher.std() * length_weight / (length.std() * norm)
    shift = teacher.mean() - scale * student.mean() - length_scale * length.mean()
    length_unit = np.zeros((1, hidden.shape[1]), dtype=np.float32)
    length_unit[0, -2] = 1.0
    folded_out = np.concatenate([output[0, :-1] * scale, [length_scale], [output[0, -1] * scale + shift]])
    return np.concatenate([hidden, length_unit]), folded_out[None, :].astype(np.float32)


def reference_win_rates(checkpoint: Path, prompts: list[str], embed: Any) -> np.ndarray:
    """The student's win rates computed in float64 from the checkpoint's arrays (the export's parity reference)."""
    hidden = np.load(checkpoint / HEAD_FILE, allow_pickle=False).astype(np.float64)
    output = np.load(checkpoint / HEAD_OUT_FILE, allow_pickle=False).astype(np.float64)
    features = student_features(embed(prompts), prompts).astype(np.float64)
    activations = np.maximum(features @ hidden[:, :-1].T + hidden[:, -1], 0.0)
    return 1.0 / (1.0 + np.exp(-(activations @ output[0, :-1] + output[0, -1])))
