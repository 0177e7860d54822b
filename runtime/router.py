"""The entry class: ``Router.load(...)`` then ``strong_win_rate``, ``strong_win_rates`` or ``route``."""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Callable, cast

import numpy as np

from .decision import Decision, decision_for, resolve_threshold
from .encoders import (
    DEVICES,
    OnnxTextEncoder,
    OpenAIEmbedder,
    StaticEmbedder,
    check_threads,
    load_tokenizer,
    make_session,
)
from .errors import (
    BundleCorruptError,
    BundleNotFoundError,
    ConfigurationError,
    InvalidInputError,
    InvalidPromptError,
    ManifestError,
    PrecisionUnavailableError,
    UnknownModelError,
)
from .heads import MLPHead
from .manifest import MANIFEST_NAME, PRECISIONS, Manifest, read_manifest

# A router name (as opposed to a path) is one plain folder name inside models/.
_ROUTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_DEFAULT_PRECISION = {"cpu": ("int8", "fp32"), "cuda": ("fp16", "fp32", "int8")}
_SURROGATE = re.compile("[\ud800-\udfff]")
# Prompts are cut to this many characters per token of max_length before tokenizing: the
# tokenizer would otherwise process the whole text only to keep its first max_length tokens.
# Ordinary text runs 3-5 characters a token, so the first max_length tokens never reach the cut.
CHARS_PER_TOKEN_BOUND = 16


def models_dir() -> Path:
    """The folder of the routers shipped with edgeroute (the repository's ``models/``)."""
    return Path(str(resources.files("edgeroute.models")))


def shipped_routers() -> list[str]:
    """Names of the shipped routers, sorted."""
    return sorted(p.parent.name for p in models_dir().glob("*/manifest.json"))


def default_router_name() -> str:
    """The router that ``edgeroute route`` uses without ``--router`` (named in models/DEFAULT)."""
    marker = models_dir() / "DEFAULT"
    if marker.is_file():
        return marker.read_text(encoding="utf-8").strip()
    names = shipped_routers()
    if not names:
        raise BundleNotFoundError(
            f"no router is shipped in {models_dir()}; pass a bundle path (see README 'Export')"
        )
    return names[0]


def resolve_bundle(path_or_name: str | Path) -> Path:
    """Find a bundle folder: an existing path, else a shipped router's name."""
    if not isinstance(path_or_name, (str, os.PathLike)):
        raise ConfigurationError(
            f"path_or_name must be a bundle folder or a shipped router name, got {type(path_or_name).__name__}; "
            "`edgeroute list` shows the shipped names; Router.load(default_router_name()) loads the default"
        )
    if not str(path_or_name).strip():
        raise BundleNotFoundError(
            "empty router name or path; pass a bundle folder or a shipped router name (see `edgeroute list`)"
        )
    candidate = Path(path_or_name)
    if candidate.is_dir():
        return candidate
    text = str(path_or_name)
    if _ROUTER_NAME.match(text) and ".." not in text:
        shipped = models_dir() / text
        if shipped.is_dir():
            return shipped
    known = ", ".join(shipped_routers()) or "none"
    raise BundleNotFoundError(
        f"{text!r}: no bundle folder at this path and no shipped router of this name "
        f"(shipped: {known}); pass the folder written by `edgeroute export`"
    )


def clean_prompt(prompt: Any, position: int | None = None) -> str:
    """Check a prompt and return it ready to tokenize.

    Raises ``InvalidPromptError`` for non-strings and empty or whitespace-only strings.
    Lone UTF-16 surrogates (which cannot be encoded) are replaced by U+FFFD. Over-long
    prompts are not rejected: the tokenizer keeps the first ``max_length`` tokens.
    """
    where = "" if position is None else f" at position {position}"
    if not isinstance(prompt, str):
        raise InvalidPromptError(f"prompt{where} must be a string, got {type(prompt).__name__}")
    if not prompt.strip():
        raise InvalidPromptError(f"prompt{where} is empty or whitespace only")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates cannot be encoded; "replace" would give "?"
        prompt = _SURROGATE.sub("\ufffd", prompt)
    return prompt


class Router:
    """A loaded router bundle. Thread-safe: one instance may score from many threads."""

    def __init__(
        self,
        manifest: Manifest,
        win_rates: Callable[[list[str]], np.ndarray],
        precision: str | None,
        device: str,
        strong_model: str | None,
        weak_model: str | None,
        encoder: OnnxTextEncoder | None = None,
        embedder: Callable[[list[str]], np.ndarray] | None = None,
        cache_size: int = 0,
    ) -> None:
        self.manifest = manifest
        self._embedder = embedder
        self._cache: ScoreCache | None = ScoreCache(cache_size) if cache_size else None
        self._win_rates = _finite(win_rates, manifest.folder)
        self.precision = precision
        self.device = device
        self.strong_model = strong_model
        self.weak_model = weak_model
        self.encoder = encoder
        max_length = manifest.max_length
        self._char_limit = None if max_length is None else max_length * CHARS_PER_TOKEN_BOUND

    # ----------------------------------------------------------------- loading
    @classmethod
    def load(
        cls,
        path_or_name: str | Path,
        device: str = "cpu",
        precision: str | None = None,
        threads: int | None = None,
        strong_model: str | None = None,
        weak_model: str | None = None,
        embeddings_base_url: str | None = None,
        embeddings_api_key: str | None = None,
        spinning: bool = True,
        cache_size: int = 0,
        verify: bool = False,
    ) -> Router:
        """Load a bundle folder or shipped router by name; every check happens here.

        ``precision`` defaults to int8 on CPU and fp16 on CUDA when the bundle has them.
        ``strong_model``/``weak_model`` pick the MF pair by name (defaults from the manifest).
        Raises a ``BundleError`` subclass for missing, corrupt or tampered files,
        ``ProviderUnavailableError`` when CUDA is asked for and unusable, and
        ``ConfigurationError`` or ``UnknownModelError`` for bad arguments.
        ``spinning``: onnxruntime's idle-thread spinning (faster, burns CPU between calls).
        ``cache_size``: keep the win rates of that many recent prompts (LRU); 0, the default, keeps none.
        ``verify``: re-score the manifest's golden prompts on this CPU and raise ``ParityDriftError``
        when they drifted past the recorded tolerance (bundles without golden scores load unchecked).
        """
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
            raise ConfigurationError(f"cache_size must be a non-negative integer, got {cache_size!r}")
        if device not in DEVICES:
            raise ConfigurationError(f"device must be one of {DEVICES}, got {device!r}")
        check_threads(threads)  # one rule for every kind, also those that never create a session
        manifest = read_manifest(resolve_bundle(path_or_name))
        encoder, chosen = _load_onnx_encoder(manifest, precision, device, threads, spinning)
        if manifest.kind == "bert":
            if not _names_bert_pair(manifest, strong_model, weak_model):
                raise ConfigurationError(
                    "strong_model/weak_model choose the pair of an MF router; a BERT router predicts "
                    "for the pair it was trained on (see its manifest's 'models')"
                )
            labels = manifest.encoder["win_rate"]["labels"]
            assert encoder is not None  # the manifest check requires graphs for BERT routers
            win_rates = _bert_win_rates(encoder, labels)
            names = manifest.data.get("models") or {}
            return _verified(cls(manifest, win_rates, chosen, device, names.get("strong"), names.get("weak"), encoder,
                                 cache_size=cache_size), verify)

        strong_model, weak_model = _mf_pair(manifest, strong_model, weak_model)
        encoder_section = manifest.encoder
        embed: Callable[[list[str]], np.ndarray]
        if encoder is not None:
            embed = encoder
        elif encoder_section["kind"] == "static":
            embed = _static_embedder(manifest)
        else:
            embed = OpenAIEmbedder(
                encoder_section["model"], encoder_section["dim"], embeddings_base_url, embeddings_api_key
            )
        win_rates = _head_win_rates(manifest, embed, strong_model, weak_model)
        return _verified(cls(manifest, win_rates, chosen, device, strong_model, weak_model, encoder, embed, cache_size),
                         verify)

    # ----------------------------------------------------------------- scoring
    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def kind(self) -> str:
        return self.manifest.kind

    def strong_win_rate(self, prompt: str) -> float:
        """Predicted probability that the strong model beats the weak one on ``prompt``."""
        prompt = self._prepare(prompt)
        if self._cache is not None:
            cached = self._cache.get(prompt)
            if cached is not None:
                return cached
        rate = float(self._win_rates([prompt])[0])
        if self._cache is not None:
            self._cache.put(prompt, rate)
        return rate

    def strong_win_rates(self, prompts: Sequence[str], bucket_size: int = 32) -> np.ndarray:
        """Win rates of a batch, in input order.

        Batches larger than ``bucket_size`` are sorted by length and scored in buckets of that
        size, each padded only to its own longest prompt.
        """
        if isinstance(prompts, str) or not isinstance(prompts, Sequence):
            raise InvalidPromptError(f"prompts must be a sequence of strings, got {type(prompts).__name__}")
        if isinstance(bucket_size, bool) or not isinstance(bucket_size, (int, np.integer)) or bucket_size < 1:
            raise InvalidInputError(f"bucket_size must be a positive integer, got {bucket_size!r}")
        bucket_size = int(bucket_size)
        cleaned = [self._prepare(prompt, position) for position, prompt in enumerate(prompts)]
        if len(cleaned) <= bucket_size:
            if not cleaned:
                return np.zeros(0, dtype=np.float64)
            return self._win_rates(cleaned).astype(np.float64)
        order = np.argsort([len(p) for p in cleaned], kind="stable")
        rates = np.empty(len(cleaned), dtype=np.float64)
        for start in range(0, len(order), bucket_size):
            rows = order[start : start + bucket_size]
            rates[rows] = self._win_rates([cleaned[i] for i in rows])
        return rates

    def embed(self, prompts: Sequence[str]) -> np.ndarray:
        """MF routers: the prompt embeddings the head scores, one row per prompt."""
        if self._embedder is None:
            raise ConfigurationError(f"router {self.name!r} is a BERT router; only MF routers embed prompts")
        return self._embedder([self._prepare(prompt, position) for position, prompt in enumerate(prompts)])

    def _prepare(self, prompt: Any, position: int | None = None) -> str:
        """``clean_prompt``, then cut to what ``max_length`` tokens can use (the first tokens are kept)."""
        limit = self._char_limit
        if limit is not None and isinstance(prompt, str) and len(prompt) > limit:
            # Cut first, so that checking a megabyte prompt costs no more than a short one. A long
            # run of leading whitespace holds no tokens: skip it rather than keep only blanks.
            cut = prompt[:limit]
            prompt = cut if not cut.isspace() else prompt.lstrip()[:limit]
        return clean_prompt(prompt, position)

    def route(self, prompt: str, threshold: float | None = None, strong_pct: float | None = None) -> Decision:
        """Strong when the win rate is at least the threshold (RouteLLM's rule), else weak.

        The threshold is ``threshold``, else the one for ``strong_pct`` strong calls, else
        ``default_threshold()``, as in ``edgeroute route`` (``decision.resolve_threshold``).
        """
        chosen = resolve_threshold(self, threshold, strong_pct)
        started = time.perf_counter()
        win_rate = self.strong_win_rate(prompt)
        score_us = (time.perf_counter() - started) * 1e6
        return decision_for(self.name, win_rate, chosen, score_us, {"strong": self.strong_model, "weak": self.weak_model})

    def threshold_for(self, strong_pct: float) -> float:
        """Threshold that sends a share ``strong_pct`` of prompts to the strong model.

        Read from the manifest's calibration table (linear between its points); raises
        ``InvalidInputError`` when the bundle is not calibrated or the share is off its range.
        """
        table = (self.manifest.calibration or {}).get("thresholds")
        if not table:
            raise InvalidInputError(
                f"router {self.name!r} has no calibration table; run `edgeroute calibrate --write` "
                "or pass a threshold"
            )
        if isinstance(strong_pct, bool) or not isinstance(strong_pct, (int, float)):
            raise InvalidInputError(f"strong_pct must be a number, got {type(strong_pct).__name__}")
        try:
            strong_pct = float(strong_pct)
        except OverflowError:  # an int with hundreds of digits
            raise InvalidInputError("strong_pct must be a number in [0, 1], got an integer too large for a float") from None
        if not math.isfinite(strong_pct):
            raise InvalidInputError(f"strong_pct must be a number, got {strong_pct!r}")
        points = sorted((float(pct), float(value)) for pct, value in table.items())
        low, high = points[0][0], points[-1][0]
        if not low <= strong_pct <= high:
            raise InvalidInputError(f"strong_pct must be within the calibrated range [{low}, {high}], got {strong_pct}")
        shares = [p for p, _ in points]
        thresholds = [t for _, t in points]
        return float(np.interp(strong_pct, shares, thresholds))

    def default_threshold(self) -> float:
        """The calibrated threshold for 50% strong calls, or 0.5 when the bundle is not calibrated."""
        try:
            return self.threshold_for(0.5)
        except InvalidInputError:
            return 0.5

    def __repr__(self) -> str:
        return f"Router(name={self.name!r}, kind={self.kind!r}, precision={self.precision!r}, device={self.device!r})"


class ScoreCache:
    """A thread-safe LRU map from prompt to win rate."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, prompt: str) -> float | None:
        with self._lock:
            rate = self._items.get(prompt)
            if rate is not None:
                self._items.move_to_end(prompt)
            return rate

    def put(self, prompt: str, rate: float) -> None:
        with self._lock:
            self._items[prompt] = rate
            self._items.move_to_end(prompt)
            if len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


# ---------------------------------------------------------------------- helpers
def _choose_precision(manifest: Manifest, precision: str | None, device: str) -> str:
    available = manifest.precisions
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


def _load_onnx_encoder(
    manifest: Manifest, precision: str | None, device: str, threads: int | None, spinning: bool
) -> tuple[OnnxTextEncoder | None, str | None]:
    """The bundle's ONNX encoder and its precision, checked by one probe run; (None, None) without a graph."""
    section = manifest.encoder
    if not section.get("graphs"):
        if precision is not None:
            raise PrecisionUnavailableError(
                f"{manifest.folder}: this router has no ONNX graph (its embedder is "
                f"{section.get('kind')!r}); load it without a precision "
                "(omit precision= in Python, --precision on the command line)"
            )
        if device != "cpu":
            # Without a graph nothing runs on onnxruntime: CUDA would silently mean CPU.
            raise ConfigurationError(
                f"{manifest.folder}: this router has no ONNX graph (its embedder is "
                f"{section.get('kind')!r}), so it scores on the CPU only; load it with "
                "device='cpu' (--device cpu), or pick a router with graphs for CUDA"
            )
        return None, None
    chosen = _choose_precision(manifest, precision, device)
    graph_path = manifest.verify(section["graphs"][chosen])
    session = make_session(graph_path, device, threads, spinning)
    _check_graph_io(session, graph_path, section)
    tokenizer_path = manifest.verify(manifest.data["tokenizer"]["file"])
    tokenizer = load_tokenizer(tokenizer_path, manifest.max_length)
    encoder = OnnxTextEncoder(session, tokenizer, section["inputs"], section["output"],
                              per_row=_scores_per_row(manifest, chosen))
    _probe_graph(encoder, graph_path, manifest)
    return encoder, chosen


def _probe_graph(encoder: OnnxTextEncoder, graph_path: Path, manifest: Manifest) -> None:
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
    section = manifest.encoder
    if manifest.kind == "bert":
        labels = section["win_rate"]["labels"]
        if output.ndim != 2 or max(labels) >= output.shape[1]:
            raise ManifestError(
                f"{manifest.folder / MANIFEST_NAME}: 'classifier.win_rate.labels' {labels} do not fit the graph's "
                f"output of shape {output.shape}; re-export the bundle with `edgeroute export`"
            )
    elif output.shape != (1, section["dim"]):
        raise ManifestError(
            f"{manifest.folder / MANIFEST_NAME}: 'embedder.dim' is {section['dim']} but the graph outputs shape "
            f"{output.shape}; re-export the bundle with `edgeroute export`"
        )
    if not np.all(np.isfinite(output)):
        raise BundleCorruptError(f"{graph_path}: the graph outputs non-finite values (NaN or infinity); re-export the bundle")


def _mf_pair(manifest: Manifest, strong_model: str | None, weak_model: str | None) -> tuple[str, str]:
    """The MF pair's names in the bundle's own spelling (defaults from the manifest, aliases resolved)."""
    head = manifest.data["head"]
    model_names: list[str] = head["model_names"]
    strong_model = _canonical(strong_model or head.get("default_strong"), model_names, head)
    weak_model = _canonical(weak_model or head.get("default_weak"), model_names, head)
    for role, name in (("strong", strong_model), ("weak", weak_model)):
        if not isinstance(name, str) or name not in model_names:
            shown = ", ".join(model_names[:8]) + (" …" if len(model_names) > 8 else "")
            raise UnknownModelError(
                f"{role} model {name!r} is not in this MF router's {len(model_names)} models ({shown}); "
                f"see `edgeroute info {manifest.folder}` for all names"
            )
    if strong_model == weak_model:
        raise ConfigurationError(f"strong and weak model are both {strong_model!r}; pick two different models")
    return cast(str, strong_model), cast(str, weak_model)


def _static_embedder(manifest: Manifest) -> StaticEmbedder:
    """The static table and its tokenizer, checked to fit each other."""
    section = manifest.encoder
    table = _load_array(manifest, section["file"], None, section["dim"])
    tokenizer_path = manifest.verify(manifest.data["tokenizer"]["file"])
    tokenizer = load_tokenizer(tokenizer_path, manifest.max_length)
    top_id = max(tokenizer.get_vocab(with_added_tokens=True).values(), default=0)
    if top_id >= table.shape[0]:
        raise BundleCorruptError(
            f"{tokenizer_path}: token ids reach {top_id}, past the {table.shape[0]} rows of {section['file']}; "
            "the tokenizer does not belong to this table: re-export the bundle"
        )
    return StaticEmbedder(table, tokenizer)


def _check_graph_io(session: Any, graph_path: Path, section: dict[str, Any]) -> None:
    graph_inputs = sorted(i.name for i in session.get_inputs())
    graph_outputs = [o.name for o in session.get_outputs()]
    if graph_inputs != sorted(section["inputs"]) or section["output"] not in graph_outputs:
        raise BundleCorruptError(
            f"{graph_path}: graph inputs {graph_inputs} / outputs {graph_outputs} differ from the manifest's "
            f"{sorted(section['inputs'])} / {section['output']!r}; the graph does not belong to this manifest: re-export"
        )


def _load_array(manifest: Manifest, file_name: str, rows: int | None, dim: int) -> np.ndarray:
    """A float matrix from a bundle's .npy file, shape checked (``rows`` None: any row count)."""
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
                f"{path}: array has shape {shape} and dtype {dtype}, expected float ({rows or 'N'}, {dim}); "
                "re-export the bundle"
            )
        data_bytes = path.stat().st_size - handle.tell()
        if data_bytes != shape[0] * dim * dtype.itemsize:
            raise corrupt(f"header says {shape} {dtype}, the file holds {data_bytes} bytes of data")
        try:
            matrix = np.fromfile(handle, dtype=dtype, count=shape[0] * dim)
        except (ValueError, OSError) as exc:
            raise corrupt(str(exc)[:200]) from None
    return matrix.reshape(shape, order="F" if fortran_order else "C")


def _bert_win_rates(encoder: OnnxTextEncoder, labels: list[int]) -> Callable[[list[str]], np.ndarray]:
    def win_rates(prompts: list[str]) -> np.ndarray:
        logits = encoder(prompts).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        return 1.0 - probabilities[:, labels].sum(axis=1)

    return win_rates


def _head_win_rates(
    manifest: Manifest, embed: Callable[[list[str]], np.ndarray], strong_model: str, weak_model: str
) -> Callable[[list[str]], np.ndarray]:
    """The scoring function of an MF-kind bundle's head: RouteLLM's folded MF matrix or a distilled MLP."""
    head, dim = manifest.data["head"], manifest.encoder["dim"]
    model_names: list[str] = head["model_names"]
    if head.get("kind") == "mlp":
        if [strong_model, weak_model] != model_names[:2]:
            raise ConfigurationError(
                f"{manifest.folder}: this distilled router predicts only for strong {model_names[0]!r} "
                f"vs weak {model_names[1]!r}; omit strong_model/weak_model or use an MF router"
            )
        hidden = _load_array(manifest, head["file"], None, dim + 2).astype(np.float32)
        output = _load_array(manifest, head["output_file"], 1, hidden.shape[0] + 1).astype(np.float32)
        mlp = MLPHead(hidden, output)
        return lambda prompts: mlp.win_rates(embed(prompts), prompts)
    matrix = _load_array(manifest, head["file"], len(model_names), dim).astype(np.float32)
    # Folded head: score(model) = row · embedding, so the pair's logit is one dot product.
    difference = matrix[model_names.index(strong_model)] - matrix[model_names.index(weak_model)]
    return _mf_win_rates(embed, difference)


def _mf_win_rates(embed: Callable[[list[str]], np.ndarray], difference: np.ndarray) -> Callable[[list[str]], np.ndarray]:
    def win_rates(prompts: list[str]) -> np.ndarray:
        logits = np.asarray(embed(prompts), dtype=np.float32) @ difference
        return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))

    return win_rates


def _scores_per_row(manifest: Manifest, precision: str | None) -> bool:
    """True for dynamically quantized int8 graphs: they scale activations over the whole batch,
    so a prompt's score would depend on the prompts beside it; such graphs score one row at a time."""
    if precision != "int8":
        return False
    settings = (manifest.data.get("quantization") or {}).get("int8") or {}
    return settings.get("method", "dynamic") == "dynamic"  # bundles without the record were dynamic


def _canonical(name: str | None, model_names: list[str], head: dict[str, Any]) -> str | None:
    """A model name in the bundle's own spelling, via the manifest's alias table (unknown: unchanged)."""
    from .names import resolve_name

    if not isinstance(name, str):
        return name
    return resolve_name(name, model_names, head.get("aliases")) or name


def _names_bert_pair(manifest: Manifest, strong_model: str | None, weak_model: str | None) -> bool:
    """A BERT router predicts for one pair: accept no names, or names (any alias) of that pair."""
    from .names import resolve_name

    if strong_model is None and weak_model is None:
        return True
    pair = manifest.data.get("models") or {}
    aliases = manifest.data.get("aliases")
    for role, name in (("strong", strong_model), ("weak", weak_model)):
        own = pair.get(role)
        if name is not None and (not isinstance(name, str) or not own or resolve_name(name, [own], aliases) != own):
            return False
    return True


def _verified(router: Router, verify: bool) -> Router:
    if verify:
        from .golden import check_golden

        check_golden(router)
    return router


def _finite(win_rates: Callable[[list[str]], np.ndarray], folder: Path) -> Callable[[list[str]], np.ndarray]:
    """Raise rather than return a NaN win rate: NaN compares false with every threshold (always weak)."""
    def checked(prompts: list[str]) -> np.ndarray:
        rates = win_rates(prompts)
        if not np.all(np.isfinite(rates)):
            raise BundleCorruptError(f"{folder}: the router scored a non-finite win rate; re-export the bundle")
        return rates

    return checked
