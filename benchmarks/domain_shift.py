"""How well can a router generalize to MMLU subjects it never saw? Writes benchmarks/results/domain_shift.md.

    python benchmarks/domain_shift.py --data-dir ../shared/data/routellm-evals

Embeds every prompt once with the MiniLM embedder inside the shipped MF bundle (runtime only),
then fits a plain logistic regression on frozen embeddings ("strong model wins") on the
training domains of 12 random 10-domain hold-outs and of edgeroute's fixed split, and reports
held-out APGR beside a prompt-length baseline and random (0.5).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from edgeroute.runtime import Router
from edgeroute.runtime.evaluation.data import load_benchmark, mmlu_domains, split_of
from edgeroute.runtime.evaluation.curves import routing_curve, summarize


def embed(router: Router, prompts: list[str], batch_size: int = 64) -> np.ndarray:
    order = np.argsort([len(p) for p in prompts], kind="stable")
    out = np.zeros((len(prompts), router.manifest.encoder.dim), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        out[rows] = router.embed([prompts[i] for i in rows])
    return out


def fit_logistic(features: np.ndarray, target: np.ndarray, l2: float = 10.0, iterations: int = 30) -> np.ndarray:
    """Newton's method for L2-regularized logistic regression; returns weights with bias last."""
    x = np.hstack([features, np.ones((len(features), 1))])
    w = np.zeros(x.shape[1])
    penalty = np.full(x.shape[1], l2)
    penalty[-1] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-x @ w))
        gradient = x.T @ (p - target) / len(target) + penalty * w / len(target)
        hessian = (x.T * (p * (1 - p))) @ x / len(target) + np.diag(penalty) / len(target)
        w -= np.linalg.solve(hessian, gradient)
    return w


def apgr(scores: np.ndarray, strong: np.ndarray, weak: np.ndarray) -> float:
    return summarize(routing_curve(scores, strong, weak), strong.mean(), weak.mean())["apgr"]


def mf_recipe(mmlu, embeddings: np.ndarray, train: np.ndarray, test: np.ndarray, seed: int = 0) -> np.ndarray:
    """Train RouteLLM's MF head (the shipped recipe: decisive battles, dim 128, 100 epochs, epoch picked on a
    10% validation slice of the training domains) and return win rates on the test rows. Needs the export extra."""
    import tempfile

    from edgeroute.export import Battles, train_mf
    from edgeroute.export.training.data import battles_from_correctness

    rng = np.random.default_rng(seed)
    split = np.where(test, "test", np.where(rng.random(len(train)) < 0.1, "val", "train"))
    battles: Battles = battles_from_correctness(mmlu, split)
    with tempfile.TemporaryDirectory() as folder:
        train_mf(battles, Path(folder), mmlu.strong_model, mmlu.weak_model, embeddings=embeddings, seed=seed)
        checkpoint_router = _head_difference(Path(folder), mmlu.strong_model, mmlu.weak_model)
    return embeddings[test] @ checkpoint_router


def _head_difference(folder: Path, strong: str, weak: str) -> np.ndarray:
    from edgeroute.export.checkpoints import read_mf_checkpoint

    checkpoint = read_mf_checkpoint(folder)
    folded = checkpoint.folded()
    return folded[checkpoint.model_names.index(strong)] - folded[checkpoint.model_names.index(weak)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument(
        "--router", required=True, help="MF bundle whose embedder to use (the committed figures: the MiniLM MF router, int8)"
    )
    parser.add_argument("--splits", type=int, default=12)
    parser.add_argument("--mf", action="store_true", help="also train the MF recipe per hold-out (export extra)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "domain_shift.md")
    args = parser.parse_args()

    mmlu = load_benchmark(args.data_dir, "mmlu")
    gsm8k = load_benchmark(args.data_dir, "gsm8k")
    domains = mmlu_domains(args.data_dir)
    router = Router.load(args.router)
    embeddings = embed(router, mmlu.prompts + gsm8k.prompts)
    e_mmlu, e_gsm8k = embeddings[: len(mmlu)], embeddings[len(mmlu) :]
    gsm8k_train = split_of(gsm8k) == "train"
    target_mmlu = (mmlu.strong_quality > mmlu.weak_quality).astype(float)
    target_gsm8k = (gsm8k.strong_quality > gsm8k.weak_quality).astype(float)
    lengths = np.array([len(p) for p in mmlu.prompts], dtype=float)
    groups = np.array(mmlu.groups)

    def evaluate(held_out: set[str]) -> tuple[float, ...]:
        test = np.isin(groups, sorted(held_out))
        train = ~test
        x = np.vstack([e_mmlu[train], e_gsm8k[gsm8k_train]])
        y = np.concatenate([target_mmlu[train], target_gsm8k[gsm8k_train]])
        w = fit_logistic(x, y)
        scores = e_mmlu[test] @ w[:-1]
        figures = (
            apgr(scores, mmlu.strong_quality[test], mmlu.weak_quality[test]),
            apgr(lengths[test], mmlu.strong_quality[test], mmlu.weak_quality[test]),
        )
        if not args.mf:
            return figures
        mf_scores = mf_recipe(mmlu, e_mmlu, train, test)
        return (*figures, apgr(mf_scores, mmlu.strong_quality[test], mmlu.weak_quality[test]))

    fixed = set(np.array(mmlu.groups)[split_of(mmlu, domains) == "test"])
    fixed_row = evaluate(fixed)
    rows = []
    for seed in range(args.splits):
        held_out = set(np.random.default_rng(seed).choice(domains, 10, replace=False))
        rows.append(evaluate(held_out))
    rows_array = np.array(rows)
    columns = ["logistic regression APGR", "prompt-length APGR"] + (["MF recipe APGR"] if args.mf else [])
    gain = {d: float(mmlu.strong_quality[groups == d].mean() - mmlu.weak_quality[groups == d].mean()) for d in domains}
    lines = [
        "# Routing on unseen MMLU subjects",
        "",
        f"Measured by `benchmarks/domain_shift.py` ({len(mmlu)} MMLU prompts, {len(domains)} domains; embeddings from "
        f"the embedder of `{router.name}`). A logistic regression on frozen embeddings predicts "
        "'strong model right and weak model wrong', trained on every other domain plus the GSM8K training slice; "
        "APGR on the 10 held-out domains.",
        "",
        (
            "The MF recipe column trains RouteLLM's MF head exactly as `edgeroute train mf` does (decisive battles, "
            "dim 128, 100 epochs, epoch chosen on a 10% slice of the training domains) for each hold-out, on the "
            "MMLU training domains only.\n"
            if args.mf
            else ""
        ),
        "| hold-out | " + " | ".join(columns) + " |",
        "|" + " --- |" * (len(columns) + 1),
        "| edgeroute's fixed test split | " + " | ".join(f"{v:.3f}" for v in fixed_row) + " |",
    ]
    lines += [f"| random 10 domains, seed {i} | " + " | ".join(f"{v:.3f}" for v in row) + " |" for i, row in enumerate(rows)]
    lines += [
        f"| **mean of {len(rows)} random hold-outs** | "
        + " | ".join(
            f"**{rows_array[:, c].mean():.3f}** (min {rows_array[:, c].min():.3f}, max {rows_array[:, c].max():.3f})"
            for c in range(len(columns))
        )
        + " |",
        "",
        "Random routing scores 0.5. On subjects it never saw, the logistic regression on these embeddings "
        f"averages {rows_array[:, 0].mean():.3f}"
        + (f", RouteLLM's MF recipe on the same embeddings {rows_array[:, 2].mean():.3f}" if args.mf else "")
        + ", with a wide spread from one hold-out to another: the strong model's advantage "
        "differs from domain to domain in ways the topic does not predict (for example "
        f"high_school_mathematics, where the weak model is better: gain {gain['high_school_mathematics']:+.3f}; "
        f"professional_law, {np.mean(groups[np.isin(groups, sorted(fixed))] == 'professional_law'):.0%} of the fixed "
        f"test split's prompts, gain {gain['professional_law']:+.3f}).",
        "",
        "Gain of the strong model (accuracy difference) per domain, largest first:",
        "",
        "| domain | prompts | gain |",
        "| --- | --- | --- |",
    ]
    for domain in sorted(domains, key=lambda d: -gain[d]):
        lines.append(f"| {domain} | {int((groups == domain).sum())} | {gain[domain]:+.3f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:20]))


if __name__ == "__main__":
    main()
