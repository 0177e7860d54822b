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
APGR columns, and only if it beats prompt length on content APGR and on the pairs.

The frozen-encoder embeddings and the fine-tuned BERT's split models are cached in ``--work-dir``
(a fresh run takes about 90 minutes on 2 cores, most of it fine-tuning BERT once per split).
"""

from __future__ import annotations

import argparse
import json
import platform
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from edgeroute.export.training.distill import StudentRecipe
from edgeroute.export.training.finetune import FineTuneRecipe
from edgeroute.export.training.probe import ProbeRecipe
from edgeroute.runtime import Router
from edgeroute.runtime.evaluation.content import load_pairs, pair_prompts
from edgeroute.runtime.evaluation.data import load_protocol_data, protocol_splits
from edgeroute.runtime.evaluation.report import BASELINES, PROTOCOL_BENCHMARKS, crossval_summary

RESULTS = Path(__file__).parent / "results"
PAIRS_FILE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "content_pairs.jsonl"
FINETUNED, LABELS = "transformer tier: fine-tuned top 2 layers (previous recipe)", "fast tier: static MLP on labels"
# The shipped transformer tier's recipe (RouteLLM's BERT, every layer), per split on a sample of its training rows.
BERT_ROWS = 3000
BERT = f"transformer tier: BERT fine-tuned, every layer ({BERT_ROWS:,} training rows per split)"
# Generated chat-style prompts (export/training/chat_prompts.py) that the fast tier is distilled on beside the labelled ones.
CHAT_PROMPTS = 6000
# The chosen probe fitted on fp32 embeddings (as in training) but scoring the shipped bundle's int8 ones.
SHIPPED_INT8 = "transformer tier: chosen probe, served by the shipped int8 graph"
# The free choices, made here by the protocol score; the grids were fixed before the results.
# Transformer tier: the probe's ridge penalty and length weight (export/training/probe.py).
PROBE_RIDGES, PROBE_LENGTH_WEIGHTS = (1.0, 3.0, 10.0), (0.0, 0.5, 1.0)
# Fast tier: how much prompt length joins the student beside its MLP (export/training/distill.py fold_length),
# and the MLP's width (64 joined the grid later, for speed: issue 13's 30 us fast tier).
LENGTH_WEIGHTS = (0.0, 0.5, 1.0, 2.0)
STUDENT_HIDDEN = (64, 256)
APGR_COLUMNS = ("mmlu", "gsm8k", "mmlu->gsm8k", "gsm8k->mmlu")


def probe_name(recipe: ProbeRecipe) -> str:
    """The report's row name of one probe setting."""
    return f"transformer tier: probe, ridge {recipe.ridge:g}, length weight {recipe.length_weight:g}"


def distilled_name(student: StudentRecipe, teacher: str = "the probe", chat: bool = False) -> str:
    """The report's row name of one fast-tier setting."""
    wide = " on labelled + chat prompts" if chat else ""
    return f"fast tier: distilled from {teacher}{wide}, {student.hidden} hidden, length weight {student.length_weight:g}"


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


def reads_content(rows: dict, length: dict) -> bool:
    """A recipe may be chosen only if it beats prompt length on content APGR and on the pair set."""
    return content_score(rows) > content_score(length) and rows.get("pairs", 1.0) > length.get("pairs", 0.5)


def choose(summary: dict, names: list[str]) -> str:
    """The best of ``names`` by ``protocol_score`` among those that read content (all of them if none does)."""
    eligible = [n for n in names if reads_content(summary[n], summary["prompt length"])] or names
    return max(eligible, key=lambda n: protocol_score(summary[n]))


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
    """The labelled rows, their splits, and the pair set and chat prompts appended as unlabeled rows."""
    from edgeroute.export.training.chat_prompts import chat_prompts
    from edgeroute.export.training.crossval import append_unlabeled

    labelled = load_protocol_data(data_dir)
    extra = {"pairs": pair_prompts(load_pairs(PAIRS_FILE)), "chat": chat_prompts(CHAT_PROMPTS)}
    data, splits, rows = append_unlabeled(labelled, protocol_splits(labelled), extra)
    return data, splits, np.flatnonzero(rows["pairs"]), rows["chat"]


def transformer_rows(data, splits, pair_rows, work_dir: Path, transformer_router: str, with_finetuned: bool) -> tuple[dict, str]:
    """Every transformer-tier recipe's split scores, and the probe setting the protocol chose."""
    from edgeroute.export.exporter import minilm_dir
    from edgeroute.export.training.crossval import finetuned_scores, probe_embeddings, probe_scores

    embeddings = probe_embeddings(data, minilm_dir(), ProbeRecipe(), work_dir)
    grid = [replace(ProbeRecipe(), ridge=r, length_weight=w) for r in PROBE_RIDGES for w in PROBE_LENGTH_WEIGHTS]
    scores = {probe_name(recipe): probe_scores(embeddings, data, splits, recipe) for recipe in grid}
    probes = crossval_summary(data, splits, scores, pair_rows)
    probe = next(r for r in grid if probe_name(r) == choose(probes, [probe_name(r) for r in grid]))
    shipped = Router.load(transformer_router)
    served = np.concatenate([shipped.embed(data.prompts[i : i + 256]) for i in range(0, len(data), 256)])
    scores[SHIPPED_INT8] = probe_scores(embeddings, data, splits, probe, served)
    scores[BERT] = finetuned_scores(data, splits, minilm_dir(), FineTuneRecipe(), work_dir, BERT_ROWS)
    if with_finetuned:
        from edgeroute.export.training.crossval import teacher_scores
        from edgeroute.export.training.teacher import TeacherRecipe

        scores[FINETUNED] = teacher_scores(data, splits, minilm_dir(), TeacherRecipe(), work_dir)
    return scores, probe_name(probe)


def fast_rows(data, splits, chat_rows, static_router: str, teachers: dict[str, dict]) -> tuple[dict, list[str]]:
    """Fast-tier students per split: from each teacher, on the labelled rows alone and with the chat prompts."""
    from edgeroute.export.training.crossval import distilled_scores, label_scores, static_features

    features = static_features(Router.load(static_router), data.prompts)
    scores, students = {}, []
    for teacher, teacher_scores in teachers.items():
        for hidden in STUDENT_HIDDEN:
            recipe = StudentRecipe(hidden=hidden)
            for chat in (False, True):
                unlabeled = chat_rows if chat else None
                distilled = distilled_scores(features, splits, teacher_scores, recipe, LENGTH_WEIGHTS, unlabeled)
                for weight in LENGTH_WEIGHTS:
                    name = distilled_name(replace(recipe, length_weight=weight), teacher, chat)
                    scores[name] = distilled[weight]
                    students.append(name)
    scores[LABELS] = label_scores(features, splits, data, StudentRecipe())
    return scores, students


def run_protocol(data_dir: Path, work_dir: Path, static_router: str, transformer_router: str, with_finetuned: bool = False) -> dict:
    """Train every recipe on every split and summarize APGR, content APGR, pairs and length correlation."""
    data, splits, pair_rows, chat_rows = protocol_data(data_dir)
    scores, probe = transformer_rows(data, splits, pair_rows, work_dir, transformer_router, with_finetuned)
    teachers = {"the probe": scores[probe], "the fine-tuned BERT": scores[BERT]}
    fast, students = fast_rows(data, splits, chat_rows, static_router, teachers)
    summary = crossval_summary(data, splits, {**scores, **fast}, pair_rows)
    transformer = choose(summary, [probe, BERT])
    student = choose(summary, students)
    return {
        "n_prompts": int(np.isfinite(data.strong_quality).sum()),
        "n_chat_prompts": int(chat_rows.sum()),
        "n_pairs": len(pair_rows) // 2,
        "summary": summary,
        "chosen_probe": probe,
        "chosen_transformer": transformer,
        "chosen_student": student,
        "recipes": {BERT: {**asdict(FineTuneRecipe()), "max_train_rows": BERT_ROWS}, probe: probe, student: student},
    }


def everyday_win_rates(routers: list[str]) -> dict[str, list[float]]:
    """What each shipped router believes about a dozen everyday prompts (each scored alone)."""
    table = {}
    for name in routers:
        router = Router.load(name)
        table[name] = [router.strong_win_rate(prompt) for prompt in EVERYDAY_PROMPTS]
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--work-dir", type=Path, default=Path.home() / ".cache" / "edgeroute" / "quality")
    parser.add_argument(
        "--static-router",
        default="static-distilled-gpt4-mixtral",
        help="bundle whose static embeddings the fast tier reads (its table and tokenizer)",
    )
    parser.add_argument(
        "--transformer-router",
        default="minilm4-probe-gpt4-mixtral",
        help="shipped transformer-tier bundle whose int8 graph serves the chosen probe's row",
    )
    parser.add_argument("--router", action="append", default=None, help="shipped routers for the everyday table")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--with-finetuned", action="store_true", help="also cross-validate the previous fine-tuned transformer recipe (about an hour fresh)"
    )
    args = parser.parse_args()
    document = run_protocol(args.data_dir, args.work_dir, args.static_router, args.transformer_router, args.with_finetuned)
    from edgeroute.runtime.scoring.router import shipped_routers

    document["everyday"] = everyday_win_rates(args.router or shipped_routers())
    document["machine"] = platform.processor() or platform.machine()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quality.json").write_text(json.dumps(document, indent=2) + "\n")
    shown = [document["chosen_probe"], document["chosen_student"], FINETUNED, LABELS, "random", "prompt length"]
    plot_summary(document["summary"], args.out / "quality.png", shown)
    (args.out / "quality.md").write_text(markdown(document))
    print((args.out / "quality.md").read_text())


def plot_summary(summary: dict, path: Path, shown: list[str]) -> Path:
    """Bars of mean APGR (± spread over folds, fold values as dots) per recipe and benchmark, transfers beside."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [*PROTOCOL_BENCHMARKS, "mmlu->gsm8k", "gsm8k->mmlu"]
    names = [n for n in summary if n in shown]
    figure, axis = plt.subplots(figsize=(11, 5.5))
    width = 0.8 / len(names)
    for index, name in enumerate(names):
        x = np.arange(len(columns)) + index * width
        means = [summary[name][c]["mean"] if c in PROTOCOL_BENCHMARKS else summary[name][c] for c in columns]
        spreads = [summary[name][c]["std"] if c in PROTOCOL_BENCHMARKS else 0.0 for c in columns]
        axis.bar(x, means, width, yerr=spreads, capsize=3, label=name)
        for column, benchmark in enumerate(PROTOCOL_BENCHMARKS):
            axis.plot([x[column]] * len(summary[name][benchmark]["folds"]), summary[name][benchmark]["folds"], "k.", markersize=3)
    axis.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
    axis.set_xticks(np.arange(len(columns)) + 0.4 - width / 2, ["MMLU (5 folds)", "GSM8K (5 folds)", "MMLU→GSM8K", "GSM8K→MMLU"])
    axis.set_ylabel("APGR on held-out rows")
    axis.set_title("Cross-validated routing quality (dots: single folds; bars: mean ± std)")
    axis.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _row(name: str, rows: dict) -> str:
    folded = [f"{rows[b]['mean']:.3f} ± {rows[b]['std']:.3f}" for b in PROTOCOL_BENCHMARKS]
    return f"| {name} | {' | '.join(folded)} | {rows['mmlu->gsm8k']:.3f} | {rows['gsm8k->mmlu']:.3f} | {protocol_score(rows):.3f} |"


def markdown(document: dict) -> str:
    """The report: protocol, the table, fold-by-fold figures, everyday prompts."""
    summary = document["summary"]
    lines = [
        "# Cross-validated routing quality",
        "",
        "Produced by `python benchmarks/quality.py --data-dir ../shared/data/routellm-evals` "
        f"({document['n_prompts']} MMLU and GSM8K prompts of RouteLLM's published evals).",
        "",
        "**APGR** (RouteLLM's average performance gap recovered) is the area under the quality-vs-strong-call-share "
        "curve, scaled so that always calling the weak model scores 0 and always calling the strong model scores 1; "
        "'optimal' can exceed 1 because on some prompts the weak model is right where the strong one is wrong, and an "
        "oracle then beats always-strong.",
        "",
        "**Protocol**: 5-fold grouped cross-validation over the 47 MMLU subjects (subjects dealt round-robin in "
        "alphabetical order; each subject is tested once and never trained on in its fold), 5-fold over GSM8K "
        "problems (by prompt hash), and transfer (train on one benchmark only, test on the other). Every recipe is "
        "retrained per split, the distilled student from that split's own teacher. Mean ± standard deviation over "
        "folds; random is averaged over 10 seeds; the prompt-length baseline scores a prompt by its character count.",
        "",
        "| recipe | MMLU APGR | GSM8K APGR | MMLU→GSM8K | GSM8K→MMLU | protocol score |",
        "| --- | --- | --- | --- | --- | --- |",
        *[_row(name, rows) for name, rows in summary.items()],
        "",
        f"The protocol score (mean of the four columns) chose **{document['chosen_probe']}** for the shipped "
        f"transformer tier and **{document['chosen_student']}** for the shipped fast tier "
        "(its student distilled from that probe). The chosen rows are the best of their grid (9 probe settings, "
        "8 student settings) on the same folds that report them, with no nested cross-validation, so they are "
        "slightly optimistic: differences of 0.01 or less between rows, or between a row and a baseline, are "
        "within that selection noise and the fold spread. The row 'served by the shipped int8 graph' is the chosen "
        "probe fitted on fp32 embeddings per split, scoring the int8 embeddings that the shipped bundle computes "
        "(the encoder is frozen, so one int8 graph serves every split): what quantization costs.",
        "",
        "![cross-validated APGR](quality.png)",
        "",
        "## Fold by fold",
        "",
        "| recipe | " + " | ".join(f"MMLU fold {k}" for k in range(5)) + " | " + " | ".join(f"GSM8K fold {k}" for k in range(5)) + " |",
        "| --- |" + " --- |" * 10,
    ]
    for name, rows in summary.items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for b in PROTOCOL_BENCHMARKS for v in rows[b]["folds"]) + " |")
    lines += ["", "## Recipes", ""] + [f"- **{n}**: `{json.dumps(r)}`" for n, r in document["recipes"].items()]
    lines += [
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
    lines += ["", f"Baselines: {', '.join(BASELINES)}. Machine: {document['machine']}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
