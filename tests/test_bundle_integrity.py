"""Loading fails fast, in load, with a typed error naming the file and the fix."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edgeroute.runtime import (
    BundleCorruptError,
    BundleFileMissingError,
    BundleIntegrityError,
    BundleNotFoundError,
    ManifestError,
    Router,
    UnsupportedSchemaError,
)
from edgeroute.runtime.manifest import sha256_of


def _edit_manifest(bundle, change):
    path = bundle / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_missing_graph_file(bundle_copy):
    (bundle_copy / "classifier.int8.onnx").unlink()
    with pytest.raises(BundleFileMissingError) as caught:
        Router.load(bundle_copy)
    assert str(caught.value) == (
        f"{bundle_copy / 'classifier.int8.onnx'}: listed in {bundle_copy / 'manifest.json'} but missing; "
        "copy the complete bundle folder again or re-export it"
    )


def test_modified_file_fails_hash_check(bundle_copy):
    with open(bundle_copy / "tokenizer.json", "a") as handle:
        handle.write(" ")
    with pytest.raises(BundleIntegrityError, match=r"tokenizer.json: sha256 .* does not match the manifest's"):
        Router.load(bundle_copy)


def test_missing_manifest(tmp_path):
    with pytest.raises(BundleFileMissingError, match="no manifest"):
        Router.load(tmp_path)


def test_manifest_not_json(bundle_copy):
    (bundle_copy / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="manifest.json: not valid JSON"):
        Router.load(bundle_copy)


def test_newer_schema_is_refused(bundle_copy):
    _edit_manifest(bundle_copy, lambda d: d.update(schema_version=99))
    with pytest.raises(UnsupportedSchemaError) as caught:
        Router.load(bundle_copy)
    assert str(caught.value).endswith(
        "schema_version 99 is newer than this runtime supports (1); upgrade edgeroute: in your clone, git pull && pip install ."
    )


@pytest.mark.parametrize("bad_name", ["../outside.onnx", "/etc/passwd", "sub/dir.onnx", ".hidden"])
def test_manifest_file_names_cannot_leave_the_bundle(bundle_copy, bad_name):
    def change(data):
        data["files"][bad_name] = {"sha256": "0" * 64}
        data["classifier"]["graphs"]["int8"] = bad_name

    _edit_manifest(bundle_copy, change)
    with pytest.raises(ManifestError, match="is not a plain file name inside the bundle folder"):
        Router.load(bundle_copy)


@pytest.mark.parametrize("name", ["../models", "../runtime", "nope", "a/../../b", "models/../runtime"])
def test_router_names_cannot_climb_out_of_models(name, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # so that relative names are not existing folders here
    with pytest.raises(BundleNotFoundError, match="no bundle folder at this path and no shipped router"):
        Router.load(name)


def test_unknown_kind(bundle_copy):
    _edit_manifest(bundle_copy, lambda d: d.update(kind="gpt"))
    with pytest.raises(ManifestError, match="'kind' must be one of"):
        Router.load(bundle_copy)


def test_graph_with_unexpected_inputs_is_rejected(bundle_copy, mf_bundle):
    # Put the MF embedder graph where the classifier should be, with a matching hash.
    shutil.copyfile(mf_bundle / "embedder.int8.onnx", bundle_copy / "classifier.int8.onnx")
    _edit_manifest(bundle_copy, lambda d: d["files"]["classifier.int8.onnx"].update(
        sha256=sha256_of(bundle_copy / "classifier.int8.onnx")))
    with pytest.raises(BundleCorruptError, match="differ from the manifest's"):
        Router.load(bundle_copy)


def test_garbage_graph_is_corrupt_not_a_crash(bundle_copy):
    (bundle_copy / "classifier.int8.onnx").write_bytes(b"not an onnx graph")
    _edit_manifest(bundle_copy, lambda d: d["files"]["classifier.int8.onnx"].update(
        sha256=sha256_of(bundle_copy / "classifier.int8.onnx")))
    with pytest.raises(BundleCorruptError, match="onnxruntime cannot load this graph"):
        Router.load(bundle_copy)


def test_pickled_head_is_never_unpickled(tmp_path, mf_bundle):
    bundle = tmp_path / "mf"
    shutil.copytree(mf_bundle, bundle)
    np.save(bundle / "head.npy", np.array([{"payload": 1}], dtype=object), allow_pickle=True)
    _edit_manifest(bundle, lambda d: d["files"]["head.npy"].update(sha256=sha256_of(bundle / "head.npy")))
    with pytest.raises(BundleCorruptError, match="not a plain numpy array file"):
        Router.load(bundle)
