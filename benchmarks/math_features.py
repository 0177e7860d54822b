"""Do math features (numbers, operators, sentences) carry difficulty beyond prompt length? (issue 24)

    python benchmarks/math_features.py --data-dir ../shared/data/routellm-evals --static-router ckpt/static-src [--ridge 0.01]

A linear probe (``fit_ridge``) fitted to the labels (the strong model correct and the weak one wrong),
once per split of the quality protocol (``benchmarks/quality.py``: five MMLU folds grouped by subject, five
GSM8K folds, the two transfers), on the shipped fast tier's static embeddings with and without hand-made
math features, and on the math features with length alone. Reported beside prompt length and random,
with content APGR (within length quintiles, where length scores about 0.5): a feature that only adds
length raises APGR on GSM8K and leaves content APGR where it was. Writes ``benchmarks/results/math_features.md``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
from machine import machine_flags  # noqa: E402
from quality import protocol_data  # noqa: E402

from edgeroute.export.training.features import static_features  # noqa: E402
from edgeroute.export.training.probe import fit_ridge  # noqa: E402
from edgeroute.export.training.table_tuning import frozen_static_router  # noqa: E402
from edgeroute.runtime.evaluation.report import crossval_summary  # noqa: E402

RESULTS = HERE / "results"
NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
OPERATION = re.compile(
    r"\b(?:times|twice|half|each|per|total|remaining|left|more than|less than|fewer|percent|average|altogether|every|after"
    r"|costs?|sells?|buys?|spends?|earns?)\b|[%$*/+=×÷-]",
    re.IGNORECASE,
)
MATH_FEATURES = (
    "log numbers",
    "log distinct numbers",
    "numbers per word",
    "log operations",
    "operations per word",
    "log sentences",
    "has a decimal",
    "has a percent sign",
    "has a fraction",
    "log longest number's digits",
)
COLUMNS = ("mmlu", "gsm8k", "mmlu->gsm8k", "gsm8k->mmlu")


def math_row(prompt: str) -> list[float]:
    """The ``MATH_FEATURES`` of one prompt: counts as logs, rates per word, flags as 0/1."""
    numbers = NUMBER.findall(prompt)
    words = max(1, len(prompt.split()))
    operations = len(OPERATION.findall(prompt))
    sentences = max(1, len(re.findall(r"[.!?](?:\s|$)", prompt)))
    longest = max((len(n.replace(",", "")) for n in numbers), default=0)
    return [
        float(np.log1p(len(numbers))),
        float(np.log1p(len(set(numbers)))),
        len(numbers) / words,
        float(np.log1p(operations)),
        operations / words,
        float(np.log1p(sentences)),
        float(any("." in n for n in numbers)),
        float("%" in prompt),
        float(bool(re.search(r"\d+/\d+", prompt))),
        float(np.log1p(longest)),
    ]


def variants(prompts: list[str], static_router: str) -> dict[str, np.ndarray]:
    """Feature sets: a frozen static embedding (with and without its length input) and the math features."""
    router = frozen_static_router(static_router)  # a table tuned on the shared prompts would read every split's test rows
    static = np.concatenate([static_features(router, prompts[i : i + 512]) for i in range(0, len(prompts), 512)]).astype(np.float64)
    embedding, length = static[:, :-1], static[:, -1:]
    math = np.array([math_row(p) for p in prompts], dtype=np.float64)
    return {
        "static embedding + length": np.hstack([embedding, length]),
        "static embedding + length + math": np.hstack([embedding, length, math]),
        "static embedding": embedding,
        "static embedding + math": np.hstack([embedding, math]),
        "math + length": np.hstack([math, length]),
    }


def run(data_dir: Path, ridge: float, static_router: str) -> tuple[dict, list[str]]:
    """Each feature set's protocol summary (``crossval_summary``) and the names, in report order."""
    data, splits, pair_rows, _chat, _written = protocol_data(data_dir)
    labelled = ~np.isnan(data.strong_quality)
    labels = np.where(labelled, data.strong_quality > data.weak_quality, 0.0).astype(np.float64)
    scores = {}
    for name, features in variants(data.prompts, static_router).items():
        fitted = {}
        for split, (train, _test) in splits.items():
            rows = train & labelled
            weights, bias = fit_ridge(features[rows], labels[rows], ridge)
            fitted[split] = features @ weights + bias
        scores[name] = fitted
    return crossval_summary(data, splits, scores, pair_rows), [*scores, "prompt length", "random"]


def report(summary: dict, names: list[str], ridge: float) -> str:
    """The markdown table: APGR and content APGR per column, pair accuracy, Spearman with length."""
    lines = [
        "# Math features beside the static embedding (issue 24)",
        "",
        "`python benchmarks/math_features.py --data-dir ../shared/data/routellm-evals --static-router ckpt/static-src "
        f"--ridge {ridge}` ({_machine()}; no timing here).",
        "",
        "Linear probe fitted to the labels per protocol split. Columns: MMLU / GSM8K fold means, MMLU→GSM8K, GSM8K→MMLU.",
        "Math features: " + ", ".join(MATH_FEATURES) + ".",
        "",
        "| features | APGR | content APGR | pairs | Spearman with length |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in names:
        row = summary[name]
        apgr = " / ".join(f"{_column(row, c):.3f}" for c in COLUMNS)
        content = " / ".join(f"{_column(row['content'], c):.3f}" for c in COLUMNS)
        lines.append(f"| {name} | {apgr} | {content} | {row['pairs']:.2f} | {row['spearman']:+.2f} |")
    return "\n".join(lines) + "\n"


def _machine() -> str:
    facts = machine_flags()
    return f"{facts['cpu']}, flags {' '.join(facts['cpu_flags'])}, {facts['cores']} cores"


def _column(row: dict, column: str) -> float:
    value = row[column]
    return float(value["mean"] if isinstance(value, dict) else value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="RouteLLM-layout data (../shared/data/routellm-evals)")
    parser.add_argument("--ridge", type=float, default=0.01, help="ridge penalty per training row, on standardized features")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for math_features.md")
    parser.add_argument(
        "--static-router",
        required=True,
        help="a bundle with a frozen static table (ckpt/static-src in docs/training.md; not the shipped one)",
    )
    args = parser.parse_args()
    summary, names = run(args.data_dir, args.ridge, args.static_router)
    text = report(summary, names, args.ridge)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "math_features.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
