"""One fine-tuned BERT recipe of the protocol on chosen splits and seeds: writes benchmarks/results/standin-KEY.{md,json}.

    python benchmarks/standin.py --data-dir ../shared/data/routellm-evals --splits fold0 --seeds 0 1 2

The recipe (``quality.BERT_RECIPES``; default the shipped transformer tier's) trains exactly as in ``quality.py``'s
protocol: on a seeded sample of 2,500 of the split's training rows beside its chat and written prompts (the 2,500-row
stand-in; the shipped checkpoint trains on every row). Fine-tunes are noisy, so seeds are what this script is for:
each seed draws its own row sample and its own training order. About 5-7 minutes per split and seed on 2 cores; split
models are cached in ``--cache-dir`` (shared with quality.py, same keys). Per split and seed it reports APGR and
content APGR (within length quintiles) on the split's test rows of each benchmark, the pair set's accuracy and the
Spearman correlation with character count, beside prompt length and random on the same rows.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
from quality import BERT_KEYS, RESULTS, bert_scores, protocol_data  # noqa: E402

from edgeroute.runtime.evaluation.report import crossval_summary  # noqa: E402


def split_row(rows: dict, split: str) -> dict[str, float]:
    """One split's figures from its ``crossval_summary`` rows: APGR and content APGR per column it tests, pairs, and on a
    fold the Spearman correlation with length on its test rows."""
    fold = split.startswith("fold")
    columns = ("mmlu", "gsm8k") if fold else (split,)

    def value(table: dict, column: str) -> float:
        return float(table[column]["mean"] if fold else table[column])

    row = {column: value(rows, column) for column in columns}
    row.update({f"content {column}": value(rows["content"], column) for column in columns})
    row["pairs"] = float(rows["pairs"])
    return {**row, "spearman": float(rows["spearman"])} if fold else row  # crossval_summary's Spearman reads folds only


def run(data_dir: Path, work_dir: Path, recipe: str, split_names: list[str], seeds: list[int]) -> dict:
    """Every (split, seed) run's figures for ``recipe`` and the baselines, keyed ``split`` -> router -> seed or baseline."""
    data, splits, pair_rows, chat, written_rows = protocol_data(data_dir)
    unknown = sorted(set(split_names) - set(splits))
    if unknown:
        raise SystemExit(f"unknown split(s) {', '.join(unknown)}: expected some of {', '.join(splits)}")
    chosen = {name: splits[name] for name in split_names}
    by_seed = {seed: bert_scores(recipe, data, chosen, chat, written_rows, work_dir, seed) for seed in seeds}
    results: dict = {}
    for split in split_names:
        one = {split: chosen[split]}
        summary = crossval_summary(data, one, {f"seed {seed}": {split: by_seed[seed][split]} for seed in seeds}, pair_rows)
        results[split] = {name: split_row(rows, split) for name, rows in summary.items() if name != "optimal"}
    return results


def seed_spread(runs: dict[str, dict[str, float]]) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation over the seeds' runs of each figure."""
    seeds = [figures for name, figures in runs.items() if name.startswith("seed ")]
    return {key: (float(np.mean([f[key] for f in seeds])), float(np.std([f[key] for f in seeds]))) for key in seeds[0]}


def merged(path: Path, recipe: str, results: dict) -> dict:
    """``results`` added to the recipe's earlier report at ``path`` (a run of the same split and seed replaces its row),
    so that seeds and splits run one invocation at a time build one report. Each recipe has its own file
    (``standin-KEY.json``); a file that holds another recipe is refused rather than overwritten."""
    earlier = json.loads(path.read_text()) if path.is_file() else {"recipe": recipe, "results": {}}
    if earlier.get("recipe") != recipe:
        raise SystemExit(f"{path} holds another recipe ({earlier.get('recipe')!r}): pick another --out")
    for split, runs in results.items():
        earlier["results"][split] = {**earlier["results"].get(split, {}), **runs}
    return earlier


def markdown(document: dict, key: str = "shipped") -> str:
    """Per split: every seed, their mean ± spread, and the baselines (``key``: the recipe's ``--recipe`` name)."""
    lines = [
        "# One BERT recipe of the protocol, split by split and seed by seed",
        "",
        f"Recipe: **{document['recipe']}**. Produced by `python benchmarks/standin.py --data-dir ../shared/data/routellm-evals "
        f"--recipe {key} --splits SPLIT... --seeds SEED...` (one invocation per set of splits and seeds; "
        f"each adds its runs here); machine: {document['machine']}.",
        "",
        "APGR on the split's test rows (content: within length quintiles), the project pair set's accuracy, and on a fold the "
        "Spearman correlation with character count on its test rows.",
    ]
    for split, runs in document["results"].items():
        keys = list(next(iter(runs.values())))
        lines += ["", f"## {split}", "", "| run | " + " | ".join(keys) + " |", "| --- |" + " --- |" * len(keys)]
        lines += [f"| {name} | " + " | ".join(f"{figures[k]:.3f}" for k in keys) + " |" for name, figures in runs.items()]
        if sum(name.startswith("seed ") for name in runs) > 1:
            spread = seed_spread(runs)
            lines.append("| seeds: mean ± sd | " + " | ".join(f"{spread[k][0]:.3f} ± {spread[k][1]:.3f}" for k in keys) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--recipe", default="shipped", choices=list(BERT_KEYS), help="which of quality.py's BERT rows (default: shipped)")
    parser.add_argument("--splits", nargs="+", default=["fold0"], help="fold0..fold4, mmlu->gsm8k, gsm8k->mmlu")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "edgeroute" / "quality")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    print(f"cache: {args.cache_dir} (reused across runs and with quality.py)", file=sys.stderr)
    recipe, stem = BERT_KEYS[args.recipe], f"standin-{args.recipe}"
    results = run(args.data_dir, args.cache_dir, recipe, args.splits, args.seeds)
    document = merged(args.out / f"{stem}.json", recipe, results)
    document["machine"] = platform.processor() or platform.machine()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(document, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(document, args.recipe))
    print((args.out / f"{stem}.md").read_text())


if __name__ == "__main__":
    main()
