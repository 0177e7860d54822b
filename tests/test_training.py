"""Training on both data forms writes RouteLLM-format checkpoints that export and route."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeroute.export import ExportOptions, export_bert, export_mf, load_battles, train_bert, train_mf
from edgeroute.export.training.data import LABEL_STRONG_WINS, LABEL_TIE, LABEL_WEAK_WINS
from edgeroute.runtime import InvalidInputError, Router
from edgeroute.runtime.cli import main
from layout import STRONG, WEAK, make_layout


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    return make_layout(tmp_path_factory.mktemp("train_layout"), per_domain=20)


def test_correctness_tables_become_golden_battles(layout):
    battles = load_battles(layout)
    indices, labels = battles.pair_labels(STRONG, WEAK)
    assert len(indices) == len(battles)
    # A "prove" question: strong right, weak wrong -> strong wins.
    row = battles.prompts.index("algebra question 0: prove this difficult theorem rigorously")
    assert labels[list(indices).index(row)] == LABEL_STRONG_WINS
    assert set(np.unique(labels)) <= {LABEL_STRONG_WINS, LABEL_TIE, LABEL_WEAK_WINS}
    assert set(battles.split[np.array([p.startswith("algebra") for p in battles.prompts])]) == {"test"}


def test_arena_jsonl_and_its_errors(tmp_path):
    path = tmp_path / "arena.jsonl"
    rows = [
        {"prompt": f"q{i}", "model_a": "a", "model_b": "b", "winner": w}
        for i, w in enumerate(["model_a", "model_b", "tie", "tie (bothbad)"])
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    battles = load_battles(path)
    _, labels = battles.pair_labels("b", "a")
    assert list(labels) == [LABEL_WEAK_WINS, LABEL_STRONG_WINS, LABEL_TIE, LABEL_TIE]
    path.write_text(json.dumps({"prompt": "x", "model_a": "a", "model_b": "b", "winner": "draw"}))
    with pytest.raises(InvalidInputError, match="arena.jsonl:1: needs prompt, model_a, model_b and winner"):
        load_battles(path)


def test_train_bert_then_export_and_route(layout, encoder_dir, tmp_path):
    battles = load_battles(layout)
    report = train_bert(
        battles, tmp_path / "ckpt", STRONG, WEAK, encoder=encoder_dir, epochs=1, batch_size=16, learning_rate=1e-3, max_length=64
    )
    assert report.n_train > 0 and report.history and "val_apgr" in report.best
    recipe = json.loads((tmp_path / "ckpt" / "training.json").read_text())["recipe"]
    assert recipe["epochs"] == 1
    assert recipe["encoder"] == encoder_dir.name  # the folder's name: the manifest copies it, and carries no machine paths
    manifest = export_bert(
        tmp_path / "ckpt", ExportOptions(out=tmp_path / "bundle", precisions=("int8",), int8_min_share_agreement=0.0)
    )  # tiny model, near-tied
    router = Router.load(manifest.parent)
    assert router.manifest.max_length == 64
    assert 0 <= router.strong_win_rate("prove this difficult theorem") <= 1


def test_train_mf_on_many_models_then_export(tmp_path, encoder_dir):
    rng = np.random.default_rng(0)
    models = ["big", "medium", "small"]
    rows = []
    for i in range(120):
        a, b = rng.choice(models, 2, replace=False)
        hard = i % 2 == 0
        better = min((a, b), key=models.index) if hard else max((a, b), key=models.index)
        rows.append(
            {
                "prompt": f"{'integrate this hard function' if hard else 'say hi'} #{i}",
                "model_a": a,
                "model_b": b,
                "winner": "model_a" if better == a else "model_b",
            }
        )
    (tmp_path / "arena.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert (
        main(
            [
                "train",
                "mf",
                "--data",
                str(tmp_path / "arena.jsonl"),
                "--out",
                str(tmp_path / "ckpt"),
                "--strong-model",
                "big",
                "--weak-model",
                "small",
                "--encoder",
                str(encoder_dir),
                "--epochs",
                "30",
                "--dim",
                "8",
                "--learning-rate",
                "0.01",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "ckpt" / "model_ids.json").read_text()) == {"big": 0, "medium": 1, "small": 2}
    manifest = export_mf(
        tmp_path / "ckpt",
        ExportOptions(out=tmp_path / "bundle", precisions=("fp32",), strong_name="big", weak_name="small"),
        str(encoder_dir),
    )
    assert json.loads(manifest.read_text())["source"]["training"]["recipe"]["encoder"] == encoder_dir.name  # no machine path
    router = Router.load(manifest.parent)
    hard, easy = router.strong_win_rates(["integrate this hard function #500", "say hi #501"])
    assert hard > easy  # learned: the strong model wins the hard prompts
    # N targets from the same preference log: a score for every model, the pair's win rate their difference.
    scores = router.model_scores(["integrate this hard function #500", "say hi #501"], router.model_rows(models))
    assert scores.shape == (2, 3) and np.allclose(1 / (1 + np.exp(-(scores[:, 0] - scores[:, 2]))), [hard, easy], atol=1e-5)


def test_train_needs_the_pair_in_the_data(layout, encoder_dir, tmp_path):
    with pytest.raises(InvalidInputError, match="no battles between"):
        train_bert(load_battles(layout), tmp_path / "x", "gpt-5", WEAK, encoder=encoder_dir)
    with pytest.raises(InvalidInputError, match="does not appear in the training battles"):
        train_mf(load_battles(layout), tmp_path / "y", "gpt-5", WEAK, encoder=encoder_dir, embeddings=np.zeros((1, 1)))
