"""RouteLLM's BERT router recipe: every layer of the encoder fine-tuned as a 3-label classifier.

Labels are RouteLLM's golden labels (strong wins, tie, weak wins); prompts keep their first
``max_length`` tokens (RouteLLM's truncation rule, which ``edgeroute export bert`` records). This is
the recipe of the bundle shipped at ``3b8ccef`` (256 tokens, learning rate 5e-5, batch 32, best
validation step at 1.5 epochs), which an independent held-out check found to route chat prompts
far better than frozen-encoder probes. Here the number of epochs is fixed instead of picked on a
validation split, so that every row can train the shipped checkpoint.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from edgeroute.runtime.evaluation.content import GAP_CATEGORIES, LENGTH_BINS, LEVEL_CATEGORIES, prompt_lengths

from edgeroute.export.training.data import LABEL_STRONG_WINS, LABEL_TIE
from edgeroute.export.training.teacher import LABELS, batched_win_rates, load_classifier


@dataclass(frozen=True)
class FineTuneRecipe:
    """Full fine-tuning settings (RouteLLM's BERT router; ``3b8ccef``'s values are the defaults)."""

    epochs: float = 1.5
    batch_size: int = 32
    learning_rate: float = 5e-5
    max_length: int = 256
    weight_decay: float = 0.01
    warmup: float = 0.1
    seed: int = 0
    # Weight rows so that, within each source, every length quintile has the source's label mix
    # (``length_balanced_weights``): length then predicts no label, and only the prompt's content can.
    length_balance: bool = False
    # With ``length_balance``: balance the written prompts within each voice (first person or not) as well, so
    # that length bins and voice together do not predict the label either (``written_voice``).
    voice_balance: bool = False

    def __post_init__(self) -> None:
        if self.voice_balance and not self.length_balance:
            raise ValueError("voice_balance balances within length quintiles: set length_balance too (--length-balance)")


def length_batches(lengths: np.ndarray, rows: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Batches of prompts of similar token length (far less padding on CPU), in shuffled order."""
    order = sorted(rows, key=lambda r: (int(lengths[r]), rng.random()))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


class TokenizedPrompts:
    """Prompts tokenized once, cut to ``max_length`` tokens (RouteLLM's rule), padded per batch."""

    def __init__(self, tokenizer: Any, prompts: list[str], max_length: int) -> None:
        self.tokenizer = tokenizer
        self.ids = tokenizer(prompts, truncation=True, max_length=max_length)["input_ids"]
        self.lengths = np.array([len(row) for row in self.ids])

    def subset(self, rows: np.ndarray) -> TokenizedPrompts:
        """The same tokens for ``rows`` only, in that order."""
        part = TokenizedPrompts.__new__(TokenizedPrompts)
        part.tokenizer, part.ids = self.tokenizer, [self.ids[r] for r in rows]
        part.lengths = self.lengths[rows]
        return part

    def batch(self, rows: list[int]) -> dict[str, torch.Tensor]:
        """Padded model inputs of ``rows``."""
        return dict(self.tokenizer.pad({"input_ids": [self.ids[r] for r in rows]}, return_tensors="pt"))


# Bounds a row's weight: the shortest written quintile holds 5% "strong wins" against 34% overall, and an
# unbounded weight would let a handful of short prompts dominate every step they appear in.
MAX_LENGTH_WEIGHT = 5.0


def length_balanced_weights(
    prompts: list[str],
    labels: np.ndarray,
    sources: np.ndarray,
    bins: int = LENGTH_BINS,
    max_weight: float = MAX_LENGTH_WEIGHT,
    strata: np.ndarray | None = None,
) -> np.ndarray:
    """Per-row loss weights under which each source's length quintiles share that source's label mix.

    A row of label ``y`` in quintile ``b`` of source ``s`` weighs ``P_s(y) / P_sb(y)``, clipped to
    ``[1 / max_weight, max_weight]``, then scaled to mean 1 within its source (so sources keep their sizes).
    Quintiles are of character count, cut at the source's quantiles (equal lengths share a quintile); a label
    absent from a quintile cannot be weighted up there, and a clipped row gets less than the balance asks.
    ``strata`` (one value per row, e.g. ``written_voice``): balance each quintile within each stratum of the
    source to the source's mix, so that stratum and length together predict no label.
    Compute the weights over the rows that will train: balance over all prompts does not hold for a subset.
    """
    labels, sources = np.asarray(labels), np.asarray(sources)
    if strata is not None and len(strata) != len(prompts):
        raise ValueError(f"strata: expected one per prompt ({len(prompts)}), got {len(strata)}")
    stratum = np.zeros(len(prompts), dtype=np.int64) if strata is None else np.unique(np.asarray(strata), return_inverse=True)[1]
    strata_count = stratum.max(initial=0) + 1
    chars = prompt_lengths(prompts)
    weights = np.ones(len(prompts))
    for source in np.unique(sources):
        rows = np.flatnonzero(sources == source)
        edges = np.quantile(chars[rows], np.linspace(0, 1, bins + 1)[1:-1])
        cells = np.digitize(chars[rows], edges) * strata_count + stratum[rows]
        for cell in np.unique(cells):
            in_cell = rows[cells == cell]
            for label in np.unique(labels[in_cell]):
                members = in_cell[labels[in_cell] == label]
                weights[members] = np.mean(labels[rows] == label) / (len(members) / len(in_cell))
        weights[rows] = np.clip(weights[rows], 1 / max_weight, max_weight)
        weights[rows] /= weights[rows].mean()
    return weights


# "I" and "us" only as written: "US" is a country. A lower-case "i" is how chat prompts often say "I", so it counts
# where a word follows it, but not a word that only code puts there ("i in", "i for", "i from", "i to", "i is") nor
# in "i = 0", "i++", "a[i]" or "-i". "I" after a word that takes a Roman numeral ("World War I", "Type I",
# "Elizabeth I") or inside a dotted acronym ("M.A.I.N.") is not a person.
_ROMAN_BEFORE = "".join(
    f"(?<!{word} )"
    for word in ("War", "Type", "Title", "Level", "Part", "Phase", "Act", "Chapter", "Book", "Class", "Stage", "Section")
    + ("Volume", "Findings", "Elizabeth", "Henry", "Charles", "James", "Louis", "Peter", "George", "Edward", "William")
)
FIRST_PERSON = re.compile(
    rf"(?<![.\-]){_ROMAN_BEFORE}\bI\b(?!\.\w)"
    r"|(?<![-\[.])\bi\b(?= (?!(?:in|for|from|to|is)\b)[a-z])"
    r"|\b((?i:i['’]m|im|i['’]ve|i['’]d|i['’]ll|my|me|mine|we|our)|us|Us)\b"
)


GENERATED_CHAT, WRITTEN_CHAT = "generated chat", "written chat"


def balance_sources(
    benchmarks: np.ndarray, chat_index: np.ndarray, written_index: np.ndarray, written_first_person: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's source for ``length_balanced_weights`` (its benchmark, or generated or written chat at ``chat_index``
    and ``written_index``) and its voice stratum (``written_first_person``, ``written_voice`` of the written prompts;
    False elsewhere)."""
    sources = np.asarray(benchmarks, dtype=object).copy()
    sources[chat_index] = GENERATED_CHAT
    sources[written_index] = WRITTEN_CHAT
    voice = np.zeros(len(sources), dtype=bool)
    voice[written_index] = written_first_person
    return sources, voice


def written_voice(prompts: list[str]) -> np.ndarray:
    """Per prompt, whether it speaks in the first person ("I", "my", "we"...): the voice ``voice_balance`` balances."""
    return np.array([bool(FIRST_PERSON.search(prompt)) for prompt in prompts], dtype=bool)


# Called after every optimizer step with (step, total steps, that step's loss, the model in training mode).
StepHook = Callable[[int, int, float, Any], None]


def train_finetuned(
    encoder_dir: Path,
    tokens: TokenizedPrompts,
    labels: np.ndarray,
    rows: np.ndarray,
    recipe: FineTuneRecipe,
    label: str = "fine-tune bert",
    after_step: StepHook | None = None,
    weights: np.ndarray | None = None,
) -> Any:
    """Fine-tune every layer of a fresh 3-label classifier on ``rows`` (cross-entropy over RouteLLM's labels).

    ``weights``: one loss weight per prompt of ``tokens`` (e.g. ``length_balanced_weights``; default 1). Each
    batch's loss is its weighted mean: batches hold prompts of similar length, and within one the weights set
    the label mix, which is what ``length_balanced_weights`` balances (its quintiles' weights average about 1).
    ``after_step`` sees the model after each step (``edgeroute train bert`` evaluates and keeps its best step there).
    """
    if weights is not None and len(weights) != len(labels):
        raise ValueError(f"weights: expected one per prompt ({len(labels)}), got {len(weights)}")
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(recipe.seed)
    rng = random.Random(recipe.seed)
    _, model = load_classifier(encoder_dir)
    total = max(1, int(math.ceil(len(rows) / recipe.batch_size) * recipe.epochs))
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
    schedule = get_linear_schedule_with_warmup(optimizer, int(recipe.warmup * total), total)
    targets = torch.as_tensor(labels)
    row_weights = torch.as_tensor(np.ones(len(labels)) if weights is None else weights, dtype=torch.float32)
    model.train()
    with tqdm(total=total, desc=label, unit="step") as progress:
        while progress.n < total:
            for batch in length_batches(tokens.lengths, rows.tolist(), recipe.batch_size, rng)[: total - progress.n]:
                losses = torch.nn.functional.cross_entropy(model(**tokens.batch(batch)).logits, targets[batch], reduction="none")
                loss = (losses * row_weights[batch]).sum() / row_weights[batch].sum()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad()
                progress.update()
                progress.set_postfix(loss=f"{loss.item():.3f}")
                if after_step is not None:
                    after_step(progress.n, total, float(loss.item()), model)
    return model.eval()


@dataclass(frozen=True)
class ChatLabelRule:
    """How generated and written chat prompts are labelled: a hard prompt outside ``GAP_CATEGORIES`` (math,
    reasoning, coding: a weak open model most often fails there) is "strong wins" only every k-th time (k =
    ``every_in.get(category, every)``, counted in file order over the prompts that share k), the rest "tie":
    the strong model's edge there is real but smaller, and a router that puts a hard poem level with a hard
    proof sends the wrong prompts strong."""

    every: int = 1
    every_in: tuple[tuple[str, int], ...] = ()

    def steps(self, categories: np.ndarray) -> np.ndarray:
        """Each prompt's k (1 in ``GAP_CATEGORIES``)."""
        named = dict(self.every_in)
        return np.array([1 if c in GAP_CATEGORIES else named.get(c, self.every) for c in categories], dtype=np.int64)


CHAT_LABEL_RULES = {
    "template": ChatLabelRule(),
    "gap-aware": ChatLabelRule(every=2),
    "gap-strict": ChatLabelRule(every=4),
    # Under gap-strict the hard/easy AUC fell most in extraction and everyday (0.07, 0.04), role-play and
    # humanities held theirs (under 0.01): strict only in the level categories, where the strong model's edge is
    # smallest; STEM, technical like the gap categories, keeps the gap-aware step.
    "gap-graded": ChatLabelRule(every=2, every_in=tuple((c, 4) for c in LEVEL_CATEGORIES)),
}


def template_labelled_rows(count: int, seed: int = 0, rule: str = "template") -> tuple[list[str], np.ndarray]:
    """``count`` generated chat prompts labelled by their template (``template_labels``)."""
    from edgeroute.export.training.chat_prompts import categorised_chat_prompts

    if count <= 0:
        return [], np.zeros(0, dtype=np.int64)
    prompts, hard, categories = categorised_chat_prompts(count, seed)
    return prompts, template_labels(np.array(hard, dtype=bool), np.array(categories), rule)


def written_labelled_rows(rule: str = "gap-aware", path: Path | None = None) -> tuple[list[str], np.ndarray]:
    """The training half of the written prompts with an intended difficulty, labelled like templates (``template_labels``).

    The other half is kept for choosing recipes (``categorised_written_prompts("validation")``). ``path``: a file
    laid out like ``WRITTEN_PROMPTS`` (default), e.g. an earlier version of it to rebuild a bundle trained on that.
    """
    from edgeroute.export.training.chat_prompts import WRITTEN_PROMPTS, categorised_written_prompts

    prompts, hard, categories = categorised_written_prompts("train", path or WRITTEN_PROMPTS)
    return prompts, template_labels(hard, categories, rule)


def template_labels(hard: np.ndarray, categories: np.ndarray | None = None, rule: str = "template") -> np.ndarray:
    """RouteLLM labels for generated chat prompts, an easy template's always "tie".

    ``template``: every hard template's "strong wins". ``gap-aware`` / ``gap-strict`` / ``gap-graded``: a hard
    template's "strong wins" in ``GAP_CATEGORIES``, and elsewhere every k-th hard prompt's (``ChatLabelRule``;
    k = 2 / 4 / 2, but 4 in writing, role-play and humanities), the rest "tie".
    """
    if rule not in CHAT_LABEL_RULES:
        raise ValueError(f"chat label rule {rule!r}: expected one of {', '.join(CHAT_LABEL_RULES)}")
    strong = np.asarray(hard, dtype=bool).copy()
    label_rule = CHAT_LABEL_RULES[rule]
    if label_rule == ChatLabelRule():
        return np.where(strong, LABEL_STRONG_WINS, LABEL_TIE).astype(np.int64)
    if categories is None:
        raise ValueError(f"the {rule} chat label rule needs each prompt's category")
    steps = label_rule.steps(np.asarray(categories))
    for every in np.unique(steps[steps > 1]):
        sharing = np.flatnonzero(strong & (steps == every))
        strong[sharing[np.arange(len(sharing)) % every != 0]] = False
    return np.where(strong, LABEL_STRONG_WINS, LABEL_TIE).astype(np.int64)


def finetuned_win_rates(model: Any, tokens: TokenizedPrompts, batch_size: int = 64) -> np.ndarray:
    """The win rate of every prompt of ``tokens`` (RouteLLM's BERT rule, ``batched_win_rates``), in float64."""
    return batched_win_rates(tokens.lengths, lambda rows: model(**tokens.batch(rows)).logits, batch_size)


__all__ = [
    "LABELS",
    "CHAT_LABEL_RULES",
    "ChatLabelRule",
    "GAP_CATEGORIES",
    "FineTuneRecipe",
    "StepHook",
    "TokenizedPrompts",
    "finetuned_win_rates",
    "length_balanced_weights",
    "length_batches",
    "template_labelled_rows",
    "written_labelled_rows",
    "train_finetuned",
    "written_voice",
    "balance_sources",
]
