"""Chat-style checks of routers on two hand-written pair sets and the written prompts' validation half;
writes benchmarks/results/chat_categories.{md,json}.

    python benchmarks/chat_categories.py                      # the shipped bundles
    python benchmarks/chat_categories.py --bundle "bert 3b8ccef=/tmp/old/bert-minilm-gpt4-mixtral"

For each pair set: *pairs*, the share of hard/easy pairs of similar length whose hard prompt gets the
higher win rate; *gap AUC*, whether hard math, reasoning and coding prompts outrank hard writing, roleplay
and humanities ones (a strong model's edge over a weak one is largest on exact, multi-step work); and the
Spearman correlation of win rates with character count. Prompt length and random scores sit beside.
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
    length_spearman,
    load_pairs,
    pair_accuracy,
    pair_prompts,
)

ROOT = Path(__file__).resolve().parents[1]
PAIR_SETS = {
    "project pairs (64; same author as the training templates)": ROOT / "tests" / "fixtures" / "content_pairs.jsonl",
    "independent pairs (96; another author, who saw neither)": ROOT / "tests" / "fixtures" / "content_pairs_independent.jsonl",
}
RANDOM = "random (baseline, mean of 200 seeds)"
WRITTEN = "written prompts, validation half (1,855; nine authors who saw neither pair set)"
PAIR_COLUMNS = {"pairs": "pairs", "gap_auc": "gap AUC (hard prompts)", "spearman_length": "Spearman with length"}
WRITTEN_COLUMNS = {
    "pairs": "hard/easy AUC within categories",
    "gap_auc": "gap AUC (hard prompts)",
    "content_auc": "hard/easy AUC within categories and length quintiles",
    "content_gap_auc": "gap AUC within length quintiles",
    "spearman_length": "Spearman with length",
}
SHIPPED = ("bert-minilm-gpt4-mixtral", "static-distilled-gpt4-mixtral")


def figures(rates: np.ndarray, pairs: list, prompts: list[str]) -> dict[str, float]:
    """Pair accuracy, gap-category AUC and Spearman with length of one scorer on one pair set."""
    return {"pairs": pair_accuracy(rates), "gap_auc": gap_category_auc(rates, pairs), "spearman_length": length_spearman(rates, prompts)}


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
    for name, path in PAIR_SETS.items():
        pairs = load_pairs(path)
        prompts = pair_prompts(pairs)
        document[name] = {label: figures(rates, pairs, prompts) for label, rates in _scores(routers, prompts).items()}
        document[name][RANDOM] = random_figures(partial(figures, pairs=pairs, prompts=prompts), len(prompts))
    prompts, hard, categories = categorised_written_prompts("validation")
    score = partial(written_figures, hard=hard, categories=categories, prompts=prompts)
    document[WRITTEN] = {label: score(rates) for label, rates in _scores(routers, prompts).items()}
    document[WRITTEN][RANDOM] = random_figures(score, len(prompts))
    return document


def markdown(document: dict[str, dict[str, dict[str, float]]]) -> str:
    """One table per prompt set."""
    lines = ["# Chat-style checks on two pair sets and the written validation half", "", __doc__.split("\n\n", 2)[2].strip(), ""]
    for name, rows in document.items():
        columns = WRITTEN_COLUMNS if name == WRITTEN else PAIR_COLUMNS
        lines += [f"## {name}", "", "| router | " + " | ".join(columns.values()) + " |", "|" + " --- |" * (len(columns) + 1)]
        for label, f in rows.items():
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
