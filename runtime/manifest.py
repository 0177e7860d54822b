"""The bundle manifest: one JSON file that makes a router bundle self-describing.

A bundle is one folder::

    manifest.json        this description (not hashed: it holds the hashes)
    *.onnx               graphs, one per precision (fp32, int8, fp16)
    tokenizer.json       a Hugging Face `tokenizers` file
    head.npy             MF routers only: the folded scoring matrix

The manifest's keys are documented in README.md ("Bundle format"). Everything that gives
the numbers meaning (which output, which labels, which model names, which thresholds)
lives here rather than in code.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import (
    BundleFileMissingError,
    BundleIntegrityError,
    ManifestError,
    UnsupportedSchemaError,
)

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1
ROUTER_KINDS = ("bert", "mf")
PRECISIONS = ("fp32", "int8", "fp16")
# Bundle file names are plain names inside the bundle folder: no separators, no "..".
_SAFE_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# Real manifests are a few kilobytes; a megabyte is room for long calibration tables and model lists.
MAX_MANIFEST_BYTES = 1 << 20
# No text encoder that a router can use attends over more tokens; BERT-family graphs stop at 512.
MAX_TOKENS = 8192
MAX_EMBEDDING_DIM = 65536
ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def sha256_of(path: Path) -> str:
    """Return the hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Manifest:
    """A validated manifest and the folder it describes."""

    folder: Path
    data: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.data["kind"]

    @property
    def name(self) -> str:
        return self.data["name"]

    @property
    def max_length(self) -> int | None:
        """Token limit of the local tokenizer; None for routers that embed remotely."""
        tokenizer = self.data.get("tokenizer")
        value = tokenizer.get("max_length") if isinstance(tokenizer, dict) else None
        # Validated for local encoders; a remote embedder's manifest may carry anything here.
        return value if isinstance(value, int) and not isinstance(value, bool) and 2 < value <= MAX_TOKENS else None

    @property
    def encoder(self) -> dict[str, Any]:
        """The ONNX text encoder section: the classifier (bert) or the embedder (mf)."""
        return self.data["classifier"] if self.kind == "bert" else self.data["embedder"]

    @property
    def precisions(self) -> list[str]:
        return sorted(self.encoder.get("graphs", {}))

    @property
    def calibration(self) -> dict[str, Any] | None:
        return self.data.get("calibration")

    def path_of(self, file_name: str) -> Path:
        """Path of a bundle file, checked to exist inside the bundle folder (links leaving it are refused)."""
        path = self.folder / file_name
        if path.is_symlink() and not Path(os.path.realpath(path)).is_relative_to(os.path.realpath(self.folder)):
            raise BundleIntegrityError(
                f"{path}: a link that leads out of the bundle folder (to {os.path.realpath(path)}); "
                "bundle files are read only inside their folder: replace the link by the file itself"
            )
        if not path.is_file():
            raise BundleFileMissingError(
                f"{path}: listed in {self.folder / MANIFEST_NAME} but missing; "
                "copy the complete bundle folder again or re-export it"
            )
        return path

    def verify(self, file_name: str) -> Path:
        """Return the path of ``file_name`` after checking its sha256 against the manifest."""
        path = self.path_of(file_name)
        expected = self.data["files"][file_name]["sha256"]
        actual = sha256_of(path)
        if actual != expected:
            raise BundleIntegrityError(
                f"{path}: sha256 {actual[:12]}… does not match the manifest's {expected[:12]}…; "
                "the file was modified or damaged: restore it from the original bundle or re-export"
            )
        return path


def _require(condition: bool, manifest_path: Path, problem: str) -> None:
    if not condition:
        raise ManifestError(f"{manifest_path}: {problem}; re-export the bundle with `edgeroute export`")


def _check_file_name(name: Any, manifest_path: Path, files: dict[str, Any]) -> None:
    _require(
        isinstance(name, str) and bool(_SAFE_FILE_NAME.match(name)),
        manifest_path,
        f"file name {name!r} is not a plain file name inside the bundle folder",
    )
    _require(name in files, manifest_path, f"file {name!r} has no entry in 'files'")


def _validate(data: Any, manifest_path: Path) -> None:
    _require(isinstance(data, dict), manifest_path, "top level is not a JSON object")
    version = data.get("schema_version")
    _require(isinstance(version, int), manifest_path, "'schema_version' is missing or not an integer")
    if version > SCHEMA_VERSION:
        raise UnsupportedSchemaError(
            f"{manifest_path}: schema_version {version} is newer than this runtime supports "
            f"({SCHEMA_VERSION}); upgrade edgeroute: in your clone, git pull && pip install ."
        )
    kind = data.get("kind")
    _require(kind in ROUTER_KINDS, manifest_path, f"'kind' must be one of {ROUTER_KINDS}, got {kind!r}")
    _require(isinstance(data.get("name"), str), manifest_path, "'name' is missing")
    files = data.get("files")
    _require(isinstance(files, dict) and bool(files), manifest_path, "'files' is missing or empty")
    for file_name, entry in files.items():
        _check_file_name(file_name, manifest_path, files)
        _require(
            isinstance(entry, dict) and isinstance(entry.get("sha256"), str),
            manifest_path,
            f"'files.{file_name}' has no sha256",
        )
    section = "classifier" if kind == "bert" else "embedder"
    encoder = data.get(section)
    _require(isinstance(encoder, dict), manifest_path, f"'{section}' is missing")
    if kind == "bert" or encoder.get("kind") in ("onnx", "static"):
        _validate_tokenizer(data, manifest_path, files)  # a remote embedder (kind 'openai') has none
    if kind == "bert" or encoder.get("kind") == "onnx":
        _validate_graphs(encoder, section, manifest_path, files)
    if kind == "bert":
        _validate_bert(data, encoder, manifest_path)
    else:
        _validate_mf(data, encoder, manifest_path, files)
    _validate_calibration(data.get("calibration"), manifest_path)
    quantization = data.get("quantization")
    _require(
        quantization is None or (isinstance(quantization, dict) and all(isinstance(v, dict) for v in quantization.values())),
        manifest_path,
        "'quantization' must map each precision to an object of settings",
    )


def _validate_tokenizer(data: dict[str, Any], manifest_path: Path, files: dict[str, Any]) -> None:
    tokenizer = data.get("tokenizer")
    _require(isinstance(tokenizer, dict), manifest_path, "'tokenizer' is missing")
    _check_file_name(tokenizer.get("file"), manifest_path, files)
    max_length = tokenizer.get("max_length")
    _require(
        isinstance(max_length, int) and not isinstance(max_length, bool) and 2 < max_length <= MAX_TOKENS,
        manifest_path,
        f"'tokenizer.max_length' must be an integer in [3, {MAX_TOKENS}]",
    )


def _validate_graphs(encoder: dict[str, Any], section: str, manifest_path: Path, files: dict[str, Any]) -> None:
    graphs = encoder.get("graphs")
    _require(isinstance(graphs, dict) and bool(graphs), manifest_path, f"'{section}.graphs' is missing or empty")
    for precision, graph_file in graphs.items():
        _require(precision in PRECISIONS, manifest_path, f"unknown precision {precision!r}")
        _check_file_name(graph_file, manifest_path, files)
    inputs = encoder.get("inputs")
    _require(
        isinstance(inputs, list) and bool(inputs) and all(isinstance(i, str) and i in ENCODER_INPUTS for i in inputs),
        manifest_path,
        f"'{section}.inputs' must list graph inputs among {ENCODER_INPUTS}",
    )
    _require(isinstance(encoder.get("output"), str), manifest_path, f"'{section}.output' is missing")


def _validate_bert(data: dict[str, Any], encoder: dict[str, Any], manifest_path: Path) -> None:
    win_rate = encoder.get("win_rate")
    labels = win_rate.get("labels") if isinstance(win_rate, dict) else None
    _require(
        isinstance(win_rate, dict) and win_rate.get("kind") == "softmax_complement" and isinstance(labels, list)
        and bool(labels) and all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 1024 for x in labels),
        manifest_path,
        "'classifier.win_rate' must be {'kind': 'softmax_complement', 'labels': [...]} with labels "
        "non-negative integers (output indices)",
    )
    models = data.get("models")
    _require(
        models is None or (isinstance(models, dict) and all(
            isinstance(models.get(role), (str, type(None))) for role in ("strong", "weak"))),
        manifest_path,
        "'models' must be {'strong': NAME, 'weak': NAME}",
    )


def _validate_mf(data: dict[str, Any], encoder: dict[str, Any], manifest_path: Path, files: dict[str, Any]) -> None:
    _require(
        encoder.get("kind") in ("onnx", "openai", "static"),
        manifest_path,
        "'embedder.kind' must be 'onnx', 'openai' or 'static'",
    )
    if encoder.get("kind") == "static":
        _check_file_name(encoder.get("file"), manifest_path, files)
    if encoder.get("kind") == "openai":
        _require(isinstance(encoder.get("model"), str), manifest_path, "'embedder.model' must name the embeddings model")
    dim = encoder.get("dim")
    _require(
        isinstance(dim, int) and not isinstance(dim, bool) and 0 < dim <= MAX_EMBEDDING_DIM,
        manifest_path,
        f"'embedder.dim' must be an integer in [1, {MAX_EMBEDDING_DIM}]",
    )
    head = data.get("head")
    _require(isinstance(head, dict), manifest_path, "'head' is missing")
    _check_file_name(head.get("file"), manifest_path, files)
    names = head.get("model_names")
    _require(
        isinstance(names, list) and len(names) >= 2 and all(isinstance(n, str) for n in names),
        manifest_path,
        "'head.model_names' must list at least two model names",
    )
    win_rate = head.get("win_rate")
    if head.get("kind") == "mlp":  # a distilled student (runtime/heads.py)
        _check_file_name(head.get("output_file"), manifest_path, files)
        _require(
            isinstance(win_rate, dict) and win_rate.get("kind") == "sigmoid_mlp",
            manifest_path,
            "'head.win_rate' of an MLP head must be {'kind': 'sigmoid_mlp'}",
        )
        return
    _require(
        isinstance(win_rate, dict) and win_rate.get("kind") == "sigmoid_difference",
        manifest_path,
        "'head.win_rate' must be {'kind': 'sigmoid_difference'}",
    )


def _validate_calibration(calibration: Any, manifest_path: Path) -> None:
    if calibration is None:
        return
    _require(isinstance(calibration, dict), manifest_path, "'calibration' must be an object (or absent)")
    table = calibration.get("thresholds")
    if table is None:
        return
    _require(isinstance(table, dict), manifest_path, "'calibration.thresholds' must map strong shares to thresholds")
    for share, threshold in table.items():
        _require(
            _is_unit_number(share) and not isinstance(threshold, str) and _is_unit_number(threshold),
            manifest_path,
            f"'calibration.thresholds' entry {str(share)[:40]!r}: {str(threshold)[:40]!r} is not a share in [0, 1] "
            "mapped to a threshold in [0, 1]; run `edgeroute calibrate --write` again",
        )


def _is_unit_number(value: Any) -> bool:
    """True for a number in [0, 1], or a string spelling one (JSON object keys are strings)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return False
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return False
    return 0.0 <= number <= 1.0


def read_manifest(folder: Path) -> Manifest:
    """Read and validate ``folder/manifest.json``; raise a ``BundleError`` subclass if unusable."""
    manifest_path = folder / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleFileMissingError(
            f"{manifest_path}: no manifest; a bundle folder needs the manifest.json written by `edgeroute export`"
        )
    size = manifest_path.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise ManifestError(
            f"{manifest_path}: {size} bytes, over the {MAX_MANIFEST_BYTES}-byte limit for a manifest; "
            "restore it from the original bundle or re-export"
        )
    try:
        data = json.loads(manifest_path.read_bytes()[: MAX_MANIFEST_BYTES + 1].decode("utf-8"))
    except RecursionError:
        raise ManifestError(
            f"{manifest_path}: nested too deeply to be a manifest; restore it from the original bundle or re-export"
        ) from None
    except (UnicodeDecodeError, ValueError) as exc:  # ValueError: JSONDecodeError, or an int of 5,000 digits
        raise ManifestError(
            f"{manifest_path}: not valid JSON ({str(exc)[:200]}); restore it from the original bundle or re-export"
        ) from exc
    _validate(data, manifest_path)
    return Manifest(folder=folder, data=data)


def write_manifest(folder: Path, data: dict[str, Any], rehash: bool = True) -> Path:
    """Write ``data`` as the bundle's manifest.

    ``rehash`` refreshes the sha256 of every listed file (the exporter's job); calibration
    keeps the recorded hashes, so that it can never bless a file modified after export.
    """
    for file_name, entry in data["files"].items() if rehash else ():
        path = folder / file_name
        entry["sha256"] = sha256_of(path)
        entry["bytes"] = path.stat().st_size
    manifest_path = folder / MANIFEST_NAME
    manifest_path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    _validate(data, manifest_path)
    return manifest_path
