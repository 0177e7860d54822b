"""N-target evaluation: calibrate a policy to a target cost per request, and the quality-cost curve.

``calibrate_cost`` sets the threshold (cheapest acceptable) or cost weight (quality per cost) so that
the average estimated cost of the chosen targets on the user's prompts meets a budget
(``edgeroute calibrate --config targets.toml --target-cost USD``). ``quality_cost_curve`` sweeps the
policy's setting on a table of each target's correctness and reports, point by point, the average
cost and the share answered correctly, beside random and prompt-length assignments that give each
target as many prompts as the policy did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeroute.runtime.errors import InvalidInputError
from edgeroute.runtime.scoring.router import Router
from edgeroute.runtime.scoring.targets import Scored, Targets, calibrate_for_cost


def target_scores(router: Router, targets: Targets, prompts: Sequence[str], batch: int = 256) -> np.ndarray:
    """``[prompts, targets]`` router scores, in batches."""
    rows = router.model_rows(targets.scored_as)
    parts = [router.model_scores(list(prompts[start : start + batch]), rows) for start in range(0, len(prompts), batch)]
    return np.concatenate(parts) if parts else np.zeros((0, len(targets.targets)))


def calibrate_cost(router: Router, targets: Targets, prompts: Sequence[str], target_cost: float) -> dict[str, Any]:
    """The policy setting whose choices on ``prompts`` average ``target_cost`` USD per request, and what it gives."""
    if not prompts:
        raise InvalidInputError("no prompts to calibrate on")
    scores = target_scores(router, targets, prompts)
    chars = np.array([len(p) for p in prompts], dtype=np.float64)
    setting = calibrate_for_cost(targets, scores, chars, target_cost)
    key = "threshold" if targets.policy == "cheapest_acceptable" else "cost_weight"
    tuned = replace(targets, **{key: setting})
    chosen = tuned.choose_many(scores, chars)
    shares = np.bincount(chosen, minlength=len(targets.targets)) / len(chosen)
    return {
        "router": router.name,
        "policy": targets.policy,
        key: setting,
        "target_cost_usd": target_cost,
        "mean_cost_usd": tuned.mean_cost(scores, chars),
        "shares": dict(zip(targets.names, (float(s) for s in shares))),
        "n_prompts": len(prompts),
    }


@dataclass(frozen=True)
class CurvePoint:
    """One setting of the policy: its average cost per request and the share of prompts answered correctly."""

    setting: float
    mean_cost: float
    accuracy: float


def curve_points(
    targets: Targets, scores: np.ndarray, chars: np.ndarray, correct: np.ndarray, steps: int = 41
) -> list[tuple[CurvePoint, np.ndarray]]:
    """The policy's quality-cost curve and each point's choices: ``correct[n, targets]`` is 1 when that target
    answered prompt n correctly."""
    scored = Scored.of(targets, scores, chars)
    costs = scored.costs
    if targets.policy == "cheapest_acceptable":
        settings = np.linspace(0.0, 1.0, steps)
        chosen = [targets.pick(scored, threshold=t) for t in settings]
    else:
        top = max(float(costs.max()), 1e-12)
        settings = np.concatenate([[0.0], np.geomspace(1e-3 / top, 1e3 / top, steps - 1)])
        chosen = [targets.pick(scored, cost_weight=w) for w in settings]
    rows = np.arange(len(chars))
    return [(CurvePoint(float(s), float(costs[rows, c].mean()), float(correct[rows, c].mean())), c) for s, c in zip(settings, chosen)]


def baseline_with_shares(correct: np.ndarray, chosen: np.ndarray, order: np.ndarray) -> float:
    """Accuracy when each target gets as many prompts as the policy gave it, assigned in ``order`` (first
    ``order`` rows to the most capable target, and so on down): the random and prompt-length baselines."""
    counts = np.bincount(chosen, minlength=correct.shape[1])
    assigned = np.empty(len(order), dtype=np.int64)
    assigned[order] = np.repeat(np.arange(correct.shape[1]), counts)
    return float(correct[np.arange(len(order)), assigned].mean())


def quality_cost_curve(router: Router, targets: Targets, prompts: Sequence[str], correct: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """The policy's curve on a table of each target's correctness, with random and prompt-length baselines of the same mix."""
    correct = np.asarray(correct, dtype=np.float64)
    if correct.shape != (len(prompts), len(targets.targets)):
        raise InvalidInputError(
            f"correctness must be [prompts, targets] = [{len(prompts)}, {len(targets.targets)}], got {list(correct.shape)}"
        )
    scores = target_scores(router, targets, prompts)
    chars = np.array([len(p) for p in prompts], dtype=np.float64)
    random_order = np.random.default_rng(seed).permutation(len(prompts))
    length_order = np.argsort(-chars, kind="stable")  # longest prompts to the most capable target
    rows = []
    for point, chosen in curve_points(targets, scores, chars, correct):
        rows.append(
            {
                **asdict(point),
                "random": baseline_with_shares(correct, chosen, random_order),
                "length": baseline_with_shares(correct, chosen, length_order),
            }
        )
    best = correct.max(axis=1).mean()
    return {"router": router.name, "policy": targets.policy, "targets": targets.names, "oracle_accuracy": float(best), "points": rows}


def read_correctness(path: Path, targets: Targets, column: str = "prompt") -> tuple[list[str], np.ndarray]:
    """Prompts and each target's correctness from a CSV with a ``prompt`` column and one True/False column per target name."""
    import csv

    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [name for name in [column, *targets.names] if name not in header]
        if missing:
            raise InvalidInputError(
                f"{path}: no column(s) {missing}; a correctness table has '{column}' and one True/False column per target"
            )
        prompts, correct = [], []
        for line, row in enumerate(reader, 2):
            values = [row[name].strip().lower() for name in targets.names]
            if any(v not in ("true", "false", "1", "0") for v in values):
                raise InvalidInputError(f"{path}:{line}: target columns hold True/False (or 1/0)")
            prompts.append(row[column])
            correct.append([v in ("true", "1") for v in values])
    return prompts, np.array(correct, dtype=np.float64).reshape(len(prompts), len(targets.names))


def format_curve(result: dict[str, Any], rows: int = 9) -> str:
    """The curve as a table of about ``rows`` points (cost ascending), with the baselines at the same cost."""
    points = sorted(result["points"], key=lambda p: p["mean_cost"])
    picked = [points[round(i * (len(points) - 1) / max(rows - 1, 1))] for i in range(min(rows, len(points)))]
    lines = [
        f"{result['router']}: {result['policy']} over {', '.join(result['targets'])} (oracle accuracy {result['oracle_accuracy']:.3f})",
        f"{'setting':>12} {'USD/request':>12} {'accuracy':>9} {'random':>7} {'length':>7}",
    ]
    for p in picked:
        lines.append(f"{p['setting']:>12.4g} {p['mean_cost']:>12.3g} {p['accuracy']:>9.3f} {p['random']:>7.3f} {p['length']:>7.3f}")
    return "\n".join(lines)


def plot_cost_curve(result: dict[str, Any], out: Path) -> Path:
    """Accuracy against cost per request: the policy's curve, and random and prompt length at the same costs [plot extra]."""
    from edgeroute.runtime.errors import require_extra

    require_extra("matplotlib", "plot", "edgeroute eval --plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted(result["points"], key=lambda p: p["mean_cost"])
    costs = [p["mean_cost"] for p in points]
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot(costs, [p["accuracy"] for p in points], marker="o", label=f"{result['router']} ({result['policy']})")
    axes.plot(costs, [p["random"] for p in points], linestyle="--", label="random, same mix of targets")
    axes.plot(costs, [p["length"] for p in points], linestyle=":", label="prompt length, same mix of targets")
    axes.set_xlabel("average cost per request (USD)")
    axes.set_ylabel("share answered correctly")
    axes.legend()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out
