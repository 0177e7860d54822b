"""Training data for routers: pairwise battles from Arena-style JSON Lines or correctness tables.

Two input forms:

* Arena preferences (``.jsonl``): ``prompt``, ``model_a``, ``model_b``, ``winner`` in
  ``model_a``, ``model_b``, ``tie``, ``tie (bothbad)``.
* Correctness tables (``.csv``, or a folder laid out like RouteLLM's ``evals/``): ``prompt``
  plus one True/False column per model. RouteLLM's golden-label rule turns a row into a battle
  between the strong and the weak model: strong right and weak wrong, the strong model wins;
  the reverse, the weak one wins; otherwise a tie.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeroute.runtime.evaluation.data import (
    DEFAULT_STRONG_MODEL,
    DEFAULT_WEAK_MODEL,
    BenchmarkData,
    load_benchmark,
    mmlu_domains,
    read_correctness_csv,
    split_of,
)
from edgeroute.runtime.errors import InvalidInputError

WINNERS = ("model_a", "model_b", "tie", "tie (bothbad)")
# RouteLLM's BERT router labels, from the strong model's side.
LABEL_STRONG_WINS, LABEL_TIE, LABEL_WEAK_WINS = 0, 1, 2


@dataclass
class Battles:
    """Pairwise outcomes, one row per battle, with each row's split."""

    prompts: list[str]
    model_a: list[str]
    model_b: list[str]
    winner: list[str]
    split: np.ndarray  # "train" / "val" / "test"

    def __len__(self) -> int:
        return len(self.prompts)

    def rows(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split)

    def pair_labels(self, strong_model: str, weak_model: str) -> tuple[np.ndarray, np.ndarray]:
        """Row indices of battles between the two models, and RouteLLM's 3-way label for each."""
        indices, labels = [], []
        for index, (a, b, winner) in enumerate(zip(self.model_a, self.model_b, self.winner)):
            if {a, b} != {strong_model, weak_model}:
                continue
            if winner.startswith("tie"):
                label = LABEL_TIE
            else:
                winning_model = a if winner == "model_a" else b
                label = LABEL_STRONG_WINS if winning_model == strong_model else LABEL_WEAK_WINS
            indices.append(index)
            labels.append(label)
        return np.asarray(indices, dtype=np.int64), np.asarray(labels, dtype=np.int64)


def battles_from_correctness(data: BenchmarkData, split: np.ndarray) -> Battles:
    """RouteLLM's golden-label rule applied to a correctness table."""
    winners = [
        "model_a" if s > w else "model_b" if w > s else ("tie" if s > 0 else "tie (bothbad)")
        for s, w in zip(data.strong_quality, data.weak_quality)
    ]
    n = len(data)
    return Battles(list(data.prompts), [data.strong_model] * n, [data.weak_model] * n, winners, split)


def read_arena_jsonl(path: Path) -> Battles:
    """Arena-style preferences; each battle's split comes from a hash of its prompt."""
    prompts, model_a, model_b, winner = [], [], [], []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            missing = [key for key in ("prompt", "model_a", "model_b", "winner") if key not in row]
            if missing or row["winner"] not in WINNERS:
                raise InvalidInputError(f"{path}:{line_number}: needs prompt, model_a, model_b and winner in {WINNERS}")
            prompts.append(row["prompt"])
            model_a.append(row["model_a"])
            model_b.append(row["model_b"])
            winner.append(row["winner"])
    if not prompts:
        raise InvalidInputError(f"{path}: no battles")
    placeholder = BenchmarkData("arena", prompts, np.zeros(len(prompts)), np.zeros(len(prompts)), [""] * len(prompts), "", "")
    return Battles(prompts, model_a, model_b, winner, split_of(placeholder))


def _concat(parts: list[Battles]) -> Battles:
    return Battles(
        [p for part in parts for p in part.prompts],
        [m for part in parts for m in part.model_a],
        [m for part in parts for m in part.model_b],
        [w for part in parts for w in part.winner],
        np.concatenate([part.split for part in parts]),
    )


def load_battles(source: Path, strong_model: str = DEFAULT_STRONG_MODEL, weak_model: str = DEFAULT_WEAK_MODEL) -> Battles:
    """Battles from a ``.jsonl`` (Arena), a ``.csv`` (correctness) or a RouteLLM-layout folder.

    A folder contributes every MMLU domain and GSM8K, contaminated prompts dropped, split by
    edgeroute's fixed rule (``edgeroute.runtime.evaluation.data.split_of``): held-out MMLU domains
    and a held-out GSM8K slice never reach training.
    """
    source = Path(source)
    if source.is_dir():
        parts = []
        if mmlu_domains(source):
            mmlu = load_benchmark(source, "mmlu", strong_model, weak_model)
            parts.append(battles_from_correctness(mmlu, split_of(mmlu, mmlu_domains(source))))
        if (source / "gsm8k" / "gsm8k_responses.csv").is_file():
            gsm8k = load_benchmark(source, "gsm8k", strong_model, weak_model)
            parts.append(battles_from_correctness(gsm8k, split_of(gsm8k)))
        if not parts:
            raise InvalidInputError(f"{source}: no mmlu/responses/*.csv or gsm8k/gsm8k_responses.csv")
        return _concat(parts)
    if source.suffix == ".jsonl":
        return read_arena_jsonl(source)
    if source.suffix == ".csv":
        table = read_correctness_csv(source, strong_model, weak_model, source.stem)
        return battles_from_correctness(table, split_of(table))
    raise InvalidInputError(f"{source}: expected a .jsonl (Arena battles), a .csv (correctness) or a folder")
