"""The bundle manifest: one JSON file that makes a router bundle self-describing.

A bundle is one folder::

    manifest.json        this description (not hashed: it holds the hashes)
    *.onnx               graphs, one per precision (fp32, int8, fp16)
    tokenizer.json       a Hugging Face `tokenizers` file
    head.npy             MF routers only: the folded scoring matrix (head_out.npy too for MLP heads)

The manifest's keys are documented in README.md ("Bundle format"). Everything that gives
the numbers meaning (which output, which labels, which model names, which thresholds)
lives here rather than in code.

``read_manifest`` parses the JSON into frozen dataclasses, one per section, and validates it
in that one pass (``parse_manifest``): a value of the wrong type, out of range or of an unknown
kind raises ``ManifestError`` naming the manifest file and the fix, at load, so that scoring code
reads typed attributes and never meets a ``KeyError`` later. Keys a section does not model (the
human-readable ``formula``, ``storage``, ``created``, ...) ride along in its ``extra`` mapping, and
``to_dict`` writes every section back in its original key order: a manifest read and written
again is byte for byte the same file.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Union

from edgeroute.runtime.errors import (
    BundleFileMissingError,
    BundleIntegrityError,
    ManifestError,
    UnsupportedSchemaError,
)

from edgeroute.runtime.scoring.kinds import RouterKind, kind_names
from edgeroute.runtime.scoring.kinds import router_kind as router_kind_named
from edgeroute.runtime.scoring.layout import MANIFEST_NAME

SCHEMA_VERSION = 1
PRECISIONS = ("fp32", "int8", "fp16")
EMBEDDER_KINDS = ("onnx", "openai", "static")
# Bundle file names are plain names inside the bundle folder: no separators, no "..".
# Router and model names end up in HTTP headers (x-edgeroute-*) and in `router-NAME` model strings.
MAX_LABEL_CHARS = 200
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


# --------------------------------------------------------------------- sections
@dataclass(frozen=True, kw_only=True)
class Section:
    """Base of every manifest section: the keys it does not model, and the order of its keys on disk."""

    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)
    order: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def _fields(self) -> dict[str, Any]:
        """The modelled keys as JSON values (None: absent, unless the key was on disk)."""
        return {}

    def to_dict(self) -> dict[str, Any]:
        """The section as JSON data, keys in their original order (new keys after them)."""
        known = {key: _json(value) for key, value in self._fields().items() if value is not None or key in self.order}
        merged = {**known, **copy.deepcopy(dict(self.extra))}
        keys = [key for key in self.order if key in merged] + [key for key in merged if key not in self.order]
        return {key: merged[key] for key in keys}

    # Dict-style reads (of a fresh copy) for callers not yet moved to the typed attributes
    # (runtime/cli.py, scripts written against the dict manifest); new code reads the attributes.
    def get(self, key: str, default: Any = None) -> Any:
        """The JSON value of ``key`` in this section, or ``default``."""
        return self.to_dict().get(key, default)

    def __getitem__(self, key: str) -> Any:
        """The JSON value of ``key`` in this section; ``KeyError`` when absent."""
        return self.to_dict()[key]


@dataclass(frozen=True, kw_only=True)
class ModelPair(Section):
    """``models``: the strong and weak model a router predicts for (names as the exporter gave them)."""

    strong: str | None = None
    weak: str | None = None

    def _fields(self) -> dict[str, Any]:
        return {"strong": self.strong, "weak": self.weak}


@dataclass(frozen=True, kw_only=True)
class SourceInfo(Section):
    """``source``: what the bundle was exported from (descriptive; nothing scores with it)."""

    format: str | None = None
    checkpoint: str | None = None
    weights_sha256: str | None = None
    training: Mapping[str, Any] | None = None

    def _fields(self) -> dict[str, Any]:
        return {"format": self.format, "checkpoint": self.checkpoint, "weights_sha256": self.weights_sha256, "training": self.training}


@dataclass(frozen=True, kw_only=True)
class TokenizerSpec(Section):
    """``tokenizer``: the `tokenizers` file and the token limit (longer prompts keep their first tokens)."""

    file: str
    max_length: int

    def _fields(self) -> dict[str, Any]:
        return {"file": self.file, "max_length": self.max_length}


@dataclass(frozen=True, kw_only=True)
class WinRateSpec(Section):
    """``win_rate``: how the numbers become a win rate (``softmax_complement``, ``sigmoid_difference``, ``sigmoid_mlp``)."""

    kind: str
    labels: tuple[int, ...] | None = None  # softmax_complement: the output indices that are not "strong wins"

    def _fields(self) -> dict[str, Any]:
        return {"kind": self.kind, "labels": self.labels}


@dataclass(frozen=True, kw_only=True)
class OnnxGraphSpec(Section):
    """An ONNX text encoder: one graph file per precision, its inputs and the output read."""

    graphs: Mapping[str, str]
    inputs: tuple[str, ...]
    output: str

    def _fields(self) -> dict[str, Any]:
        return {"graphs": self.graphs, "inputs": self.inputs, "output": self.output}


@dataclass(frozen=True, kw_only=True)
class ClassifierSpec(OnnxGraphSpec):
    """``classifier`` (BERT routers): a transformer classifier whose softmax gives the win rate."""

    win_rate: WinRateSpec

    kind: ClassVar[str] = "classifier"  # not written: a classifier section has no 'kind' key

    def _fields(self) -> dict[str, Any]:
        return {**super()._fields(), "win_rate": self.win_rate}


@dataclass(frozen=True, kw_only=True)
class OnnxEmbedderSpec(OnnxGraphSpec):
    """``embedder`` of kind ``onnx``: a sentence encoder graph giving ``dim``-wide prompt embeddings."""

    dim: int

    kind: ClassVar[str] = "onnx"

    def _fields(self) -> dict[str, Any]:
        return {"kind": self.kind, **super()._fields(), "dim": self.dim}


@dataclass(frozen=True, kw_only=True)
class StaticEmbedderSpec(Section):
    """``embedder`` of kind ``static``: a token table (``file``, ``[vocab, dim]``) averaged per prompt."""

    file: str
    dim: int

    kind: ClassVar[str] = "static"

    def _fields(self) -> dict[str, Any]:
        return {"kind": self.kind, "file": self.file, "dim": self.dim}


@dataclass(frozen=True, kw_only=True)
class RemoteEmbedderSpec(Section):
    """``embedder`` of kind ``openai``: an OpenAI-compatible embeddings endpoint serving ``model``."""

    model: str
    dim: int

    kind: ClassVar[str] = "openai"

    def _fields(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.model, "dim": self.dim}


EncoderSpec = Union[ClassifierSpec, OnnxEmbedderSpec, StaticEmbedderSpec, RemoteEmbedderSpec]
EmbedderSpec = Union[OnnxEmbedderSpec, StaticEmbedderSpec, RemoteEmbedderSpec]


@dataclass(frozen=True, kw_only=True)
class HeadSpec(Section):
    """``head`` of an MF-kind bundle: RouteLLM's folded matrix (``kind`` absent) or a distilled MLP (``mlp``).

    ``file`` holds the folded ``[models, dim]`` matrix, or the MLP's ``[hidden, dim + 2]`` layer with
    ``output_file`` its ``[1, hidden + 1]`` output layer.
    """

    kind: str | None
    file: str
    model_names: tuple[str, ...]
    win_rate: WinRateSpec
    output_file: str | None = None
    default_strong: str | None = None
    default_weak: str | None = None
    aliases: Mapping[str, str] | None = None

    def _fields(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "file": self.file,
            "output_file": self.output_file,
            "model_names": self.model_names,
            "default_strong": self.default_strong,
            "default_weak": self.default_weak,
            "aliases": self.aliases,
            "win_rate": self.win_rate,
        }


@dataclass(frozen=True, kw_only=True)
class CalibrationSpec(Section):
    """``calibration``: thresholds by strong share (keys as written, e.g. ``"0.5"``), and the precision scored."""

    thresholds: Mapping[str, float] | None = None
    precision: str | None = None

    def _fields(self) -> dict[str, Any]:
        return {"thresholds": self.thresholds, "precision": self.precision}

    def points(self) -> list[tuple[float, float]]:
        """(strong share, threshold) pairs sorted by share; empty when there is no table."""
        return sorted((float(share), float(value)) for share, value in (self.thresholds or {}).items())


@dataclass(frozen=True, kw_only=True)
class ParityFigures(Section):
    """One precision's parity record: the largest difference to the reference and the tolerance checked."""

    max_abs_diff: float | None = None
    tolerance: float | None = None
    verified: bool | None = None

    def _fields(self) -> dict[str, Any]:
        return {"max_abs_diff": self.max_abs_diff, "tolerance": self.tolerance, "verified": self.verified}


@dataclass(frozen=True, kw_only=True)
class ParitySpec(Section):
    """``parity``: how closely each exported precision reproduced the reference at export."""

    precisions: Mapping[str, ParityFigures] | None = None

    def _fields(self) -> dict[str, Any]:
        return {"precisions": self.precisions}


@dataclass(frozen=True, kw_only=True)
class QuantizationSpec(Section):
    """One precision's quantization settings; ``method`` absent means dynamic (older bundles)."""

    method: str | None = None

    def _fields(self) -> dict[str, Any]:
        return {"method": self.method}


@dataclass(frozen=True, kw_only=True)
class FileEntry(Section):
    """``files.NAME``: the sha256 (checked before the file is used) and size of one bundle file."""

    sha256: str
    bytes: int | None = None

    def _fields(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "bytes": self.bytes}


@dataclass(frozen=True)
class GoldenScores:
    """The golden prompts' win rates recorded at export for one precision (``golden.precisions.KEY``)."""

    prompts: tuple[str, ...]
    win_rates: tuple[float, ...]
    reference: tuple[float, ...] | None
    tolerance: float


@dataclass(frozen=True, kw_only=True)
class Manifest(Section):
    """A validated manifest and the folder it describes."""

    folder: Path
    schema_version: int
    name: str
    kind: str
    encoder: EncoderSpec
    files: Mapping[str, FileEntry]
    tokenizer: TokenizerSpec | None = None
    head: HeadSpec | None = None
    models: ModelPair | None = None
    aliases: Mapping[str, str] | None = None
    source: SourceInfo | None = None
    calibration: CalibrationSpec | None = None
    quantization: Mapping[str, QuantizationSpec] | None = None
    parity: ParitySpec | None = None
    # Checked only when re-scored (Router.load(verify=True)): a bad golden section never blocks a plain load.
    golden: Any = None

    def _fields(self) -> dict[str, Any]:
        section = _kind(self.kind, self.path).encoder_section
        # A remote embedder's tokenizer section is not modelled: it stays in `extra` as written.
        return {
            "schema_version": self.schema_version,
            "name": self.name,
            "kind": self.kind,
            "models": self.models,
            "aliases": self.aliases,
            "source": self.source,
            "calibration": self.calibration,
            "tokenizer": self.tokenizer,
            section: self.encoder,
            "head": self.head,
            "quantization": self.quantization,
            "files": self.files,
            "parity": self.parity,
            "golden": self.golden,
        }

    @property
    def path(self) -> Path:
        """The manifest file itself."""
        return self.folder / MANIFEST_NAME

    @property
    def data(self) -> dict[str, Any]:
        """The manifest as JSON data (a fresh copy): for printing; code reads the typed attributes."""
        return self.to_dict()

    @property
    def max_length(self) -> int | None:
        """Token limit of the local tokenizer; None for routers that embed remotely."""
        return None if self.tokenizer is None else self.tokenizer.max_length

    @property
    def precisions(self) -> list[str]:
        """Precisions with an ONNX graph in this bundle, sorted; empty for static and remote embedders."""
        return sorted(self.encoder.graphs) if isinstance(self.encoder, OnnxGraphSpec) else []

    def quantization_method(self, precision: str) -> str | None:
        """How ``precision``'s graph was quantized (``dynamic`` when the bundle predates the record); None if not."""
        settings = (self.quantization or {}).get(precision)
        if settings is None:
            return "dynamic" if precision == "int8" else None
        return settings.method or "dynamic"

    def golden_scores(self, key: str) -> GoldenScores | None:
        """The golden scores recorded for ``key`` (a precision, or ``static``); None when not recorded."""
        return _parse_golden(self.golden, key, self.path)

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
                f"{path}: listed in {self.folder / MANIFEST_NAME} but missing; copy the complete bundle folder again or re-export it"
            )
        return path

    def verify(self, file_name: str) -> Path:
        """Return the path of ``file_name`` after checking its sha256 against the manifest."""
        path = self.path_of(file_name)
        expected = self.files[file_name].sha256
        actual = sha256_of(path)
        if actual != expected:
            raise BundleIntegrityError(
                f"{path}: sha256 {actual[:12]}… does not match the manifest's {expected[:12]}…; "
                "the file was modified or damaged: restore it from the original bundle or re-export"
            )
        return path


def _kind(name: Any, manifest_path: Path) -> RouterKind:
    """The registered kind of a manifest; ``ManifestError`` naming the file when none is called ``name``."""
    kind = router_kind_named(name) if isinstance(name, str) else None
    if kind is None:
        raise ManifestError(
            f"{manifest_path}: 'kind' must be one of {kind_names()}, got {name!r}; re-export the bundle with `edgeroute export`"
        )
    return kind


def _json(value: Any) -> Any:
    """A section value as JSON data: sections as dicts, tuples as lists, mappings copied."""
    if isinstance(value, Section):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {key: _json(item) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return [_json(item) for item in value]
    return value


# ---------------------------------------------------------------------- parsing
class ManifestChecker:
    """Validation bound to one manifest file: every error names that file and the fix."""

    def __init__(self, manifest_path: Path) -> None:
        self.path = manifest_path

    def require(self, condition: bool, problem: str) -> None:
        if not condition:
            raise ManifestError(f"{self.path}: {problem}; re-export the bundle with `edgeroute export`")

    def file_name(self, name: Any, files: Mapping[str, Any]) -> str:
        """A plain file name inside the bundle folder that has an entry in ``files``."""
        self.require(
            isinstance(name, str) and bool(_SAFE_FILE_NAME.match(name)),
            f"file name {name!r} is not a plain file name inside the bundle folder",
        )
        self.require(name in files, f"file {name!r} has no entry in 'files'")
        return name

    def label(self, value: Any, where: str) -> str:
        """A name that reaches HTTP headers and model strings: 1 to MAX_LABEL_CHARS printable ASCII characters."""
        self.require(
            isinstance(value, str) and 0 < len(value) <= MAX_LABEL_CHARS and value.isascii() and value.isprintable(),
            f"'{where}' must be 1 to {MAX_LABEL_CHARS} printable ASCII characters (no control characters, no line breaks)",
        )
        return value

    def optional_str(self, value: Any, where: str) -> str | None:
        self.require(value is None or isinstance(value, str), f"'{where}' must be a string (or absent)")
        return value

    def string_map(self, value: Any, where: str) -> dict[str, str] | None:
        """None, or an object of strings to strings (alias tables)."""
        self.require(
            value is None or (isinstance(value, dict) and all(isinstance(v, str) for v in value.values())),
            f"'{where}' must map other spellings to model names (strings)",
        )
        return value

    def dim(self, value: Any, where: str) -> int:
        self.require(_is_int(value) and 0 < value <= MAX_EMBEDDING_DIM, f"'{where}' must be an integer in [1, {MAX_EMBEDDING_DIM}]")
        return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """An int or float (not a bool) that converts to a float: JSON allows integers of any length."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _split(raw: Mapping[str, Any], modelled: set[str] | tuple[str, ...]) -> dict[str, Any]:
    """The section keyword arguments every ``Section`` takes: unmodelled keys, and the key order."""
    return {"extra": {key: value for key, value in raw.items() if key not in modelled}, "order": tuple(raw)}


def parse_manifest(data: Any, manifest_path: Path, folder: Path | None = None) -> Manifest:
    """Validate manifest JSON data and return it typed; raise ``ManifestError`` (or ``UnsupportedSchemaError``)."""
    check = ManifestChecker(manifest_path)
    check.require(isinstance(data, dict), "top level is not a JSON object")
    version = data.get("schema_version")
    check.require(_is_int(version), "'schema_version' is missing or not an integer")
    if version > SCHEMA_VERSION:
        raise UnsupportedSchemaError(
            f"{manifest_path}: schema_version {version} is newer than this runtime supports "
            f"({SCHEMA_VERSION}); upgrade edgeroute: in your clone, git pull && pip install ."
        )
    kind = data.get("kind")
    router_kind = _kind(kind, manifest_path)
    check.require(isinstance(data.get("name"), str), "'name' is missing")
    check.label(data["name"], "name")
    files = _parse_files(data.get("files"), check)
    section = router_kind.encoder_section
    raw_encoder = data.get(section)
    check.require(isinstance(raw_encoder, dict), f"'{section}' is missing")
    encoder = router_kind.parse_encoder(raw_encoder, check, files)
    has_tokenizer = router_kind.has_tokenizer(raw_encoder)
    tokenizer = _parse_tokenizer(data.get("tokenizer"), check, files) if has_tokenizer else None
    head = router_kind.parse_head(data.get("head"), check, files)
    modelled = {
        "schema_version",
        "name",
        "kind",
        "models",
        "aliases",
        "source",
        "calibration",
        "quantization",
        "files",
        "parity",
        "golden",
        section,
        *(("tokenizer",) if has_tokenizer else ()),
        *(("head",) if head else ()),
    }
    return Manifest(
        folder=manifest_path.parent if folder is None else folder,
        schema_version=version,
        name=data["name"],
        kind=kind,
        encoder=encoder,
        files=files,
        tokenizer=tokenizer,
        head=head,
        models=_parse_models(data.get("models"), check),
        aliases=check.string_map(data.get("aliases"), "aliases"),
        source=_parse_source(data.get("source"), check),
        calibration=_parse_calibration(data.get("calibration"), check),
        quantization=_parse_quantization(data.get("quantization"), check),
        parity=_parse_parity(data.get("parity"), check),
        golden=data.get("golden"),
        **_split(data, modelled),
    )


def _parse_files(files: Any, check: ManifestChecker) -> dict[str, FileEntry]:
    check.require(isinstance(files, dict) and bool(files), "'files' is missing or empty")
    entries: dict[str, FileEntry] = {}
    for file_name, entry in files.items():
        check.file_name(file_name, files)
        check.require(isinstance(entry, dict) and isinstance(entry.get("sha256"), str), f"'files.{file_name}' has no sha256")
        size = entry.get("bytes")
        check.require(size is None or (_is_int(size) and size >= 0), f"'files.{file_name}.bytes' must be a non-negative integer")
        entries[file_name] = FileEntry(sha256=entry["sha256"], bytes=size, **_split(entry, ("sha256", "bytes")))
    return entries


def _parse_tokenizer(tokenizer: Any, check: ManifestChecker, files: Mapping[str, Any]) -> TokenizerSpec:
    check.require(isinstance(tokenizer, dict), "'tokenizer' is missing")
    file_name = check.file_name(tokenizer.get("file"), files)
    max_length = tokenizer.get("max_length")
    check.require(_is_int(max_length) and 2 < max_length <= MAX_TOKENS, f"'tokenizer.max_length' must be an integer in [3, {MAX_TOKENS}]")
    return TokenizerSpec(file=file_name, max_length=max_length, **_split(tokenizer, ("file", "max_length")))


def _graph_fields(encoder: dict[str, Any], section: str, check: ManifestChecker, files: Mapping[str, Any]) -> dict[str, Any]:
    """``graphs``, ``inputs`` and ``output`` of an ONNX encoder section, checked."""
    graphs: Any = encoder.get("graphs")
    check.require(isinstance(graphs, dict) and bool(graphs), f"'{section}.graphs' is missing or empty")
    for precision, graph_file in graphs.items():
        check.require(precision in PRECISIONS, f"unknown precision {precision!r}")
        check.file_name(graph_file, files)
    inputs: Any = encoder.get("inputs")
    check.require(
        isinstance(inputs, list) and bool(inputs) and all(isinstance(i, str) and i in ENCODER_INPUTS for i in inputs),
        f"'{section}.inputs' must list graph inputs among {ENCODER_INPUTS}",
    )
    check.require(isinstance(encoder.get("output"), str), f"'{section}.output' is missing")
    return {"graphs": dict(graphs), "inputs": tuple(inputs), "output": encoder["output"]}


def parse_classifier(encoder: dict[str, Any], check: ManifestChecker, files: Mapping[str, Any]) -> ClassifierSpec:
    graph_fields = _graph_fields(encoder, "classifier", check, files)
    win_rate: Any = encoder.get("win_rate")
    labels: Any = win_rate.get("labels") if isinstance(win_rate, dict) else None
    check.require(
        isinstance(win_rate, dict)
        and win_rate.get("kind") == "softmax_complement"
        and isinstance(labels, list)
        and bool(labels)
        and all(_is_int(x) and 0 <= x < 1024 for x in labels),
        "'classifier.win_rate' must be {'kind': 'softmax_complement', 'labels': [...]} with labels non-negative integers (output indices)",
    )
    spec = WinRateSpec(kind=win_rate["kind"], labels=tuple(labels), **_split(win_rate, ("kind", "labels")))
    return ClassifierSpec(**graph_fields, win_rate=spec, **_split(encoder, ("graphs", "inputs", "output", "win_rate")))


def parse_embedder(encoder: dict[str, Any], check: ManifestChecker, files: Mapping[str, Any]) -> EmbedderSpec:
    kind = encoder.get("kind")
    check.require(kind in EMBEDDER_KINDS, "'embedder.kind' must be 'onnx', 'openai' or 'static'")
    if kind == "static":
        file_name = check.file_name(encoder.get("file"), files)
        return StaticEmbedderSpec(
            file=file_name, dim=check.dim(encoder.get("dim"), "embedder.dim"), **_split(encoder, ("kind", "file", "dim"))
        )
    if kind == "openai":
        check.require(isinstance(encoder.get("model"), str), "'embedder.model' must name the embeddings model")
        return RemoteEmbedderSpec(
            model=encoder["model"], dim=check.dim(encoder.get("dim"), "embedder.dim"), **_split(encoder, ("kind", "model", "dim"))
        )
    graph_fields = _graph_fields(encoder, "embedder", check, files)
    return OnnxEmbedderSpec(
        **graph_fields, dim=check.dim(encoder.get("dim"), "embedder.dim"), **_split(encoder, ("kind", "graphs", "inputs", "output", "dim"))
    )


_HEAD_KEYS = ("kind", "file", "output_file", "model_names", "default_strong", "default_weak", "aliases", "win_rate")


def parse_mf_head(head: Any, check: ManifestChecker, files: Mapping[str, Any]) -> HeadSpec:
    check.require(isinstance(head, dict), "'head' is missing")
    kind = head.get("kind")
    check.require(kind in (None, "mlp"), f"'head.kind' must be 'mlp' (a distilled MLP) or absent (a folded MF matrix), got {kind!r}")
    file_name = check.file_name(head.get("file"), files)
    names = head.get("model_names")
    check.require(
        isinstance(names, list) and len(names) >= 2 and all(isinstance(n, str) for n in names),
        "'head.model_names' must list at least two model names",
    )
    for position, model_name in enumerate(names):
        check.label(model_name, f"head.model_names[{position}]")
    win_rate = head.get("win_rate")
    output_file = None
    if kind == "mlp":  # a distilled student (runtime/scoring/heads.py)
        output_file = check.file_name(head.get("output_file"), files)
        check.require(
            isinstance(win_rate, dict) and win_rate.get("kind") == "sigmoid_mlp",
            "'head.win_rate' of an MLP head must be {'kind': 'sigmoid_mlp'}",
        )
    else:
        check.require(
            isinstance(win_rate, dict) and win_rate.get("kind") == "sigmoid_difference",
            "'head.win_rate' must be {'kind': 'sigmoid_difference'}",
        )
    return HeadSpec(
        kind=kind,
        file=file_name,
        model_names=tuple(names),
        output_file=output_file,
        win_rate=WinRateSpec(kind=win_rate["kind"], **_split(win_rate, ("kind",))),
        default_strong=check.optional_str(head.get("default_strong"), "head.default_strong"),
        default_weak=check.optional_str(head.get("default_weak"), "head.default_weak"),
        aliases=check.string_map(head.get("aliases"), "head.aliases"),
        **_split(head, _HEAD_KEYS),
    )


def _parse_models(models: Any, check: ManifestChecker) -> ModelPair | None:
    check.require(
        models is None
        or (isinstance(models, dict) and all(isinstance(models.get(role), (str, type(None))) for role in ("strong", "weak"))),
        "'models' must be {'strong': NAME, 'weak': NAME}",
    )
    if models is None:
        return None
    for role in ("strong", "weak"):
        if models.get(role) is not None:
            check.label(models[role], f"models.{role}")
    return ModelPair(strong=models.get("strong"), weak=models.get("weak"), **_split(models, ("strong", "weak")))


def _parse_source(source: Any, check: ManifestChecker) -> SourceInfo | None:
    if source is None:
        return None
    check.require(isinstance(source, dict), "'source' must be an object (or absent)")
    training = source.get("training")
    check.require(training is None or isinstance(training, dict), "'source.training' must be an object (or absent)")
    return SourceInfo(
        format=check.optional_str(source.get("format"), "source.format"),
        checkpoint=check.optional_str(source.get("checkpoint"), "source.checkpoint"),
        weights_sha256=check.optional_str(source.get("weights_sha256"), "source.weights_sha256"),
        training=training,
        **_split(source, ("format", "checkpoint", "weights_sha256", "training")),
    )


def _parse_calibration(calibration: Any, check: ManifestChecker) -> CalibrationSpec | None:
    if calibration is None:
        return None
    check.require(isinstance(calibration, dict), "'calibration' must be an object (or absent)")
    table = calibration.get("thresholds")
    if table is not None:
        check.require(isinstance(table, dict), "'calibration.thresholds' must map strong shares to thresholds")
        for share, threshold in table.items():
            if not (_is_unit_number(share) and not isinstance(threshold, str) and _is_unit_number(threshold)):
                raise ManifestError(
                    f"{check.path}: 'calibration.thresholds' entry {str(share)[:40]!r}: {str(threshold)[:40]!r} is not a "
                    "share in [0, 1] mapped to a threshold in [0, 1]; run `edgeroute calibrate --write` again"
                )
        # JSON object keys are strings; a table built in Python may use floats, which json.dumps writes as str() does.
        table = {str(share): threshold for share, threshold in table.items()}
    return CalibrationSpec(
        thresholds=table,
        precision=check.optional_str(calibration.get("precision"), "calibration.precision"),
        **_split(calibration, ("thresholds", "precision")),
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


def _parse_quantization(quantization: Any, check: ManifestChecker) -> dict[str, QuantizationSpec] | None:
    check.require(
        quantization is None or (isinstance(quantization, dict) and all(isinstance(v, dict) for v in quantization.values())),
        "'quantization' must map each precision to an object of settings",
    )
    if quantization is None:
        return None
    return {
        precision: QuantizationSpec(
            method=check.optional_str(settings.get("method"), f"quantization.{precision}.method"), **_split(settings, ("method",))
        )
        for precision, settings in quantization.items()
    }


def _parse_parity(parity: Any, check: ManifestChecker) -> ParitySpec | None:
    if parity is None:
        return None
    check.require(isinstance(parity, dict), "'parity' must be an object (or absent)")
    precisions = parity.get("precisions")
    check.require(
        precisions is None or (isinstance(precisions, dict) and all(isinstance(v, dict) for v in precisions.values())),
        "'parity.precisions' must map each precision to an object of figures",
    )
    figures: dict[str, ParityFigures] | None = None
    if precisions is not None:
        figures = {}
        for key, entry in precisions.items():
            for name in ("max_abs_diff", "tolerance"):
                check.require(entry.get(name) is None or _is_number(entry[name]), f"'parity.precisions.{key}.{name}' must be a number")
            check.require(entry.get("verified") in (None, True, False), f"'parity.precisions.{key}.verified' must be true or false")
            figures[key] = ParityFigures(
                max_abs_diff=entry.get("max_abs_diff"),
                tolerance=entry.get("tolerance"),
                verified=entry.get("verified"),
                **_split(entry, ("max_abs_diff", "tolerance", "verified")),
            )
    return ParitySpec(precisions=figures, **_split(parity, ("precisions",)))


def _parse_golden(golden: Any, key: str, manifest_path: Path) -> GoldenScores | None:
    """``golden.precisions.KEY`` typed; None when not recorded; ``ManifestError`` when malformed."""
    precisions: Any = golden.get("precisions") if isinstance(golden, dict) else None
    entry: Any = precisions.get(key) if isinstance(precisions, dict) else None
    if entry is None and (precisions is None or isinstance(precisions, dict)):
        return None
    prompts: Any = golden.get("prompts")
    reference: Any = golden.get("reference")
    stored: Any = entry.get("win_rates") if isinstance(entry, dict) else None
    tolerance: Any = entry.get("tolerance") if isinstance(entry, dict) else None
    if not (
        isinstance(prompts, list)
        and prompts
        and all(isinstance(p, str) and p.strip() for p in prompts)
        and isinstance(stored, list)
        and len(stored) == len(prompts)
        and all(_is_number(s) for s in stored)
        and _is_number(tolerance)
        and math.isfinite(tolerance)
        and tolerance >= 0
        and (
            reference is None or (isinstance(reference, list) and len(reference) == len(prompts) and all(_is_number(r) for r in reference))
        )
    ):
        raise ManifestError(
            f"{manifest_path}: 'golden' must hold non-empty 'prompts', and per precision 'win_rates' of the same "
            "length and a 'tolerance'; re-export the bundle with `edgeroute export`"
        )
    return GoldenScores(
        prompts=tuple(prompts),
        win_rates=tuple(float(s) for s in stored),
        reference=None if reference is None else tuple(float(r) for r in reference),
        tolerance=float(tolerance),
    )


# ------------------------------------------------------------- reading, writing
def read_manifest(folder: Path) -> Manifest:
    """Read and validate ``folder/manifest.json``; raise a ``BundleError`` subclass if unusable."""
    manifest_path = folder / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleFileMissingError(f"{manifest_path}: no manifest; a bundle folder needs the manifest.json written by `edgeroute export`")
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
    return parse_manifest(data, manifest_path, folder)


def write_manifest(folder: Path, data: dict[str, Any] | Manifest, rehash: bool = True) -> Path:
    """Validate ``data``, then write it atomically as the bundle's manifest; return its path.

    ``rehash`` refreshes the sha256 of every listed file (the exporter's job); calibration
    keeps the recorded hashes, so that it can never bless a file modified after export.
    A manifest that would not load raises ``ManifestError`` and leaves the old file untouched.
    """
    manifest_path = folder / MANIFEST_NAME
    raw = data.to_dict() if isinstance(data, Manifest) else copy.deepcopy(data)
    if rehash and isinstance(raw, dict) and isinstance(raw.get("files"), dict):
        for file_name, entry in raw["files"].items():
            if isinstance(entry, dict) and isinstance(file_name, str) and _SAFE_FILE_NAME.match(file_name):
                path = folder / file_name
                entry["sha256"] = sha256_of(path)
                entry["bytes"] = path.stat().st_size
    text = json.dumps(parse_manifest(raw, manifest_path, folder).to_dict(), indent=2, sort_keys=False) + "\n"
    if len(text.encode("utf-8")) > MAX_MANIFEST_BYTES:
        raise ManifestError(
            f"{manifest_path}: over the {MAX_MANIFEST_BYTES}-byte limit for a manifest; shorten its free-text fields or calibration table"
        )
    _write_atomically(manifest_path, text)
    return manifest_path


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``.

    Readers (a server loading the bundle) see the old manifest or the new one, never half of one.
    """
    import tempfile  # here: loading a router never writes, and tempfile pulls in random and shutil

    # mkstemp creates 0600; a manifest is read by whoever runs the router, so keep the old mode (or 0644).
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
