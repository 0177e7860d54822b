"""Chat-style checks of routers on three hand-written pair sets and the written prompts' validation half;
writes benchmarks/results/chat_categories.{md,json}.

    python benchmarks/chat_categories.py                      # the shipped bundles
    python benchmarks/chat_categories.py --bundle "bert 3b8ccef=/tmp/old/bert-minilm-gpt4-mixtral"

For each pair set: *pairs*, the share of hard/easy pairs of similar length whose hard prompt gets the
higher win rate, also over the pairs where neither prompt has a relative (TF-IDF cosine above 0.25 or a shared
six-word run) among the written and generated prompts the shipped routers trained or distilled on; *gap AUC*,
whether hard math, reasoning and coding prompts outrank hard writing, roleplay and humanities ones (a strong
model's edge over a weak one is largest on exact, multi-step work); and the Spearman correlation of win rates
with character count. Prompt length and random scores sit beside.
Every prompt is scored alone (batch 1), as served. The validation half of the written prompts
(`export/training/written_prompts.jsonl`, the prompts with an intended difficulty that no recipe trains on;
recipes are chosen there, the pair sets only report) has no pairs: its first column is the hard/easy AUC
within each category, averaged over categories. In its first prompts the hard ones are longer than the easy
ones (length alone scores 0.81 there); short hard and long easy prompts written since (the latest also balancing
the first person between hard and easy) bring length alone to 0.47 over the half (after an audit took the label
off 296 doubtful short hard prompts, and 183 new short math, reasoning and coding prompts joined), and it also gives
both AUCs within length quintiles, where length alone scores about 0.5. The shipped routers learned from the training
half of the file as it is; its validation half (1,855 prompts: the 1,767 the shipped routers were chosen on and 88 of
the new ones) no BERT router trained on.
The fast tier is distilled on every written prompt's teacher score (never its label), so there it measures
how well it follows its teacher, not a held-out prompt.
"""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np

from edgeroute.runtime import Router
from edgeroute.export.training.chat_prompts import categorised_written_prompts
from edgeroute.runtime.evaluation.content import (
    category_gap_auc,
    content_difficulty_auc,
    content_gap_auc,
    difficulty_auc,
    gap_category_auc,
    has_relative,
    length_spearman,
    load_pairs,
    pair_accuracy,
    pair_prompts,
)

ROOT = Path(__file__).resolve().parents[1]
PAIR_SETS = {
    "project pairs (64; same author as the training templates)": ROOT / "tests" / "fixtures" / "content_pairs.jsonl",
    "independent pairs (96; another author, who saw neither)": ROOT / "tests" / "fixtures" / "content_pairs_independent.jsonl",
    "third-author pairs (96; written after the shipped routers by an author who read nothing of the project)": ROOT
    / "tests"
    / "fixtures"
    / "content_pairs_third.jsonl",
}
RANDOM = "random (baseline, mean of 200 seeds)"
WRITTEN = "written prompts, validation half (1,855; nine authors who saw neither pair set)"
PAIR_COLUMNS = {
    "pairs": "pairs",
    "pairs_no_relative": "pairs without a relative in the training prompts",
    "gap_auc": "gap AUC (hard prompts)",
    "spearman_length": "Spearman with length",
}
WRITTEN_COLUMNS = {
    "pairs": "hard/easy AUC within categories",
    "gap_auc": "gap AUC (hard prompts)",
    "content_auc": "hard/easy AUC within categories and length quintiles",
    "content_gap_auc": "gap AUC within length quintiles",
    "spearman_length": "Spearman with length",
}
SHIPPED = ("bert-minilm-gpt4-mixtral", "static-distilled-gpt4-mixtral")
# The row of a pair set's table that counts its pairs without a relative (``has_relative``) in ``training_prompts``.
UNRELATED = "pairs without a relative (count)"


def figures(rates: np.ndarray, pairs: list, prompts: list[str], unrelated: np.ndarray) -> dict[str, float]:
    """Pair accuracy (of all pairs, and of the ``unrelated`` ones), gap-category AUC and Spearman with length of one
    scorer on one pair set."""
    return {
        "pairs": pair_accuracy(rates),
        "pairs_no_relative": pair_accuracy(rates[np.repeat(unrelated, 2)]),
        "gap_auc": gap_category_auc(rates, pairs),
        "spearman_length": length_spearman(rates, prompts),
    }


def training_prompts() -> list[str]:
    """What a shipped router trained or distilled on beside the shared prompts: every written prompt and the generated
    chat prompts (the BERT router's 3,000, the fast tier's 6,000)."""
    from edgeroute.export.training.chat_prompts import WRITTEN_PROMPTS, categorised_chat_prompts, chat_prompts
    from edgeroute.runtime.evaluation.report import read_prompts

    # read_prompts is what `edgeroute train distilled --extra-prompts` reads the written prompts with.
    return read_prompts([WRITTEN_PROMPTS]) + chat_prompts(6000) + categorised_chat_prompts(3000)[0]


def unrelated_pairs(pairs: list, references: list[str]) -> np.ndarray:
    """Per pair, whether neither of its prompts has a relative among ``references`` (``has_relative``)."""
    related = has_relative(pair_prompts(pairs), references)
    return ~(related[0::2] | related[1::2])


def random_figures(score: Callable[[np.ndarray], dict[str, float]], count: int, seeds: int = 200) -> dict[str, float]:
    """The figures of random scores for ``count`` prompts, averaged over seeds (one seed's gap AUC on 24 x 24 prompts moves by 0.08)."""
    runs = [score(np.random.default_rng(seed).random(count)) for seed in range(seeds)]
    return {key: float(np.mean([run[key] for run in runs])) for key in runs[0]}


def written_figures(rates: np.ndarray, hard: np.ndarray, categories: np.ndarray, prompts: list[str]) -> dict[str, float]:
    """Hard/easy AUC within categories, gap-category AUC of the hard prompts, both also within length quintiles,
    and Spearman with length."""
    hard_prompts = [p for p, h in zip(prompts, hard) if h]
    return {
        "pairs": difficulty_auc(rates, hard, categories),
        "gap_auc": category_gap_auc(rates[hard], categories[hard]),
        "content_auc": content_difficulty_auc(rates, hard, categories, prompts),
        "content_gap_auc": content_gap_auc(rates[hard], categories[hard], hard_prompts),
        "spearman_length": length_spearman(rates, prompts),
    }


def _scores(routers: dict[str, Router], prompts: list[str]) -> dict[str, np.ndarray]:
    """Every router's win rates, one prompt per call, and prompt length beside."""
    scores = {label: np.array([router.strong_win_rates([p])[0] for p in prompts]) for label, router in routers.items()}
    scores["prompt length (baseline)"] = np.array([len(p) for p in prompts], dtype=float)
    return scores


def measure(bundles: dict[str, str]) -> dict[str, dict[str, dict[str, float]]]:
    """Every scorer's figures on every pair set and the written validation half: {set: {scorer: figures}}."""
    routers = {label: Router.load(path, threads=1) for label, path in bundles.items()}
    document: dict[str, dict[str, dict[str, float]]] = {}
    references = training_prompts()
    for name, path in PAIR_SETS.items():
        pairs = load_pairs(path)
        prompts, unrelated = pair_prompts(pairs), unrelated_pairs(pairs, references)
        score = partial(figures, pairs=pairs, prompts=prompts, unrelated=unrelated)
        document[name] = {label: score(rates) for label, rates in _scores(routers, prompts).items()}
        document[name][RANDOM] = random_figures(score, len(prompts))
        document[name][UNRELATED] = {"pairs_no_relative": float(unrelated.sum())}
    prompts, hard, categories = categorised_written_prompts("validation")
    score = partial(written_figures, hard=hard, categories=categories, prompts=prompts)
    document[WRITTEN] = {label: score(rates) for label, rates in _scores(routers, prompts).items()}
    document[WRITTEN][RANDOM] = random_figures(score, len(prompts))
    return document


def markdown(document: dict[str, dict[str, dict[str, float]]]) -> str:
    """One table per prompt set."""
    lines = ["# Chat-style checks on three pair sets and the written validation half", "", __doc__.split("\n\n", 2)[2].strip(), ""]
    for name, rows in document.items():
        columns = WRITTEN_COLUMNS if name == WRITTEN else PAIR_COLUMNS
        lines += [f"## {name}", "", "| router | " + " | ".join(columns.values()) + " |", "|" + " --- |" * (len(columns) + 1)]
        for label, f in rows.items():
            if label == UNRELATED:
                lines.append(f"| {label} | - | {f['pairs_no_relative']:.0f} | - | - |")
                continue
            cells = [f"{f[key]:+.2f}" if key == "spearman_length" else f"{f[key]:.3f}" for key in columns]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", action="append", default=[], help="LABEL=PATH of another bundle to score beside the shipped ones")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    bundles = {name: name for name in SHIPPED} | dict(item.split("=", 1) for item in args.bundle)
    document = measure(bundles)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "chat_categories.json").write_text(json.dumps(document, indent=2) + "\n")
    (args.out / "chat_categories.md").write_text(markdown(document))
    print(markdown(document))


if __name__ == "__main__":
    main()
