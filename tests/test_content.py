"""The content checks (content APGR, the pair set, length correlation), the training-prompt sketch and
the generated chat prompts: what tells a router that reads prompts from one that measures them."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from edgeroute.runtime import InvalidInputError
from edgeroute.runtime.evaluation.content import (
    has_relative,
    nearest_tfidf_cosine,
    word_runs,
    content_apgr,
    length_bins,
    length_spearman,
    load_pairs,
    pair_accuracy,
    pair_prompts,
    prompt_lengths,
    rank_auc,
    spearman,
)
from edgeroute.runtime.evaluation.data import BenchmarkData, prompt_sketch, sketch_overlap
from edgeroute.runtime.evaluation.report import crossval_summary, in_sample_warnings

PAIRS = Path(__file__).parent / "fixtures" / "content_pairs.jsonl"
# Written by another author who saw neither the chat templates nor PAIRS; a check, never trained or tuned on.
INDEPENDENT_PAIRS = Path(__file__).parent / "fixtures" / "content_pairs_independent.jsonl"
# Written after the routers shipped (2026-12-08) by an author who read nothing of the project; many of its prompts have
# relatives among the written and generated training prompts (benchmarks/chat_categories.py reports both).
THIRD_PAIRS = Path(__file__).parent / "fixtures" / "content_pairs_third.jsonl"
# Puzzle types the pair sets hold, which a reworded training prompt could share with them without a shared word run.
PAIR_PUZZLES = re.compile(
    r"knave|truth-teller|always lies|always tells? (the )?truth|tells? (the )?truth only|liars' island|liar or|"
    r"exactly one (of them )?(tells|speaks)|is lying\.|both lying|\btorch\b|flashlight|private language|zip code|"
    r"clock loses|hour and minute hands|clock's hour|six people|mutual (friends|strangers)|madame bovary|ipv4|"
    r"counterfeit coin|fake coin|twelve coins|12 coins|every label is wrong|mislabel|five pirates|pirates (split|divide)|"
    r"is irrational|re-renders? (forever|infinitely)|who wrote .{0,2}romeo|romeo and juliet\?|bones (are )?in (an|the) adult|"
    r"python version|bat and (a )?ball|two envelopes|0\.999|balance scale|weighings|\bABA\b|gaps and islands|consistent hashing|"
    r"carnot|bronze age collapse|thrasymachus|westphalia|remains of the day|capital of (france|australia)",
    re.IGNORECASE,
)
WRITTEN_PROMPTS = 4754
CATEGORIES = {"writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"}


@pytest.mark.parametrize("path", [PAIRS, INDEPENDENT_PAIRS, THIRD_PAIRS], ids=["project", "independent", "third"])
def test_pair_set_is_length_balanced_across_chat_categories(path):
    pairs = load_pairs(path)
    assert len(pairs) >= 60 and {p.category for p in pairs} == CATEGORIES
    assert min(Counter(p.category for p in pairs).values()) >= 6
    for pair in pairs:
        assert abs(len(pair.hard) - len(pair.easy)) <= 0.15 * max(len(pair.hard), len(pair.easy))
    assert sum(len(p.easy) > len(p.hard) for p in pairs) == len(pairs) // 2  # the easy one is the longer in half
    # so prompt length alone orders half of the pairs correctly (one independent pair is of equal length: a tie)
    assert abs(pair_accuracy(prompt_lengths(pair_prompts(pairs))) - 0.5) <= 0.5 / len(pairs)


def test_pair_accuracy_counts_hard_above_easy_and_ties_as_half():
    assert pair_accuracy(np.array([0.9, 0.1, 0.2, 0.8, 0.5, 0.5])) == pytest.approx(0.5)
    assert pair_accuracy(np.array([0.9, 0.1, 0.7, 0.6])) == 1.0


def test_load_pairs_refuses_unlike_lengths_and_bad_rows(tmp_path):
    uneven = tmp_path / "uneven.jsonl"
    uneven.write_text(json.dumps({"category": "math", "hard": "x" * 100, "easy": "y" * 80}) + "\n")
    with pytest.raises(InvalidInputError) as caught:
        load_pairs(uneven)
    assert str(caught.value) == f"{uneven}:1: the two prompts differ in length by more than 15%"
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"category": "math", "hard": "a"}\n')
    with pytest.raises(InvalidInputError, match=r"broken.jsonl:1: expected \{'category', 'hard', 'easy'\}"):
        load_pairs(broken)


def test_spearman_matches_hand_computed_ranks_with_ties():
    assert spearman(np.array([1, 2, 3, 4]), np.array([10, 20, 30, 40])) == pytest.approx(1.0)
    assert spearman(np.array([1, 2, 3, 4]), np.array([4, 3, 2, 1])) == pytest.approx(-1.0)
    # ranks (1, 2.5, 2.5, 4) against (1, 2, 3, 4): Pearson of the ranks
    assert spearman(np.array([1.0, 2.0, 2.0, 3.0]), np.array([1, 2, 3, 4])) == pytest.approx(
        np.corrcoef([1, 2.5, 2.5, 4], [1, 2, 3, 4])[0, 1]
    )
    assert length_spearman(np.array([3.0, 1.0, 2.0]), ["ccc", "a", "bb"]) == pytest.approx(1.0)


def _length_rewarding_data(n: int = 3000) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Prompts whose strong-model gain grows with length, plus a hidden content signal within each length."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(10, 400, n)
    content = rng.random(n)
    prompts = ["x" * int(k) for k in lengths]
    gain_probability = 0.05 + 0.25 * (lengths / 400) + 0.7 * content
    strong = (rng.random(n) < 0.7).astype(float)
    weak = np.where(rng.random(n) < gain_probability, 0.0, strong)
    return prompts, strong, weak, content


def test_content_apgr_gives_length_about_half_and_content_more():
    prompts, strong, weak, content = _length_rewarding_data()
    lengths = prompt_lengths(prompts)
    assert abs(content_apgr(lengths, strong, weak, prompts) - 0.5) < 0.05
    assert content_apgr(content, strong, weak, prompts) > 0.6
    assert all(abs(count - 600) <= 10 for count in np.bincount(length_bins(prompts)))  # quintiles by rank (ties share a bin)


def _with_pairs() -> tuple[BenchmarkData, np.ndarray, np.ndarray]:
    """1,000 length-rewarding rows (500 MMLU, 500 GSM8K) with the pair set appended, its rows, and a content reader."""
    prompts, strong, weak, content = _length_rewarding_data(1000)
    pairs = pair_prompts(load_pairs(PAIRS))
    nan = np.full(len(pairs), np.nan)
    data = BenchmarkData(
        "mmlu+gsm8k",
        prompts + pairs,
        np.concatenate([strong, nan]),
        np.concatenate([weak, nan]),
        ["algebra"] * 500 + ["gsm8k"] * 500 + ["pairs"] * len(pairs),
        "s",
        "w",
    )
    reader = np.concatenate([content, np.tile([1.0, 0.0], len(pairs) // 2)])  # reads content, knows every pair
    return data, np.arange(1000, len(data)), reader


def test_crossval_summary_reports_content_pairs_and_length_correlation():
    data, pair_rows, reader = _with_pairs()
    rows = np.arange(len(data))
    labelled = rows < 1000
    splits = {
        "fold0": (labelled & (rows % 2 == 0), labelled & (rows % 2 == 1)),
        "fold1": (labelled & (rows % 2 == 1), labelled & (rows % 2 == 0)),
        "mmlu->gsm8k": (rows < 500, labelled & (rows >= 500)),
        "gsm8k->mmlu": (labelled & (rows >= 500), rows < 500),
    }
    summary = crossval_summary(data, splits, {"reader": {s: reader for s in splits}}, pair_rows)
    assert summary["reader"]["pairs"] == 1.0 and summary["prompt length"]["pairs"] == 0.5
    assert summary["prompt length"]["spearman"] == pytest.approx(1.0) and abs(summary["reader"]["spearman"]) < 0.2
    assert summary["reader"]["content"]["mmlu"]["mean"] > summary["prompt length"]["content"]["mmlu"]["mean"] + 0.05


def test_prompt_sketch_measures_overlap_without_keeping_prompts():
    training = [f"question {i}" for i in range(2000)]
    sketch = prompt_sketch(training)
    assert len(sketch) == 256 and all(len(h) == 16 for h in sketch) and not any("question" in h for h in sketch)
    assert sketch_overlap(sketch, training) == 1.0
    assert sketch_overlap(sketch, [f"other {i}" for i in range(2000)]) == 0.0
    assert 0.35 < sketch_overlap(sketch, training[:1000]) < 0.65  # about the share of the set that is there


def test_eval_warns_when_a_router_was_trained_on_the_set():
    result = {"routers": {"mine": {"trained_on_share": 0.98}, "random": {}, "held-out": {"trained_on_share": 0.0}}}
    assert in_sample_warnings(result) == [
        "warning: mine was trained on prompts of this set (about 98% of its training prompts are here): "
        "its figures are in-sample, not held-out; evaluate on prompts it never saw"
    ]


def test_chat_prompts_are_distinct_deterministic_and_span_categories():
    from edgeroute.export.training.chat_prompts import CATEGORIES as GENERATED, chat_prompts

    prompts = chat_prompts(5000)
    assert len(prompts) == len(set(prompts)) == 5000 and prompts == chat_prompts(5000)
    assert set(GENERATED) == CATEGORIES
    # Padding makes length say little about the template's difficulty.
    assert abs(spearman(prompt_lengths(prompts), np.array(["prove" in p.lower() for p in prompts], dtype=float))) < 0.3


def test_chat_prior_moves_only_chat_rows_toward_the_teachers_percentiles():
    from edgeroute.export.training.distill import ChatPrior, with_chat_prior

    logits = np.array([-3.0, -1.0, 0.0, 1.0, 3.0, 0.5, 0.5])
    rows = np.array([False] * 5 + [True, True])
    hard = np.array([False] * 5 + [True, False])
    low, high = np.percentile(logits[:5], [10, 90])
    blended = with_chat_prior(logits, ~rows, ChatPrior(rows, hard, 0.5))
    np.testing.assert_allclose(blended[:5], logits[:5])  # labelled rows keep the teacher's targets
    np.testing.assert_allclose(blended[5:], [0.5 * 0.5 + 0.5 * high, 0.5 * 0.5 + 0.5 * low])
    np.testing.assert_allclose(with_chat_prior(logits, ~rows, ChatPrior(rows, hard, 0.0)), logits)
    # Unlabeled prompts of another source (--extra-prompts) are neither chat rows nor anchors.
    assert ChatPrior(rows, hard, 0.5).labelled_rows().tolist() == (~rows).tolist()
    only_data = np.array([True] * 4 + [False] * 3)
    assert ChatPrior(rows, hard, 0.5, labelled=only_data).labelled_rows() is only_data


def test_labelled_chat_prompts_are_the_chat_prompts_with_their_template_kind():
    from edgeroute.export.training.chat_prompts import chat_prompts, labelled_chat_prompts

    prompts, hard = labelled_chat_prompts(400, seed=3)
    assert prompts == chat_prompts(400, seed=3) and len(hard) == 400
    assert 0.35 < np.mean(hard) < 0.65


def test_categorised_chat_prompts_are_the_chat_prompts_with_their_kind_and_category():
    from edgeroute.export.training.chat_prompts import CATEGORIES, categorised_chat_prompts, labelled_chat_prompts

    prompts, hard, categories = categorised_chat_prompts(400, seed=3)
    assert (prompts, hard) == labelled_chat_prompts(400, seed=3)
    assert set(categories) == set(CATEGORIES)


def test_nearest_tfidf_cosine_of_the_relative_check():
    assert nearest_tfidf_cosine(["What is the capital of France?"], ["What is the capital of France?", "x y"]) == pytest.approx([1.0])
    assert nearest_tfidf_cosine(["Plant tomatoes in May."], ["Prove Fermat's little theorem."]) == [0.0]
    assert 0.2 < nearest_tfidf_cosine(["Find the remainder of 7^2024 mod 13."], ["What is the remainder of 3^2024 mod 1000?"])[0] < 0.9
    assert nearest_tfidf_cosine(["? !"], ["What is 2 + 2?"]) == [0.0]


def test_written_distillation_prompts_have_no_relative_in_either_pair_set():
    written = Path(__file__).resolve().parents[1] / "export" / "training" / "written_prompts.jsonl"
    prompts = [json.loads(line)["prompt"] for line in written.read_text(encoding="utf-8").splitlines()]
    assert len(prompts) == len(set(prompts)) >= WRITTEN_PROMPTS
    references = [p for path in (PAIRS, INDEPENDENT_PAIRS) for p in pair_prompts(load_pairs(path))]
    checked = set().union(*(word_runs(p) for p in references))
    # The pair sets stay a check of what was never trained or distilled on: no shared six-word run, no reworded
    # prompt (TF-IDF cosine above 0.25 caught rewordings a review found) and none of the pair sets' named puzzles.
    assert not [p for p in prompts if word_runs(p) & checked]
    assert not has_relative(prompts, references).any()
    assert not [p for p, cosine in zip(prompts, nearest_tfidf_cosine(prompts, references)) if cosine > 0.25]
    assert not [p for p in prompts if PAIR_PUZZLES.search(p)]


def test_chat_label_rules_exactly():
    from edgeroute.export.training.data import LABEL_STRONG_WINS as S, LABEL_TIE as T
    from edgeroute.export.training.finetune import template_labels

    hard = np.array([True, True, True, True, True, False, True, False])
    categories = np.array(["math", "writing", "coding", "writing", "stem", "math", "reasoning", "writing"])
    assert template_labels(hard).tolist() == [S, S, S, S, S, T, S, T]
    # Gap-aware: hard math/reasoning/coding strong; every second other hard prompt (writing, writing, stem: the 2nd) tie.
    assert template_labels(hard, categories, "gap-aware").tolist() == [S, S, S, T, S, T, S, T]
    # Gap-strict: every fourth other hard prompt strong (of writing, writing, stem, writing, stem: the 1st and 5th).
    wide_hard = np.array([True] * 7)
    wide = np.array(["writing", "writing", "math", "stem", "writing", "reasoning", "stem"])
    assert template_labels(wide_hard, wide, "gap-strict").tolist() == [S, T, S, T, T, S, S]
    # Gap-graded: every second hard stem/extraction/everyday prompt strong, counted among those alone (of stem,
    # extraction, stem, everyday: the 1st and 3rd); every fourth hard writing/roleplay/humanities prompt (the 1st, 5th).
    graded = np.array(["stem", "writing", "extraction", "roleplay", "stem", "humanities", "math", "writing", "everyday", "writing"])
    assert template_labels(np.array([True] * 10), graded, "gap-graded").tolist() == [S, S, T, T, S, T, S, T, T, S]
    for rule in ("gap-aware", "gap-strict", "gap-graded"):
        with pytest.raises(ValueError, match=f"^the {rule} chat label rule needs each prompt's category$"):
            template_labels(hard, None, rule)
    with pytest.raises(ValueError, match="^chat label rule 'soft': expected one of template, gap-aware, gap-strict, gap-graded$"):
        template_labels(hard, categories, "soft")


def test_written_prompts_split_into_stable_halves_and_train_labels_follow_the_rule(tmp_path):
    from edgeroute.export.training.chat_prompts import categorised_written_prompts, written_part
    from edgeroute.export.training.data import LABEL_STRONG_WINS as S, LABEL_TIE as T
    from edgeroute.export.training.finetune import GAP_CATEGORIES, written_labelled_rows

    train, train_hard, train_categories = categorised_written_prompts("train")
    validation, _, _ = categorised_written_prompts("validation")
    assert len(train) > 1500 and len(validation) > 1500 and not set(train) & set(validation)
    assert {written_part(p) for p in train} == {"train"} and written_part(validation[0]) == "validation"
    prompts, labels = written_labelled_rows("gap-aware")
    assert prompts == train and set(labels.tolist()) == {S, T}
    gap = train_hard & np.isin(train_categories, GAP_CATEGORIES)
    assert (labels[gap] == S).all() and (labels[~train_hard] == T).all()
    other_hard = labels[train_hard & ~gap]  # every second one "strong wins", the rest "tie"
    assert abs(int((other_hard == S).sum()) - int((other_hard == T).sum())) <= 1
    # Prompts without an intended difficulty (the earlier written ones) train no BERT and validate nothing.
    file = tmp_path / "w.jsonl"
    file.write_text('{"prompt": "a"}\n{"prompt": "b", "category": "math", "difficulty": "hard"}\n', encoding="utf-8")
    assert categorised_written_prompts(written_part("b"), file)[0] == ["b"]
    with pytest.raises(ValueError, match="^written prompt part 'test': expected one of train, validation$"):
        categorised_written_prompts("test")


@pytest.mark.parametrize("part", ["train", "validation"])
def test_written_labels_leave_length_nearly_and_voice_under_the_recipe_weights_wholly_uninformative(part):
    from edgeroute.export.training.chat_prompts import categorised_written_prompts
    from edgeroute.export.training.finetune import length_balanced_weights, written_voice

    # Short hard and long easy prompts were written so that a label cannot be read off length (before them: 0.81 / 0.80).
    prompts, hard, categories = categorised_written_prompts(part)
    lengths = prompt_lengths(prompts)
    assert 0.4 < rank_auc(lengths[hard], lengths[~hard]) < 0.6
    assert set(categories[hard]) == set(categories[~hard]) and len(set(categories)) == 9
    # Voice still leans (about 30% of hard prompts in the first person, 45-50% of easy ones, most of it among the long
    # ones) after an audit took the label off doubtful short hard first-person prompts: the recipe's voice-balanced
    # weights leave every length quintile x voice cell with the same share of hard prompts.
    first_person = written_voice(prompts)
    assert abs(first_person[hard].mean() - first_person[~hard].mean()) < 0.25
    weights = length_balanced_weights(prompts, hard.astype(np.int64), np.array(["written"] * len(prompts)), strata=first_person)
    quintile = np.digitize(lengths, np.quantile(lengths, [0.2, 0.4, 0.6, 0.8]))
    for cell in {(int(b), bool(v)) for b, v in zip(quintile, first_person)}:
        members = (quintile == cell[0]) & (first_person == cell[1])
        assert np.average(hard[members], weights=weights[members]) == pytest.approx(hard.mean(), abs=1e-9)


def test_difficulty_and_gap_aucs_on_categorised_prompts():
    from edgeroute.runtime.evaluation.content import category_gap_auc, difficulty_auc

    assert rank_auc(np.array([0.9, 0.5]), np.array([0.5, 0.1])) == 0.875 and np.isnan(rank_auc(np.array([1.0]), np.array([])))
    rates = np.array([0.9, 0.1, 0.4, 0.6, 0.7, 0.2])
    hard = np.array([True, False, True, False, True, False])
    categories = np.array(["math", "math", "writing", "writing", "stem", "stem"])
    assert difficulty_auc(rates, hard, categories) == 2 / 3  # math 1, writing 0, stem 1
    assert category_gap_auc(rates[hard], categories[hard]) == 1.0  # hard math 0.9 over hard writing 0.4; stem unread


def test_content_aucs_give_length_about_half_and_read_content_within_length_bins():
    from edgeroute.runtime.evaluation.content import content_difficulty_auc, content_gap_auc, difficulty_auc

    # Ten math prompts, the four hard ones the longest: length alone orders every hard prompt above every easy
    # one, yet each length quintile (two prompts) holds one kind only, so there is no pair to order.
    prompts = ["x" * n for n in range(10, 20)]
    hard = np.array([False] * 6 + [True] * 4)
    categories = np.array(["math"] * 10)
    length = np.arange(10, 20, dtype=float)
    assert difficulty_auc(length, hard, categories) == 1.0
    assert np.isnan(content_difficulty_auc(length, hard, categories, prompts))  # no bin holds both kinds
    # Interleaved: each quintile holds one hard and one easy prompt; the hard one is the longer in two of five.
    hard = np.array([True, False, False, True] * 2 + [True, False])
    assert content_difficulty_auc(length, hard, categories, prompts) == 0.4
    assert content_difficulty_auc(hard.astype(float), hard, categories, prompts) == 1.0
    # Gap AUC within bins: hard math above hard writing in every bin, whatever the lengths.
    gap_categories = np.array(["math", "writing"] * 5)
    assert content_gap_auc(np.array([0.9, 0.1] * 5), gap_categories, prompts) == 1.0
    assert content_gap_auc(length, gap_categories, prompts) == 0.0


def test_gap_category_auc_ranks_hard_prompts_across_categories():
    from edgeroute.runtime.evaluation.content import PromptPair, gap_category_auc

    pairs = [PromptPair(c, f"hard {c}", f"easy {c}") for c in ("math", "coding", "writing", "humanities", "stem")]
    # hard math 0.9 and coding 0.5 against hard writing 0.7 and humanities 0.5: wins 1 + 1 + 0 + 0.5 of 4; stem and easy rows unread
    rates = np.array([0.9, 0.0, 0.5, 0.0, 0.7, 0.0, 0.5, 0.0, 1.0, 1.0])
    assert gap_category_auc(rates, pairs) == 0.625
    assert np.isnan(gap_category_auc(rates[:4], pairs[:2]))


def test_shipped_bert_knows_it_was_trained_on_the_shared_prompts(shared_data):
    from edgeroute.runtime import Router
    from edgeroute.runtime.evaluation.data import load_benchmark
    from edgeroute.runtime.evaluation.report import trained_on_share

    router = Router.load("bert-minilm-gpt4-mixtral")
    gsm8k = load_benchmark(shared_data, "gsm8k")
    assert 0.02 < trained_on_share(router, gsm8k.prompts) < 0.2  # GSM8K is about 8% of its 13,202 training prompts
    assert trained_on_share(router, ["a prompt it never saw"]) == 0.0


@pytest.mark.parametrize(
    "router, path, min_pairs, min_gap_auc",
    [
        ("bert-minilm-gpt4-mixtral", INDEPENDENT_PAIRS, 0.9, 0.8),
        ("static-distilled-gpt4-mixtral", INDEPENDENT_PAIRS, 0.9, 0.8),
        ("bert-minilm-gpt4-mixtral", THIRD_PAIRS, 0.9, 0.85),
        ("static-distilled-gpt4-mixtral", THIRD_PAIRS, 0.9, 0.85),
    ],
)
def test_shipped_routers_keep_their_measured_floor_on_the_other_authors_pairs(router, path, min_pairs, min_gap_auc):
    """Floors a little under what the shipped bundles measured (independent pairs 0.958 / 0.863 and 0.948 / 0.856; third
    set 0.958 / 0.926 and 0.948 / 0.938), so a re-export that loses the chat-side ordering fails here
    (benchmarks/chat_categories.py measures it)."""
    from edgeroute.runtime import Router
    from edgeroute.runtime.evaluation.content import gap_category_auc

    pairs = load_pairs(path)
    prompts = pair_prompts(pairs)
    scorer = Router.load(router, threads=1)
    rates = np.array([scorer.strong_win_rates([prompt])[0] for prompt in prompts])  # as served: one prompt at a time
    assert pair_accuracy(rates) >= min_pairs
    assert gap_category_auc(rates, pairs) >= min_gap_auc
    assert abs(length_spearman(rates, prompts)) <= 0.5


def test_train_finetuned_passes_written_labels_through(monkeypatch):
    from edgeroute.export.training import recipes
    from edgeroute.runtime.cli import build_parser

    calls = []
    monkeypatch.setattr(recipes, "train_final_finetuned", lambda *args: calls.append(args[3:]) or {})
    argv = ["train", "finetuned", "--data", "d", "--out", "o", "--chat-prompts", "30", "--written-labels"]
    recipes.run_recipe_command(build_parser().parse_args(argv))
    recipes.run_recipe_command(build_parser().parse_args(argv[:-1]))
    recipes.run_recipe_command(build_parser().parse_args([*argv, "--written-file", "old.jsonl"]))
    assert calls == [(30, "gap-aware", True, None), (30, "gap-aware", False, None), (30, "gap-aware", True, Path("old.jsonl"))]


def test_written_labelled_rows_read_the_file_given(tmp_path):
    from edgeroute.export.training.chat_prompts import written_part
    from edgeroute.export.training.data import LABEL_STRONG_WINS
    from edgeroute.export.training.finetune import written_labelled_rows

    rows = [{"category": "math", "difficulty": "hard", "prompt": f"Prove lemma {i}."} for i in range(6)]
    file = tmp_path / "old.jsonl"
    file.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    prompts, labels = written_labelled_rows("gap-aware", file)
    train_half = [row["prompt"] for row in rows if written_part(row["prompt"]) == "train"]
    assert prompts == train_half == ["Prove lemma 1.", "Prove lemma 3.", "Prove lemma 4."]
    assert labels.tolist() == [LABEL_STRONG_WINS] * 3  # hard math: "strong wins" under every rule


def test_train_finetuned_refuses_a_written_file_without_written_labels_or_that_is_missing(capsys, tmp_path):
    from edgeroute.runtime.cli import EXIT_USAGE, main

    assert main(["train", "finetuned", "--data", "d", "--out", "o", "--written-file", "old.jsonl"]) == EXIT_USAGE
    assert capsys.readouterr().err == "edgeroute: error: --written-file names the written prompts to train on: add --written-labels\n"
    missing = tmp_path / "old.jsonl"
    assert main(["train", "finetuned", "--data", "d", "--out", "o", "--written-labels", "--written-file", str(missing)]) == EXIT_USAGE
    assert capsys.readouterr().err == (
        f"edgeroute: error: --written-file {missing}: no such file (a JSONL laid out like export/training/written_prompts.jsonl)\n"
    )


def test_train_finetuned_passes_length_balance_through_the_recipe(monkeypatch):
    from edgeroute.export.training import recipes
    from edgeroute.runtime.cli import build_parser

    recipes_seen = []
    monkeypatch.setattr(recipes, "train_final_finetuned", lambda *args: recipes_seen.append(args[2]) or {})
    argv = ["train", "finetuned", "--data", "d", "--out", "o", "--length-balance"]
    recipes.run_recipe_command(build_parser().parse_args(argv))
    recipes.run_recipe_command(build_parser().parse_args(argv[:-1]))
    assert [recipe.length_balance for recipe in recipes_seen] == [True, False]
    recipes.run_recipe_command(build_parser().parse_args([*argv, "--written-labels", "--voice-balance"]))
    assert (recipes_seen[-1].length_balance, recipes_seen[-1].voice_balance) == (True, True)


@pytest.mark.parametrize("missing", ["--length-balance", "--written-labels"])
def test_train_finetuned_refuses_voice_balance_without_length_balance_or_written_labels(missing, capsys):
    from edgeroute.runtime.cli import EXIT_USAGE, main

    argv = ["train", "finetuned", "--data", "d", "--out", "o", "--length-balance", "--written-labels", "--voice-balance"]
    assert main([a for a in argv if a != missing]) == EXIT_USAGE
    assert capsys.readouterr().err == (
        "edgeroute: error: --voice-balance balances the written prompts within length quintiles: "
        "add --length-balance and --written-labels\n"
    )


def test_the_cli_offers_exactly_the_chat_label_rules():
    from edgeroute.export.training.finetune import CHAT_LABEL_RULES
    from edgeroute.runtime.cli import CHAT_LABEL_RULE_NAMES, build_parser

    assert CHAT_LABEL_RULE_NAMES == tuple(CHAT_LABEL_RULES)
    parser = build_parser()
    for rule in CHAT_LABEL_RULES:
        assert parser.parse_args(["train", "finetuned", "--data", "d", "--out", "o", "--chat-labels", rule]).chat_labels == rule
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "finetuned", "--data", "d", "--out", "o", "--chat-labels", "soft"])


def test_length_balanced_weights_give_every_length_quintile_its_sources_label_mix():
    from edgeroute.export.training.finetune import length_balanced_weights

    rng = np.random.default_rng(0)
    prompts = ["x" * int(n) for n in rng.integers(5, 500, 1000)]
    chars = np.array([len(p) for p in prompts])
    # Source "a": long prompts are "strong wins" (0) far more often; source "b": no length effect.
    labels = np.where(rng.random(1000) < chars / 600, 0, 1)
    sources = np.array(["a"] * 600 + ["b"] * 400)
    labels[600:] = rng.integers(0, 2, 400)
    weights = length_balanced_weights(prompts, labels, sources, max_weight=100.0)
    for source in ("a", "b"):
        rows = np.flatnonzero(sources == source)
        assert abs(weights[rows].mean() - 1.0) < 1e-9  # sources keep their sizes
        edges = np.quantile(chars[rows], [0.2, 0.4, 0.6, 0.8])
        quintile = np.digitize(chars[rows], edges)
        overall = np.mean(labels[rows] == 0)
        for b in range(5):
            members = rows[quintile == b]
            assert abs(np.average(labels[members] == 0, weights=weights[members]) - overall) < 1e-9
    # Clipped to [0.5, 2] before each source is scaled to mean 1: within a source, no weight is over 4x another.
    assert weights[:600].max() / weights[:600].min() > 4  # source "a" needs more than the clip allows
    clipped = length_balanced_weights(prompts, labels, sources, max_weight=2.0)
    assert clipped[:600].max() / clipped[:600].min() <= 4.0 + 1e-9 and abs(clipped[:600].mean() - 1.0) < 1e-9


def test_voice_balanced_weights_balance_each_stratum_within_each_quintile_to_the_source_mix():
    from edgeroute.export.training.finetune import FineTuneRecipe, length_balanced_weights, written_voice

    rng = np.random.default_rng(1)
    prompts = ["x" * int(n) for n in rng.integers(5, 500, 2000)]
    chars = np.array([len(p) for p in prompts])
    voice = rng.random(2000) < 0.5
    # Long first-person prompts and short impersonal ones are mostly "tie" (1): voice and length together tell the label.
    tie_odds = np.where(voice, chars / 600, 1 - chars / 600)
    labels = np.where(rng.random(2000) < tie_odds, 1, 0)
    weights = length_balanced_weights(prompts, labels, np.array(["s"] * 2000), max_weight=100.0, strata=voice)
    quintile = np.digitize(chars, np.quantile(chars, [0.2, 0.4, 0.6, 0.8]))
    overall = np.mean(labels == 0)
    for b in range(5):
        for stratum in (False, True):
            members = np.flatnonzero((quintile == b) & (voice == stratum))
            assert abs(np.average(labels[members] == 0, weights=weights[members]) - overall) < 1e-9
    voices = ["Can I return my order?", "Prove the theorem.", "we ship", "US tariffs, 1930.", "i need help", "Tell us."]
    assert written_voice(voices).tolist() == [True, False, True, False, True, True]
    # Not a person: Roman numerals, a dotted acronym, loop variables, an index, a command-line flag, "i.e.".
    impersonal = ["Causes of World War I.", "Type I and Type II errors", "Elizabeth I's court", "What does M.A.I.N. mean?"]
    impersonal += ["for i in range(n): total += i", "for (int i = 0; i < n; i++)", "a[i] + b[i]", "git rebase -i", "cats, i.e. felines"]
    assert not written_voice(impersonal).any()
    impersonal += ["g = (i*i for i in range(4))", "for i from 0 to n", "when i is even"]
    assert not written_voice(impersonal).any()
    assert written_voice(["How old am I?", "ok so i dont get it", "what should i bring", "I'm lost", "(i think so)", "i’m lost"]).all()
    with pytest.raises(ValueError, match=r"^strata: expected one per prompt \(2000\), got 3$"):
        length_balanced_weights(prompts, labels, np.array(["s"] * 2000), strata=np.zeros(3))
    with pytest.raises(ValueError, match=r"^voice_balance balances within length quintiles: set length_balance too \(--length-balance\)$"):
        FineTuneRecipe(voice_balance=True)


def test_length_balanced_weights_skip_a_label_absent_from_a_quintile_and_refuse_a_wrong_length():
    import warnings

    from edgeroute.export.training.finetune import length_balanced_weights, train_finetuned

    # Ten prompts, two per quintile; the shortest quintile holds no "strong wins" (0) row to weight up.
    prompts = ["x" * n for n in range(10, 20)]
    labels = np.array([1, 1, 0, 1, 0, 1, 0, 1, 0, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division by an empty quintile's zero share
        weights = length_balanced_weights(prompts, labels, np.array(["s"] * 10), max_weight=100.0)
    # Quintile 0: two ties at share 1.0 against 0.6 overall (0.6 each); quintiles 1-4: one of each (0.8, 1.2).
    expected = np.array([0.6, 0.6] + [0.8, 1.2] * 4)
    np.testing.assert_allclose(weights, expected / expected.mean())
    with pytest.raises(ValueError, match=r"^weights: expected one per prompt \(3\), got 2$"):
        train_finetuned(Path("unused"), None, np.zeros(3, dtype=np.int64), np.arange(3), None, weights=np.ones(2))


def test_cross_validation_weights_a_split_as_the_final_training_weights_its_rows():
    from edgeroute.export.training.crossval import WrittenRows, _finetuned_settings, _split_weights
    from edgeroute.export.training.finetune import FineTuneRecipe, length_balanced_weights, written_voice

    prompts, strong, weak, _ = _length_rewarding_data(400)
    written = ["I wonder why the sky is blue?", "Prove that 17 is prime.", "my cat is sad", "Sort 3,1,2."] * 25
    nan = np.full(len(written) + 50, np.nan)
    data = BenchmarkData(
        "mmlu+gsm8k",
        prompts + ["chat " * k for k in range(1, 51)] + written,
        np.concatenate([strong, nan]),
        np.concatenate([weak, nan]),
        ["algebra"] * 200 + ["gsm8k"] * 200 + ["chat"] * 50 + ["written"] * len(written),
        "s",
        "w",
    )
    chat_rows, written_rows = np.arange(400, 450), np.arange(450, 550)
    labels = np.where(strong > weak, 0, 1).tolist() + [0, 1] * 25 + [0, 1] * 50
    labels = np.asarray(labels)
    extra = WrittenRows(written_rows, labels[written_rows], written_voice(written), "gap-graded")
    rows = np.concatenate([np.arange(0, 400, 2), chat_rows, written_rows])
    recipe = FineTuneRecipe(length_balance=True, voice_balance=True)
    weights = _split_weights(data, labels, rows, chat_rows, extra, recipe)
    sources = np.array(["mmlu"] * 100 + ["gsm8k"] * 100 + ["generated chat"] * 50 + ["written chat"] * 100)
    voice = np.concatenate([np.zeros(250, dtype=bool), written_voice(written)])
    expected = length_balanced_weights([data.prompts[i] for i in rows], labels[rows], sources, strata=voice)
    np.testing.assert_allclose(weights[rows], expected)
    assert np.all(weights[np.setdiff1d(np.arange(len(data)), rows)] == 1.0)
    assert _split_weights(data, labels, rows, chat_rows, extra, FineTuneRecipe()) is None
    # Caches written before weights and written prompts existed keep their keys; the new settings join only when set.
    assert set(_finetuned_settings(FineTuneRecipe(), 2500, 0, "template", None)) == {
        "epochs",
        "batch_size",
        "learning_rate",
        "max_length",
        "weight_decay",
        "warmup",
        "seed",
        "max_train_rows",
    }
    settings = _finetuned_settings(recipe, 2500, 570, "gap-graded", extra)
    assert settings["written"]["rows"] == 100 and settings["written"]["rule"] == "gap-graded" and settings["voice_balance"] is True
    relabelled = WrittenRows(written_rows, 1 - labels[written_rows], extra.voice, "gap-graded")
    assert _finetuned_settings(recipe, 2500, 570, "gap-graded", relabelled)["written"]["labels"] != settings["written"]["labels"]


def test_crossval_summary_of_a_subset_of_the_splits():
    data, pair_rows, reader = _with_pairs()
    rows = np.arange(len(data))
    labelled = rows < 1000
    fold0 = {"fold0": (labelled & (rows % 2 == 0), labelled & (rows % 2 == 1))}
    summary = crossval_summary(data, fold0, {"reader": {"fold0": reader}}, pair_rows)
    assert "mmlu->gsm8k" not in summary["reader"] and len(summary["reader"]["gsm8k"]["folds"]) == 1
    assert summary["reader"]["content"]["mmlu"]["mean"] > summary["prompt length"]["content"]["mmlu"]["mean"] + 0.05
    transfer = {"mmlu->gsm8k": (rows < 500, labelled & (rows >= 500))}
    summary = crossval_summary(data, transfer, {"reader": {"mmlu->gsm8k": reader}}, pair_rows)
    assert np.isnan(summary["reader"]["mmlu"]["mean"]) and np.isnan(summary["reader"]["spearman"])
    assert summary["reader"]["pairs"] == 1.0 and summary["reader"]["mmlu->gsm8k"] > summary["prompt length"]["mmlu->gsm8k"]
