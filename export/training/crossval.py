"""Run router recipes through the cross-validation protocol (``runtime/evaluation/data.py``).

Each recipe is trained once per split on that split's training rows and scores every row;
``edgeroute.runtime.evaluation.report.crossval_summary`` then reads only the test rows. Teacher runs
are the expensive part (minutes each on 2 cores), so their win rates are cached in a work
folder, keyed by the recipe and the data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgeroute.runtime.evaluation.data import BenchmarkData, benchmark_of
from edgeroute.runtime.scoring.heads import MLPHead, length_feature

from edgeroute.export.training.finetune import (
    FineTuneRecipe,
    TokenizedPrompts,
    balance_sources,
    finetuned_win_rates,
    length_balanced_weights,
    template_labels,
    train_finetuned,
)
from edgeroute.export.training.distill import ChatPrior, StudentRecipe, fit_student, teacher_targets, with_chat_prior
from edgeroute.export.training.table_tuning import TokenRows, fit_tuned_student, tuned_features, tuning_inputs
from edgeroute.export.training.features import as_scored, fold_length, static_features, student_features  # noqa: F401 - static_features re-exported
from edgeroute.export.training.probe import ProbeRecipe, encoder_embeddings, fit_probe, truncated_encoder
from edgeroute.export.training.teacher import FrozenPrefix, TeacherRecipe, load_classifier, teacher_win_rates, train_teacher
from edgeroute.export.training.data import LABEL_STRONG_WINS, LABEL_TIE, LABEL_WEAK_WINS

Splits = dict[str, tuple[np.ndarray, np.ndarray]]


def golden_labels(data: BenchmarkData) -> np.ndarray:
    """RouteLLM's golden-label rule: strong right and weak wrong, strong wins; the reverse, weak wins; else tie
    (unlabeled rows, NaN quality, come out as ties and are never in a training mask)."""
    strong_wins = data.strong_quality > data.weak_quality
    weak_wins = data.weak_quality > data.strong_quality
    return np.where(strong_wins, LABEL_STRONG_WINS, np.where(weak_wins, LABEL_WEAK_WINS, LABEL_TIE))


def _cache_key(data: BenchmarkData, settings: dict[str, Any], what: str) -> str:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    digest.update("\n".join(data.prompts).encode("utf-8", "replace"))
    return f"{what}-{digest.hexdigest()[:16]}.npy"


def teacher_scores(
    data: BenchmarkData, splits: Splits, encoder_dir: Path, recipe: TeacherRecipe, work_dir: Path, prefix: FrozenPrefix | None = None
) -> dict[str, np.ndarray]:
    """The teacher recipe's win rates on every row, one training run per split (cached in ``work_dir``)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    labels = golden_labels(data)
    scores = {}
    for split, (train, _) in splits.items():
        path = work_dir / _cache_key(data, asdict(recipe), f"teacher-{split}")
        if not path.is_file():
            prefix = prefix or FrozenPrefix(encoder_dir, data.prompts, recipe)
            model = train_teacher(encoder_dir, prefix, labels, np.flatnonzero(train), recipe)
            np.save(path, teacher_win_rates(model, prefix), allow_pickle=False)
        scores[split] = np.load(path, allow_pickle=False)
    return scores


def append_unlabeled(
    data: BenchmarkData, splits: Splits, extra: dict[str, list[str]]
) -> tuple[BenchmarkData, Splits, dict[str, np.ndarray]]:
    """``data`` with unlabeled prompts appended (quality NaN, group = the key), in no split's training or test rows.

    Every split's model still scores them (recipes score every row), which is how pair accuracy and
    distillation prompts ride along the protocol. Returns the data, the widened masks, and each key's rows.
    """
    prompts, groups, rows = list(data.prompts), list(data.groups), {}
    for group, texts in extra.items():
        rows[group] = np.arange(len(prompts), len(prompts) + len(texts))
        prompts += texts
        groups += [group] * len(texts)
    added = len(prompts) - len(data)
    nan = np.full(added, np.nan)
    widened = BenchmarkData(
        data.name,
        prompts,
        np.concatenate([data.strong_quality, nan]),
        np.concatenate([data.weak_quality, nan]),
        groups,
        data.strong_model,
        data.weak_model,
    )
    pad = np.zeros(added, dtype=bool)
    masks = {split: (np.concatenate([train, pad]), np.concatenate([test, pad])) for split, (train, test) in splits.items()}
    group_masks = {group: np.zeros(len(prompts), dtype=bool) for group in rows}
    for group, index in rows.items():
        group_masks[group][index] = True
    return widened, masks, group_masks


@dataclass(frozen=True)
class WrittenRows:
    """Written chat prompts appended to the data as unlabeled rows (``append_unlabeled``) that train every split's BERT
    under labels of their own (``written_labelled_rows``): ``rows`` index the data, ``labels`` and ``voice`` (first person,
    ``written_voice``) follow them, ``rule`` names the chat label rule that labelled them (part of the cache key)."""

    rows: np.ndarray
    labels: np.ndarray
    voice: np.ndarray
    rule: str


def finetuned_scores(
    data: BenchmarkData,
    splits: Splits,
    encoder_dir: Path,
    recipe: FineTuneRecipe,
    work_dir: Path,
    max_train_rows: int | None = None,
    chat: ChatPrior | None = None,
    chat_rows: int = 0,
    chat_rule: str = "template",
    written: WrittenRows | None = None,
) -> dict[str, np.ndarray]:
    """The fine-tuned BERT recipe's win rates per split (cached in ``work_dir``).

    Each split's model scores its test rows, the unlabeled rows (NaN quality) and the rows it trained on
    (what a student distils from); other rows stay NaN, which saves most of the scoring on 2 cores.
    ``max_train_rows``: train each split on a seeded sample of at most this many of its training rows (a
    cheaper stand-in for the full recipe; the shipped checkpoint trains on every row). ``chat_rows``: the
    first that many of ``chat``'s generated prompts train beside them with their template labels (``chat_rule``,
    ``template_labels``); ``written``: so do these written prompts, under their own labels. ``recipe.length_balance``
    (and ``voice_balance``) weight each split's training rows as ``train_final_finetuned`` weights all of them.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    labels, tokens, scores = golden_labels(data), None, {}
    chat_index = np.flatnonzero(chat.rows)[:chat_rows] if chat is not None else np.zeros(0, dtype=np.int64)
    if chat is not None:
        categories = None if chat.categories is None else chat.categories[chat_index]
        labels[chat_index] = template_labels(chat.hard[chat_index], categories, chat_rule)
    extra = chat_index
    if written is not None:
        labels[written.rows] = written.labels
        extra = np.union1d(chat_index, written.rows)
    settings = _finetuned_settings(recipe, max_train_rows, len(chat_index), chat_rule, written)
    for split, (train, test) in splits.items():
        path = work_dir / _cache_key(data, settings, f"finetuned-{split}")
        if not path.is_file():
            tokens = tokens or TokenizedPrompts(load_classifier(encoder_dir)[0], data.prompts, recipe.max_length)
            rows = np.flatnonzero(train)
            if max_train_rows is not None and len(rows) > max_train_rows:
                rows = np.sort(np.random.default_rng(recipe.seed).choice(rows, max_train_rows, replace=False))
            rows = np.union1d(rows, extra)
            weights = _split_weights(data, labels, rows, chat_index, written, recipe)
            model = train_finetuned(encoder_dir, tokens, labels, rows, recipe, label=f"fine-tune bert ({split})", weights=weights)
            scored = np.union1d(np.flatnonzero(test | np.isnan(data.strong_quality)), rows)
            rates = np.full(len(data), np.nan)
            rates[scored] = finetuned_win_rates(model, tokens.subset(scored))
            np.save(path, rates, allow_pickle=False)
        scores[split] = np.load(path, allow_pickle=False)
    return scores


def _finetuned_settings(
    recipe: FineTuneRecipe, max_train_rows: int | None, chat_rows: int, chat_rule: str, written: WrittenRows | None
) -> dict[str, Any]:
    """The cache key's settings; those added after the first caches were written join only when set, keeping their keys."""
    settings = {**asdict(recipe), "max_train_rows": max_train_rows, **({"chat_rows": chat_rows} if chat_rows else {})}
    for flag in ("length_balance", "voice_balance"):
        if not settings[flag]:
            del settings[flag]
    if chat_rule != "template":
        settings["chat_labels"] = chat_rule
    if written is not None:
        # The labels and voice come from the file's fields and the voice test, not from the prompts the key hashes.
        marks = hashlib.sha256(written.labels.astype(np.int64).tobytes() + written.voice.astype(bool).tobytes()).hexdigest()[:16]
        settings["written"] = {"rows": len(written.rows), "rule": written.rule, "labels": marks}
    return settings


def _split_weights(
    data: BenchmarkData, labels: np.ndarray, rows: np.ndarray, chat_index: np.ndarray, written: WrittenRows | None, recipe: FineTuneRecipe
) -> np.ndarray | None:
    """``length_balanced_weights`` over one split's training ``rows`` (``balance_sources``: each benchmark, generated and
    written chat; voice strata among the written prompts), placed in a weight per row of ``data`` (1 off ``rows``);
    None without ``length_balance``. The final training (``train_final_finetuned``) weights all its rows the same way."""
    if not recipe.length_balance:
        return None
    written_index = written.rows if written is not None else np.zeros(0, dtype=np.int64)
    first_person = written.voice if written is not None else np.zeros(0, dtype=bool)
    sources, voice = balance_sources(benchmark_of(data), chat_index, written_index, first_person)
    prompts = [data.prompts[i] for i in rows]
    strata = voice[rows] if recipe.voice_balance else None
    weights = np.ones(len(data))
    weights[rows] = length_balanced_weights(prompts, labels[rows], sources[rows], strata=strata)
    return weights


def probe_embeddings(data: BenchmarkData, encoder_dir: Path, recipe: ProbeRecipe, work_dir: Path) -> np.ndarray:
    """The frozen truncated encoder's embedding of every prompt (computed once, cached in ``work_dir``)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    settings = {"layers": recipe.layers, "max_length": recipe.max_length, "encoder": encoder_dir.name}
    path = work_dir / _cache_key(data, settings, "probe-embeddings")
    if not path.is_file():
        tokenizer, model = truncated_encoder(encoder_dir, recipe.layers)
        embeddings = encoder_embeddings(tokenizer, model, data.prompts, recipe.max_length, recipe.batch_size, True)
        np.save(path, embeddings, allow_pickle=False)
    return np.load(path, allow_pickle=False)


def probe_scores(
    embeddings: np.ndarray, data: BenchmarkData, splits: Splits, recipe: ProbeRecipe, served: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """The transformer tier's recipe per split: the probe fitted on the split's training rows, scoring every row.

    ``served``: the embeddings the head scores, when they differ from the training ones (e.g. those of
    the shipped int8 graph; the encoder is frozen, so one set serves every split).
    """
    prompts = as_scored(data.prompts, recipe.max_length)
    lengths = length_feature(prompts)
    scored = embeddings if served is None else served
    scores = {}
    for split, (train, _) in splits.items():
        rows = np.flatnonzero(train)
        hidden, output = fit_probe(embeddings[rows], [prompts[i] for i in rows], data.strong_quality[rows], data.weak_quality[rows], recipe)
        scores[split] = 1.0 / (1.0 + np.exp(-MLPHead(hidden, output).feature_logits(scored, lengths)))
    return scores


def student_scores(
    features: np.ndarray, splits: Splits, targets_of: Callable[[str], np.ndarray], recipe: StudentRecipe
) -> dict[str, np.ndarray]:
    """A head fitted per split on that split's training rows; ``targets_of(split)`` gives its targets."""
    scores = {}
    for split, (train, _) in splits.items():
        targets = targets_of(split)
        hidden, output = fit_student(features[train], targets[train], recipe)
        scores[split] = MLPHead(hidden, output).feature_logits(features[:, :-1], features[:, -1])
    return scores


def distilled_scores(
    features: np.ndarray,
    splits: Splits,
    teacher: dict[str, np.ndarray],
    recipe: StudentRecipe,
    length_weights: tuple[float, ...],
    prior: ChatPrior | None = None,
    tokens: TokenRows | None = None,
    table: np.ndarray | None = None,
) -> dict[float, dict[str, np.ndarray]]:
    """The fast tier's recipe per split: a student fitted to that split's teacher (never to a teacher that
    saw the split's test rows), then each length weight folded in (``fold_length``; one fit serves all).

    ``prior``: generated chat prompts (``prior.rows``) join every split's training rows (they need no labels:
    the split's teacher scores them), their template labels blended into the targets by ``prior.weight``
    (``with_chat_prior``). ``recipe.table_learning_rate`` > 0: the static ``table`` is tuned with the head per
    split from every row's ``tokens``, and every row is scored through that split's tuned table.
    """
    scores: dict[float, dict[str, np.ndarray]] = {weight: {} for weight in length_weights}
    for split, (train, _) in splits.items():
        # Rows the split's teacher left unscored (NaN) cannot be distilled from.
        labelled = train & np.isfinite(teacher[split])
        train = (train | prior.rows if prior is not None else train) & np.isfinite(teacher[split])
        logits = with_chat_prior(teacher_targets(teacher[split]), labelled, prior)
        hidden, output, split_features = _fit_split_student(features, train, logits, recipe, tokens, table)
        for weight in length_weights:
            folded = fold_length(hidden, output, split_features[train], logits[train], weight)
            scores[weight][split] = MLPHead(*folded).feature_logits(split_features[:, :-1], split_features[:, -1])
    return scores


def _fit_split_student(
    features: np.ndarray, train: np.ndarray, logits: np.ndarray, recipe: StudentRecipe, tokens: TokenRows | None, table: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One split's head (and tuned table's features, else ``features``): (head, head_out, every row's features)."""
    if recipe.table_learning_rate == 0.0:
        return *fit_student(features[train], logits[train], recipe), features
    tokens, table = tuning_inputs(tokens, table)
    rows = np.flatnonzero(train)
    tuned, hidden, output = fit_tuned_student(tokens.subset(rows), features[rows, -1], logits[rows], table, recipe)
    return hidden, output, tuned_features(tuned, tokens, features)


def label_scores(features: np.ndarray, splits: Splits, data: BenchmarkData, recipe: StudentRecipe) -> dict[str, np.ndarray]:
    """The same head fitted to the golden labels directly (no teacher): what distillation is compared to."""
    target = (golden_labels(data) == LABEL_STRONG_WINS).astype(np.float64)
    return student_scores(features, splits, lambda split: teacher_targets(0.05 + 0.9 * target), recipe)
