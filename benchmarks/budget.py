"""A strong-call budget on drifting traffic: fixed calibrated threshold vs the live budget controller.

    python benchmarks/budget.py --data-dir ../shared/data/routellm-evals [--router R] [--target 0.3]

Replays a stream whose mix shifts half-way (MMLU questions, then GSM8K problems, which the router
scores higher) through the same router twice: once with a threshold calibrated beforehand on
other MMLU questions for the target share (what ``edgeroute calibrate`` gives), once with
``StrongShareBudget`` (``edgeroute serve --strong-share``) starting from that same threshold. Writes
``benchmarks/results/budget.{md,json,png}``: the strong share over time, how far each strays from
the target in each half, and the answer quality each reaches (from the graded responses).
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np

from edgeroute.runtime import Router, default_router_name
from edgeroute.runtime.evaluation.data import BenchmarkData, benchmark_of, load_protocol_data
from edgeroute.runtime.serving.budget import StrongShareBudget

RESULTS = Path(__file__).parent / "results"


def stream_and_calibration(data: BenchmarkData, half: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the stream (``half`` MMLU rows, then ``half`` GSM8K rows) and of the MMLU calibration set."""
    bench = benchmark_of(data)
    rng = np.random.default_rng(seed)
    mmlu, gsm8k = rng.permutation(np.flatnonzero(bench == "mmlu")), rng.permutation(np.flatnonzero(bench == "gsm8k"))
    half = min(half, len(gsm8k), len(mmlu) // 2)
    return np.concatenate([mmlu[:half], gsm8k[:half]]), mmlu[half : 2 * half]


def replay(win_rates: np.ndarray, fixed_threshold: float, target: float, window: int) -> dict[str, np.ndarray]:
    """Strong decisions along the stream for the fixed threshold and for the budget, and the budget's thresholds."""
    budget = StrongShareBudget(target, fixed_threshold, window=window)
    thresholds = np.array([budget.admit(float(rate)) for rate in win_rates])
    return {"fixed": win_rates >= fixed_threshold, "budget": win_rates >= thresholds, "budget_threshold": thresholds}


def summarize(
    decisions: dict[str, np.ndarray], strong_ok: np.ndarray, weak_ok: np.ndarray, target: float, rolling: int
) -> dict[str, dict[str, float]]:
    """Per policy and stream half: strong share, mean |rolling share - target|, answer quality."""
    half = len(strong_ok) // 2
    out: dict[str, dict[str, float]] = {}
    for policy in ("fixed", "budget"):
        strong = decisions[policy].astype(np.float64)
        share = np.convolve(strong, np.ones(rolling) / rolling, mode="valid")
        quality = np.where(decisions[policy], strong_ok, weak_ok)
        for name, rows in (("first half (MMLU)", slice(0, half)), ("second half (GSM8K)", slice(half, None))):
            window_rows = share[rows.start : (rows.stop - rolling + 1) if rows.stop else None]
            out[f"{policy}: {name}"] = {
                "strong_share": float(strong[rows].mean()),
                "mean_abs_deviation": float(np.abs(window_rows - target).mean()),
                "quality": float(quality[rows].mean()),
            }
    return out


def plot(decisions: dict[str, np.ndarray], target: float, rolling: int, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(10, 4.2))
    kernel = np.ones(rolling) / rolling
    for policy, label in (("fixed", "fixed calibrated threshold"), ("budget", "budget controller (--strong-share)")):
        share = np.convolve(decisions[policy].astype(np.float64), kernel, mode="valid")
        axis.plot(np.arange(rolling - 1, len(decisions[policy])), share, label=label)
    axis.axhline(target, color="black", linestyle=":", label=f"target {target:g}")
    axis.axvline(len(decisions["fixed"]) / 2, color="grey", linewidth=0.8)
    axis.text(len(decisions["fixed"]) / 2, 0.02, " MMLU → GSM8K", color="grey")
    axis.set_xlabel("request number")
    axis.set_ylabel(f"strong share (last {rolling} requests)")
    axis.set_ylim(0, 1)
    axis.set_title(title, fontsize=10)
    axis.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def run(data_dir: Path, router_name: str, target: float, half: int, window: int, rolling: int, seed: int) -> dict:
    """Score the stream once, replay both policies, summarize."""
    data = load_protocol_data(data_dir)
    stream, calibration = stream_and_calibration(data, half, seed)
    router = Router.load(router_name)
    rates = router.strong_win_rates([data.prompts[i] for i in np.concatenate([stream, calibration])])
    stream_rates, calibration_rates = rates[: len(stream)], rates[len(stream) :]
    fixed = float(np.quantile(calibration_rates, 1.0 - target))
    decisions = replay(stream_rates, fixed, target, window)
    summary = summarize(decisions, data.strong_quality[stream], data.weak_quality[stream], target, rolling)
    return {
        "router": router.name,
        "target": target,
        "window": window,
        "rolling": rolling,
        "stream": len(stream),
        "fixed_threshold": fixed,
        "budget_threshold_end": float(decisions["budget_threshold"][-1]),
        "summary": summary,
        "decisions": {k: v.tolist() for k, v in decisions.items()},
    }


def markdown(document: dict) -> str:
    lines = [
        "# Strong-call budget on drifting traffic",
        "",
        "Command: `python benchmarks/budget.py --data-dir ../shared/data/routellm-evals` "
        f"(router `{document['router']}`, target strong share {document['target']:g}, budget window "
        f"{document['window']} win rates, stream of {document['stream']} prompts: MMLU then GSM8K).",
        "",
        f"The fixed threshold ({document['fixed_threshold']:.4f}) is the target's quantile on other MMLU questions, "
        "as `edgeroute calibrate` would set it; the budget starts from it and ends at "
        f"{document['budget_threshold_end']:.4f}. Deviation: mean |share over the last {document['rolling']} "
        "requests - target|. Quality: share of prompts answered correctly by the model each policy chose.",
        "",
        "| policy | strong share | mean deviation from target | quality |",
        "| --- | --- | --- | --- |",
    ]
    for name, row in document["summary"].items():
        lines.append(f"| {name} | {row['strong_share']:.3f} | {row['mean_abs_deviation']:.3f} | {row['quality']:.3f} |")
    lines += ["", "![strong share over time](budget.png)", "", f"Machine: {document['machine']}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--router", default=None, help="router to replay (default: models/DEFAULT)")
    parser.add_argument("--target", type=float, default=0.3, help="wanted share of strong calls")
    parser.add_argument("--half", type=int, default=1000, help="prompts in each half of the stream")
    parser.add_argument("--window", type=int, default=500, help="win rates the budget keeps")
    parser.add_argument("--rolling", type=int, default=200, help="requests per point of the share curve")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    document = run(args.data_dir, args.router or default_router_name(), args.target, args.half, args.window, args.rolling, args.seed)
    document["machine"] = platform.processor() or platform.machine()
    args.out.mkdir(parents=True, exist_ok=True)
    decisions = {policy: np.array(values) for policy, values in document.pop("decisions").items()}
    plot(
        decisions,
        args.target,
        args.rolling,
        args.out / "budget.png",
        f"{document['router']}: strong share over a stream that shifts from MMLU to GSM8K",
    )
    (args.out / "budget.json").write_text(json.dumps(document, indent=2) + "\n")
    (args.out / "budget.md").write_text(markdown(document))
    print(markdown(document))


if __name__ == "__main__":
    main()
