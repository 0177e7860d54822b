"""``edgeroute eval`` and ``edgeroute calibrate``: RouteLLM's evaluation on bundles, and thresholds
for a wanted share of strong-model calls. Only the runtime is used, so figures describe the
bundle a user deploys (int8 by default), not a PyTorch model."""

from __future__ import annotations

import datetime as _dt
import hashlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeroute.runtime.evaluation.data import (
    DEFAULT_STRONG_MODEL,
    DEFAULT_WEAK_MODEL,
    BenchmarkData,
    load_benchmark,
    mmlu_domains,
    select_split,
)
from edgeroute.runtime.errors import InvalidInputError, require_extra
from edgeroute.runtime.scoring.decision import threshold_for_share
from edgeroute.runtime.scoring.layout import MANIFEST_NAME
from edgeroute.runtime.scoring.manifest import write_manifest
from edgeroute.runtime.evaluation.curves import RoutingCurve, optimal_curve, random_router_metrics, routing_curve, summarize
from edgeroute.runtime.scoring.router import Router

RANDOM_ROUTER = "random"
CALIBRATION_SHARES = [round(0.1 * k, 1) for k in range(1, 10)]


class _Progress:
    """A dependency-free progress line on stderr (the runtime does not depend on tqdm)."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label, self.done = total, label, 0
        self.started = time.perf_counter()
        self.enabled = sys.stderr.isatty()

    def update(self, count: int) -> None:
        self.done += count
        if self.enabled:
            rate = self.done / max(time.perf_counter() - self.started, 1e-9)
            sys.stderr.write(f"\r{self.label}: {self.done}/{self.total} prompts ({rate:.0f}/s)")
            if self.done >= self.total:
                sys.stderr.write("\n")
            sys.stderr.flush()


def score_prompts(router: Router, prompts: Sequence[str], batch_size: int = 32, label: str = "score") -> np.ndarray:
    """Win rates of many prompts, in input order, with a progress line (chunks of 64 buckets)."""
    rates = np.zeros(len(prompts), dtype=np.float64)
    progress = _Progress(len(prompts), label)
    chunk = batch_size * 64
    for start in range(0, len(prompts), chunk):
        rates[start : start + chunk] = router.strong_win_rates(prompts[start : start + chunk], bucket_size=batch_size)
        progress.update(len(prompts[start : start + chunk]))
    return rates


def _curve_dict(curve: RoutingCurve) -> dict[str, list[float]]:
    return {"strong_share": curve.strong_share.round(6).tolist(), "quality": curve.quality.round(6).tolist()}


def evaluate(
    routers: Sequence[str],
    benchmark: str,
    data_dir: Path,
    strong_model: str = DEFAULT_STRONG_MODEL,
    weak_model: str = DEFAULT_WEAK_MODEL,
    split: str = "all",
    num_thresholds: int = 10,
    random_seeds: int = 10,
    load_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score a benchmark with each router and compute RouteLLM's metrics.

    ``routers`` holds bundle paths, shipped router names, or ``"random"``. ``split`` selects
    edgeroute's fixed train/val/test split (``"all"`` keeps every prompt). Returns the JSON
    document that ``edgeroute eval --json`` writes (curves included).
    """
    data = _load(benchmark, Path(data_dir), strong_model, weak_model, split)
    strong_mean, weak_mean = float(data.strong_quality.mean()), float(data.weak_quality.mean())
    result: dict[str, Any] = {
        "benchmark": benchmark,
        "split": split,
        "n_prompts": len(data),
        "strong_model": data.strong_model,
        "weak_model": data.weak_model,
        "strong_quality": strong_mean,
        "weak_quality": weak_mean,
        "num_thresholds": num_thresholds,
        "routers": {},
        "curves": {},
    }
    for name in routers:
        if name == RANDOM_ROUTER:
            metrics, curve = random_router_metrics(data.strong_quality, data.weak_quality, num_thresholds, random_seeds)
            metrics["seeds"] = random_seeds
        else:
            router = Router.load(name, **(load_options or {}))
            name = router.name
            rates = score_prompts(router, data.prompts, label=f"{benchmark} {name}")
            curve = routing_curve(rates, data.strong_quality, data.weak_quality, num_thresholds)
            metrics = summarize(curve, strong_mean, weak_mean)
            metrics["precision"] = router.precision
            metrics["trained_on_share"] = trained_on_share(router, data.prompts)
        result["routers"][name] = metrics
        result["curves"][name] = _curve_dict(curve)
    result["curves"]["optimal"] = _curve_dict(optimal_curve(data.strong_quality, data.weak_quality))
    return result


def trained_on_share(router: Router, prompts: Sequence[str]) -> float | None:
    """About what share of the router's training prompts are among ``prompts`` (None: its bundle keeps no sketch)."""
    from edgeroute.runtime.evaluation.data import sketch_overlap

    training = router.manifest.source.training if router.manifest.source else None
    sketch = (training or {}).get("prompt_sketch")
    return sketch_overlap(sketch, prompts) if isinstance(sketch, list) else None


def in_sample_warnings(result: dict[str, Any]) -> list[str]:
    """One line per router of ``evaluate``'s result that was trained on prompts of the evaluated set."""
    return [
        f"warning: {name} was trained on prompts of this set (about {m['trained_on_share']:.0%} of its training prompts are here): "
        "its figures are in-sample, not held-out; evaluate on prompts it never saw"
        for name, m in result["routers"].items()
        if m.get("trained_on_share")
    ]


def _load(benchmark: str, data_dir: Path, strong_model: str, weak_model: str, split: str) -> BenchmarkData:
    data = load_benchmark(data_dir, benchmark, strong_model, weak_model)
    domains = mmlu_domains(data_dir) if benchmark == "mmlu" else None
    data = select_split(data, split, domains)
    if len(data) == 0:
        raise InvalidInputError(f"{data_dir}: no {benchmark} prompts in split {split!r}")
    return data


def format_table(result: dict[str, Any]) -> str:
    """The metrics of ``evaluate`` as a plain-text table."""
    lines = [
        f"{result['benchmark']} ({result['split']}): {result['n_prompts']} prompts; "
        f"strong {result['strong_model']} {result['strong_quality']:.4f}, "
        f"weak {result['weak_model']} {result['weak_quality']:.4f}",
        f"{'router':32s} {'APGR':>7s} {'CPT(50%)':>9s} {'CPT(80%)':>9s} {'AUC':>7s}",
    ]
    for name, m in result["routers"].items():
        lines.append(f"{name:32s} {m['apgr']:7.4f} {m['cpt50'] * 100:8.1f}% {m['cpt80'] * 100:8.1f}% {m['auc']:7.4f}")
    return "\n".join(lines)


def plot_curves(result: dict[str, Any], path: Path) -> Path:
    """Draw quality against strong-call share for every router, random and optimal (needs matplotlib)."""
    matplotlib = require_extra("matplotlib", "plot", "edgeroute eval --plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 5))
    for name, curve in result["curves"].items():
        style = {"linestyle": "--", "color": "black"} if name == "optimal" else {"marker": "."}
        if name == RANDOM_ROUTER:
            style = {"linestyle": ":", "color": "grey"}
        label = name if name not in result["routers"] else f"{name} (APGR {result['routers'][name]['apgr']:.3f})"
        axis.plot(np.array(curve["strong_share"]) * 100, curve["quality"], label=label, **style)
    axis.axhline(result["strong_quality"], color="red", linewidth=0.8, label=f"strong: {result['strong_model']}")
    axis.axhline(result["weak_quality"], color="blue", linewidth=0.8, label=f"weak: {result['weak_model']}")
    axis.set_xlabel("strong-model calls (%)")
    axis.set_ylabel("quality")
    axis.set_title(f"{result['benchmark']} ({result['split']}, {result['n_prompts']} prompts)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


# ------------------------------------------------------------------------- calibration
def read_prompts(sources: Sequence[Path], column: str = "prompt") -> list[str]:
    """Prompts from .jsonl (key 'prompt'), .csv (column 'prompt'), .parquet (column 'prompt') or text
    files (one per line, as ``edgeroute score`` reads them), or RouteLLM-layout folders (every MMLU and GSM8K prompt)."""
    prompts: list[str] = []
    for source in map(Path, sources):
        if source.is_dir():
            for benchmark in ("mmlu", "gsm8k"):
                try:
                    prompts += load_benchmark(source, benchmark).prompts
                except (InvalidInputError, FileNotFoundError):
                    continue
        elif source.is_file():  # the one reader of prompt files, shared with `edgeroute score`
            from edgeroute.runtime.serving.batch import iter_chunks

            prompts += [prompt for chunk in iter_chunks(source, column) for prompt in chunk.prompts]
        else:
            raise InvalidInputError(f"{source}: no such prompt file or folder")
    if not prompts:
        raise InvalidInputError("no prompts found in " + ", ".join(map(str, sources)))
    return prompts


def calibrate(
    router: Router,
    sources: Sequence[Path],
    strong_share: float,
    write: bool = False,
    description: str | None = None,
    column: str = "prompt",
    out: Path | None = None,
) -> dict[str, Any]:
    """Threshold for ``strong_share`` on the given prompts; with ``write``, store a 10%..90% table in the manifest
    (of a copy in ``out``, when given)."""
    if write:
        calibration_target(router.manifest.folder, out, create=False)  # refused before any scoring
    prompts = read_prompts(sources, column)
    rates = score_prompts(router, prompts, label=f"calibrate {router.name}")
    digest = hashlib.sha256("\n".join(prompts).encode("utf-8")).hexdigest()
    description = description or ", ".join(Path(s).name for s in sources)
    return calibrate_win_rates(router, rates, strong_share, write, description, {"prompts_sha256": digest}, out)


def calibrate_win_rates(
    router: Router,
    rates: np.ndarray,
    strong_share: float,
    write: bool = False,
    description: str | None = None,
    provenance: dict[str, Any] | None = None,
    out: Path | None = None,
) -> dict[str, Any]:
    """``calibrate`` on win rates already scored by ``router`` (e.g. ``edgeroute score`` output):
    the threshold for ``strong_share`` and, with ``write``, the 10%..90% table stored in the manifest.
    ``provenance`` adds fields to the stored table (a hash of the prompts, when known); ``out``: write a
    calibrated copy of the bundle there instead of changing the bundle itself."""
    target = calibration_target(router.manifest.folder, out) if write else router.manifest.folder
    ordered = np.sort(rates)
    table = {str(share): threshold_for_share(ordered, share) for share in CALIBRATION_SHARES}
    result = {
        "router": router.name,
        "strong_share": strong_share,
        "strong_pct": strong_share,  # the old name of the same figure, kept for scripts that read it
        "threshold": threshold_for_share(ordered, strong_share),
        "n_prompts": len(rates),
    }
    if write:
        manifest = router.manifest.to_dict()
        manifest["calibration"] = {
            "prompt_set": description or "win rates",
            "n_prompts": len(rates),
            **(provenance or {}),
            "precision": router.precision,
            "rule": "threshold = quantile of win rates at 1 - strong share (RouteLLM)",
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "thresholds": table,
        }
        write_manifest(target, manifest, rehash=False)
        result["written"] = str(target / MANIFEST_NAME)
    result["thresholds"] = table
    return result


def calibration_target(folder: Path, out: Path | None, create: bool = True) -> Path:
    """Where ``calibrate --write`` writes: ``out`` (a fresh copy of the bundle, made when ``create``), else the
    bundle itself, unless that lies inside an installed package, which a later install would silently replace."""
    import shutil
    import sysconfig

    if out is not None:
        if out.exists():
            raise InvalidInputError(f"--out {out}: already exists; name a new folder for the calibrated copy")
        if create:
            shutil.copytree(folder, out)
        return out
    installed = {Path(sysconfig.get_paths()[key]).resolve() for key in ("purelib", "platlib")}
    if any(folder.resolve().is_relative_to(root) for root in installed):
        raise InvalidInputError(
            f"{folder} is inside the installed package: pass --out DIR to write a calibrated copy there, then use --router DIR"
        )
    return folder


# ------------------------------------------------------------ cross-validated comparison
PROTOCOL_BENCHMARKS = ("mmlu", "gsm8k")
BASELINES = ("random", "prompt length", "optimal")


def _router_apgr(data: BenchmarkData, mask: np.ndarray, win_rates: np.ndarray | None, baseline: str | None, content: bool) -> float:
    """APGR of a router (or a baseline) on the rows of ``mask``; ``content``: within length quintiles instead."""
    from edgeroute.runtime.evaluation.content import apgr, binned_metric, prompt_lengths

    strong, weak = data.strong_quality[mask], data.weak_quality[mask]
    prompts = [p for p, keep in zip(data.prompts, mask) if keep]
    if baseline == "prompt length":
        win_rates = prompt_lengths(data.prompts)
    rates = None if win_rates is None else np.asarray(win_rates)[mask]

    def apgr_on(keep: np.ndarray) -> float:
        s, w = strong[keep], weak[keep]
        if len(s) < 2 or s.mean() == w.mean():
            return float("nan")  # undefined
        if baseline == "random":
            return random_router_metrics(s, w)[0]["apgr"]
        if baseline == "optimal":
            return summarize(optimal_curve(s, w), float(s.mean()), float(w.mean()))["apgr"]
        return float("nan") if rates is None else apgr(rates[keep], s, w)

    return binned_metric(apgr_on, prompts) if content else apgr_on(np.ones(len(strong), dtype=bool))


def crossval_summary(
    data: BenchmarkData,
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    scores: dict[str, dict[str, np.ndarray]],
    pair_rows: np.ndarray | None = None,
) -> dict[str, dict[str, Any]]:
    """APGR per router, benchmark and fold, with mean and spread, plus the transfer splits.

    ``scores[router][split]`` holds win rates for every row of ``data`` from the router trained
    on that split's training rows (only its test rows are read); ``splits`` may be a subset of the protocol's (a
    transfer left out has no column, fold means are over the folds given). The baselines (random,
    prompt length, optimal) need no training and are added for every split. ``rows["content"]``
    repeats every column as content APGR (``edgeroute.runtime.evaluation.content``: APGR within
    length quintiles, where prompt length alone scores about 0.5). With ``pair_rows`` (the rows of
    ``data`` that hold a pair set's prompts in ``pair_prompts`` order, never in a training mask),
    ``rows["pairs"]`` is the mean pair accuracy of the split models, and ``rows["spearman"]`` the mean
    over folds of the win rates' rank correlation with character count on the test rows.
    """
    from edgeroute.runtime.evaluation.data import TRANSFER_SPLITS, benchmark_of

    bench = benchmark_of(data)
    summary: dict[str, dict[str, Any]] = {}
    for name in [*scores, *BASELINES]:
        baseline = name if name in BASELINES else None

        def columns(content: bool) -> dict[str, Any]:
            rows: dict[str, Any] = {}
            for benchmark in PROTOCOL_BENCHMARKS:
                folds = [
                    _router_apgr(data, test & (bench == benchmark), scores.get(name, {}).get(split), baseline, content)
                    for split, (_, test) in splits.items()
                    if split.startswith("fold")
                ]
                mean, std = (float(np.mean(folds)), float(np.std(folds))) if folds else (float("nan"), float("nan"))
                rows[benchmark] = {"folds": folds, "mean": mean, "std": std}
            for split in TRANSFER_SPLITS:
                if split in splits:
                    rows[split] = _router_apgr(data, splits[split][1], scores.get(name, {}).get(split), baseline, content)
            return rows

        summary[name] = {**columns(False), "content": columns(True)}
        if pair_rows is not None:
            summary[name].update(_length_checks(data, splits, scores.get(name), baseline, pair_rows))
    return summary


def _baseline_rates(data: BenchmarkData, baseline: str | None, seed: int = 0) -> np.ndarray | None:
    from edgeroute.runtime.evaluation.content import prompt_lengths

    if baseline == "prompt length":
        return prompt_lengths(data.prompts)
    return np.random.default_rng(seed).random(len(data)) if baseline == "random" else None


def _length_checks(
    data: BenchmarkData,
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    scores: dict[str, np.ndarray] | None,
    baseline: str | None,
    pair_rows: np.ndarray,
) -> dict[str, float]:
    """Pair accuracy (mean over split models) and rank correlation with length (mean over folds' test rows)."""
    from edgeroute.runtime.evaluation.content import length_spearman, pair_accuracy

    fixed = _baseline_rates(data, baseline)
    if scores is not None:
        by_split = {split: scores[split] for split in splits}
    elif fixed is not None:
        by_split = {split: fixed for split in splits}
    else:
        return {"pairs": float("nan"), "spearman": float("nan")}
    pairs = [pair_accuracy(rates[pair_rows]) for rates in by_split.values()]
    folds = [s for s in splits if s.startswith("fold")]
    correlations = [length_spearman(by_split[s][splits[s][1]], [p for p, keep in zip(data.prompts, splits[s][1]) if keep]) for s in folds]
    return {"pairs": float(np.mean(pairs)), "spearman": float(np.mean(correlations)) if correlations else float("nan")}
