"""The typed manifest (runtime/scoring/manifest.py): one parse validates everything at load, sections are
frozen dataclasses, reading and writing again gives the same bytes, writes are validated then atomic;
and the runtime loads onnxruntime only for bundles with an ONNX graph."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgeroute.runtime import ManifestError, read_manifest
from edgeroute.runtime.scoring.manifest import (
    ClassifierSpec,
    HeadSpec,
    StaticEmbedderSpec,
    parse_manifest,
    write_manifest,
)
from edgeroute.runtime.scoring.router import models_dir, shipped_routers
from edgeroute.runtime.scoring.scorers import ClassifierScorer, MFScorer, MLPScorer, scorer_for

pytestmark = pytest.mark.runtime_only
STATIC = "static-distilled-gpt4-mixtral"
# A BERT-kind manifest (the classifier bundle shipped before the probe tier): no BERT bundle ships now.
BERT_MANIFEST = Path(__file__).parent / "bert_manifest.json"


@pytest.mark.parametrize("name", shipped_routers())
def test_shipped_manifest_round_trips_byte_for_byte(name):
    path = models_dir() / name / "manifest.json"
    manifest = read_manifest(path.parent)
    assert json.dumps(manifest.to_dict(), indent=2) + "\n" == path.read_text(encoding="utf-8")
    assert manifest.data == json.loads(path.read_text(encoding="utf-8"))


def test_sections_are_typed_and_frozen():
    manifest = read_manifest(models_dir() / STATIC)
    assert isinstance(manifest.encoder, StaticEmbedderSpec) and manifest.encoder.dim == 256
    assert isinstance(manifest.head, HeadSpec) and manifest.head.kind == "mlp"
    assert manifest.head.output_file == "head_out.npy" and manifest.tokenizer is not None
    assert len(manifest.files[manifest.head.file].sha256) == 64
    assert manifest.calibration is not None and manifest.calibration.points()[0][0] == 0.1
    assert manifest.encoder.get("pooling").startswith("mean")  # unmodelled keys ride along
    with pytest.raises(dataclasses.FrozenInstanceError):
        manifest.name = "other"  # type: ignore[misc]
    assert scorer_for(manifest) == MLPScorer.build


def test_scorer_class_follows_the_bundle_kind():
    bert = parse_manifest(json.loads(BERT_MANIFEST.read_text(encoding="utf-8")), BERT_MANIFEST)
    assert isinstance(bert.encoder, ClassifierSpec) and scorer_for(bert) == ClassifierScorer.build
    data = read_manifest(models_dir() / STATIC).to_dict()
    del data["head"]["kind"], data["head"]["output_file"]
    data["head"]["win_rate"] = {"kind": "sigmoid_difference"}
    assert scorer_for(parse_manifest(data, Path("manifest.json"))) == MFScorer.build


def _static_data() -> dict:
    return json.loads((models_dir() / STATIC / "manifest.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda d: d["head"].update(kind="linear"), "'head.kind' must be 'mlp'"),
        (lambda d: d["embedder"].update(kind="word2vec"), "'embedder.kind' must be 'onnx', 'openai' or 'static'"),
        (lambda d: d.update(aliases=["gpt-4"]), "'aliases' must map other spellings"),
        (lambda d: d["head"].update(aliases={"gpt4": 4}), "'head.aliases' must map other spellings"),
        (lambda d: d["head"].update(default_strong=7), "'head.default_strong' must be a string"),
        (lambda d: d["files"]["head.npy"].update(bytes=-1), "'files.head.npy.bytes' must be a non-negative integer"),
        (lambda d: d.update(parity={"precisions": {"static": {"tolerance": "small"}}}), "'parity.precisions.static.tolerance'"),
        (lambda d: d.update(source="a checkpoint"), "'source' must be an object"),
        (lambda d: d["calibration"].update(precision=8), "'calibration.precision' must be a string"),
        (lambda d: d.update(quantization={"int8": {"method": 1}}), "'quantization.int8.method' must be a string"),
    ],
)
def test_off_schema_values_are_manifest_errors_at_parse(change, fragment):
    data = _static_data()
    change(data)
    with pytest.raises(ManifestError) as caught:
        parse_manifest(data, Path("/bundle/manifest.json"))
    assert fragment in str(caught.value) and str(caught.value).startswith("/bundle/manifest.json: ")
    assert str(caught.value).endswith("re-export the bundle with `edgeroute export`")


def test_malformed_golden_precisions_is_a_manifest_error_not_an_attribute_error():
    data = _static_data()
    data["golden"]["precisions"] = ["static"]
    manifest = parse_manifest(data, Path("/bundle/manifest.json"))  # loads: golden is read by verify only
    with pytest.raises(ManifestError, match="'golden' must hold non-empty 'prompts'"):
        manifest.golden_scores("static")


@pytest.fixture
def manifest_only(tmp_path):
    """A folder holding the static router's manifest alone (enough for rehash=False writes)."""
    (tmp_path / "manifest.json").write_bytes((models_dir() / STATIC / "manifest.json").read_bytes())
    return tmp_path


def test_write_validates_before_writing(manifest_only):
    before = (manifest_only / "manifest.json").read_bytes()
    data = _static_data()
    data["calibration"]["thresholds"] = {"0.5": "high"}
    with pytest.raises(ManifestError, match="'calibration.thresholds' entry '0.5'"):
        write_manifest(manifest_only, data, rehash=False)
    assert (manifest_only / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in manifest_only.iterdir()) == ["manifest.json"]


def test_write_is_atomic_and_keeps_bytes(manifest_only, monkeypatch):
    path = manifest_only / "manifest.json"
    before = path.read_bytes()
    os.chmod(path, 0o640)
    write_manifest(manifest_only, read_manifest(manifest_only), rehash=False)  # a typed manifest writes too
    assert path.read_bytes() == before and path.stat().st_mode & 0o777 == 0o640

    def crash(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    data = _static_data()
    data["name"] = "renamed"
    with pytest.raises(OSError, match="disk full"):
        write_manifest(manifest_only, data, rehash=False)
    assert path.read_bytes() == before  # the old manifest stays whole
    assert sorted(p.name for p in manifest_only.iterdir()) == ["manifest.json"]  # no temporary file left


def _modules_after(code: str) -> set[str]:
    script = textwrap.dedent(code) + "\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    return {name.split(".")[0] for name in json.loads(out.splitlines()[-1])}


@pytest.mark.parametrize(
    "code",
    [
        "import edgeroute.runtime.errors",
        "import edgeroute.runtime",
        f"from edgeroute.runtime import Router\nassert 0 <= Router.load({STATIC!r}).strong_win_rate('Prove Fermat.') <= 1",
    ],
)
def test_graph_free_paths_never_import_onnxruntime(code):
    loaded = _modules_after(code)
    assert not loaded & {"onnxruntime", "torch", "transformers", "optimum"}, sorted(loaded)


def test_random_edits_fail_at_parse_or_never():
    """Values of the wrong type anywhere: ManifestError at parse, or a manifest whose typed reads all work."""
    import copy
    import random

    from edgeroute.runtime import EdgerouteError, UnsupportedSchemaError
    from edgeroute.runtime.scoring.scorers import mf_pair

    static = _static_data()
    folded = copy.deepcopy(static)
    del folded["head"]["kind"], folded["head"]["output_file"]
    folded["head"]["win_rate"] = {"kind": "sigmoid_difference"}
    remote = copy.deepcopy(folded)
    remote["embedder"] = {"kind": "openai", "model": "text-embedding-3-small", "dim": 256}
    bert = json.loads(BERT_MANIFEST.read_text(encoding="utf-8"))
    values = [None, True, 0, -1, 10**400, 1.5, float("nan"), "", "x", [], [1], ["a"], {}, {"a": 1}, "mlp", "static"]

    def locations(node, prefix=()):
        yield prefix
        children = node.items() if isinstance(node, dict) else enumerate(node[:3]) if isinstance(node, list) else ()
        for key, child in children:
            yield from locations(child, prefix + (key,))

    rng = random.Random(0)
    for _ in range(1500):
        data = copy.deepcopy(rng.choice([static, folded, remote, bert]))
        for _ in range(rng.randint(1, 3)):
            *parents, key = rng.choice([p for p in locations(data) if p])
            target = data
            for step in parents:
                target = target[step]
            target[key] = copy.deepcopy(rng.choice(values))
        try:
            manifest = parse_manifest(data, Path("/bundle/manifest.json"))
        except (ManifestError, UnsupportedSchemaError):
            continue
        json.dumps(manifest.to_dict())
        assert manifest.precisions is not None and scorer_for(manifest) is not None
        if manifest.calibration is not None:
            manifest.calibration.points()
        manifest.quantization_method("int8")
        for reading in (
            lambda: mf_pair(manifest, None, None) if manifest.kind == "mf" else None,
            lambda: manifest.golden_scores("static"),
            lambda: manifest.golden_scores("int8"),
        ):
            try:
                reading()
            except EdgerouteError:
                pass
