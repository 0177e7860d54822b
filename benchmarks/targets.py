"""N targets: the quality-cost curve of both policies and the spend budget on shifting traffic.

    python benchmarks/targets.py [--data-dir ../shared/data/routellm-evals] [--prompts 3000]

No labelled data over more than two models ships here (the shared data grades two models), so this is a
*synthetic benchmark where the best choice is known*: a folded MF router over the shipped static
embedder with three model rows (``large``, ``medium``, ``small``; the large row leads on the prompts'
common direction), and each model answers a prompt correctly with the probability its score gives
(``sigmoid(score - 1)``). The prompts are real (MMLU, then GSM8K, from ``--data-dir``; generated ones
without it). What it measures is the machinery: that both policies turn scores into accuracy per dollar
better than random or prompt length given the same mix of targets, that ``calibrate --target-cost``
lands on its cost, and that the spend budget (``serve --target-cost``) holds the cost when the traffic
shifts where a setting calibrated once does not. Writes ``benchmarks/results/targets.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
for folder in (HERE, HERE.parent / "tests"):  # the machine facts, and the synthetic bundle the tests build
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
from machine import machine_flags  # noqa: E402
from nmodel import make_n_model_bundle  # noqa: E402

from edgeroute.runtime import Router  # noqa: E402
from edgeroute.runtime.evaluation.targets import quality_cost_curve, target_scores  # noqa: E402
from edgeroute.runtime.scoring.targets import Target, Targets, calibrate_for_cost  # noqa: E402
from edgeroute.runtime.serving.spend import SpendBudget  # noqa: E402

RESULTS = HERE / "results"
NAMES = ("large", "medium", "small")
PRICES = ((10.0, 30.0), (1.0, 2.0), (0.2, 0.2))  # USD per million input / output tokens
SEED = 7
WINDOW = 500  # the spend budget's window (serve --budget-window 500): a quarter of the stream


def stream_prompts(data_dir: Path | None, count: int) -> tuple[list[str], str]:
    """Half MMLU questions then half GSM8K problems (a shift in the mix), or generated prompts without data."""
    rng = np.random.default_rng(SEED)
    if data_dir is not None and (data_dir / "mmlu" / "responses").is_dir():
        from edgeroute.runtime.evaluation.data import benchmark_of, load_protocol_data

        data = load_protocol_data(data_dir)
        bench = benchmark_of(data)
        mmlu = rng.permutation(np.flatnonzero(bench == "mmlu"))[: count // 2]
        gsm8k = rng.permutation(np.flatnonzero(bench == "gsm8k"))[: count // 2]
        return [data.prompts[i] for i in np.concatenate([mmlu, gsm8k])], "MMLU then GSM8K (shared data)"
    topics = ["history", "poetry", "algebra", "cooking", "networks", "biology", "law", "music"]
    asks = ["Explain", "Summarize", "Prove a fact about", "Write a short poem on", "List three facts on", "Compare two ideas in"]
    prompts = [f"{rng.choice(asks)} {rng.choice(topics)}." for _ in range(count // 2)]
    prompts += [
        f"A store sells {a} apples at ${b} each and {c} pears at ${d}. How much for all? Show each step."
        for a, b, c, d in rng.integers(2, 90, size=(count - count // 2, 4))
    ]
    return prompts, "generated chat prompts then generated word problems"


def build_router(folder: Path, prompts: list[str]) -> Router:
    """The synthetic three-model router: rows = a lead on the prompts' mean direction + a random part."""
    probe = Router.load("static-distilled-gpt4-mixtral")
    embeddings = probe.embed(prompts[:2000])
    direction = embeddings.mean(axis=0)
    direction /= np.linalg.norm(direction)
    rng = np.random.default_rng(SEED)
    rows = np.stack([lead * direction + rng.normal(size=direction.shape) * 1.5 for lead in (4.0, 2.5, 0.5)])
    return Router.load(make_n_model_bundle(folder, rows, NAMES))


def targets(policy: str) -> Targets:
    return Targets(tuple(Target(n, input_cost=i, output_cost=o) for n, (i, o) in zip(NAMES, PRICES)), policy=policy, output_tokens=300)


def at_costs(curve: dict, fractions: tuple[float, ...]) -> list[dict]:
    """The curve's point nearest each fraction of the way from the cheapest to the dearest spend."""
    points = sorted(curve["points"], key=lambda p: p["mean_cost"])
    low, high = points[0]["mean_cost"], points[-1]["mean_cost"]
    return [{"fraction": f, **min(points, key=lambda p: abs(p["mean_cost"] - (low + f * (high - low))))} for f in fractions]


def spend_replay(policy: Targets, scores: np.ndarray, chars: np.ndarray, wanted: float) -> dict:
    """Mean cost per half of the stream: a setting calibrated on the first half's first 500 prompts, and the spend budget."""
    key = "threshold" if policy.policy == "cheapest_acceptable" else "cost_weight"
    setting = calibrate_for_cost(policy, scores[:500], chars[:500], wanted)
    fixed = replace(policy, **{key: setting})
    chosen = fixed.choose_many(scores, chars)
    fixed_costs = policy.costs(chars)[np.arange(len(chars)), chosen]
    budget, budget_costs = SpendBudget(policy, wanted, window=WINDOW, background=False), []
    for row, length in zip(scores, chars):
        choice = budget.admit(row, int(length)).choose(row, int(length))
        budget.spent(choice.cost)
        budget_costs.append(choice.cost)
    half = len(chars) // 2
    return {
        "target_usd": wanted,
        "fixed": {"first_half": float(fixed_costs[:half].mean()), "second_half": float(fixed_costs[half:].mean())},
        "budget": {"first_half": float(np.mean(budget_costs[:half])), "second_half": float(np.mean(budget_costs[half:]))},
        "budget_last_500": float(np.mean(budget_costs[-500:])),
        "rolling": {"fixed": _rolling(fixed_costs), "budget": _rolling(np.array(budget_costs))},
    }


def _rolling(costs: np.ndarray, width: int = 250) -> list[float]:
    return [float(costs[i : i + width].mean()) for i in range(0, len(costs) - width + 1, width)]


def run(data_dir: Path | None, count: int) -> dict:
    prompts, source = stream_prompts(data_dir, count)
    with tempfile.TemporaryDirectory() as work:
        router = build_router(Path(work) / "synthetic-three-models", prompts)
        scores = target_scores(router, targets("cheapest_acceptable"), prompts)
        correct = (np.random.default_rng(SEED + 1).random(scores.shape) < 1.0 / (1.0 + np.exp(-(scores - 1.0)))).astype(float)
        chars = np.array([len(p) for p in prompts], dtype=np.float64)
        document: dict = {"machine": machine_flags(), "prompts": len(prompts), "source": source, "targets": NAMES, "prices": PRICES}
        document["accuracy_alone"] = dict(zip(NAMES, (float(x) for x in correct.mean(axis=0))))
        for policy in ("cheapest_acceptable", "quality_per_cost"):
            curve = quality_cost_curve(router, targets(policy), prompts, correct)
            costs = targets(policy).costs(chars)
            wanted = float(costs.min(axis=1).mean() + 0.35 * (costs.max(axis=1).mean() - costs.min(axis=1).mean()))
            document[policy] = {
                "curve": curve,
                "at": at_costs(curve, (0.1, 0.25, 0.5, 0.75)),
                "spend": spend_replay(targets(policy), scores, chars, wanted),
            }
    return document


def report(document: dict) -> str:
    lines = [
        "# N targets: quality-cost curves and the spend budget",
        "",
        f"`python benchmarks/targets.py` on {document['prompts']:,} prompts ({document['source']}); CPU {document['machine']['cpu']}, "
        f"flags {', '.join(document['machine']['cpu_flags'])}.",
        "",
        "**Synthetic benchmark: no labelled data over more than two models ships here.** A folded MF router over the shipped "
        "static embedder scores three models (`large`, `medium`, `small`, priced "
        + ", ".join(f"{n} ${i:g}/${o:g}" for n, (i, o) in zip(NAMES, PRICES))
        + " per million input/output tokens, 300 output tokens per answer), and each model answers a prompt correctly with the "
        "probability its score gives. The router therefore knows the truth up to chance: the figures measure how the policies "
        "spend, not how well a real router predicts. Random and prompt length get the same mix of targets as the policy "
        "(each target answers as many prompts), assigned at random or longest prompts to the most capable target.",
        "",
        "Accuracy alone: " + ", ".join(f"{n} {a:.3f}" for n, a in document["accuracy_alone"].items()) + ".",
        "",
    ]
    for policy in ("cheapest_acceptable", "quality_per_cost"):
        part = document[policy]
        lines += [
            f"## {policy.replace('_', ' ')}",
            "",
            "| spend (of the way from cheapest to dearest) | USD per request | accuracy | random, same mix | length, same mix |",
            "| --- | --- | --- | --- | --- |",
        ]
        for p in part["at"]:
            lines.append(f"| {p['fraction']:.0%} | {p['mean_cost']:.5f} | {p['accuracy']:.3f} | {p['random']:.3f} | {p['length']:.3f} |")
        spend = part["spend"]
        lines += [
            "",
            f"Spend budget (target ${spend['target_usd']:.5f} per request, window {WINDOW}, re-set every 50 requests) against the "
            "same policy calibrated once on the first 500 prompts: mean USD per request in the first / second half of the stream "
            f"(the mix shifts at the half): fixed {spend['fixed']['first_half']:.5f} / {spend['fixed']['second_half']:.5f}, "
            f"budget {spend['budget']['first_half']:.5f} / {spend['budget']['second_half']:.5f} "
            f"(last 500 requests: {spend['budget_last_500']:.5f}).",
            "",
        ]
    lines.append("![quality-cost curves and spend](targets.png)")
    return "\n".join(lines) + "\n"


def plot(document: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for policy, style in (("cheapest_acceptable", "-"), ("quality_per_cost", "-.")):
        points = sorted(document[policy]["curve"]["points"], key=lambda p: p["mean_cost"])
        axes[0].plot([p["mean_cost"] for p in points], [p["accuracy"] for p in points], style, label=policy.replace("_", " "))
    points = sorted(document["cheapest_acceptable"]["curve"]["points"], key=lambda p: p["mean_cost"])
    axes[0].plot([p["mean_cost"] for p in points], [p["random"] for p in points], "--", label="random, same mix")
    axes[0].plot([p["mean_cost"] for p in points], [p["length"] for p in points], ":", label="length, same mix")
    axes[0].set(xlabel="USD per request", ylabel="share answered correctly", title="quality-cost (synthetic)")
    axes[0].legend()
    spend = document["cheapest_acceptable"]["spend"]
    for name, values in spend["rolling"].items():
        axes[1].plot(np.arange(len(values)) * 250, values, label=f"{name}")
    axes[1].axhline(spend["target_usd"], color="grey", linewidth=0.8, label="target")
    axes[1].set(xlabel="request", ylabel="USD per request (per 250)", title="spend budget, cheapest acceptable")
    axes[1].legend()
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="RouteLLM-layout data: real prompts (MMLU then GSM8K)")
    parser.add_argument("--prompts", type=int, default=2000, help="prompts in the stream (half before the shift; GSM8K has about 1,000)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for targets.{md,json,png}")
    args = parser.parse_args()
    document = run(args.data_dir, args.prompts)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "targets.json").write_text(json.dumps(document, indent=1) + "\n")
    (args.out / "targets.md").write_text(report(document))
    try:
        plot(document, args.out / "targets.png")
    except ImportError:
        print("no matplotlib (the plot extra): targets.png not drawn", file=sys.stderr)
    print(report(document))


if __name__ == "__main__":
    main()
