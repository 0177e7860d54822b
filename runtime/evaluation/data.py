"""Read benchmark folders laid out like RouteLLM's ``routellm/evals/`` (and ``../shared/data``).

mmlu/responses/mmlu_<domain>.csv     prompt + one True/False column per model
mmlu/contaminated_prompts.jsonl      prompts to drop ("eval_prompt")
gsm8k/gsm8k_responses.csv            prompt + True/False columns (+ *_response text)
gsm8k/contaminated_prompts.jsonl
mt_bench/question.jsonl              question_id, turns
mt_bench/judgements.jsonl            question_id, model, score (GPT-4 judge, 1-10), turn
mt_bench/contaminated_prompts.jsonl  (optional)
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeroute.runtime.errors import InvalidInputError, utf8_text

DEFAULT_STRONG_MODEL = "gpt-4-1106-preview"
DEFAULT_WEAK_MODEL = "mistralai/Mixtral-8x7B-Instruct-v0.1"
BENCHMARKS = ("mmlu", "gsm8k", "mt-bench")
SPLITS = ("train", "val", "test")
# edgeroute's fixed split of a RouteLLM-layout folder, decided before any router was trained:
# MMLU by domain (alphabetical order; every 5th from the first is test, every 5th from the
# third is validation), every other benchmark by a hash of the prompt (20% test, 10% validation).
_DOMAIN_STRIDE, _TEST_OFFSET, _VAL_OFFSET = 5, 0, 2
_HASH_TEST, _HASH_VAL = 0.2, 0.3
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no", ""}


@dataclass
class BenchmarkData:
    """Prompts with the quality each model reaches on them (1/0 correctness or a judge score)."""

    name: str
    prompts: list[str]
    strong_quality: np.ndarray
    weak_quality: np.ndarray
    groups: list[str]  # MMLU domain, "gsm8k", or MT-Bench category
    strong_model: str
    weak_model: str

    def __len__(self) -> int:
        return len(self.prompts)

    def subset(self, keep: Iterable[bool]) -> BenchmarkData:
        """The rows where ``keep`` is true."""
        mask = np.fromiter(keep, dtype=bool, count=len(self.prompts))
        return BenchmarkData(
            self.name,
            [p for p, k in zip(self.prompts, mask) if k],
            self.strong_quality[mask],
            self.weak_quality[mask],
            [g for g, k in zip(self.groups, mask) if k],
            self.strong_model,
            self.weak_model,
        )


def _read_csv(path: Path) -> list[dict[str, str]]:
    csv.field_size_limit(1 << 30)
    with utf8_text(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _jsonl(path: Path) -> list[dict]:
    with utf8_text(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def contaminated_prompts(folder: Path) -> set[str]:
    """Prompts listed in ``folder/contaminated_prompts.jsonl`` (empty when there is none)."""
    path = folder / "contaminated_prompts.jsonl"
    return {row["eval_prompt"] for row in _jsonl(path)} if path.is_file() else set()


def match_model(name: str, available: Iterable[str], where: Path) -> str:
    """The column among ``available`` that names ``name``: exact, else case- and org-insensitive."""
    available = list(available)
    if name in available:
        return name

    def short(text: str) -> str:
        return text.rsplit("/", 1)[-1].lower()

    matches = [column for column in available if short(column) == short(name)]
    if len(matches) == 1:
        return matches[0]
    raise InvalidInputError(f"{where}: no column for model {name!r} (columns: {', '.join(available)})")


def _as_bool(value: str, path: Path) -> float:
    text = value.strip().lower()
    if text in _TRUE:
        return 1.0
    if text in _FALSE:
        return 0.0
    raise InvalidInputError(f"{path}: correctness value {value!r} is not True/False")


def read_correctness_csv(path: Path, strong_model: str, weak_model: str, group: str) -> BenchmarkData:
    """One RouteLLM-style correctness table: ``prompt`` and a True/False column per model."""
    rows = _read_csv(path)
    if not rows or "prompt" not in rows[0]:
        raise InvalidInputError(f"{path}: expected a CSV with a 'prompt' column and one True/False column per model")
    strong = match_model(strong_model, rows[0].keys(), path)
    weak = match_model(weak_model, rows[0].keys(), path)
    return BenchmarkData(
        name=group,
        prompts=[row["prompt"] for row in rows],
        strong_quality=np.array([_as_bool(row[strong], path) for row in rows]),
        weak_quality=np.array([_as_bool(row[weak], path) for row in rows]),
        groups=[group] * len(rows),
        strong_model=strong,
        weak_model=weak,
    )


def _concat(name: str, parts: list[BenchmarkData]) -> BenchmarkData:
    return BenchmarkData(
        name,
        [p for part in parts for p in part.prompts],
        np.concatenate([part.strong_quality for part in parts]),
        np.concatenate([part.weak_quality for part in parts]),
        [g for part in parts for g in part.groups],
        parts[0].strong_model,
        parts[0].weak_model,
    )


def _drop(data: BenchmarkData, prompts: set[str]) -> BenchmarkData:
    return data.subset(p not in prompts for p in data.prompts) if prompts else data


def mmlu_domains(data_dir: Path) -> list[str]:
    """The MMLU domains present in ``data_dir``, sorted."""
    return sorted(p.stem[len("mmlu_") :] for p in (Path(data_dir) / "mmlu" / "responses").glob("mmlu_*.csv"))


def load_benchmark(
    data_dir: Path,
    benchmark: str,
    strong_model: str = DEFAULT_STRONG_MODEL,
    weak_model: str = DEFAULT_WEAK_MODEL,
    domains: Iterable[str] | None = None,
) -> BenchmarkData:
    """Load one benchmark from a RouteLLM-layout folder, contaminated prompts dropped."""
    data_dir = Path(data_dir)
    if benchmark == "mmlu":
        names = list(domains) if domains is not None else mmlu_domains(data_dir)
        if not names:
            raise InvalidInputError(f"{data_dir / 'mmlu' / 'responses'}: no mmlu_*.csv files")
        parts = [read_correctness_csv(data_dir / "mmlu" / "responses" / f"mmlu_{d}.csv", strong_model, weak_model, d) for d in names]
        return _drop(_concat("mmlu", parts), contaminated_prompts(data_dir / "mmlu"))
    if benchmark == "gsm8k":
        data = read_correctness_csv(data_dir / "gsm8k" / "gsm8k_responses.csv", strong_model, weak_model, "gsm8k")
        return _drop(data, contaminated_prompts(data_dir / "gsm8k"))
    if benchmark == "mt-bench":
        return _load_mt_bench(data_dir / "mt_bench", strong_model, weak_model)
    raise InvalidInputError(f"benchmark must be one of {BENCHMARKS}, got {benchmark!r}")


def _load_mt_bench(folder: Path, strong_model: str, weak_model: str) -> BenchmarkData:
    """MT-Bench: route on the first turn; quality = the routed model's mean judge score over both turns."""
    for name in ("question.jsonl", "judgements.jsonl"):
        if not (folder / name).is_file():
            raise InvalidInputError(f"{folder / name}: missing; MT-Bench needs question.jsonl and judgements.jsonl")
    questions = _jsonl(folder / "question.jsonl")
    judgements = _jsonl(folder / "judgements.jsonl")
    models = {row["model"] for row in judgements}
    strong = match_model(strong_model, models, folder / "judgements.jsonl")
    weak = match_model(weak_model, models, folder / "judgements.jsonl")
    scores: dict[tuple[object, str], list[float]] = defaultdict(list)
    for row in judgements:
        if row["model"] in (strong, weak) and row.get("score") is not None and float(row["score"]) >= 0:
            scores[(row["question_id"], row["model"])].append(float(row["score"]))
    contaminated = contaminated_prompts(folder)
    kept = [
        q
        for q in questions
        if not contaminated.intersection(q["turns"][:2]) and scores.get((q["question_id"], strong)) and scores.get((q["question_id"], weak))
    ]
    return BenchmarkData(
        name="mt-bench",
        prompts=[q["turns"][0] for q in kept],
        strong_quality=np.array([np.mean(scores[(q["question_id"], strong)]) for q in kept]),
        weak_quality=np.array([np.mean(scores[(q["question_id"], weak)]) for q in kept]),
        groups=[str(q.get("category", "mt-bench")) for q in kept],
        strong_model=strong,
        weak_model=weak,
    )


# ------------------------------------------------------------ what a router was trained on
SKETCH_SIZE = 256


def _prompt_hash(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8", "replace")).hexdigest()[:16]


def prompt_sketch(prompts: Iterable[str], size: int = SKETCH_SIZE) -> list[str]:
    """A bottom-k sketch of a prompt set: the ``size`` smallest prompt hashes (16 hex digits each).

    Stored in a bundle's training report, it tells later whether an evaluation set holds the
    training prompts, without shipping them: a uniform sample of the set, keyed by content.
    """
    return sorted({_prompt_hash(p) for p in prompts})[:size]


def sketch_overlap(sketch: Sequence[str], prompts: Iterable[str]) -> float:
    """The share of a training sketch's prompts found in ``prompts`` (about the share of training prompts there)."""
    if not sketch:
        return 0.0
    present = {_prompt_hash(p) for p in prompts}
    return sum(h in present for h in sketch) / len(sketch)


def _hash_fraction(prompt: str) -> float:
    return int(hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:8], 16) / 2**32


def split_of(data: BenchmarkData, all_domains: list[str] | None = None) -> np.ndarray:
    """Each row's split ('train', 'val' or 'test') under edgeroute's fixed rule (see module docs)."""
    if data.name == "mmlu":
        ordered = sorted(all_domains if all_domains is not None else set(data.groups))
        split_by_domain = {}
        for index, domain in enumerate(ordered):
            position = index % _DOMAIN_STRIDE
            split_by_domain[domain] = "test" if position == _TEST_OFFSET else "val" if position == _VAL_OFFSET else "train"
        return np.array([split_by_domain[g] for g in data.groups])
    fractions = np.array([_hash_fraction(p) for p in data.prompts])
    return np.where(fractions < _HASH_TEST, "test", np.where(fractions < _HASH_VAL, "val", "train"))


def select_split(data: BenchmarkData, split: str, all_domains: list[str] | None = None) -> BenchmarkData:
    """Rows of one split; ``split='all'`` returns ``data`` unchanged."""
    if split == "all":
        return data
    if split not in SPLITS:
        raise InvalidInputError(f"split must be 'all' or one of {SPLITS}, got {split!r}")
    return data.subset(split_of(data, all_domains) == split)


# ------------------------------------------------------------ cross-validation protocol
# Routers are compared on data they never trained on: grouped K-fold over MMLU subjects (a
# subject's questions are tested in exactly one fold and never trained on in it), K-fold over
# GSM8K problems (by prompt hash), and transfer between the two benchmarks.
CV_FOLDS = 5
TRANSFER_SPLITS = {"mmlu->gsm8k": ("mmlu", "gsm8k"), "gsm8k->mmlu": ("gsm8k", "mmlu")}


def benchmark_of(data: BenchmarkData) -> np.ndarray:
    """Each row's benchmark ('gsm8k' or 'mmlu') in data made by ``load_protocol_data``."""
    return np.array(["gsm8k" if g == "gsm8k" else "mmlu" for g in data.groups])


def load_protocol_data(data_dir: Path, strong_model: str = DEFAULT_STRONG_MODEL, weak_model: str = DEFAULT_WEAK_MODEL) -> BenchmarkData:
    """All MMLU and GSM8K rows of a RouteLLM-layout folder in one table (contaminated prompts dropped)."""
    parts = [load_benchmark(data_dir, name, strong_model, weak_model) for name in ("mmlu", "gsm8k")]
    return _concat("mmlu+gsm8k", parts)


def cv_fold_of(data: BenchmarkData, folds: int = CV_FOLDS) -> np.ndarray:
    """Each row's fold: MMLU subjects dealt round-robin in alphabetical order, GSM8K by prompt hash."""
    subjects = sorted({g for g in data.groups if g != "gsm8k"})
    subject_fold = {subject: index % folds for index, subject in enumerate(subjects)}
    return np.array([int(_hash_fraction(p) * folds) if g == "gsm8k" else subject_fold[g] for p, g in zip(data.prompts, data.groups)])


def protocol_splits(data: BenchmarkData, folds: int = CV_FOLDS) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Split name -> (train mask, test mask): ``fold0``..``fold{K-1}``, then the two transfers."""
    fold = cv_fold_of(data, folds)
    splits = {f"fold{k}": (fold != k, fold == k) for k in range(folds)}
    bench = benchmark_of(data)
    for name, (train_on, test_on) in TRANSFER_SPLITS.items():
        splits[name] = (bench == train_on, bench == test_on)
    return splits
