"""A strong-call budget on drifting traffic: a fixed calibrated threshold, the sliding-window budget, and the
budget with drift resets (``edgeroute serve --strong-share``, the default).

    python benchmarks/budget.py --data-dir ../shared/data/routellm-evals [--router R] [--target 0.3]

Replays a stream whose mix shifts twice (MMLU questions, then GSM8K problems, then generated chat
prompts) through the same router, once per policy: a threshold calibrated beforehand on other MMLU
questions for the target share (what ``edgeroute calibrate`` gives); ``StrongShareBudget`` with
``drift_probe=0`` (a pure sliding quantile of the last ``--window`` win rates, the budget before drift
resets); and ``StrongShareBudget`` as ``serve`` runs it. Writes ``benchmarks/results/budget.{md,json,png}``:
the strong share per 250 requests, the requests each policy needs after each shift to come back within
the tolerance, mean |share - target| per segment (steady state and after shifts), and the answer quality
each reaches where the data grades answers (MMLU, GSM8K; the chat prompts carry no labels).
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np

from edgeroute.runtime import Router, default_router_name
from edgeroute.runtime.evaluation.data import BenchmarkData, benchmark_of, load_protocol_data
from edgeroute.runtime.serving.budget import DEFAULT_DRIFT_PROBE, DEFAULT_WINDOW, StrongShareBudget
from edgeroute.runtime.scoring.decision import threshold_for_share

RESULTS = Path(__file__).parent / "results"
SEGMENTS = ("MMLU", "GSM8K", "chat")
POLICIES = {
    "fixed": "fixed calibrated threshold",
    "sliding": "sliding window (drift_probe=0, before)",
    "budget": "budget with drift resets (serve default)",
}
TOLERANCE = 0.05
RECOVERY_ROLLING = 100  # the share a recovery is judged on: the last 100 requests
CHAT_SEED = 11  # another seed than distillation's (0) and the quality report's


def stream_and_calibration(data: BenchmarkData, segment: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the labelled part of the stream (``segment`` MMLU rows, then ``segment`` GSM8K rows) and of
    the MMLU calibration set."""
    bench = benchmark_of(data)
    rng = np.random.default_rng(seed)
    mmlu, gsm8k = rng.permutation(np.flatnonzero(bench == "mmlu")), rng.permutation(np.flatnonzero(bench == "gsm8k"))
    if segment > len(gsm8k) or 2 * segment > len(mmlu) or segment % 250:
        raise SystemExit(f"--segment {segment}: must be a multiple of 250 and at most {len(gsm8k)} (GSM8K problems in the data)")
    return np.concatenate([mmlu[:segment], gsm8k[:segment]]), mmlu[segment : 2 * segment]


def replay(win_rates: np.ndarray, fixed_threshold: float, target: float, window: int) -> dict[str, np.ndarray]:
    """Strong decisions along the stream, per policy."""
    decisions = {"fixed": win_rates >= fixed_threshold}
    for policy, probe in (("sliding", 0), ("budget", DEFAULT_DRIFT_PROBE)):
        budget = StrongShareBudget(target, fixed_threshold, window=window, drift_probe=probe)
        thresholds = np.array([budget.admit(float(rate)) for rate in win_rates])
        decisions[policy] = win_rates >= thresholds
    return decisions


def two_replicas(labelled: np.ndarray, chat: np.ndarray, fixed: float, target: float, window: int, every: int = 25) -> dict:
    """Replica A takes the MMLU-then-GSM8K stream, replica B the chat prompts, in turns: each with its own window,
    then both sharing one (exchanging every ``every`` requests, as ``serve --budget-store`` does every 0.25 s)."""
    from edgeroute.runtime.serving.budget_store import MemoryWindowStore, SharedWindowSync

    out = {}
    for mode in ("own windows", "one shared window"):
        budgets = [StrongShareBudget(target, fixed, window=window) for _ in range(2)]
        store = MemoryWindowStore()
        syncs = [SharedWindowSync(budget, store, "replay") for budget in budgets] if mode == "one shared window" else []
        decisions: list[list[bool]] = [[], []]
        for turn in range(len(chat)):
            for replica, rates in enumerate((labelled, chat)):
                rate = float(rates[turn])
                decisions[replica].append(rate >= budgets[replica].admit(rate))
            if turn % every == 0:
                for sync in syncs:
                    sync.sync_once()
        a, b = np.array(decisions[0]), np.array(decisions[1])
        out[mode] = {
            "replica A (MMLU, GSM8K)": float(a.mean()),
            "replica B (chat)": float(b.mean()),
            "global": float(np.concatenate([a, b]).mean()),
        }
    return out


def recovery(strong: np.ndarray, shift: int, target: float, limit: int) -> int | None:
    """Requests after ``shift`` until the share of the last ``RECOVERY_ROLLING`` requests is first within
    ``TOLERANCE`` of the target (None: not within ``limit``)."""
    for offset in range(RECOVERY_ROLLING, limit):
        end = shift + offset
        if abs(strong[end - RECOVERY_ROLLING : end].mean() - target) <= TOLERANCE:
            return offset
    return None


def summarize(decisions: dict[str, np.ndarray], strong_ok: np.ndarray, weak_ok: np.ndarray, target: float, segment: int) -> dict:
    """Per policy: share per 250 requests, recovery after each shift, deviation and quality per segment."""
    out: dict[str, dict] = {}
    for policy, strong in decisions.items():
        share = strong.astype(np.float64)
        rolling = np.convolve(share, np.ones(250) / 250, mode="valid")
        per_segment = {}
        for number, name in enumerate(SEGMENTS):
            rows = slice(number * segment, (number + 1) * segment)
            trailing = rolling[rows][: segment - 249]  # the 250-request windows that lie within the segment
            row = {"strong_share": float(share[rows].mean()), "mean_abs_deviation": float(np.abs(trailing - target).mean())}
            if rows.stop <= len(strong_ok):
                row["quality"] = float(np.where(strong[rows], strong_ok[rows], weak_ok[rows]).mean())
            per_segment[name] = row
        out[policy] = {
            "segments": per_segment,
            "recovery": [recovery(share, shift, target, segment) for shift in (segment, 2 * segment)],
            "share_per_250": [round(float(share[i : i + 250].mean()), 3) for i in range(0, len(share), 250)],
        }
    return out


def plot(decisions: dict[str, np.ndarray], target: float, segment: int, path: Path, title: str) -> None:
    """The share of the last 100 requests along the stream, one line per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(10, 4.2))
    kernel = np.ones(RECOVERY_ROLLING) / RECOVERY_ROLLING
    for policy, label in POLICIES.items():
        share = np.convolve(decisions[policy].astype(np.float64), kernel, mode="valid")
        axis.plot(np.arange(RECOVERY_ROLLING - 1, len(decisions[policy])), share, label=label, linewidth=1)
    axis.axhspan(target - TOLERANCE, target + TOLERANCE, color="black", alpha=0.08, label=f"target {target:g} ± {TOLERANCE:g}")
    for number, name in enumerate(SEGMENTS):
        if number:
            axis.axvline(number * segment, color="grey", linewidth=0.8)
        axis.text(number * segment, 0.95, f" {name}", color="grey", va="top")
    axis.set_xlabel("request number")
    axis.set_ylabel(f"strong share (last {RECOVERY_ROLLING} requests)")
    axis.set_ylim(0, 1)
    axis.set_title(title, fontsize=10)
    axis.legend(loc="upper right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def stream_win_rates(data: BenchmarkData, router: Router, segment: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The labelled stream's rows, and the win rates of the whole stream (chat last) and of the calibration set."""
    from edgeroute.export.training.chat_prompts import chat_prompts

    stream, calibration = stream_and_calibration(data, segment, seed)
    chat = chat_prompts(segment, seed=CHAT_SEED)
    prompts = [data.prompts[i] for i in stream] + chat + [data.prompts[i] for i in calibration]
    rates = router.strong_win_rates(prompts)
    return stream, rates[: len(stream) + len(chat)], rates[len(stream) + len(chat) :]


def run(data_dir: Path, router_name: str, target: float, segment: int, window: int, seed: int) -> dict:
    """Score the stream once, replay every policy, summarize."""
    data = load_protocol_data(data_dir)
    router = Router.load(router_name)
    stream, stream_rates, calibration_rates = stream_win_rates(data, router, segment, seed)
    fixed = threshold_for_share(np.sort(calibration_rates), target)
    decisions = replay(stream_rates, fixed, target, window)
    summary = summarize(decisions, data.strong_quality[stream], data.weak_quality[stream], target, segment)
    labelled, chat = stream_rates[: 2 * segment], stream_rates[2 * segment :]
    return {
        "two_replicas": two_replicas(labelled[::2], chat, fixed, target, window),
        "router": router.name,
        "target": target,
        "window": window,
        "segment": segment,
        "fixed_threshold": fixed,
        "summary": summary,
        "decisions": {k: v.tolist() for k, v in decisions.items()},
    }


def markdown(document: dict) -> str:
    """The report: recovery and deviation per policy, then the share per 250 requests."""
    segment, summary = document["segment"], document["summary"]
    lines = [
        "# Strong-call budget on drifting traffic",
        "",
        "Command: `python benchmarks/budget.py --data-dir ../shared/data/routellm-evals` "
        f"(router `{document['router']}`, target strong share {document['target']:g}, budget window "
        f"{document['window']} win rates, stream of {3 * segment} prompts: {segment} MMLU, then {segment} GSM8K, "
        f"then {segment} generated chat prompts).",
        "",
        f"The fixed threshold ({document['fixed_threshold']:.4f}) is the target's quantile on other MMLU questions, as "
        "`edgeroute calibrate` would set it; both budgets start from it. *Recovery*: requests after a shift until the "
        f"share of the last {RECOVERY_ROLLING} requests is first within {TOLERANCE:g} of the target (- : not within the "
        "segment). *Deviation*: mean |share over the last 250 requests - target| within a segment (MMLU is the steady "
        "state). *Quality*: share of prompts answered correctly by the model chosen (graded segments only).",
        "",
        "| policy | recovery MMLU→GSM8K | recovery GSM8K→chat | deviation MMLU | deviation GSM8K | deviation chat "
        "| quality MMLU | quality GSM8K |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for policy, label in POLICIES.items():
        row, seg = summary[policy], summary[policy]["segments"]
        recover = " | ".join("-" if r is None else str(r) for r in row["recovery"])
        deviation = " | ".join(f"{seg[name]['mean_abs_deviation']:.3f}" for name in SEGMENTS)
        quality = " | ".join(f"{seg[name]['quality']:.3f}" for name in SEGMENTS[:2])
        lines.append(f"| {label} | {recover} | {deviation} | {quality} |")
    lines += ["", "Strong share per 250 requests:", "", "| policy | " + " | ".join(str(i * 250) for i in range(3 * segment // 250)) + " |"]
    lines.append("| --- " * (3 * segment // 250 + 1) + "|")
    for policy, label in POLICIES.items():
        lines.append(f"| {label} | " + " | ".join(f"{v:.2f}" for v in summary[policy]["share_per_250"]) + " |")
    lines += [
        "",
        "Two replicas behind one gateway: replica A takes the MMLU-then-GSM8K stream (every second prompt), replica B "
        f"the {segment} chat prompts, in turns; each with its own window (no store), then sharing one window "
        "(`serve --budget-store`, replayed with an in-memory store exchanging every 25 requests). Strong share over the run:",
        "",
        "| windows | replica A (MMLU, GSM8K) | replica B (chat) | global |",
        "| --- | --- | --- | --- |",
    ]
    for mode, row in document["two_replicas"].items():
        lines.append(f"| {mode} | " + " | ".join(f"{value:.3f}" for value in row.values()) + " |")
    lines += ["", "![strong share over time](budget.png)", "", f"Machine: {document['machine']}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--router", default=None, help="router to replay (default: models/DEFAULT)")
    parser.add_argument("--target", type=float, default=0.3, help="wanted share of strong calls")
    parser.add_argument(
        "--segment", type=int, default=1000, help="prompts per segment (a multiple of 250; the data holds 1,009 GSM8K problems)"
    )
    parser.add_argument("--window", type=int, default=DEFAULT_WINDOW, help="win rates the budget keeps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    document = run(args.data_dir, args.router or default_router_name(), args.target, args.segment, args.window, args.seed)
    document["machine"] = platform.processor() or platform.machine()
    args.out.mkdir(parents=True, exist_ok=True)
    decisions = {policy: np.array(values) for policy, values in document.pop("decisions").items()}
    title = f"{document['router']}: strong share over a stream that shifts from MMLU to GSM8K to chat prompts"
    plot(decisions, args.target, args.segment, args.out / "budget.png", title)
    (args.out / "budget.json").write_text(json.dumps(document, indent=2) + "\n")
    (args.out / "budget.md").write_text(markdown(document))
    print(markdown(document))


if __name__ == "__main__":
    main()
