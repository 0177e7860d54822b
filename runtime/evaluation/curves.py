"""RouteLLM's routing metrics: quality against the share of strong-model calls, APGR, CPT, AUC.

Definitions follow RouteLLM's ``evals/evaluate.py``: thresholds are the win-rate quantiles
(``num_thresholds`` equal bins), a prompt goes to the strong model when its win rate is at
least the threshold (strictly above for the top edge, so the sweep reaches 0% strong);
AUC is the trapezoid area of quality over the strong share in [0, 1]; APGR is
(AUC - weak area) / (strong area - weak area); CPT(x%) is the strong share needed to recover
x% of the quality gap, read off the curve by linear interpolation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeroute.runtime.scoring.decision import is_strong


@dataclass
class RoutingCurve:
    """Quality (mean per-prompt score) at each strong-call share (0..1), sorted by share."""

    strong_share: np.ndarray
    quality: np.ndarray


def routing_curve(win_rates: np.ndarray, strong_quality: np.ndarray, weak_quality: np.ndarray, num_thresholds: int = 10) -> RoutingCurve:
    """Sweep thresholds at the win rates' quantiles and record (strong share, quality)."""
    win_rates = np.asarray(win_rates, dtype=np.float64)
    edges = np.quantile(win_rates, np.linspace(0.0, 1.0, num_thresholds + 1))
    shares, qualities = [], []
    for index, threshold in enumerate(edges):
        # RouteLLM's sweep: the top edge (the largest win rate) is strict, so its share can reach 0.
        strong = win_rates > threshold if index == len(edges) - 1 else is_strong(win_rates, threshold)
        shares.append(strong.mean())
        qualities.append(np.where(strong, strong_quality, weak_quality).mean())
    order = np.argsort(shares, kind="stable")
    return RoutingCurve(np.asarray(shares)[order], np.asarray(qualities)[order])


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def summarize(curve: RoutingCurve, strong_mean: float, weak_mean: float) -> dict[str, float]:
    """APGR, CPT(50%), CPT(80%) (as shares in [0, 1]) and AUC of one curve."""
    x, y = curve.strong_share, curve.quality
    auc = _trapezoid(y, x)
    width = x[-1] - x[0]
    gap = strong_mean - weak_mean
    apgr = (auc - weak_mean * width) / (gap * width) if gap and width else float("nan")

    def cost(fraction: float) -> float:
        # RouteLLM's reading: interpolate the share at which quality reaches the target.
        return float(np.interp(weak_mean + fraction * gap, y, x))

    return {"apgr": float(apgr), "cpt50": cost(0.5), "cpt80": cost(0.8), "auc": auc}


def optimal_curve(strong_quality: np.ndarray, weak_quality: np.ndarray, points: int = 11) -> RoutingCurve:
    """Best possible quality at each share: the strong model goes to the prompts it improves most."""
    gain = np.sort(strong_quality - weak_quality)[::-1]
    shares = np.linspace(0.0, 1.0, points)
    base = weak_quality.sum()
    qualities = []
    for share in shares:
        calls = int(round(share * len(gain)))
        qualities.append((base + np.clip(gain[:calls], 0, None).sum()) / len(gain))
    return RoutingCurve(shares, np.asarray(qualities))


def random_router_metrics(
    strong_quality: np.ndarray, weak_quality: np.ndarray, num_thresholds: int = 10, seeds: int = 10
) -> tuple[dict[str, float], RoutingCurve]:
    """Metrics of a router with uniform random win rates, averaged over ``seeds`` seeds."""
    strong_mean, weak_mean = float(strong_quality.mean()), float(weak_quality.mean())
    runs, curves = [], []
    for seed in range(seeds):
        rates = np.random.default_rng(seed).random(len(strong_quality))
        curve = routing_curve(rates, strong_quality, weak_quality, num_thresholds)
        curves.append(curve)
        runs.append(summarize(curve, strong_mean, weak_mean))
    averaged = {key: float(np.mean([run[key] for run in runs])) for key in runs[0]}
    mean_curve = RoutingCurve(np.mean([c.strong_share for c in curves], axis=0), np.mean([c.quality for c in curves], axis=0))
    return averaged, mean_curve
