"""Benchmark readers, RouteLLM's metrics, eval and calibrate, on synthetic data and (when present) real data."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edgeroute.runtime import InvalidInputError, Router
from edgeroute.runtime.evaluation.data import load_benchmark, select_split, split_of
from edgeroute.runtime.cli import main
from edgeroute.runtime.evaluation.report import calibrate, evaluate, threshold_for_share
from edgeroute.runtime.evaluation.curves import optimal_curve, random_router_metrics, routing_curve, summarize
from layout import DOMAINS, make_layout


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    return make_layout(tmp_path_factory.mktemp("evals"))


def test_readers_follow_routellm_layout(layout):
    mmlu = load_benchmark(layout, "mmlu")
    assert len(mmlu) == len(DOMAINS) * 12 - 1  # one contaminated prompt dropped
    assert "algebra question 1: say hello" not in mmlu.prompts
    gsm8k = load_benchmark(layout, "gsm8k")
    assert len(gsm8k) == 40 and gsm8k.strong_quality.mean() == 1.0 and gsm8k.weak_quality.mean() == 0.5
    mt = load_benchmark(layout, "mt-bench")
    assert len(mt) == 10 and mt.prompts[0] == "Turn one of 1" and mt.strong_quality[0] == 9.0
    assert mt.weak_model == "mixtral-8x7b-instruct-v0.1"  # matched without the organization prefix


def test_split_is_by_domain_for_mmlu(layout):
    mmlu = load_benchmark(layout, "mmlu")
    splits = split_of(mmlu)
    test_domains = {g for g, s in zip(mmlu.groups, splits) if s == "test"}
    assert test_domains == {"algebra", "finance"}  # every 5th domain in alphabetical order
    assert set(select_split(mmlu, "val").groups) == {"chemistry"}  # every 5th from the third
    with pytest.raises(InvalidInputError, match="split must be"):
        select_split(mmlu, "holdout")


def test_unknown_model_column(layout):
    with pytest.raises(InvalidInputError, match="no column for model 'claude-9'"):
        load_benchmark(layout, "gsm8k", strong_model="claude-9")


def test_metrics_of_perfect_random_and_optimal_routers():
    rng = np.random.default_rng(0)
    strong = rng.random(2000) < 0.8
    weak = rng.random(2000) < 0.6
    strong_q, weak_q = strong.astype(float), weak.astype(float)
    gain = strong_q - weak_q
    perfect = summarize(routing_curve(gain + rng.random(2000) * 1e-3, strong_q, weak_q), strong_q.mean(), weak_q.mean())
    random_metrics, _ = random_router_metrics(strong_q, weak_q, seeds=20)
    assert perfect["apgr"] > 0.9 and perfect["cpt50"] < 0.2
    assert abs(random_metrics["apgr"] - 0.5) < 0.03 and abs(random_metrics["cpt50"] - 0.5) < 0.05
    optimal = optimal_curve(strong_q, weak_q)
    assert optimal.quality[0] == pytest.approx(weak_q.mean()) and optimal.quality.max() >= strong_q.mean()


def test_quantile_threshold_rule():
    rates = np.linspace(0, 1, 101)
    assert threshold_for_share(rates, 0.3) == pytest.approx(0.7)
    assert np.mean(rates >= threshold_for_share(rates, 0.3)) == pytest.approx(0.3, abs=0.011)


def test_eval_cli_writes_json_and_plot(layout, bert_bundle, tmp_path, capsys):
    out_json, out_png = tmp_path / "r.json", tmp_path / "r.png"
    assert (
        main(
            [
                "eval",
                "--router",
                str(bert_bundle),
                "--router",
                "random",
                "--benchmark",
                "mmlu",
                "--data-dir",
                str(layout),
                "--json",
                str(out_json),
                "--plot",
                str(out_png),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "APGR" in printed and "random" in printed
    result = json.loads(out_json.read_text())
    assert {"benchmark", "n_prompts", "strong_quality", "weak_quality", "routers"} <= set(result)
    assert set(result["routers"]) == {"bert_bundle", "random"}
    assert set(result["routers"]["random"]) >= {"apgr", "cpt50", "cpt80", "auc"}
    assert out_png.read_bytes()[:4] == b"\x89PNG"


def test_eval_mt_bench_and_splits(layout, mf_bundle):
    result = evaluate([str(mf_bundle), "random"], "mt-bench", layout)
    assert result["n_prompts"] == 10 and result["strong_quality"] == 9.0
    held_out = evaluate(["random"], "gsm8k", layout, split="test")
    assert 0 < held_out["n_prompts"] < 40


def test_calibrate_writes_a_table_and_route_uses_it(tmp_path, bert_bundle, layout, capsys):
    bundle = tmp_path / "bundle"
    shutil.copytree(bert_bundle, bundle)
    prompts = tmp_path / "prompts.txt"
    words = "proof lemma hello cat recipe integral poem law cell market river code quantum tax song".split()
    rng = np.random.default_rng(0)
    prompts.write_text("\n".join(f"{i} " + " ".join(rng.choice(words, size=rng.integers(2, 12))) for i in range(200)))
    # fp32: the tiny model's win rates lie within 1e-3 of each other, below int8's batch-to-batch noise.
    result = calibrate(Router.load(bundle, precision="fp32"), [prompts], 0.3, write=True, description="synthetic")
    assert set(result["thresholds"]) == {str(s / 10) for s in range(1, 10)}
    router = Router.load(bundle, precision="fp32")  # hashes are untouched by calibration
    assert router.manifest.calibration["prompt_set"] == "synthetic"
    assert router.threshold_for(0.3) == pytest.approx(result["threshold"])
    rates = np.array([router.strong_win_rate(p) for p in prompts.read_text().splitlines()])
    assert np.mean(rates >= router.threshold_for(0.3)) == pytest.approx(0.3, abs=0.05)
    with pytest.raises(InvalidInputError, match="calibrated range"):
        router.threshold_for(0.95)
    assert main(["route", "--router", str(bundle), "--strong-pct", "0.3", "hi"]) == 0
    assert json.loads(capsys.readouterr().out)["threshold"] == pytest.approx(result["threshold"], abs=1e-6)
    assert main(["calibrate", "--router", str(bundle), "--prompts", str(layout), "--strong-pct", "0.5"]) == 0


def test_real_data_loads_with_expected_accuracies(shared_data):
    mmlu = load_benchmark(shared_data, "mmlu")
    gsm8k = load_benchmark(shared_data, "gsm8k")
    assert len(mmlu) > 12000 and len(gsm8k) > 1000
    assert 0.78 < mmlu.strong_quality.mean() < 0.82 and 0.66 < mmlu.weak_quality.mean() < 0.70
    assert 0.84 < gsm8k.strong_quality.mean() < 0.88 and 0.62 < gsm8k.weak_quality.mean() < 0.66
    held_out = set(select_split(mmlu, "test").groups)
    assert len(held_out) == 10 and not held_out & set(select_split(mmlu, "train").groups)
