"""Does a router read the prompt, or only measure it? Three checks that prompt length cannot pass.

- ``content_apgr``: APGR within length quintiles (prompts binned by character count, each bin
  evaluated alone, the bins' APGRs averaged). A scorer of length alone gets about 0.5 there.
- ``pair_accuracy``: the share of hard/easy prompt pairs of similar length (``load_pairs``) in
  which the hard prompt gets the higher win rate. Length alone gets about 0.5.
- ``length_spearman``: the rank correlation of win rates with character count (1.0 for length).
- ``gap_category_auc``: whether a pair set's hard math, reasoning and coding prompts outrank its hard
  writing, roleplay and humanities prompts, where a strong model's edge over a weak one is smaller.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeroute.runtime.errors import InvalidInputError
from edgeroute.runtime.evaluation.curves import routing_curve, summarize

LENGTH_BINS = 5
# Chat categories where a weak open model most often fails and a strong one does not (exact, multi-step work),
# and those where both mostly answer well.
GAP_CATEGORIES = ("math", "reasoning", "coding")
LEVEL_CATEGORIES = ("writing", "roleplay", "humanities")
# Within 15% of each other's length, as the pair set promises (checked on load).
PAIR_LENGTH_TOLERANCE = 0.15


@dataclass(frozen=True)
class PromptPair:
    """A clearly hard prompt and an easy one of similar length, in one chat category."""

    category: str
    hard: str
    easy: str


def load_pairs(path: Path) -> list[PromptPair]:
    """Read a pair set (JSON lines of ``{"category", "hard", "easy"}``); refuses pairs of unlike length."""
    pairs = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            pair = PromptPair(str(row["category"]), str(row["hard"]), str(row["easy"]))
        except (ValueError, KeyError, TypeError) as error:
            raise InvalidInputError(f"{path}:{number}: expected {{'category', 'hard', 'easy'}} ({error})") from None
        longer = max(len(pair.hard), len(pair.easy))
        if abs(len(pair.hard) - len(pair.easy)) > PAIR_LENGTH_TOLERANCE * longer:
            raise InvalidInputError(f"{path}:{number}: the two prompts differ in length by more than {PAIR_LENGTH_TOLERANCE:.0%}")
        pairs.append(pair)
    if not pairs:
        raise InvalidInputError(f"{path}: no prompt pairs")
    return pairs


def pair_prompts(pairs: Sequence[PromptPair]) -> list[str]:
    """Every pair's hard then easy prompt, in order (the layout ``pair_accuracy`` reads)."""
    return [prompt for pair in pairs for prompt in (pair.hard, pair.easy)]


def pair_accuracy(win_rates: np.ndarray) -> float:
    """Share of pairs whose hard prompt scores higher; ``win_rates`` follows ``pair_prompts`` (ties count half)."""
    rates = np.asarray(win_rates, dtype=np.float64).reshape(-1, 2)
    return float(np.mean((rates[:, 0] > rates[:, 1]) + 0.5 * (rates[:, 0] == rates[:, 1])))


def rank_auc(higher: np.ndarray, lower: np.ndarray) -> float:
    """P(a score of ``higher`` exceeds a score of ``lower``), ties half; NaN when either side is empty."""
    higher, lower = np.asarray(higher, dtype=np.float64), np.asarray(lower, dtype=np.float64)
    if not len(higher) or not len(lower):
        return float("nan")
    return float(np.mean((higher[:, None] > lower[None, :]) + 0.5 * (higher[:, None] == lower[None, :])))


def category_gap_auc(hard_rates: np.ndarray, categories: np.ndarray) -> float:
    """P(a hard prompt of ``GAP_CATEGORIES`` outranks a hard prompt of ``LEVEL_CATEGORIES``); both arrays cover hard prompts only."""
    hard_rates, categories = np.asarray(hard_rates, dtype=np.float64), np.asarray(categories)
    return rank_auc(hard_rates[np.isin(categories, GAP_CATEGORIES)], hard_rates[np.isin(categories, LEVEL_CATEGORIES)])


def gap_category_auc(win_rates: np.ndarray, pairs: Sequence[PromptPair]) -> float:
    """``category_gap_auc`` of a pair set's hard prompts; ``win_rates`` follows ``pair_prompts(pairs)``."""
    hard = np.asarray(win_rates, dtype=np.float64).reshape(-1, 2)[:, 0]
    return category_gap_auc(hard, np.array([pair.category for pair in pairs]))


def difficulty_auc(win_rates: np.ndarray, hard: np.ndarray, categories: np.ndarray) -> float:
    """The mean over categories of P(a hard prompt outranks an easy prompt of the same category), ties half.

    Categories without both hard and easy prompts are skipped; NaN where none has both.
    """
    rates, hard, categories = np.asarray(win_rates, dtype=np.float64), np.asarray(hard, dtype=bool), np.asarray(categories)
    return finite_mean([rank_auc(rates[(categories == c) & hard], rates[(categories == c) & ~hard]) for c in np.unique(categories)])


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing their mean rank (as Spearman's rho wants)."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    unique, inverse = np.unique(values, return_inverse=True)
    sums = np.bincount(inverse, weights=ranks, minlength=len(unique))
    return (sums / np.bincount(inverse, minlength=len(unique)))[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two equally long arrays."""
    ra, rb = _ranks(np.asarray(a, dtype=np.float64)), _ranks(np.asarray(b, dtype=np.float64))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = np.sqrt((ra**2).sum() * (rb**2).sum())
    return float((ra * rb).sum() / denominator) if denominator else float("nan")


def prompt_lengths(prompts: Sequence[str]) -> np.ndarray:
    """Character counts: the length the baselines and these checks use."""
    return np.array([len(p) for p in prompts], dtype=np.float64)


def length_spearman(win_rates: np.ndarray, prompts: Sequence[str]) -> float:
    """Rank correlation of win rates with character count."""
    return spearman(win_rates, prompt_lengths(prompts))


def length_bins(prompts: Sequence[str], bins: int = LENGTH_BINS) -> np.ndarray:
    """Each prompt's length quintile (0 = shortest), by rank so that equal lengths never straddle unevenly."""
    ranks = _ranks(prompt_lengths(prompts))
    return np.minimum(((ranks - 1) * bins / max(len(ranks), 1)).astype(int), bins - 1)


def content_apgr(
    win_rates: np.ndarray, strong_quality: np.ndarray, weak_quality: np.ndarray, prompts: Sequence[str], bins: int = LENGTH_BINS
) -> float:
    """APGR within length bins, averaged over the bins whose two models differ in mean quality."""
    return binned_metric(lambda keep: apgr(win_rates[keep], strong_quality[keep], weak_quality[keep]), prompts, bins)


def binned_metric(metric: Callable[[np.ndarray], float], prompts: Sequence[str], bins: int = LENGTH_BINS) -> float:
    """Mean of ``metric(mask)`` over length bins, skipping bins where it is undefined (NaN)."""
    assigned = length_bins(prompts, bins)
    return finite_mean([metric(assigned == k) for k in range(bins)])


def finite_mean(values: Sequence[float]) -> float:
    """The mean of the finite values (undefined ones, NaN, are skipped); NaN where none is finite."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def content_difficulty_auc(win_rates: np.ndarray, hard: np.ndarray, categories: np.ndarray, prompts: Sequence[str]) -> float:
    """``difficulty_auc`` within length bins, averaged: hard and easy prompts of similar length only (length alone: about 0.5)."""
    rates, hard, categories = np.asarray(win_rates, dtype=np.float64), np.asarray(hard, dtype=bool), np.asarray(categories)
    return binned_metric(lambda keep: difficulty_auc(rates[keep], hard[keep], categories[keep]), prompts)


def content_gap_auc(hard_rates: np.ndarray, categories: np.ndarray, hard_prompts: Sequence[str]) -> float:
    """``category_gap_auc`` within length bins of the hard prompts, averaged (length alone: about 0.5)."""
    rates, categories = np.asarray(hard_rates, dtype=np.float64), np.asarray(categories)
    return binned_metric(lambda keep: category_gap_auc(rates[keep], categories[keep]), hard_prompts)


def apgr(win_rates: np.ndarray, strong_quality: np.ndarray, weak_quality: np.ndarray) -> float:
    """RouteLLM's APGR of ``win_rates``; NaN where it is undefined (under two rows, or models of equal quality)."""
    if len(win_rates) < 2 or strong_quality.mean() == weak_quality.mean():
        return float("nan")
    curve = routing_curve(win_rates, strong_quality, weak_quality)
    return summarize(curve, float(strong_quality.mean()), float(weak_quality.mean()))["apgr"]


def nearest_tfidf_cosine(prompts: Sequence[str], references: Sequence[str]) -> list[float]:
    """Each prompt's highest cosine with any reference: TF-IDF on word unigrams and bigrams, sublinear tf, smooth idf
    (scikit-learn's TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), written out so the check needs no scipy)."""

    def terms(text: str) -> list[str]:
        words = re.findall(r"\b\w\w+\b", text.lower())
        return words + [f"{a} {b}" for a, b in zip(words, words[1:])]

    docs = [Counter(terms(text)) for text in [*prompts, *references]]
    df = Counter(term for doc in docs for term in doc)
    idf = {term: math.log((1 + len(docs)) / (1 + n)) + 1 for term, n in df.items()}
    vectors = []
    for doc in docs:
        weights = {term: (1 + math.log(tf)) * idf[term] for term, tf in doc.items()}
        norm = math.sqrt(sum(w * w for w in weights.values())) or 1.0  # a prompt without a two-letter word
        vectors.append({term: w / norm for term, w in weights.items()})
    postings: dict[str, list[tuple[int, float]]] = {}
    for index, vector in enumerate(vectors[len(prompts) :]):
        for term, w in vector.items():
            postings.setdefault(term, []).append((index, w))
    nearest = []
    for vector in vectors[: len(prompts)]:
        scores: dict[int, float] = {}
        for term, w in vector.items():
            for index, v in postings.get(term, ()):
                scores[index] = scores.get(index, 0.0) + w * v
        nearest.append(max(scores.values(), default=0.0))
    return nearest


# A relative: a prompt whose TF-IDF cosine with a reference is above this (rewordings a review found sat above it), or
# that shares a run of this many words with one.
RELATIVE_COSINE, RELATIVE_RUN = 0.25, 6


def word_runs(text: str, length: int = RELATIVE_RUN) -> set[str]:
    """Every run of ``length`` consecutive words (lower case, letters and digits) in ``text``."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    return {" ".join(words[i : i + length]) for i in range(len(words) - length + 1)}


def has_relative(prompts: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Per prompt, whether a reference is a relative of it (``RELATIVE_COSINE``, ``RELATIVE_RUN``): a pair set's prompts
    against what a router trained or distilled on, to report a pair set both whole and without what it may have seen."""
    runs = set().union(*(word_runs(r) for r in references))
    cosines = np.array(nearest_tfidf_cosine(prompts, references))
    return (cosines > RELATIVE_COSINE) | np.array([bool(word_runs(p) & runs) for p in prompts], dtype=bool)
