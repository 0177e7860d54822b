"""Selective int8: keep in fp32 the few graph nodes whose quantization moves routing decisions.

Dynamic int8 quantization of a fine-tuned classifier can move win rates by a few hundredths, which
flips decisions near a calibrated threshold. ``selective_int8`` quantizes every node, and while the
int8 graph agrees with fp32 on fewer decisions than the floor at some calibrated share, it keeps the
most sensitive remaining node in fp32. Sensitivity is measured once per node: the mean win-rate error
of the graph with only that node quantized (the larger, the more that node's int8 weights cost).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from edgeroute.export.onnx_graphs import quantizable_nodes, quantize_graph
from edgeroute.export.parity import parity_figures

WinRates = Callable[[Path], np.ndarray]


def _meets(reference: np.ndarray, candidate: np.ndarray, floor: float, tolerance: float | None) -> tuple[bool, float, float]:
    """Whether ``candidate`` keeps decisions (``floor``) and win rates (``tolerance``, when given); and both figures."""
    figures = parity_figures(reference, candidate)
    agreement, largest = float(figures.get("min_share_agreement", 0.0)), float(figures.get("max_abs_diff", np.inf))
    return agreement >= floor and (tolerance is None or largest <= tolerance), agreement, largest


def node_sensitivity(
    fused: Path, scratch: Path, per_channel: bool, reduce_range: bool, win_rates: WinRates, reference: np.ndarray
) -> dict[str, float]:
    """Each quantizable node's cost: mean |win rate - fp32| when only that node is quantized."""
    nodes = quantizable_nodes(fused)
    costs = {}
    for node in tqdm(nodes, desc="int8 sensitivity", unit="node"):
        candidate = scratch / "one.onnx"
        quantize_graph(fused, candidate, per_channel, reduce_range, keep_fp32=[n for n in nodes if n != node])
        costs[node] = float(np.mean(np.abs(win_rates(candidate) - reference)))
    return costs


def selective_int8(
    fused: Path,
    target: Path,
    per_channel: bool,
    reduce_range: bool,
    win_rates: WinRates,
    reference: np.ndarray,
    floor: float,
    tolerance: float | None = None,
) -> dict[str, Any]:
    """Quantize ``fused`` into ``target`` keeping the fewest nodes in fp32 that lift decision agreement to ``floor``
    and, with ``tolerance``, bring every win rate within it of fp32 (the export's parity check).

    Returns the manifest's quantization settings, with the search's record under ``selection``.
    """
    settings = quantize_graph(fused, target, per_channel, reduce_range)
    done, agreement, largest = _meets(reference, win_rates(target), floor, tolerance)
    record: dict[str, Any] = {
        "floor": floor,
        "tolerance": tolerance,
        "all_int8_min_share_agreement": agreement,
        "all_int8_max_abs_diff": largest,
        "steps": [],
    }
    if done:
        return {**settings, "selection": record}
    costs = node_sensitivity(fused, fused.parent, per_channel, reduce_range, win_rates, reference)  # scratch beside the fused graph
    kept: list[str] = []
    for node in sorted(costs, key=costs.__getitem__, reverse=True):
        kept.append(node)
        settings = quantize_graph(fused, target, per_channel, reduce_range, keep_fp32=kept)
        done, agreement, largest = _meets(reference, win_rates(target), floor, tolerance)
        step = {"fp32_node": node, "sensitivity": costs[node], "min_share_agreement": agreement, "max_abs_diff": largest}
        record["steps"].append(step)
        if done:
            break
    record["fp32_share"] = len(kept) / len(costs)
    return {**settings, "selection": record}
