"""Routing quality of the shipped routers on held-out data: writes benchmarks/results/quality.{md,json,png}.

    python benchmarks/quality.py --data-dir ../shared/data/routellm-evals \
        --router models/bert-minilm-gpt4-mixtral --router models/mf-minilm-gpt4-mixtral \
        --fp32 bert-minilm-gpt4-mixtral=/tmp/edgeroute-fp32/bert --fp32 mf-minilm-gpt4-mixtral=/tmp/edgeroute-fp32/mf

Held out = edgeroute's fixed `test` split (MMLU domains never trained on; a GSM8K slice).
`--fp32 NAME=BUNDLE` names a full-precision export of the same checkpoint, to measure how
often the int8 bundle's routing decisions agree with fp32 on the held-out prompts.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from edgeroute.runtime import Router
from edgeroute.runtime.benchmarks import load_benchmark, mmlu_domains, select_split
from edgeroute.runtime.evaluation import CALIBRATION_SHARES, evaluate, score_prompts, threshold_for_share
from edgeroute.runtime.metrics import RoutingCurve, routing_curve, summarize

BENCHMARKS = ("mmlu", "gsm8k")
PAPER_MT_BENCH = (
    "RouteLLM paper, MT-Bench (GPT-4 vs Mixtral, trained on Arena data augmented with judge labels): "
    "best MF router CPT(50%) 13.4%, APGR 0.802; random router CPT(50%) about 49%."
)


def int8_fp32_agreement(int8_bundle: str, fp32_bundle: str, prompts: list[str]) -> dict[str, float]:
    """Share of prompts on which int8 and fp32 make the same decision, at thresholds for 10%..90% strong."""
    int8_rates = score_prompts(Router.load(int8_bundle, precision="int8"), prompts)
    fp32_rates = score_prompts(Router.load(fp32_bundle, precision="fp32"), prompts)
    agreement = {}
    for share in CALIBRATION_SHARES:
        threshold = threshold_for_share(fp32_rates, share)
        agreement[str(share)] = float(np.mean((int8_rates >= threshold) == (fp32_rates >= threshold)))
    agreement["max_abs_diff"] = float(np.max(np.abs(int8_rates - fp32_rates)))
    return agreement


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--router", action="append", required=True)
    parser.add_argument("--fp32", action="append", default=[], help="NAME=BUNDLE of the same checkpoint in fp32")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    results = {}
    for benchmark in BENCHMARKS:
        result = evaluate([*args.router, "random"], benchmark, args.data_dir, split="test")
        optimal = result["curves"]["optimal"]
        result["routers"]["optimal"] = summarize(
            RoutingCurve(np.array(optimal["strong_share"]), np.array(optimal["quality"])),
            result["strong_quality"], result["weak_quality"],
        )
        # Diagnostic baseline, not a shipped router: longer prompt, higher "win rate".
        data = select_split(load_benchmark(args.data_dir, benchmark), "test",
                            mmlu_domains(args.data_dir) if benchmark == "mmlu" else None)
        lengths = np.array([len(p) for p in data.prompts], dtype=np.float64)
        result["routers"]["baseline: prompt length"] = summarize(
            routing_curve(lengths, data.strong_quality, data.weak_quality), result["strong_quality"],
            result["weak_quality"])
        results[benchmark] = result
    validation = {}
    for benchmark in BENCHMARKS:
        # The validation split picked each router's training step; shown because domains differ a lot.
        validation[benchmark] = evaluate([*args.router, "random"], benchmark, args.data_dir, split="val")
        validation[benchmark].pop("curves")
    held_out_domains = sorted(set(select_split(load_benchmark(args.data_dir, "mmlu"), "test",
                                               mmlu_domains(args.data_dir)).groups))
    agreement = {}
    for pair in args.fp32:
        name, fp32_bundle = pair.split("=", 1)
        int8_bundle = next(r for r in args.router if Router.load(r).name == name)
        prompts = [p for b in BENCHMARKS for p in select_split(load_benchmark(args.data_dir, b), "test",
                                                                 mmlu_domains(args.data_dir) if b == "mmlu" else None).prompts]
        agreement[name] = int8_fp32_agreement(int8_bundle, fp32_bundle, prompts)
    recipes = {Router.load(r).name: Router.load(r).manifest.data["source"].get("training") for r in args.router}
    described = {}
    for path in args.router:
        router = Router.load(path)
        data = router.manifest.data
        encoder = data.get("embedder", {}).get("kind", "transformer classifier")
        shipped = Path(path).resolve().parent == (Path(__file__).resolve().parents[1] / "models")
        described[router.name] = (f"{data['kind']}, {encoder} encoder, precision {router.precision or 'n/a'}, "
                                  f"{'shipped in models/' if shipped else 'trained and evaluated, not shipped'}")

    args.out.mkdir(parents=True, exist_ok=True)
    document = {"routers": described, "held_out_mmlu_domains": held_out_domains, "benchmarks": results,
                "validation": validation,
                "int8_fp32_agreement": agreement, "training": recipes}
    (args.out / "quality.json").write_text(json.dumps(document, indent=2) + "\n")
    _plot(results, args.out / "quality.png")
    (args.out / "quality.md").write_text(_markdown(document))
    print((args.out / "quality.md").read_text())


def _plot(results: dict, path: Path) -> None:
    from edgeroute.runtime.evaluation import plot_curves

    import matplotlib.pyplot as plt
    from matplotlib.image import imread

    parts = [plot_curves(result, path.with_name(f"quality_{name}.png")) for name, result in results.items()]
    figure, axes = plt.subplots(1, len(parts), figsize=(8 * len(parts), 5))
    for axis, part in zip(np.atleast_1d(axes), parts):
        axis.imshow(imread(part))
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    for part in parts:
        part.unlink()


def _markdown(document: dict) -> str:
    lines = ["# Routing quality of the shipped routers", "",
             "Measured by `benchmarks/quality.py` through the runtime on the **bundles as shipped** "
             "(the artifacts users run), on data held out of training. Metrics follow RouteLLM "
             "(`evals/evaluate.py`: 10 quantile thresholds; APGR = normalized area under quality vs strong-call "
             "share; CPT(x%) = strong-call share needed to recover x% of the quality gap). Random is averaged "
             "over 10 seeds.", "",
             "Routers: " + "; ".join(f"**{name}** ({text})" for name, text in document["routers"].items()) + ".", "",
             f"Held-out MMLU domains (edgeroute's fixed split, every 5th domain alphabetically): "
             f"{', '.join(document['held_out_mmlu_domains'])}. Held-out GSM8K: the 20% slice chosen by a hash of "
             "the prompt.", ""]
    for name, result in document["benchmarks"].items():
        lines += [f"## {name} (held out): {result['n_prompts']} prompts", "",
                  f"strong {result['strong_model']}: {result['strong_quality']:.4f}; "
                  f"weak {result['weak_model']}: {result['weak_quality']:.4f}", "",
                  "| router | APGR | CPT(50%) | CPT(80%) | AUC |", "| --- | --- | --- | --- | --- |"]
        for router, m in result["routers"].items():
            lines.append(f"| {router} | {m['apgr']:.3f} | {m['cpt50'] * 100:.1f}% | {m['cpt80'] * 100:.1f}% | {m['auc']:.4f} |")
        lines.append("")
    lines += ["## Validation split (used to pick each router's training step, not held out)", "",
              "| router | " + " | ".join(f"{b} APGR" for b in document["validation"]) + " |",
              "| --- |" + " --- |" * len(document["validation"])]
    names = list(next(iter(document["validation"].values()))["routers"])
    for router in names:
        lines.append(f"| {router} | " + " | ".join(f"{v['routers'][router]['apgr']:.3f}"
                                                   for v in document["validation"].values()) + " |")
    lines.append("")
    if document["int8_fp32_agreement"]:
        lines += ["## int8 vs fp32 routing decisions (all held-out prompts)", "",
                  "| router | " + " | ".join(f"{s} strong" for s in CALIBRATION_SHARES) + " | max abs diff |",
                  "| --- |" + " --- |" * (len(CALIBRATION_SHARES) + 1)]
        for router, a in document["int8_fp32_agreement"].items():
            lines.append(f"| {router} | " + " | ".join(f"{a[str(s)]:.4f}" for s in CALIBRATION_SHARES)
                         + f" | {a['max_abs_diff']:.4f} |")
        lines.append("")
    lines += ["## Training recipes", ""]
    for router, recipe in document["training"].items():
        lines += [f"- **{router}**: `{json.dumps(recipe)}`"]
    lines += ["", "## For comparison", "", PAPER_MT_BENCH,
              "Those figures are on MT-Bench with Arena-trained routers; ours are on held-out MMLU domains and a "
              "GSM8K slice with routers trained only on the other MMLU domains and GSM8K, so they are not the same "
              "task.", "",
              "How much the held-out figures depend on which subjects are held out: `domain_shift.md` and "
              "`domain_shift_static.md` (from `benchmarks/domain_shift.py --mf`) retrain the MF recipe and a logistic "
              "regression on 12 random 10-domain hold-outs, beside the prompt-length baseline.", "",
              "![curves](quality.png)", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
