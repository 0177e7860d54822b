"""Cross-validated routing quality of edgeroute's router recipes: writes benchmarks/results/quality.{md,json,png}.

    python benchmarks/quality.py --data-dir ../shared/data/routellm-evals

The protocol (``edgeroute.runtime.evaluation.data.protocol_splits``): 5-fold grouped cross-validation
over all MMLU subjects (each subject is tested in exactly one fold and never trained on there),
5-fold over GSM8K problems, and transfer between the benchmarks (train on MMLU only, test on
GSM8K; train on GSM8K only, test on MMLU). Every recipe is retrained on each split's training rows;
the shipped routers are the same recipes trained on all rows. Nothing is chosen on a single split.

MMLU and GSM8K reward prompt length, so every column is also reported as *content APGR* (APGR within
length quintiles), beside the accuracy on a pair set of hard/easy chat prompts of similar length
(``tests/fixtures/content_pairs.jsonl``, written before training, never tuned on) and the rank
correlation of win rates with character count. A recipe is chosen on the mean of its APGR and content
APGR columns, among the recipes that meet the content targets (pairs >= 0.8, |Spearman| <= 0.5); when none
does, among those that beat prompt length on content APGR and on the pairs.

The frozen-encoder embeddings and the fine-tuned BERT's split models are cached in ``--work-dir``
(a fresh run takes about 4 hours on 2 cores, most of it fine-tuning four BERT recipes once per split; ``--bert shipped
--out DIR`` runs the probe grid and the shipped BERT recipe with their students, about an hour; benchmarks/standin.py
runs one BERT recipe per split and seed).
"""

from __future__ import annotations

import argparse
import json
import sys
import platform
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from edgeroute.export.training.crossval import Splits
from edgeroute.export.training.distill import ChatPrior, StudentRecipe
from edgeroute.export.training.finetune import FineTuneRecipe
from edgeroute.export.training.probe import ProbeRecipe
from edgeroute.runtime import Router
from edgeroute.runtime.evaluation.content import load_pairs, pair_prompts
from edgeroute.runtime.evaluation.data import BenchmarkData, load_protocol_data, protocol_splits
from edgeroute.runtime.evaluation.report import BASELINES, PROTOCOL_BENCHMARKS, crossval_summary

RESULTS = Path(__file__).parent / "results"
PAIRS_FILE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "content_pairs.jsonl"
FINETUNED, LABELS = "transformer tier: fine-tuned top 2 layers (previous recipe)", "fast tier: static MLP on labels"
# The shipped transformer tier's recipe (RouteLLM's BERT, every layer), per split on a sample of its training rows.
BERT_ROWS = 2500
BERT = f"transformer tier: BERT fine-tuned, every layer ({BERT_ROWS:,} training rows per split)"
# The same with generated chat prompts trained beside the labelled rows under their template labels (hard: strong
# wins, easy: tie), in the shipped checkpoint's proportion (3,000 beside 13,202 labelled rows).
BERT_CHAT_ROWS = 570
BERT_CHAT = f"transformer tier: BERT fine-tuned, every layer, + {BERT_CHAT_ROWS} template-labelled chat prompts ({BERT_ROWS:,} rows)"
BERT_GAP = f"transformer tier: BERT fine-tuned, every layer, + {BERT_CHAT_ROWS} chat prompts with gap-aware labels ({BERT_ROWS:,} rows)"
# The shipped transformer tier's recipe (docs/training.md, "Graded gap labels"): the chat prompts and the written prompts'
# training half under gap-graded labels, loss weights balanced over length quintiles and, among written prompts, voice.
# Every split trains on the whole training half of the written prompts (1,843) beside its 2,500 + 570 rows: about five
# times their share in the shipped checkpoint (beside 13,202 + 3,000), as in the stand-in runs it was chosen by.
BERT_SHIPPED = (
    f"transformer tier: BERT fine-tuned, every layer, + {BERT_CHAT_ROWS} chat prompts and the written prompts' training half "
    f"with gap-graded labels, length- and voice-balanced ({BERT_ROWS:,} rows; the shipped recipe)"
)


@dataclass(frozen=True)
class BertRecipe:
    """One fine-tuned BERT row of the protocol: the recipe, how many generated chat prompts train beside each split's
    rows and under which label rule (``CHAT_LABEL_RULES``), and whether the written prompts' training half joins them."""

    recipe: FineTuneRecipe = FineTuneRecipe()
    chat_rows: int = 0
    chat_rule: str = "template"
    written: bool = False


BERT_RECIPES = {
    BERT: BertRecipe(),
    BERT_CHAT: BertRecipe(chat_rows=BERT_CHAT_ROWS),
    BERT_GAP: BertRecipe(chat_rows=BERT_CHAT_ROWS, chat_rule="gap-aware"),
    BERT_SHIPPED: BertRecipe(FineTuneRecipe(length_balance=True, voice_balance=True), BERT_CHAT_ROWS, "gap-graded", True),
}
# Short names of the BERT rows (``--bert``, benchmarks/standin.py) and their labels as teachers in the students' names.
BERT_KEYS = {"labelled-only": BERT, "template": BERT_CHAT, "gap-aware": BERT_GAP, "shipped": BERT_SHIPPED}
TEACHERS = {
    BERT: "the fine-tuned BERT",
    BERT_CHAT: "the BERT + chat labels",
    BERT_GAP: "the BERT + gap-aware chat labels",
    BERT_SHIPPED: "the shipped BERT recipe",
}
# Generated chat-style prompts (export/training/chat_prompts.py) that the fast tier is distilled on beside the labelled ones.
CHAT_PROMPTS = 6000
# The protocol distils each split's student on fewer of them: each split's teacher must score them (2 cores).
PROTOCOL_CHAT_PROMPTS = 3000
# The shipped bundles' checks score a seeded sample of this many shared prompts, and as many generated chat prompts.
SHIPPED_SAMPLE = 3000
# The chosen probe fitted on fp32 embeddings (as in training) but scoring the shipped bundle's int8 ones.
SHIPPED_INT8 = "transformer tier: chosen probe, served by the shipped int8 graph"
# The free choices, made here by the protocol score; the grids were fixed before the results.
# Transformer tier: the probe's ridge penalty and length weight (export/training/probe.py).
PROBE_RIDGES, PROBE_LENGTH_WEIGHTS = (1.0, 3.0, 10.0), (0.0, 0.5, 1.0)
# Fast tier: how much prompt length joins the student beside its MLP (export/training/distill.py fold_length),
# and the MLP's width (64 joined the grid later, for speed: issue 13's 30 us fast tier). -0.5 takes length
# *out* of a length-biased teacher; 2.0 (never chosen) left the grid when it gained -0.5.
LENGTH_WEIGHTS = (-0.5, 0.0, 0.5, 1.0)
FROZEN = StudentRecipe(hidden=64)
# The shipped fast tier's recipe: the static table's rows fitted with a 128-unit head (export/training/table_tuning.py).
TUNED_TABLE = StudentRecipe(hidden=128, table_learning_rate=3e-4, epochs=10)


@dataclass(frozen=True)
class StudentRow:
    """One fast-tier row: its teacher (a ``TEACHERS`` label or "the probe"), the student recipe, the chat prior (None:
    the labelled prompts alone; a number: with the chat prompts, their template labels blended in with that weight,
    ``ChatPrior``), and whether the written prompts' training half joins the chat prompts as distillation prompts (the
    protocol's stand-in for ``edgeroute train distilled --extra-prompts``, which adds every written prompt; their text
    only, so prior 0)."""

    teacher: str
    recipe: StudentRecipe
    prior: float | None = None
    written: bool = False

    def __post_init__(self) -> None:
        if self.written and self.prior != 0.0:
            raise ValueError("written prompts carry no template label to blend in: a student with written prompts needs prior 0.0")


# Fixed before the results, except the TUNED_TABLE rows, added with table tuning (chosen on held-out fidelity to the
# teacher, docs/training.md), and the shipped BERT recipe's student (the shipped fast tier's recipe), added with it.
STUDENTS = (
    StudentRow("the probe", FROZEN),
    StudentRow("the fine-tuned BERT", FROZEN),
    StudentRow("the fine-tuned BERT", FROZEN, 0.0),
    StudentRow("the fine-tuned BERT", FROZEN, 0.5),
    StudentRow("the BERT + chat labels", FROZEN, 0.0),
    StudentRow("the BERT + chat labels", FROZEN, 0.5),
    StudentRow("the BERT + chat labels", TUNED_TABLE, 0.0),
    StudentRow("the BERT + gap-aware chat labels", FROZEN, 0.0),
    StudentRow("the BERT + gap-aware chat labels", TUNED_TABLE, 0.0),
    StudentRow("the shipped BERT recipe", TUNED_TABLE, 0.0, written=True),
)
APGR_COLUMNS = ("mmlu", "gsm8k", "mmlu->gsm8k", "gsm8k->mmlu")


def probe_name(recipe: ProbeRecipe) -> str:
    """The report's row name of one probe setting."""
    return f"transformer tier: probe, ridge {recipe.ridge:g}, length weight {recipe.length_weight:g}"


def distilled_name(student: StudentRecipe, teacher: str = "the probe", prior: float | None = None, written: bool = False) -> str:
    """The report's row name of one fast-tier setting (``prior``: None for labelled prompts only, else the chat prior;
    ``written``: the written prompts join the chat prompts)."""
    prompts = "chat and written prompts" if written else "chat prompts"
    wide = "" if prior is None else f" + {prompts} (chat prior {prior:g})"
    table = f", table tuned (lr {student.table_learning_rate:g}, {student.epochs} epochs)" if student.table_learning_rate else ""
    return f"fast tier: distilled from {teacher}{wide}, {student.hidden} hidden{table}, length weight {student.length_weight:g}"


def _column_means(rows: dict) -> list[float]:
    return [rows[c]["mean"] if c in PROTOCOL_BENCHMARKS else rows[c] for c in APGR_COLUMNS]


def apgr_score(rows: dict) -> float:
    """The mean of a recipe's four APGR columns (MMLU and GSM8K fold means, the two transfers)."""
    return float(np.mean(_column_means(rows)))


def content_score(rows: dict) -> float:
    """The mean of the same four columns as content APGR (within length quintiles)."""
    return float(np.mean(_column_means(rows["content"])))


def protocol_score(rows: dict) -> float:
    """What chooses a recipe: the mean of its APGR and content APGR columns."""
    return float(np.mean([apgr_score(rows), content_score(rows)]))


# The content targets for every shipped router (issue 24): hard/easy pairs and length correlation.
PAIR_TARGET, SPEARMAN_TARGET = 0.8, 0.5


def meets_targets(rows: dict) -> bool:
    """Orders at least ``PAIR_TARGET`` of the pairs and keeps |Spearman with length| at most ``SPEARMAN_TARGET``."""
    return rows.get("pairs", 0.0) >= PAIR_TARGET and abs(rows.get("spearman", 1.0)) <= SPEARMAN_TARGET


def reads_content(rows: dict, length: dict) -> bool:
    """Beats prompt length on content APGR and on the pair set."""
    return content_score(rows) > content_score(length) and rows.get("pairs", 1.0) > length.get("pairs", 0.5)


# Protocol scores this close are ties (selection noise and fold spread; see the report).
TIE = 0.01


def choose(summary: dict, names: list[str]) -> str:
    """The best of ``names`` by ``protocol_score`` among those that meet the content targets; else among those that
    read content (``reads_content``); else among all. Ties (within ``TIE``) go to the one least correlated with length."""
    eligible = [n for n in names if meets_targets(summary[n])]
    eligible = eligible or [n for n in names if reads_content(summary[n], summary["prompt length"])] or names
    best = max(protocol_score(summary[n]) for n in eligible)
    tied = [n for n in eligible if protocol_score(summary[n]) >= best - TIE]
    return min(tied, key=lambda n: abs(summary[n].get("spearman", 0.0)))


def choose_student(summary: dict, students: list[str], teacher: str) -> str:
    """The fast tier is distilled from the chosen transformer (``teacher``, its label in the student names): ``choose``
    among that teacher's students. (Added after the 2026-12-06 run, whose rule let every teacher's students compete;
    the README says what that rule picked.)"""
    return choose(summary, [name for name in students if name.startswith(f"fast tier: distilled from {teacher}")])


EVERYDAY_PROMPTS = [
    "Hi! How are you today?",
    "What is the capital of Australia?",
    "Translate 'Where is the train station?' into French.",
    "Write a haiku about autumn leaves.",
    "Write a Python function that checks whether a string is a palindrome.",
    "Prove that there are infinitely many prime numbers.",
    "A train leaves at 3 pm going 60 mph; another leaves at 4 pm going 80 mph. When does the second catch up?",
    "Explain the difference between TCP and UDP.",
    "Summarize the causes of the First World War in three sentences.",
    "Solve for x: 3x^2 - 12x + 9 = 0, and explain each step.",
    "Analyze the long-term macroeconomic effects of quantitative easing on income inequality, "
    "weighing the empirical evidence from the US, Japan and the euro area.",
    "Implement a thread-safe LRU cache in C++ with O(1) get and put, and explain the locking strategy.",
]


def protocol_data(data_dir: Path) -> tuple:
    """The labelled rows, their splits, the pair set, chat prompts and the written prompts' training half appended as
    unlabeled rows, the chat prior, and the written prompts' rows."""
    from edgeroute.export.training.chat_prompts import categorised_chat_prompts, categorised_written_prompts
    from edgeroute.export.training.crossval import append_unlabeled
    from edgeroute.export.training.distill import ChatPrior

    labelled = load_protocol_data(data_dir)
    chat, hard, categories = categorised_chat_prompts(PROTOCOL_CHAT_PROMPTS)
    extra = {"pairs": pair_prompts(load_pairs(PAIRS_FILE)), "chat": chat, "written": categorised_written_prompts("train")[0]}
    data, splits, rows = append_unlabeled(labelled, protocol_splits(labelled), extra)
    hard_rows = np.zeros(len(data), dtype=bool)
    hard_rows[np.flatnonzero(rows["chat"])[np.asarray(hard, dtype=bool)]] = True
    category_rows = np.full(len(data), "", dtype=object)
    category_rows[rows["chat"]] = categories
    chat_prior = ChatPrior(rows["chat"], hard_rows, 0.0, category_rows)
    return data, splits, np.flatnonzero(rows["pairs"]), chat_prior, np.flatnonzero(rows["written"])


def bert_scores(
    name: str, data: BenchmarkData, splits: Splits, chat: ChatPrior, written_rows: np.ndarray, work_dir: Path, seed: int = 0
) -> dict[str, np.ndarray]:
    """The split scores of one ``BERT_RECIPES`` row (``seed``: the recipe's, which also draws each split's row sample).

    A row without the written prompts trains and scores the data before them (``protocol_data`` appends them last), so
    its cache keys are those of runs before the written prompts joined the protocol; its scores are NaN on them."""
    from edgeroute.export.encoders import minilm_dir
    from edgeroute.export.training.crossval import WrittenRows, finetuned_scores
    from edgeroute.export.training.finetune import written_labelled_rows, written_voice

    bert = BERT_RECIPES[name]
    recipe, chat_prior = replace(bert.recipe, seed=seed), chat if bert.chat_rows else None
    if not bert.written:
        before = len(data) - len(written_rows)
        part = data.subset(np.arange(len(data)) < before)
        cut = {split: (train[:before], test[:before]) for split, (train, test) in splits.items()}
        scores = finetuned_scores(part, cut, minilm_dir(), recipe, work_dir, BERT_ROWS, chat_prior, bert.chat_rows, bert.chat_rule)
        return {split: np.concatenate([rates, np.full(len(written_rows), np.nan)]) for split, rates in scores.items()}
    prompts, labels = written_labelled_rows(bert.chat_rule)
    if prompts != [data.prompts[i] for i in written_rows]:
        raise ValueError("the written prompts changed since protocol_data appended them: rerun from protocol_data")
    written = WrittenRows(written_rows, labels, written_voice(prompts), bert.chat_rule)
    return finetuned_scores(data, splits, minilm_dir(), recipe, work_dir, BERT_ROWS, chat_prior, bert.chat_rows, bert.chat_rule, written)


@dataclass(frozen=True)
class ProtocolRun:
    """What one protocol run trains: ``static_router`` holds the frozen static table the students read, ``probe_router``
    an int8 probe bundle to score the chosen probe with, ``berts`` the ``BERT_RECIPES`` rows (each with its students),
    ``with_finetuned`` adds the earlier top-2-layer recipe."""

    static_router: str
    probe_router: str | None = None
    berts: tuple[str, ...] = tuple(BERT_RECIPES)
    with_finetuned: bool = False


def transformer_rows(
    data: BenchmarkData, splits: Splits, pair_rows: np.ndarray, chat: ChatPrior, written_rows: np.ndarray, work_dir: Path, run: ProtocolRun
) -> tuple[dict, ProbeRecipe]:
    """Every transformer-tier recipe's split scores, and the probe setting the protocol chose."""
    from edgeroute.export.exporter import minilm_dir
    from edgeroute.export.training.crossval import probe_embeddings, probe_scores

    embeddings = probe_embeddings(data, minilm_dir(), ProbeRecipe(), work_dir)
    grid = [replace(ProbeRecipe(), ridge=r, length_weight=w) for r in PROBE_RIDGES for w in PROBE_LENGTH_WEIGHTS]
    scores = {probe_name(recipe): probe_scores(embeddings, data, splits, recipe) for recipe in grid}
    probes = crossval_summary(data, splits, scores, pair_rows)
    probe = next(r for r in grid if probe_name(r) == choose(probes, [probe_name(r) for r in grid]))
    if run.probe_router is not None:
        shipped = Router.load(run.probe_router)
        served = np.concatenate([shipped.embed(data.prompts[i : i + 256]) for i in range(0, len(data), 256)])
        scores[SHIPPED_INT8] = probe_scores(embeddings, data, splits, probe, served)
    for name in run.berts:
        scores[name] = bert_scores(name, data, splits, chat, written_rows, work_dir)
    if run.with_finetuned:
        from edgeroute.export.training.crossval import teacher_scores
        from edgeroute.export.training.teacher import TeacherRecipe

        scores[FINETUNED] = teacher_scores(data, splits, minilm_dir(), TeacherRecipe(), work_dir)
    return scores, probe


def fast_rows(
    data: BenchmarkData, splits: Splits, chat: ChatPrior, written_rows: np.ndarray, static_router: str, teachers: dict[str, dict]
) -> tuple[dict, list[str]]:
    """Fast-tier students per split (``STUDENTS`` of the ``teachers`` given): from each teacher, on the labelled rows alone
    or with the chat (and written) prompts, whose targets may blend in their template labels (``ChatPrior``)."""
    from edgeroute.export.training.crossval import distilled_scores, label_scores, static_features
    from edgeroute.export.training.table_tuning import TokenRows, frozen_static_router

    router = frozen_static_router(static_router)  # a table tuned on the shared prompts would read every split's test rows
    features = static_features(router, data.prompts)
    tokens, table = TokenRows.of(router, data.prompts), np.asarray(router.scorer.embedder.table)
    written_mask = np.isin(np.arange(len(data)), written_rows)
    scores, students = {}, []
    for row in (row for row in STUDENTS if row.teacher in teachers):
        recipe = replace(row.recipe, chat_prior=row.prior or 0.0)
        weighted = None if row.prior is None else replace(chat, weight=row.prior, rows=chat.rows | (written_mask if row.written else False))
        distilled = distilled_scores(features, splits, teachers[row.teacher], recipe, LENGTH_WEIGHTS, weighted, tokens, table)
        for weight in LENGTH_WEIGHTS:
            name = distilled_name(replace(recipe, length_weight=weight), row.teacher, row.prior, row.written)
            scores[name] = distilled[weight]
            students.append(name)
    scores[LABELS] = label_scores(features, splits, data, StudentRecipe())
    return scores, students


def run_protocol(data_dir: Path, work_dir: Path, run: ProtocolRun) -> dict:
    """Train every recipe of ``run`` on every split and summarize APGR, content APGR, pairs and length correlation."""
    data, splits, pair_rows, chat, written_rows = protocol_data(data_dir)
    scores, probe_recipe = transformer_rows(data, splits, pair_rows, chat, written_rows, work_dir, run)
    probe = probe_name(probe_recipe)
    teacher_rows = {"the probe": probe, **{TEACHERS[name]: name for name in run.berts}}
    teachers = {label: scores[row] for label, row in teacher_rows.items()}
    fast, students = fast_rows(data, splits, chat, written_rows, run.static_router, teachers)
    summary = crossval_summary(data, splits, {**scores, **fast}, pair_rows)
    transformer = choose(summary, list(teacher_rows.values()))
    student = choose_student(summary, students, next(label for label, row in teacher_rows.items() if row == transformer))
    return {
        "n_prompts": int(np.isfinite(data.strong_quality).sum()),
        "n_chat_prompts": int(chat.rows.sum()),
        "n_written_prompts": len(written_rows),
        "berts": [key for key, name in BERT_KEYS.items() if name in run.berts],
        "n_pairs": len(pair_rows) // 2,
        "summary": summary,
        "chosen_probe": probe,
        "chosen_transformer": transformer,
        "chosen_student": student,
        "recipes": {**{name: _bert_settings(BERT_RECIPES[name]) for name in run.berts}, probe: asdict(probe_recipe)},
    }


def _bert_settings(bert: BertRecipe) -> dict:
    settings = {**asdict(bert.recipe), "max_train_rows": BERT_ROWS}
    if bert.chat_rows:
        settings["chat_rows"] = bert.chat_rows
    if bert.chat_rule != "template":
        settings["chat_labels"] = bert.chat_rule
    return {**settings, "written_training_half": True} if bert.written else settings


def everyday_win_rates(routers: list[str]) -> dict[str, list[float]]:
    """What each shipped router believes about a dozen everyday prompts (each scored alone)."""
    table = {}
    for name in routers:
        router = Router.load(name)
        table[name] = [router.strong_win_rate(prompt) for prompt in EVERYDAY_PROMPTS]
    return table


def shipped_checks(routers: list[str], data_dir: Path) -> dict[str, dict]:
    """The content checks on each shipped bundle: pairs, length correlation on a sample of the shared prompts and on
    chat prompts, and its APGR on that sample, which is in-sample for every shipped router (trained on all of them)."""
    from edgeroute.export.training.chat_prompts import chat_prompts
    from edgeroute.runtime.evaluation.content import content_apgr, length_spearman, pair_accuracy
    from edgeroute.runtime.evaluation.content import apgr as apgr_of
    from edgeroute.runtime.evaluation.data import benchmark_of
    from edgeroute.runtime.evaluation.report import score_prompts

    labelled, pairs, chat = load_protocol_data(data_dir), pair_prompts(load_pairs(PAIRS_FILE)), chat_prompts(SHIPPED_SAMPLE, seed=1)
    data = labelled.subset(np.isin(np.arange(len(labelled)), np.random.default_rng(0).choice(len(labelled), SHIPPED_SAMPLE, replace=False)))
    bench, checks = benchmark_of(data), {}
    for name in [*routers, "prompt length"]:
        if name == "prompt length":
            score = lambda prompts: np.array([len(p) for p in prompts], dtype=np.float64)  # noqa: E731
        else:
            score = lambda prompts, router=Router.load(name): score_prompts(router, prompts, label=name)  # noqa: E731
        rates, chat_rates = score(data.prompts), score(chat)
        row: dict = {"pairs": pair_accuracy(score(pairs)), "spearman": length_spearman(rates, data.prompts)}
        row["spearman_chat"] = length_spearman(chat_rates, chat)
        for benchmark in PROTOCOL_BENCHMARKS:
            keep = bench == benchmark
            strong, weak, prompts = data.strong_quality[keep], data.weak_quality[keep], [p for p, k in zip(data.prompts, keep) if k]
            row[f"{benchmark} in-sample"] = apgr_of(rates[keep], strong, weak)
            row[f"{benchmark} content in-sample"] = content_apgr(rates[keep], strong, weak, prompts)
        checks[name] = row
    return checks


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument(
        "--cache-dir",
        "--work-dir",
        dest="work_dir",
        type=Path,
        default=Path.home() / ".cache" / "edgeroute" / "quality",
        help="where the frozen-encoder embeddings and each split's BERT scores are cached (about 25 MB; "
        "default ~/.cache/edgeroute/quality); delete it to recompute",
    )
    parser.add_argument(
        "--static-router",
        default=None,
        help="bundle whose frozen static table and tokenizer the fast tier's students read (not the shipped one: its table "
        "was tuned on the shared prompts); docs/training.md's rebuild block extracts it to ckpt/static-src",
    )
    parser.add_argument(
        "--probe-router",
        default=None,
        help="a probe bundle (export probe) whose int8 graph serves the chosen probe's row, to show what int8 costs it",
    )
    parser.add_argument("--router", action="append", default=None, help="shipped routers for the everyday and content tables")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--with-finetuned", action="store_true", help="also cross-validate the earlier top-2-layer recipe (about an hour fresh)"
    )
    parser.add_argument(
        "--bert",
        action="append",
        choices=list(BERT_KEYS),
        help="run only these fine-tuned BERT rows and their students, beside the probe grid (repeatable; default: all four, "
        "about 4 hours fresh); needs an --out other than benchmarks/results, whose report holds the whole run",
    )
    parser.add_argument(
        "--shipped-only",
        action="store_true",
        help="keep the cross-validated part of --out's quality.json; redo only the shipped bundles' tables (after re-exporting one)",
    )
    return parser


def main() -> None:
    parser = _parser()
    args = parser.parse_args()
    if args.bert and args.out.resolve() == RESULTS.resolve():
        parser.error("--bert runs part of the protocol: give it another --out (benchmarks/results/quality.md holds the whole run)")
    print(f"cache: {args.work_dir} (reused across runs; delete it to recompute)", file=sys.stderr)
    if args.shipped_only:
        document = json.loads((args.out / "quality.json").read_text())
    elif args.static_router is None:
        parser.error("--static-router is needed for the protocol run (a bundle with a frozen static table, see its help)")
    else:
        berts = tuple(BERT_KEYS[key] for key in args.bert) if args.bert else tuple(BERT_RECIPES)
        document = run_protocol(
            args.data_dir, args.work_dir, ProtocolRun(args.static_router, args.probe_router, berts, args.with_finetuned)
        )
    from edgeroute.runtime.scoring.router import shipped_routers

    routers = args.router or shipped_routers()
    document["everyday"] = everyday_win_rates(routers)
    document["shipped"] = shipped_checks(routers, args.data_dir)
    document["machine"] = platform.processor() or platform.machine()
    write_report(document, args.out)


def write_report(document: dict, out: Path) -> None:
    """quality.json, quality.md and quality.png in ``out``; the report is printed too."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.json").write_text(json.dumps(document, indent=2) + "\n")
    shown = [document["chosen_transformer"], document["chosen_probe"], BERT, document["chosen_student"], LABELS, "random", "prompt length"]
    plot_summary(document["summary"], out / "quality.png", [name for name in dict.fromkeys(shown) if name in document["summary"]])
    (out / "quality.md").write_text(markdown(document))
    print((out / "quality.md").read_text())


def _means(rows: dict) -> list[float]:
    return _column_means(rows) + _column_means(rows["content"]) + [rows.get("pairs", np.nan), abs(rows.get("spearman", np.nan))]


def plot_summary(summary: dict, path: Path, shown: list[str]) -> Path:
    """Bars per recipe: APGR and content APGR per column (mean over folds), pair accuracy and |length correlation|."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["MMLU", "GSM8K", "MMLU→GSM8K", "GSM8K→MMLU"]
    columns = [*labels, *(f"content\n{c}" for c in labels), "pairs", "|ρ length|"]
    names = [n for n in summary if n in shown]
    figure, axis = plt.subplots(figsize=(13, 5.5))
    width = 0.8 / len(names)
    for index, name in enumerate(names):
        axis.bar(np.arange(len(columns)) + index * width, _means(summary[name]), width, label=name)
    axis.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
    axis.axvline(3.9, color="grey", linewidth=0.6)
    axis.axvline(7.9, color="grey", linewidth=0.6)
    axis.set_xticks(np.arange(len(columns)) + 0.4 - width / 2, columns, fontsize=8)
    axis.set_ylabel("held-out APGR / content APGR / pair accuracy / |Spearman|")
    axis.set_title("Cross-validated routing quality: does a router read the prompt? (prompt length scores 0.5 on content and pairs)")
    axis.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _row(name: str, rows: dict) -> str:
    folded = [f"{rows[b]['mean']:.3f} ± {rows[b]['std']:.3f}" for b in PROTOCOL_BENCHMARKS]
    content = " | ".join(f"{v:.3f}" for v in _column_means(rows["content"]))
    return (
        f"| {name} | {' | '.join(folded)} | {rows['mmlu->gsm8k']:.3f} | {rows['gsm8k->mmlu']:.3f} | {content} | "
        f"{rows.get('pairs', float('nan')):.2f} | {rows.get('spearman', float('nan')):+.2f} | {protocol_score(rows):.3f} |"
    )


def _earlier_pick(document: dict) -> str:
    earlier = document.get("chosen_student_any_teacher")
    return f"; the rule before that, every teacher's students competing, picked {earlier}" if earlier else ""


def readme_rows(document: dict, names: dict[str, str]) -> list[str]:
    """README rows (``names``: label -> report row): the four APGR columns, their content APGR, pairs and Spearman."""
    lines = []
    for label, name in names.items():
        rows = document["summary"][name]
        apgr = " / ".join(f"{v:.3f}" for v in _column_means(rows))
        content = " / ".join(f"{v:.3f}" for v in _column_means(rows["content"]))
        lines.append(f"| {label} | {apgr} | {content} | {rows['pairs']:.2f} | {rows['spearman']:+.2f} |")
    return lines


def _shipped_table(shipped: dict) -> list[str]:
    lines = [
        "| router | pairs | Spearman with length (shared / chat prompts) "
        "| MMLU APGR (content), in-sample | GSM8K APGR (content), in-sample |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, r in shipped.items():
        lines.append(
            f"| {name} | {r['pairs']:.2f} | {r['spearman']:+.2f} / {r['spearman_chat']:+.2f} | "
            f"{r['mmlu in-sample']:.3f} ({r['mmlu content in-sample']:.3f}) | "
            f"{r['gsm8k in-sample']:.3f} ({r['gsm8k content in-sample']:.3f}) |"
        )
    return lines


def markdown(document: dict) -> str:
    """The report: protocol, the table, fold-by-fold figures, shipped routers, everyday prompts."""
    lines = [*_protocol_section(document), *_fold_section(document), *_shipped_section(document)]
    lines += ["", f"Baselines: {', '.join(BASELINES)}. Machine: {document['machine']}.", ""]
    return "\n".join(lines)


def _bert_flags(document: dict) -> str:
    berts = document.get("berts", list(BERT_KEYS))
    return "" if set(berts) == set(BERT_KEYS) else "".join(f" --bert {key}" for key in berts)


def _written_note(document: dict) -> str:
    count = document.get("n_written_prompts")
    return f"; the training half of the written prompts, {count:,}, for the recipes that name them" if count else ""


def _protocol_section(document: dict) -> list[str]:
    """The title, what each column means, the protocol, the cross-validated table and what it chose."""
    return [
        "# Cross-validated routing quality",
        "",
        f"Produced by `python benchmarks/quality.py --data-dir ../shared/data/routellm-evals{_bert_flags(document)}` "
        f"({document['n_prompts']} MMLU and GSM8K prompts of RouteLLM's published evals; {document['n_pairs']} content "
        f"pairs; {document['n_chat_prompts']} generated chat prompts for distillation"
        f"{_written_note(document)}).",
        "",
        "**APGR** (RouteLLM's average performance gap recovered) is the area under the quality-vs-strong-call-share "
        "curve, scaled so that always calling the weak model scores 0 and always calling the strong model scores 1. "
        "**Content APGR** is the same within length quintiles (prompts binned by character count, each bin evaluated "
        "alone, the five averaged): prompt length alone scores about 0.5 there. **Pairs**: the share of "
        f"{document['n_pairs']} hard/easy chat prompt pairs of similar length (within 15%; the easy one is the longer in "
        "half; `tests/fixtures/content_pairs.jsonl`, written before any of these routers was trained and never tuned on) "
        "in which the hard prompt gets the higher win rate, averaged over the split models. **Spearman**: the rank "
        "correlation of win rates with character count on the test rows (1.0 for prompt length).",
        "",
        "**Protocol**: 5-fold grouped cross-validation over the 47 MMLU subjects (each subject is tested once and never "
        "trained on in its fold), 5-fold over GSM8K problems (by prompt hash), and transfer (train on one benchmark only, "
        "test on the other). Every recipe is retrained per split; a distilled student learns from its own split's "
        f"teacher only. The fine-tuned BERT recipe trains on a seeded sample of {BERT_ROWS:,} of each split's training "
        "rows (the whole recipe takes 35-45 minutes per split, about 4.5 hours for the seven, on 2 cores; "
        "the shipped checkpoint trains on every "
        "row). A recipe is chosen on the mean of its four APGR and four content APGR columns, among the recipes that "
        "meet the content targets (pairs at least 0.8, |Spearman with length| at most 0.5); when none does, among those "
        "that beat prompt length on content APGR and on the pairs; scores within 0.01 of the best are ties, won by the "
        "recipe least correlated with length; no free setting is chosen on APGR alone.",
        "",
        "| recipe | MMLU APGR | GSM8K APGR | MMLU→GSM8K | GSM8K→MMLU | content: MMLU | GSM8K | MMLU→GSM8K | GSM8K→MMLU "
        "| pairs | Spearman with length | protocol score |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *[_row(name, rows) for name, rows in document["summary"].items()],
        "",
        f"The protocol chose **{document['chosen_transformer']}** for the transformer tier (best probe: "
        f"{document['chosen_probe']}) and **{document['chosen_student']}** for the fast tier (among the chosen "
        f"transformer tier's students{_earlier_pick(document)}). The chosen rows are the "
        "best of their grids on the same folds that report them (no nested cross-validation), so they are slightly "
        "optimistic: differences of 0.01 or less are within that selection noise and the fold spread. What ships, "
        'and where it departs from these picks and why, is in the README ("Shipped routers").',
        "",
        "![cross-validated APGR, content APGR, pairs and length correlation](quality.png)",
    ]


def _fold_section(document: dict) -> list[str]:
    """Every recipe's APGR fold by fold, and the recipes' settings."""
    lines = [
        "",
        "## Fold by fold (APGR)",
        "",
        "| recipe | " + " | ".join(f"MMLU fold {k}" for k in range(5)) + " | " + " | ".join(f"GSM8K fold {k}" for k in range(5)) + " |",
        "| --- |" + " --- |" * 10,
    ]
    for name, rows in document["summary"].items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for b in PROTOCOL_BENCHMARKS for v in rows[b]["folds"]) + " |")
    return lines + ["", "## Recipes", ""] + [f"- **{n}**: `{json.dumps(r)}`" for n, r in document["recipes"].items()]


def _shipped_section(document: dict) -> list[str]:
    """The shipped bundles' table and what they believe about everyday prompts."""
    lines = [
        "",
        "## The shipped bundles",
        "",
        f"Each shipped bundle as served (int8 where it has a graph), on the pair set, and its rank correlation with "
        f"length on a seeded sample of {SHIPPED_SAMPLE:,} shared prompts and on {SHIPPED_SAMPLE:,} generated chat prompts "
        "(another seed than distillation's). Every shipped "
        "router was trained on all shared prompts, so its APGR there is in-sample (shown for the record, not as quality); "
        "the cross-validated rows above are the held-out figures.",
        "",
        *_shipped_table(document["shipped"]),
        "",
        "## What the shipped routers believe",
        "",
        "Win rate (probability that the strong model wins) of each shipped router, each prompt scored alone. "
        "Compare a router's values with each other, not across routers: thresholds are per router "
        "(`edgeroute calibrate`).",
        "",
        "| prompt | " + " | ".join(document["everyday"]) + " |",
        "| --- |" + " --- |" * len(document["everyday"]),
    ]
    for index, prompt in enumerate(EVERYDAY_PROMPTS):
        shown = prompt if len(prompt) < 70 else prompt[:67] + "..."
        lines.append(f"| {shown} | " + " | ".join(f"{rates[index]:.3f}" for rates in document["everyday"].values()) + " |")
    return lines


if __name__ == "__main__":
    main()
