"""The fast tier by distillation, the teacher recipe and the cross-validation protocol (issue 9)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from checkpoints import make_mf_checkpoint
from edgeroute.export import CheckpointError, ExportOptions, export_distilled, export_mf
from edgeroute.export.training.crossval import _fit_split_student, distilled_scores, golden_labels, label_scores, teacher_scores
from edgeroute.export.training.distill import (
    StudentRecipe,
    distill_command,
    fit_distilled,
    fit_student,
    fold_length,
    reference_win_rates,
    student_features,
)
from edgeroute.export.static import save_static, static_embedder
from edgeroute.export.training.table_tuning import TokenRows, embed_rows, fit_tuned_student, frozen_static_router
from edgeroute.export.training.teacher import TeacherRecipe
from edgeroute.runtime import ConfigurationError, InvalidInputError, ManifestError, Router
from edgeroute.runtime.evaluation.data import benchmark_of, cv_fold_of, load_protocol_data, protocol_splits
from edgeroute.runtime.evaluation.report import BASELINES, crossval_summary
from edgeroute.runtime.scoring.heads import MLPHead
from layout import DOMAINS, STRONG, WEAK, make_layout

PROMPTS = ["hi", "Prove that the square root of two is irrational.", "x " * 400, "Translate 'cat' into German."]


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    return make_layout(tmp_path_factory.mktemp("evals"))


@pytest.fixture(scope="module")
def static_bundle(tmp_path_factory, encoder_dir):
    folder = tmp_path_factory.mktemp("static")
    checkpoint = make_mf_checkpoint(folder / "ckpt", text_dim=16)
    save_static(encoder_dir, checkpoint, dims=16)
    return export_mf(checkpoint, ExportOptions(out=folder / "bundle"), embedder="static").parent


def _distill_args(layout, teacher, static, out, **options) -> SimpleNamespace:
    """``edgeroute train distilled``'s parsed options for the tiny layout (seed 0), plus ``options``."""
    return SimpleNamespace(data=str(layout), teacher=str(teacher), static_from=str(static), out=str(out), seed=0, **options)


@pytest.fixture(scope="module")
def distilled(tmp_path_factory, layout, bert_bundle, static_bundle):
    folder = tmp_path_factory.mktemp("distilled")
    extra = folder / "written.txt"  # unlabeled prompts the teacher scores beside the data's
    extra.write_text("Sort these three words alphabetically: pear, apple, fig.\nWhy is the sky blue?\nhello there\n")
    args = _distill_args(layout, bert_bundle, static_bundle, folder / "ckpt", extra_prompts=str(extra))
    distill_command(args)
    export_distilled(folder / "ckpt", ExportOptions(out=folder / "bundle"))
    return folder / "ckpt", folder / "bundle"


def test_fitted_head_has_the_runtime_layout():
    rng = np.random.default_rng(0)
    features = rng.standard_normal((200, 9)).astype(np.float32)
    targets = features[:, 0] - 2 * features[:, -1]
    hidden, output = fit_student(features, targets, StudentRecipe(hidden=8, epochs=40))
    assert hidden.shape == (8, 10) and output.shape == (1, 9)
    head = MLPHead(hidden, output)
    prompts = ["a" * n for n in range(200)]
    embeddings = features[:, :-1]
    recomputed = student_features(embeddings, prompts)
    logits = head.logits(embeddings, prompts)
    manual = np.maximum(recomputed @ hidden[:, :-1].T + hidden[:, -1], 0) @ output[0, :-1] + output[0, -1]
    np.testing.assert_allclose(logits, manual, rtol=1e-5, atol=1e-5)


def test_length_is_folded_in_exactly_as_one_linear_term():
    rng = np.random.default_rng(1)
    features = rng.standard_normal((300, 9)).astype(np.float32)
    features[:, -1] = rng.uniform(0.2, 1.2, 300)  # the length input is log1p(chars) / 8: never negative
    teacher = features[:, 0] + 0.5 * rng.standard_normal(300)
    hidden, output = fit_student(features, teacher, StudentRecipe(hidden=8, epochs=5))
    student = MLPHead(hidden, output).feature_logits(features[:, :-1], features[:, -1])
    folded = MLPHead(*fold_length(hidden, output, features, teacher, 2.0)).feature_logits(features[:, :-1], features[:, -1])

    def z(values):
        return (values - values.mean()) / values.std()

    expected = teacher.mean() + teacher.std() * (z(student) + 2.0 * z(features[:, -1].astype(np.float64))) / np.sqrt(5.0)
    np.testing.assert_allclose(folded, expected, atol=1e-4)
    unchanged = MLPHead(*fold_length(hidden, output, features, teacher, 0.0)).feature_logits(features[:, :-1], features[:, -1])
    np.testing.assert_allclose(z(unchanged), z(student), atol=1e-5)


def test_distilled_bundle_matches_its_float64_reference(distilled):
    checkpoint, bundle = distilled
    router = Router.load(bundle)
    expected = reference_win_rates(checkpoint, PROMPTS, static_embedder(bundle))
    np.testing.assert_allclose(router.strong_win_rates(PROMPTS), expected, atol=1e-5)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["head"]["kind"] == "mlp" and manifest["head"]["win_rate"]["kind"] == "sigmoid_mlp"
    assert manifest["parity"]["precisions"]["static"]["verified"] and manifest["source"]["format"] == "edgeroute-distilled"
    assert manifest["head"]["teacher"] == manifest["source"]["training"]["recipe"]["teacher"] == "bert_bundle"


def test_distilled_scores_do_not_depend_on_the_batch(distilled):
    router = Router.load(distilled[1])
    alone = [router.strong_win_rate(p) for p in PROMPTS]
    # float32 matrix products may round differently per batch shape; decisions never depend on it.
    np.testing.assert_allclose(router.strong_win_rates(PROMPTS), alone, rtol=0, atol=1e-6)
    np.testing.assert_allclose(router.strong_win_rates(PROMPTS[::-1])[::-1], alone, rtol=0, atol=1e-6)


def test_distilled_router_decides_and_verifies(distilled):
    router = Router.load(distilled[1], verify=True)
    decision = router.route("Prove Fermat's little theorem.", threshold=0.0)
    assert decision.tier == "strong" and decision.model == STRONG
    assert Router.load(distilled[1], strong_model="gpt-4-1106-preview", weak_model="mixtral-8x7b-instruct-v0.1")


def test_distilled_router_refuses_another_pair(distilled):
    with pytest.raises(ConfigurationError) as caught:
        Router.load(distilled[1], strong_model=WEAK, weak_model=STRONG)
    assert str(caught.value) == (
        f"{distilled[1]}: this router's MLP head predicts only for strong {STRONG!r} vs weak {WEAK!r}; "
        "omit strong_model/weak_model or use a matrix-factorization router"
    )


def test_mlp_head_with_the_wrong_win_rate_kind_is_a_manifest_error(distilled, tmp_path):
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(distilled[1], copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["head"]["win_rate"] = {"kind": "sigmoid_difference"}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="'head.win_rate' of an MLP head must be"):
        Router.load(copy)


def test_protocol_tests_every_subject_once_and_never_trains_on_it(layout):
    data = load_protocol_data(layout)
    splits = protocol_splits(data)
    folds = cv_fold_of(data)
    bench = benchmark_of(data)
    for subject in DOMAINS:
        rows = np.array([g == subject for g in data.groups])
        assert len(set(folds[rows])) == 1  # a subject lives in exactly one fold
        tested = [name for name, (_, test) in splits.items() if name.startswith("fold") and test[rows].any()]
        assert len(tested) == 1 and not splits[tested[0]][0][rows].any()
    for name, (train, test) in splits.items():
        assert not (train & test).any(), name
    covered = np.zeros(len(data), int)
    for k in range(5):
        covered += splits[f"fold{k}"][1]
    assert (covered == 1).all()  # every row is tested exactly once, GSM8K included
    assert (splits["mmlu->gsm8k"][0] == (bench == "mmlu")).all() and (splits["gsm8k->mmlu"][1] == (bench == "mmlu")).all()


def test_crossval_summary_rewards_a_router_that_knows_the_labels(layout):
    data = load_protocol_data(layout)
    splits = protocol_splits(data)
    knowing = (data.strong_quality - data.weak_quality).astype(float)
    summary = crossval_summary(data, splits, {"knows": {name: knowing for name in splits}})
    assert set(summary) == {"knows", *BASELINES}
    assert summary["knows"]["mmlu->gsm8k"] > summary["random"]["mmlu->gsm8k"]
    assert len(summary["knows"]["mmlu"]["folds"]) == 5


def test_teacher_and_student_recipes_run_per_split(layout, encoder_dir, tmp_path, bert_bundle, static_bundle):
    data = load_protocol_data(layout)
    splits = {k: v for k, v in protocol_splits(data).items() if k in ("fold0", "mmlu->gsm8k")}
    recipe = TeacherRecipe(trainable_layers=1, epochs=0.5, max_length=16)
    teacher = teacher_scores(data, splits, encoder_dir, recipe, tmp_path)
    assert set(teacher) == set(splits) and all(((0 <= r) & (r <= 1)).all() for r in teacher.values())
    cached = teacher_scores(data, splits, encoder_dir, recipe, tmp_path)  # second call reads the cache
    np.testing.assert_array_equal(cached["fold0"], teacher["fold0"])
    router = Router.load(static_bundle)
    features = student_features(router.embed(data.prompts), data.prompts)
    small = StudentRecipe(hidden=4, epochs=2)
    distilled = distilled_scores(features, splits, teacher, small, (0.0, 2.0))
    tuned = distilled_scores(
        features,
        splits,
        teacher,
        replace(small, table_learning_rate=0.05),
        (0.0,),
        None,
        TokenRows.of(router, data.prompts),
        router.scorer.embedder.table,
    )
    for scores in (distilled[0.0], distilled[2.0], tuned[0.0], label_scores(features, splits, data, small)):
        assert set(scores) == set(splits) and all(np.isfinite(s).all() for s in scores.values())
    train, logits = splits["fold0"][0], np.log(teacher["fold0"] / (1.0 - teacher["fold0"]))
    tokens, table = TokenRows.of(router, data.prompts), router.scorer.embedder.table
    *_, split_features = _fit_split_student(features, train, logits, replace(small, table_learning_rate=0.05), tokens, table)
    assert not np.allclose(split_features[:, :-1], features[:, :-1])  # every row is scored through the split's tuned table
    np.testing.assert_array_equal(split_features[:, -1], features[:, -1])  # and the same length feature
    assert set(np.unique(golden_labels(data))) <= {0, 1, 2}


def test_manifests_carry_no_machine_paths(distilled):
    text = (distilled[1] / "manifest.json").read_text()
    assert str(distilled[0].parent) not in text and json.loads(text)["source"]["checkpoint"] == "ckpt"


def test_distilled_bundle_keeps_its_tables_provenance(distilled, static_bundle):
    source = json.loads((static_bundle / "manifest.json").read_text())["embedder"]["model"]
    assert json.loads((distilled[1] / "manifest.json").read_text())["embedder"]["model"] == source
    report = json.loads((distilled[0] / "training.json").read_text())
    assert report["recipe"]["hidden"] == 64
    assert report["prompts"]["written"] == {"count": 3, "file": "written.txt"}  # the file's name only, no machine path


def test_token_rows_reproduce_the_runtime_static_embeddings(static_bundle):
    router = Router.load(static_bundle)
    prompts = [*PROMPTS, "naïve café ünïcode", "a" * 20000, "a lone surrogate \ud800 is replaced, as Router does"]
    table = np.asarray(router.scorer.embedder.table)
    np.testing.assert_allclose(embed_rows(table, TokenRows.of(router, prompts)), router.embed(prompts), atol=1e-6)


def test_tuned_table_moves_only_the_rows_of_seen_tokens_and_exports_with_parity(layout, bert_bundle, static_bundle, tmp_path):
    args = _distill_args(layout, bert_bundle, static_bundle, tmp_path / "ckpt", tune_table=0.05, epochs=2)
    report = distill_command(args)
    source = Router.load(static_bundle)
    before = np.asarray(source.scorer.embedder.table, dtype=np.float16)
    after = np.load(tmp_path / "ckpt" / "static_embeddings.npy")
    moved = np.flatnonzero((after != before).any(axis=1))
    seen = np.unique(np.concatenate(TokenRows.of(source, load_protocol_data(layout).prompts).ids))
    assert len(moved) > 0 and set(moved) <= set(seen)
    assert report["recipe"]["table_learning_rate"] == 0.05 and report["recipe"]["epochs"] == 2
    assert report["static_model"].endswith(f"rows tuned with the head to {Router.load(bert_bundle).name}")
    export_distilled(tmp_path / "ckpt", ExportOptions(out=tmp_path / "bundle"))
    bundle = tmp_path / "bundle"
    router = Router.load(bundle)
    np.testing.assert_allclose(
        router.strong_win_rates(PROMPTS), reference_win_rates(tmp_path / "ckpt", PROMPTS, static_embedder(bundle)), atol=1e-5
    )


def test_table_tuning_without_tokens_is_refused():
    message = (
        "table_learning_rate > 0 needs the prompts' tokens and the static table: pass tokens=TokenRows.of(router, prompts) "
        "and table=router.scorer.embedder.table"
    )
    with pytest.raises(InvalidInputError) as caught:
        fit_distilled(np.zeros((4, 3), np.float32), np.full(4, 0.5), StudentRecipe(table_learning_rate=0.1))
    assert str(caught.value) == message


def test_table_tuning_refuses_a_flat_teacher_and_a_table_tuned_before(static_bundle, tmp_path):
    tokens = TokenRows((np.array([1, 2]), np.array([3])))
    with pytest.raises(InvalidInputError) as caught:
        fit_tuned_student(tokens, np.ones(2), np.full(2, 0.7), np.zeros((5, 4)), StudentRecipe(table_learning_rate=0.1))
    assert str(caught.value) == (
        "table tuning needs a positive learning rate (got 0.1) and teacher scores that differ (their spread is 0); "
        "pass --tune-table > 0 and a teacher that tells prompts apart"
    )
    manifest = json.loads((static_bundle / "manifest.json").read_text())
    manifest.setdefault("source", {}).setdefault("training", {})["recipe"] = {"table_learning_rate": 3e-4}
    tuned = tmp_path / "tuned"
    shutil.copytree(static_bundle, tuned)
    (tuned / "manifest.json").write_text(json.dumps(manifest))
    assert frozen_static_router(str(static_bundle)).name
    with pytest.raises(
        CheckpointError, match=r"its static table was tuned to a teacher on the shared prompts \(table_learning_rate 0.0003\)"
    ):
        frozen_static_router(str(tuned))
