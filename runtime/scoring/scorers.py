"""Scorers: what turns prompts into win rates, one class per kind of bundle.

``scorer_for(manifest)`` picks the class from the kind's entry in ``runtime/scoring/kinds.py`` and ``build`` checks and loads
everything the bundle needs (graphs, tokenizer, tables, head), so that ``Router.load`` reads as
"read manifest, pick scorer, build":

* ``ClassifierScorer``: a BERT router's transformer classifier (ONNX); the win rate is one minus
  the softmax of the labels that are not "strong wins".
* ``MFScorer``: RouteLLM's matrix factorization, folded into one row per model, over prompt
  embeddings from an ONNX sentence encoder, a static token table or a remote endpoint.
* ``MLPScorer``: a distilled MLP head (``runtime/scoring/heads.py``) over the same kinds of embedder.

Only the ONNX path imports onnxruntime (inside ``encoders.make_session``): a static router never
loads it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

import numpy as np

from edgeroute.runtime.scoring.encoders import (
    DEVICES,
    OnnxTextEncoder,
    OpenAIEmbedder,
    StaticEmbedder,
    check_threads,
    load_tokenizer,
    make_session,
)
from edgeroute.runtime.errors import (
    BundleCorruptError,
    ConfigurationError,
    ManifestError,
    PrecisionUnavailableError,
    UnknownModelError,
)
from edgeroute.runtime.scoring.heads import MLPHead
from edgeroute.runtime.scoring.kinds import router_kind
from edgeroute.runtime.scoring.manifest import (
    PRECISIONS,
    ClassifierSpec,
    HeadSpec,
    Manifest,
    OnnxEmbedderSpec,
    OnnxGraphSpec,
    RemoteEmbedderSpec,
    StaticEmbedderSpec,
)
from edgeroute.runtime.scoring.names import resolve_name

_DEFAULT_PRECISION = {"cpu": ("int8", "fp32"), "cuda": ("fp16", "fp32", "int8")}
Embed = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class LoadOptions:
    """The caller's choices at ``Router.load`` that scorers read; device and threads are checked here."""

    device: str = "cpu"
    precision: str | None = None
    threads: int | None = None
    spinning: bool = True
    strong_model: str | None = None
    weak_model: str | None = None
    embeddings_base_url: str | None = None
    embeddings_api_key: str | None = None

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ConfigurationError(f"device must be one of {DEVICES}, got {self.device!r}")
        check_threads(self.threads)  # one rule for every kind, also those that never create a session


class Scorer(Protocol):
    """What a ``Router`` scores with: win rates for a batch of cleaned prompts, and the facts it reports."""

    precision: str | None  # the ONNX graph's precision; None without a graph
    strong_model: str | None
    weak_model: str | None
    encoder: OnnxTextEncoder | None  # the ONNX graph runner, when the bundle has a graph
    embedder: Embed | None  # MF-kind bundles: the prompt embedder the head scores

    def win_rates(self, prompts: list[str]) -> np.ndarray:
        """One win rate per prompt, float64."""
        ...


class PerModelScorer(Scorer, Protocol):
    """A scorer with a score for every model it knows (``RouterKind.scores_every_model``): N-model routing."""

    def model_rows(self, models: Sequence[str], folder: Path) -> np.ndarray:
        """The head's rows for ``models``, in that order."""
        ...

    def model_scores(self, prompts: list[str], rows: np.ndarray) -> np.ndarray:
        """``[prompts, models]`` scores for those rows."""
        ...


class ClassifierScorer:
    """A BERT router: ``1 - sum(softmax(logits)[labels])`` of an ONNX transformer classifier."""

    embedder: Embed | None = None

    def __init__(
        self, encoder: OnnxTextEncoder, labels: Sequence[int], precision: str | None, strong_model: str | None, weak_model: str | None
    ) -> None:
        self.encoder: OnnxTextEncoder | None = encoder
        self._run = encoder
        self.labels = list(labels)
        self.precision = precision
        self.strong_model, self.weak_model = strong_model, weak_model

    @classmethod
    def build(cls, manifest: Manifest, options: LoadOptions) -> ClassifierScorer:
        """Load and probe the classifier graph; the pair is the one the classifier was trained on."""
        spec = manifest.encoder
        assert isinstance(spec, ClassifierSpec)  # parse_manifest gives BERT bundles a classifier section
        encoder, precision = load_onnx_encoder(manifest, spec, options)
        if not _names_bert_pair(manifest, options.strong_model, options.weak_model):
            raise ConfigurationError(
                "strong_model/weak_model choose the pair of an MF router; a BERT router predicts "
                "for the pair it was trained on (see its manifest's 'models')"
            )
        pair = manifest.models
        return cls(encoder, spec.win_rate.labels or (), precision, pair.strong if pair else None, pair.weak if pair else None)

    def win_rates(self, prompts: list[str]) -> np.ndarray:
        """One minus the softmax mass of the labels in which the strong model does not win."""
        logits = self._run(prompts).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        return 1.0 - probabilities[:, self.labels].sum(axis=1)


class _EmbedderScorer:
    """What MF-kind scorers share: the prompt embedder (ONNX, static or remote), its precision, the pair."""

    def __init__(self, embedder: Embed, precision: str | None, strong_model: str, weak_model: str, encoder: OnnxTextEncoder | None) -> None:
        self.embedder: Embed | None = embedder
        self._embed = embedder
        self.precision = precision
        self.strong_model: str | None = strong_model
        self.weak_model: str | None = weak_model
        self.encoder = encoder


class MFScorer(_EmbedderScorer):
    """RouteLLM's matrix factorization, folded: ``sigmoid((row[strong] - row[weak]) · embedding)``."""

    def __init__(
        self,
        embedder: Embed,
        difference: np.ndarray,
        precision: str | None,
        strong_model: str,
        weak_model: str,
        encoder: OnnxTextEncoder | None = None,
    ) -> None:
        super().__init__(embedder, precision, strong_model, weak_model, encoder)
        self.difference = difference
        # Every model's row (N-model routing, runtime/scoring/targets.py), set by build.
        self.matrix = difference[None, :]
        self.model_names: tuple[str, ...] = (strong_model,)
        self.aliases: dict[str, str] = {}

    @classmethod
    def build(cls, manifest: Manifest, options: LoadOptions) -> MFScorer:
        """The embedder, the pair (aliases resolved) and the two rows of the folded matrix."""
        embedder, encoder, precision, strong, weak = _embedder_and_pair(manifest, options)
        head = _head(manifest)
        matrix = load_array(manifest, head.file, len(head.model_names), _dim(manifest)).astype(np.float32)
        # Folded head: score(model) = row · embedding, so the pair's logit is one dot product.
        difference = matrix[head.model_names.index(strong)] - matrix[head.model_names.index(weak)]
        scorer = cls(embedder, difference, precision, strong, weak, encoder)
        scorer.matrix, scorer.model_names, scorer.aliases = matrix, head.model_names, dict(head.aliases or {})
        return scorer

    def model_rows(self, models: Sequence[str], folder: Path) -> np.ndarray:
        """The folded matrix's rows for ``models`` (aliases resolved), in that order; ``UnknownModelError`` naming the bundle."""
        rows = []
        for model in models:
            name = resolve_name(model, self.model_names, self.aliases)
            if name is None:
                shown = ", ".join(self.model_names[:8]) + (" …" if len(self.model_names) > 8 else "")
                raise UnknownModelError(
                    f"model {model!r} is not in this MF router's {len(self.model_names)} models ({shown}); "
                    f"see `edgeroute info {folder}` for all names, or set the target's router_model"
                )
            rows.append(self.model_names.index(name))
        return self.matrix[rows]

    def model_scores(self, prompts: list[str], rows: np.ndarray) -> np.ndarray:
        """Each model's MF score per prompt, ``[prompts, models]`` (the win rate of a over b is sigmoid(s_a - s_b))."""
        return (np.asarray(self._embed(prompts), dtype=np.float32) @ rows.T).astype(np.float64)

    def win_rates(self, prompts: list[str]) -> np.ndarray:
        """sigmoid of the pair's score difference, one dot product per prompt."""
        logits = np.asarray(self._embed(prompts), dtype=np.float32) @ self.difference
        return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))


# Prompts up to 512 tokens' worth of characters (``router.cut_prompt``) take the length term from a table.
FUSED_LENGTH_TERMS = 8192


class MLPScorer(_EmbedderScorer):
    """An MLP-head router (distilled fast tier, probe transformer tier): ``MLPHead`` over [embedding, length]."""

    def __init__(
        self,
        embedder: Embed,
        head: MLPHead,
        precision: str | None,
        strong_model: str,
        weak_model: str,
        encoder: OnnxTextEncoder | None = None,
    ) -> None:
        super().__init__(embedder, precision, strong_model, weak_model, encoder)
        self.head = head
        # Static table + MLP head: each token's row is also stored through the head's first layer,
        # so that one prompt costs one gather-and-sum and no matrix product (the microsecond tier).
        self._fused: StaticEmbedder | None = None
        if isinstance(embedder, StaticEmbedder) and embedder.chunks is not None and embedder.table.shape[1] == head.dim:
            embedder.append_columns(head.project_rows(embedder.table))
            head.precompute_length_terms(FUSED_LENGTH_TERMS)
            self._fused = embedder

    @classmethod
    def build(cls, manifest: Manifest, options: LoadOptions) -> MLPScorer:
        """The embedder and the head's two layers; other pairs than the trained one are refused."""
        embedder, encoder, precision, strong, weak = _embedder_and_pair(manifest, options)
        head = _head(manifest)
        if [strong, weak] != list(head.model_names[:2]):
            raise ConfigurationError(
                f"{manifest.folder}: this router's MLP head predicts only for strong {head.model_names[0]!r} "
                f"vs weak {head.model_names[1]!r}; omit strong_model/weak_model or use a matrix-factorization router"
            )
        assert head.output_file is not None  # parse_manifest requires it of MLP heads
        hidden = load_array(manifest, head.file, None, _dim(manifest) + 2).astype(np.float32)
        output = load_array(manifest, head.output_file, 1, hidden.shape[0] + 1).astype(np.float32)
        return cls(embedder, MLPHead(hidden, output), precision, strong, weak, encoder)

    def win_rates(self, prompts: list[str]) -> np.ndarray:
        """The head's sigmoid output; the length feature is taken from the prompts as given."""
        if self._fused is not None and len(prompts) == 1:
            ids = self._fused.chunks.ids(prompts[0])
            if ids is not None and len(ids):
                return np.array([self.head.projected_win_rate(self._fused.summed_rows(ids), prompts[0])])
        return self.head.win_rates(self._embed(prompts), prompts)


def scorer_for(manifest: Manifest) -> Callable[[Manifest, LoadOptions], Scorer]:
    """The ``build`` of the scorer class for this bundle's kind (``runtime/scoring/kinds.py``)."""
    kind = router_kind(manifest.kind)
    if kind is None:
        raise ManifestError(f"{manifest.path}: no router kind {manifest.kind!r} is registered here; upgrade edgeroute or register the kind")
    return kind.scorer(manifest)


# ------------------------------------------------------------------ embedders
def _embedder_and_pair(manifest: Manifest, options: LoadOptions) -> tuple[Embed, OnnxTextEncoder | None, str | None, str, str]:
    """(embedder, ONNX encoder or None, precision or None, strong, weak) of an MF-kind bundle.

    Order kept from before the scorer classes: graph and precision checks, then the pair, then
    static tables or the remote endpoint's key.
    """
    spec = manifest.encoder
    encoder, precision = None, None
    if isinstance(spec, OnnxEmbedderSpec):
        encoder, precision = load_onnx_encoder(manifest, spec, options)
    else:
        _refuse_graph_options(manifest, options, spec.kind)
    strong, weak = mf_pair(manifest, options.strong_model, options.weak_model)
    embedder: Embed
    if encoder is not None:
        embedder = encoder
    elif isinstance(spec, StaticEmbedderSpec):
        embedder = static_embedder(manifest, spec)
    else:
        assert isinstance(spec, RemoteEmbedderSpec)
        embedder = OpenAIEmbedder(spec.model, spec.dim, options.embeddings_base_url, options.embeddings_api_key)
    return embedder, encoder, precision, strong, weak


def _refuse_graph_options(manifest: Manifest, options: LoadOptions, embedder_kind: str) -> None:
    """A router without ONNX graph has no precision to choose and runs on the CPU only."""
    if options.precision is not None:
        raise PrecisionUnavailableError(
            f"{manifest.folder}: this router has no ONNX graph (its embedder is "
            f"{embedder_kind!r}); load it without a precision "
            "(omit precision= in Python, --precision on the command line)"
        )
    if options.device != "cpu":
        # Without a graph nothing runs on onnxruntime: CUDA would silently mean CPU.
        raise ConfigurationError(
            f"{manifest.folder}: this router has no ONNX graph (its embedder is "
            f"{embedder_kind!r}), so it scores on the CPU only; load it with "
            "device='cpu' (--device cpu), or pick a router with graphs for CUDA"
        )


def static_embedder(manifest: Manifest, spec: StaticEmbedderSpec) -> StaticEmbedder:
    """The static table and its tokenizer, checked to fit each other."""
    table = load_array(manifest, spec.file, None, spec.dim)
    assert manifest.tokenizer is not None  # parse_manifest requires a tokenizer beside a static table
    tokenizer_path = manifest.verify(manifest.tokenizer.file)
    tokenizer = load_tokenizer(tokenizer_path, manifest.max_length)
    top_id = max(tokenizer.get_vocab(with_added_tokens=True).values(), default=0)
    if top_id >= table.shape[0]:
        raise BundleCorruptError(
            f"{tokenizer_path}: token ids reach {top_id}, past the {table.shape[0]} rows of {spec.file}; "
            "the tokenizer does not belong to this table: re-export the bundle"
        )
    return StaticEmbedder(table, tokenizer)


# ------------------------------------------------------------------ ONNX graphs
def load_onnx_encoder(manifest: Manifest, spec: OnnxGraphSpec, options: LoadOptions) -> tuple[OnnxTextEncoder, str]:
    """The bundle's ONNX encoder and its precision, checked by one probe run."""
    chosen = choose_precision(manifest, spec, options.precision, options.device)
    graph_path = manifest.verify(spec.graphs[chosen])
    session = make_session(graph_path, options.device, options.threads, options.spinning)
    _check_graph_io(session, graph_path, spec)
    assert manifest.tokenizer is not None  # parse_manifest requires a tokenizer beside a graph
    tokenizer = load_tokenizer(manifest.verify(manifest.tokenizer.file), manifest.max_length)
    # Dynamically quantized graphs scale activations over the whole batch, so a prompt's score
    # would depend on the prompts beside it: such graphs score one row at a time.
    per_row = chosen == "int8" and manifest.quantization_method("int8") == "dynamic"
    encoder = OnnxTextEncoder(session, tokenizer, spec.inputs, spec.output, per_row=per_row)
    _probe_graph(encoder, graph_path, manifest, spec)
    return encoder, chosen


def choose_precision(manifest: Manifest, spec: OnnxGraphSpec, precision: str | None, device: str) -> str:
    """The graph to load: the one asked for, else the device's preferred one among the bundle's."""
    available = sorted(spec.graphs)
    if precision is None:
        for candidate in _DEFAULT_PRECISION[device]:
            if candidate in available:
                return candidate
        return available[0]
    if precision not in PRECISIONS:
        raise ConfigurationError(f"precision must be one of {PRECISIONS} or None, got {precision!r}")
    if precision not in available:
        raise PrecisionUnavailableError(
            f"{manifest.folder}: no {precision} graph in this bundle (it has {', '.join(available)}); "
            f"pick one of those or re-export with --precisions {precision}"
        )
    return precision


def _check_graph_io(session: object, graph_path: Path, spec: OnnxGraphSpec) -> None:
    graph_inputs = sorted(i.name for i in session.get_inputs())  # type: ignore[attr-defined]
    graph_outputs = [o.name for o in session.get_outputs()]  # type: ignore[attr-defined]
    if graph_inputs != sorted(spec.inputs) or spec.output not in graph_outputs:
        raise BundleCorruptError(
            f"{graph_path}: graph inputs {graph_inputs} / outputs {graph_outputs} differ from the manifest's "
            f"{sorted(spec.inputs)} / {spec.output!r}; the graph does not belong to this manifest: re-export"
        )


def _probe_graph(encoder: OnnxTextEncoder, graph_path: Path, manifest: Manifest, spec: OnnxGraphSpec) -> None:
    """Score one input of ``max_length`` tokens holding the tokenizer's largest id.

    A ``max_length`` past the graph's position table, token ids past its embedding table, labels
    past its outputs or non-finite weights then fail at load, not on some later prompt.
    """
    length = manifest.max_length or 1
    top_id = max(encoder.tokenizer.get_vocab(with_added_tokens=True).values(), default=0)
    ids = np.full((1, length), top_id, dtype=np.int64)
    columns = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    try:
        output = np.asarray(encoder.run_tokens({name: columns[name] for name in encoder.input_names}))
    except Exception as exc:  # onnxruntime's errors are untyped
        raise BundleCorruptError(
            f"{graph_path}: the graph fails on {length} tokens with ids up to {top_id} "
            f"({str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}); set the manifest's "
            "'tokenizer.max_length' within the graph's position limit, or re-export the bundle"
        ) from exc
    if isinstance(spec, ClassifierSpec):
        labels = list(spec.win_rate.labels or ())
        if output.ndim != 2 or max(labels) >= output.shape[1]:
            raise ManifestError(
                f"{manifest.path}: 'classifier.win_rate.labels' {labels} do not fit the graph's "
                f"output of shape {output.shape}; re-export the bundle with `edgeroute export`"
            )
    elif isinstance(spec, OnnxEmbedderSpec) and output.shape != (1, spec.dim):
        raise ManifestError(
            f"{manifest.path}: 'embedder.dim' is {spec.dim} but the graph outputs shape "
            f"{output.shape}; re-export the bundle with `edgeroute export`"
        )
    if not np.all(np.isfinite(output)):
        raise BundleCorruptError(f"{graph_path}: the graph outputs non-finite values (NaN or infinity); re-export the bundle")


# ------------------------------------------------------------------ model names
def mf_pair(manifest: Manifest, strong_model: str | None, weak_model: str | None) -> tuple[str, str]:
    """The MF pair's names in the bundle's own spelling (defaults from the manifest, aliases resolved)."""
    head = _head(manifest)
    model_names = list(head.model_names)
    strong = _canonical(strong_model or head.default_strong, model_names, head)
    weak = _canonical(weak_model or head.default_weak, model_names, head)
    for role, name in (("strong", strong), ("weak", weak)):
        if not isinstance(name, str) or name not in model_names:
            shown = ", ".join(model_names[:8]) + (" …" if len(model_names) > 8 else "")
            raise UnknownModelError(
                f"{role} model {name!r} is not in this MF router's {len(model_names)} models ({shown}); "
                f"see `edgeroute info {manifest.folder}` for all names"
            )
    if strong == weak:
        raise ConfigurationError(f"strong and weak model are both {strong!r}; pick two different models")
    return cast(str, strong), cast(str, weak)


def _canonical(name: object, model_names: list[str], head: HeadSpec) -> object:
    """A model name in the bundle's own spelling, via the manifest's alias table (unknown: unchanged)."""
    if not isinstance(name, str):
        return name
    return resolve_name(name, model_names, dict(head.aliases or {})) or name


def _names_bert_pair(manifest: Manifest, strong_model: str | None, weak_model: str | None) -> bool:
    """A BERT router predicts for one pair: accept no names, or names (any alias) of that pair."""
    if strong_model is None and weak_model is None:
        return True
    pair = manifest.models
    aliases = dict(manifest.aliases or {})
    for role, name in (("strong", strong_model), ("weak", weak_model)):
        own = None if pair is None else getattr(pair, role)
        if name is not None and (not isinstance(name, str) or not own or resolve_name(name, [own], aliases) != own):
            return False
    return True


def _head(manifest: Manifest) -> HeadSpec:
    assert manifest.head is not None  # parse_manifest requires a head of every MF-kind bundle
    return manifest.head


def _dim(manifest: Manifest) -> int:
    spec = manifest.encoder
    assert not isinstance(spec, ClassifierSpec)
    return spec.dim


# ------------------------------------------------------------------ arrays
def load_array(manifest: Manifest, file_name: str, rows: int | None, dim: int) -> np.ndarray:
    """A float matrix from a bundle's .npy file, hash and shape checked (``rows`` None: any row count)."""
    path = manifest.verify(file_name)
    matrix = read_npy(path, rows, dim)
    if not np.all(np.isfinite(matrix)):
        raise BundleCorruptError(f"{path}: the array holds NaN or infinite values; re-export the bundle")
    return np.ascontiguousarray(matrix)


def read_npy(path: Path, rows: int | None, dim: int) -> np.ndarray:
    """A float (rows, dim) array from a ``.npy`` file; the header is checked before anything is allocated.

    Never unpickles; refuses ``.npz`` archives, object arrays, and headers whose shape disagrees
    with the file's size (a header may claim 2**40 rows).
    """

    def corrupt(problem: str) -> BundleCorruptError:
        return BundleCorruptError(f"{path}: not a plain numpy array file ({problem}); re-export the bundle")

    with open(path, "rb") as handle:
        try:
            version = np.lib.format.read_magic(handle)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran_order, dtype = read_header(handle)
        except (ValueError, OSError, EOFError, SyntaxError) as exc:
            raise corrupt(str(exc)[:200]) from None
        if dtype.hasobject:
            raise corrupt("an object array, which only unpickling could read")
        expected_rows = shape[0] if rows is None and len(shape) == 2 else rows
        if shape != (expected_rows, dim) or dtype.kind != "f":
            raise BundleCorruptError(
                f"{path}: array has shape {shape} and dtype {dtype}, expected float ({rows or 'N'}, {dim}); re-export the bundle"
            )
        data_bytes = path.stat().st_size - handle.tell()
        if data_bytes != shape[0] * dim * dtype.itemsize:
            raise corrupt(f"header says {shape} {dtype}, the file holds {data_bytes} bytes of data")
        try:
            matrix = np.fromfile(handle, dtype=dtype, count=shape[0] * dim)
        except (ValueError, OSError) as exc:
            raise corrupt(str(exc)[:200]) from None
    return matrix.reshape(shape, order="F" if fortran_order else "C")
