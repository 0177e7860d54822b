"""The previous transformer-tier recipe: RouteLLM's 3-label BERT router, its top layers fine-tuned.

The bottom layers stay as pre-trained, so their outputs are computed once for every prompt
(``FrozenPrefix``) and each training run (one per cross-validation fold) only runs the top
``trainable_layers``: on 2 CPU cores a fold takes minutes instead of the better part of an hour,
which is what makes an honest cross-validation of the recipe affordable. The result is an
ordinary ``BertForSequenceClassification`` checkpoint that ``edgeroute export bert`` converts.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from edgeroute.export.training.data import LABEL_STRONG_WINS

LABELS = {0: "strong wins", 1: "tie", 2: "weak wins"}


@dataclass(frozen=True)
class TeacherRecipe:
    """Fine-tuning settings (chosen on the cross-validation protocol, see benchmarks/quality.py)."""

    trainable_layers: int = 2
    epochs: float = 1.0
    batch_size: int = 32
    learning_rate: float = 1e-4
    max_length: int = 128
    seed: int = 0


def load_classifier(encoder_dir: Path) -> tuple[Any, Any]:
    """A fresh 3-label classifier on a local encoder folder, and its tokenizer (offline)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(encoder_dir), local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(encoder_dir),
        num_labels=3,
        local_files_only=True,
        id2label=LABELS,
        label2id={name: index for index, name in LABELS.items()},
    )
    return tokenizer, model


class FrozenPrefix:
    """Hidden states after the frozen bottom layers for every prompt, stored ragged in float16."""

    def __init__(self, encoder_dir: Path, prompts: list[str], recipe: TeacherRecipe, batch_size: int = 64) -> None:
        self.tokenizer, model = load_classifier(encoder_dir)
        model.eval()
        self.frozen = len(model.bert.encoder.layer) - recipe.trainable_layers
        ids = self.tokenizer(prompts, truncation=True, max_length=recipe.max_length)["input_ids"]
        self.lengths = np.array([len(row) for row in ids])
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])
        self.states = np.zeros((int(self.offsets[-1]), model.config.hidden_size), dtype=np.float16)
        order = np.argsort(self.lengths, kind="stable")
        with torch.no_grad():
            for start in tqdm(range(0, len(order), batch_size), desc="frozen layers", unit="batch"):
                rows = order[start : start + batch_size]
                batch = self.tokenizer.pad({"input_ids": [ids[r] for r in rows]}, return_tensors="pt")
                hidden = model.bert.embeddings(input_ids=batch["input_ids"])
                mask = model.bert.get_extended_attention_mask(batch["attention_mask"], batch["input_ids"].shape)
                for layer in model.bert.encoder.layer[: self.frozen]:
                    hidden = layer(hidden, attention_mask=mask)[0]
                for position, row in enumerate(rows):
                    self.states[self.offsets[row] : self.offsets[row + 1]] = hidden[position, : self.lengths[row]].numpy()

    def batch(self, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded hidden states and attention mask of ``rows``."""
        width = int(max(self.lengths[r] for r in rows))
        states = np.zeros((len(rows), width, self.states.shape[1]), dtype=np.float32)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for position, row in enumerate(rows):
            states[position, : self.lengths[row]] = self.states[self.offsets[row] : self.offsets[row + 1]]
            mask[position, : self.lengths[row]] = 1
        return torch.from_numpy(states), torch.from_numpy(mask)


def _top_logits(model: Any, prefix: FrozenPrefix, rows: list[int]) -> torch.Tensor:
    hidden, mask = prefix.batch(rows)
    extended = model.bert.get_extended_attention_mask(mask, mask.shape)
    for layer in model.bert.encoder.layer[prefix.frozen :]:
        hidden = layer(hidden, attention_mask=extended)[0]
    return model.classifier(model.dropout(model.bert.pooler(hidden)))


def train_teacher(encoder_dir: Path, prefix: FrozenPrefix, labels: np.ndarray, rows: np.ndarray, recipe: TeacherRecipe) -> Any:
    """Fine-tune the top layers, pooler and classifier on ``rows`` (cross-entropy over 3 labels)."""
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(recipe.seed)
    rng = random.Random(recipe.seed)
    _, model = load_classifier(encoder_dir)
    params = [p for layer in model.bert.encoder.layer[prefix.frozen :] for p in layer.parameters()]
    params += [*model.bert.pooler.parameters(), *model.classifier.parameters()]
    total = max(1, int(math.ceil(len(rows) / recipe.batch_size) * recipe.epochs))
    optimizer = torch.optim.AdamW(params, lr=recipe.learning_rate, weight_decay=0.01)
    schedule = get_linear_schedule_with_warmup(optimizer, int(0.1 * total), total)
    targets = torch.as_tensor(labels)
    model.train()
    with tqdm(total=total, desc="train teacher", unit="step") as progress:
        while progress.n < total:
            # Batches of similar length: far less padding, much faster on CPU.
            order = sorted(rows.tolist(), key=lambda r: (prefix.lengths[r], rng.random()))
            batches = [order[i : i + recipe.batch_size] for i in range(0, len(order), recipe.batch_size)]
            rng.shuffle(batches)
            for batch in batches[: total - progress.n]:
                loss = torch.nn.functional.cross_entropy(_top_logits(model, prefix, batch), targets[batch])
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad()
                progress.update()
    return model.eval()


def batched_win_rates(lengths: np.ndarray, logits_of: Callable[[list[int]], torch.Tensor], batch_size: int) -> np.ndarray:
    """P(strong wins) = softmax(logits)[strong wins] = 1 - P(tie) - P(weak wins) (RouteLLM's BERT rule) for every row,
    scored in batches of similar length; ``logits_of(rows)`` gives those rows' 3-label logits."""
    from tqdm.auto import tqdm

    rates = np.zeros(len(lengths), dtype=np.float64)
    order = np.argsort(lengths, kind="stable")
    with torch.no_grad(), tqdm(total=len(order), desc="score prompts", unit="prompt", leave=False) as progress:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size].tolist()
            rates[rows] = torch.softmax(logits_of(rows).double(), dim=-1)[:, LABEL_STRONG_WINS].numpy()
            progress.update(len(rows))
    return rates


def teacher_win_rates(model: Any, prefix: FrozenPrefix, batch_size: int = 256) -> np.ndarray:
    """The win rate of every prompt of ``prefix`` (``batched_win_rates``)."""
    return batched_win_rates(prefix.lengths, lambda rows: _top_logits(model, prefix, rows), batch_size)


def save_teacher(
    model: Any,
    tokenizer: Any,
    out: Path,
    recipe: Any,
    n_train: int,
    prompts: list[str] | None = None,
    generated_chat: int = 0,
    chat_labels: str | None = None,
    written_chat: int = 0,
) -> Path:
    """Write a RouteLLM-format BERT checkpoint (model, tokenizer truncating at the training length, training.json).

    ``prompts``: the labelled training prompts, kept only as a sketch of hashes (``edgeroute eval`` warns on
    in-sample sets); ``generated_chat``: template-labelled chat prompts trained beside them, under the label
    rule ``chat_labels``; ``written_chat``: written prompts trained beside them under the same rule.
    """
    from edgeroute.runtime.evaluation.data import prompt_sketch

    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tokenizer.model_max_length = recipe.max_length  # train/serve consistency: export reads this length
    tokenizer.save_pretrained(str(out))
    report = {
        "recipe": {**asdict(recipe), "loss": "cross-entropy over RouteLLM's 3 labels", "schedule": "AdamW, linear decay, 10% warm-up"},
        "n_train": n_train,
        "generated_chat": generated_chat,
        **({"written_chat": written_chat} if written_chat else {}),
        **({"chat_labels": chat_labels} if chat_labels else {}),
        "n_val": 0,
        "best": None,
    }
    if prompts is not None:
        report["prompt_sketch"] = prompt_sketch(prompts)
    (out / "training.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return out
