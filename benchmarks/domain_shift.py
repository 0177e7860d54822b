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


class DomainShift:
    """MMLU and GSM8K embedded once; ``evaluate`` fits on every domain but a hold-out and scores the hold-out."""

    def __init__(self, data_dir: Path, router: Router, with_mf: bool) -> None:
        self.mmlu = load_benchmark(data_dir, "mmlu")
        gsm8k = load_benchmark(data_dir, "gsm8k")
        self.domains = mmlu_domains(data_dir)
        embeddings = embed(router, self.mmlu.prompts + gsm8k.prompts)
        self.e_mmlu, gsm8k_train = embeddings[: len(self.mmlu)], split_of(gsm8k) == "train"
        self.e_gsm8k_train = embeddings[len(self.mmlu) :][gsm8k_train]
        self.target_mmlu = (self.mmlu.strong_quality > self.mmlu.weak_quality).astype(float)
        self.target_gsm8k_train = (gsm8k.strong_quality > gsm8k.weak_quality).astype(float)[gsm8k_train]
        self.lengths = np.array([len(p) for p in self.mmlu.prompts], dtype=float)
        self.groups = np.array(self.mmlu.groups)
        self.with_mf = with_mf

    def evaluate(self, held_out: set[str]) -> tuple[float, ...]:
        """APGR on the held-out domains: logistic regression, prompt length, and the MF recipe when asked."""
        test = np.isin(self.groups, sorted(held_out))
        train = ~test
        x = np.vstack([self.e_mmlu[train], self.e_gsm8k_train])
        y = np.concatenate([self.target_mmlu[train], self.target_gsm8k_train])
        w = fit_logistic(x, y)
        strong, weak = self.mmlu.strong_quality[test], self.mmlu.weak_quality[test]
        figures = (apgr(self.e_mmlu[test] @ w[:-1], strong, weak), apgr(self.lengths[test], strong, weak))
        if not self.with_mf:
            return figures
        return (*figures, apgr(mf_recipe(self.mmlu, self.e_mmlu, train, test), strong, weak))

    def fixed_test_domains(self) -> set[str]:
        """The domains of edgeroute's fixed test split."""
        return set(self.groups[split_of(self.mmlu, self.domains) == "test"])

    def gain(self) -> dict[str, float]:
        """The strong model's accuracy advantage per domain."""
        quality = self.mmlu
        return {
            d: float(quality.strong_quality[self.groups == d].mean() - quality.weak_quality[self.groups == d].mean()) for d in self.domains
        }


def markdown(
    study: DomainShift, router_name: str, fixed: set[str], fixed_row: tuple[float, ...], rows: list[tuple[float, ...]]
) -> list[str]:
    """The report's lines: the hold-out table, then the strong model's gain per domain."""
    rows_array, mf = np.array(rows), study.with_mf
    columns = ["logistic regression APGR", "prompt-length APGR"] + (["MF recipe APGR"] if mf else [])
    gain, groups = study.gain(), study.groups
    mf_note = (
        "The MF recipe column trains RouteLLM's MF head exactly as `edgeroute train mf` does (decisive battles, "
        "dim 128, 100 epochs, epoch chosen on a 10% slice of the training domains) for each hold-out, on the "
        "MMLU training domains only.\n"
    )
    spread = " | ".join(
        f"**{rows_array[:, c].mean():.3f}** (min {rows_array[:, c].min():.3f}, max {rows_array[:, c].max():.3f})"
        for c in range(len(columns))
    )
    lines = [
        "# Routing on unseen MMLU subjects",
        "",
        f"Measured by `benchmarks/domain_shift.py` ({len(study.mmlu)} MMLU prompts, {len(study.domains)} domains; embeddings from "
        f"the embedder of `{router_name}`). A logistic regression on frozen embeddings predicts "
        "'strong model right and weak model wrong', trained on every other domain plus the GSM8K training slice; "
        "APGR on the 10 held-out domains.",
        "",
        mf_note if mf else "",
        "| hold-out | " + " | ".join(columns) + " |",
        "|" + " --- |" * (len(columns) + 1),
        "| edgeroute's fixed test split | " + " | ".join(f"{v:.3f}" for v in fixed_row) + " |",
        *(f"| random 10 domains, seed {i} | " + " | ".join(f"{v:.3f}" for v in row) + " |" for i, row in enumerate(rows)),
        f"| **mean of {len(rows)} random hold-outs** | {spread} |",
        "",
        "Random routing scores 0.5. On subjects it never saw, the logistic regression on these embeddings "
        f"averages {rows_array[:, 0].mean():.3f}"
        + (f", RouteLLM's MF recipe on the same embeddings {rows_array[:, 2].mean():.3f}" if mf else "")
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
    return lines + [f"| {d} | {int((groups == d).sum())} | {gain[d]:+.3f} |" for d in sorted(study.domains, key=lambda d: -gain[d])]


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
    router = Router.load(args.router)
    study = DomainShift(args.data_dir, router, args.mf)
    fixed = study.fixed_test_domains()
    held_outs = [set(np.random.default_rng(seed).choice(study.domains, 10, replace=False)) for seed in range(args.splits)]
    lines = markdown(study, router.name, fixed, study.evaluate(fixed), [study.evaluate(held_out) for held_out in held_outs])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:20]))


if __name__ == "__main__":
    main()
