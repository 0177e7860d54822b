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
from edgeroute.runtime.scoring.manifest import sha256_of


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
    _edit_manifest(bundle_copy, lambda d: d["files"]["classifier.int8.onnx"].update(sha256=sha256_of(bundle_copy / "classifier.int8.onnx")))
    with pytest.raises(BundleCorruptError, match="differ from the manifest's"):
        Router.load(bundle_copy)


def test_garbage_graph_is_corrupt_not_a_crash(bundle_copy):
    (bundle_copy / "classifier.int8.onnx").write_bytes(b"not an onnx graph")
    _edit_manifest(bundle_copy, lambda d: d["files"]["classifier.int8.onnx"].update(sha256=sha256_of(bundle_copy / "classifier.int8.onnx")))
    with pytest.raises(BundleCorruptError, match="onnxruntime cannot load this graph"):
        Router.load(bundle_copy)


def test_pickled_head_is_never_unpickled(tmp_path, mf_bundle):
    bundle = tmp_path / "mf"
    shutil.copytree(mf_bundle, bundle)
    np.save(bundle / "head.npy", np.array([{"payload": 1}], dtype=object), allow_pickle=True)
    _edit_manifest(bundle, lambda d: d["files"]["head.npy"].update(sha256=sha256_of(bundle / "head.npy")))
    with pytest.raises(BundleCorruptError, match="not a plain numpy array file"):
        Router.load(bundle)


# --- issue 12: off-schema and tampered bundles fail at load with a typed error --------------


@pytest.fixture
def mf_copy(tmp_path, mf_bundle):
    target = tmp_path / "mf"
    shutil.copytree(mf_bundle, target)
    return target


def _rehash(bundle, name):
    _edit_manifest(bundle, lambda d: d["files"][name].update(sha256=sha256_of(bundle / name)))


def test_deeply_nested_manifest(bundle_copy):
    (bundle_copy / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ManifestError) as caught:
        Router.load(bundle_copy)
    assert str(caught.value) == (
        f"{bundle_copy / 'manifest.json'}: nested too deeply to be a manifest; restore it from the original bundle or re-export"
    )


def test_oversized_manifest(bundle_copy):
    _edit_manifest(bundle_copy, lambda d: d.update(padding="x" * (2 << 20)))
    with pytest.raises(ManifestError, match=r"over the 1048576-byte limit for a manifest"):
        Router.load(bundle_copy)


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda d: d["classifier"].update(win_rate=["softmax_complement"]), "'classifier.win_rate' must be"),
        (lambda d: d["classifier"].update(win_rate="softmax_complement"), "'classifier.win_rate' must be"),
        (lambda d: d["classifier"]["win_rate"].update(labels=["1"]), "'classifier.win_rate' must be"),
        (lambda d: d["classifier"]["win_rate"].update(labels=[7]), "'classifier.win_rate.labels' [7] do not fit"),
        (lambda d: d.update(models=["strong", "weak"]), "'models' must be {'strong': NAME, 'weak': NAME}"),
        (lambda d: d["tokenizer"].update(max_length=100_000), "'tokenizer.max_length' must be an integer in [3, 8192]"),
        (lambda d: d["tokenizer"].update(max_length=True), "'tokenizer.max_length' must be an integer in [3, 8192]"),
        (lambda d: d.update(calibration="yes"), "'calibration' must be an object (or absent)"),
        (lambda d: d.update(calibration={"thresholds": {"0.5": "high"}}), "'calibration.thresholds' entry '0.5': 'high'"),
        (lambda d: d.update(calibration={"thresholds": {"half": 0.5}}), "'calibration.thresholds' entry 'half'"),
        (lambda d: d.update(calibration={"thresholds": [0.5]}), "'calibration.thresholds' must map strong shares"),
        (lambda d: d["classifier"].update(inputs=["input_ids", "pixels"]), "'classifier.inputs' must list graph inputs"),
    ],
)
def test_off_schema_bert_manifest(bundle_copy, change, fragment):
    _edit_manifest(bundle_copy, change)
    with pytest.raises(ManifestError) as caught:
        Router.load(bundle_copy)
    assert fragment in str(caught.value) and str(caught.value).startswith(str(bundle_copy / "manifest.json"))


def test_max_length_past_the_graph_position_limit(bundle_copy):
    _edit_manifest(bundle_copy, lambda d: d["tokenizer"].update(max_length=4096))  # the tiny graph has 128 positions
    with pytest.raises(BundleCorruptError, match=r"the graph fails on 4096 tokens .* within the graph's position limit"):
        Router.load(bundle_copy)


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda d: d["head"].update(win_rate="sigmoid_difference"), "'head.win_rate' must be {'kind': 'sigmoid_difference'}"),
        (lambda d: d["head"].update(win_rate=None), "'head.win_rate' must be"),
        (lambda d: d["embedder"].update(dim=10**400), "'embedder.dim' must be an integer in [1, 65536]"),
        (lambda d: d["embedder"].update(dim=16), "'embedder.dim' is 16 but the graph outputs shape"),
    ],
)
def test_off_schema_mf_manifest(mf_copy, change, fragment):
    _edit_manifest(mf_copy, change)
    with pytest.raises(ManifestError) as caught:
        Router.load(mf_copy)
    assert fragment in str(caught.value)


def test_nan_head_is_refused(mf_copy):
    head = np.load(mf_copy / "head.npy")
    np.save(mf_copy / "head.npy", np.full_like(head, np.nan))
    _rehash(mf_copy, "head.npy")
    with pytest.raises(BundleCorruptError, match="head.npy: the array holds NaN or infinite values"):
        Router.load(mf_copy)


def test_npz_in_place_of_npy(mf_copy):
    head = np.load(mf_copy / "head.npy")
    with open(mf_copy / "head.npy", "wb") as handle:
        np.savez(handle, head=head)
    _rehash(mf_copy, "head.npy")
    with pytest.raises(BundleCorruptError, match="head.npy: not a plain numpy array file"):
        Router.load(mf_copy)


def test_npy_header_claiming_huge_shape_is_refused_before_allocating(mf_copy):
    head = np.load(mf_copy / "head.npy")
    path = mf_copy / "head.npy"
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "<f4", "fortran_order": False, "shape": (2**40, head.shape[1])})
        handle.write(b"\0" * 64)
    _rehash(mf_copy, "head.npy")
    with pytest.raises(BundleCorruptError, match=r"array has shape \(1099511627776, "):
        Router.load(mf_copy)


def test_npy_header_disagreeing_with_file_size(mf_copy):
    head = np.load(mf_copy / "head.npy")
    path = mf_copy / "head.npy"
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "<f4", "fortran_order": False, "shape": head.shape})
        handle.write(b"\0" * 8)
    _rehash(mf_copy, "head.npy")
    with pytest.raises(BundleCorruptError, match=r"the file holds 8 bytes of data"):
        Router.load(mf_copy)


def test_tokenizer_ids_past_the_static_table(tmp_path):
    from edgeroute.runtime import models_dir

    bundle = tmp_path / "static"
    shutil.copytree(models_dir() / "static-distilled-gpt4-mixtral", bundle)
    table = np.load(bundle / "static_embeddings.npy")
    np.save(bundle / "static_embeddings.npy", table[:1000])
    _rehash(bundle, "static_embeddings.npy")
    with pytest.raises(BundleCorruptError, match=r"tokenizer.json: token ids reach 30521, past the 1000 rows"):
        Router.load(bundle)


def test_tokenizer_ids_past_the_graph_embedding_table(bundle_copy):
    data = json.loads((bundle_copy / "tokenizer.json").read_text())
    data["added_tokens"].append(
        {"id": 10**6, "content": "[HUGE]", "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
    )
    (bundle_copy / "tokenizer.json").write_text(json.dumps(data))
    _rehash(bundle_copy, "tokenizer.json")
    with pytest.raises(BundleCorruptError, match=r"the graph fails on 128 tokens with ids up to 30522 .*input index out of range"):
        Router.load(bundle_copy)


def test_too_many_added_tokens(bundle_copy):
    data = json.loads((bundle_copy / "tokenizer.json").read_text())
    data["added_tokens"] += [
        {
            "id": 40_000 + i,
            "content": f"[T{i}]",
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for i in range(20_000)
    ]
    (bundle_copy / "tokenizer.json").write_text(json.dumps(data))
    _rehash(bundle_copy, "tokenizer.json")
    with pytest.raises(BundleCorruptError, match=r"tokenizer.json: 20005 added tokens, over the limit of 10000"):
        Router.load(bundle_copy)


def test_oversized_tokenizer_file(bundle_copy, monkeypatch):
    from edgeroute.runtime.scoring import encoders

    monkeypatch.setattr(encoders, "MAX_TOKENIZER_BYTES", 1000)
    with pytest.raises(BundleCorruptError, match=r"tokenizer.json: \d+ bytes, over the 1000-byte limit"):
        Router.load(bundle_copy)


@pytest.mark.parametrize("target", ["copy_outside", "/etc/passwd"])
def test_listed_file_linking_out_of_the_bundle_is_refused(bundle_copy, tmp_path, target):
    outside = tmp_path / "outside.json"
    shutil.copyfile(bundle_copy / "tokenizer.json", outside)
    (bundle_copy / "tokenizer.json").unlink()
    (bundle_copy / "tokenizer.json").symlink_to(outside if target == "copy_outside" else target)
    with pytest.raises(BundleIntegrityError, match=r"tokenizer.json: a link that leads out of the bundle folder"):
        Router.load(bundle_copy)


def test_link_inside_the_bundle_is_allowed(bundle_copy):
    (bundle_copy / "tokenizer.json").rename(bundle_copy / "tokenizer.real.json")
    (bundle_copy / "tokenizer.json").symlink_to(bundle_copy / "tokenizer.real.json")
    assert 0 <= Router.load(bundle_copy).strong_win_rate("hi") <= 1


def test_quantization_that_is_not_an_object_is_a_manifest_error(bundle_copy):
    """Found by the manifest fuzzer: `"quantization": true` reached the per-row check as a bool."""
    import json

    from edgeroute.runtime import ManifestError, Router

    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["quantization"] = True
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="'quantization' must map each precision to an object of settings"):
        Router.load(bundle_copy)


def test_graph_with_external_data_is_refused_not_read(bundle_copy, monkeypatch):
    onnx = pytest.importorskip("onnx")
    graph = bundle_copy / "classifier.int8.onnx"
    model = onnx.load(str(graph))
    onnx.save_model(model, str(graph), save_as_external_data=True, all_tensors_to_one_file=True, location="w.bin", size_threshold=0)
    _rehash(bundle_copy, "classifier.int8.onnx")
    monkeypatch.chdir(bundle_copy.parent)  # not the bundle folder: its w.bin is never resolved from here
    with pytest.raises(BundleCorruptError) as caught:
        Router.load(bundle_copy, precision="int8")
    assert str(caught.value) == (
        f"{graph}: the graph keeps weights in external-data files, which a bundle may not hold (they are not "
        "hash-checked); re-export it with the weights inside the graph"
    )
