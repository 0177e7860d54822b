"""Text encoders behind a router: an ONNX graph fed by a `tokenizers` tokenizer, or a remote
OpenAI-compatible embeddings endpoint (for MF routers trained on such embeddings)."""

from __future__ import annotations

import json
import math
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tokenizers import Tokenizer

from edgeroute.runtime.errors import (
    BundleCorruptError,
    ConfigurationError,
    EmbeddingServiceError,
    ProviderUnavailableError,
)
from edgeroute.runtime.scoring.wordcache import ChunkCache

if TYPE_CHECKING:  # onnxruntime is imported by make_session only: static and remote routers never load it
    import onnxruntime as ort

DEVICES = ("cpu", "cuda")
# Shipped tokenizer files are under 1 MB with 5 added tokens; these limits leave ample room.
MAX_TOKENIZER_BYTES = 64 << 20
MAX_ADDED_TOKENS = 10_000
_PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}
# onnxruntime's CPU SkipLayerNormalization kernel takes 3x the time of Add + LayerNormalization on a
# [60, 384] activation (120 vs 40 us, both CPUs measured): the CPU session keeps them apart; CUDA fuses.
# benchmarks/results/latency.md, "int8 variants", times both graphs side by side.
CPU_DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)


def check_threads(threads: object) -> None:
    """Raise ``ConfigurationError`` unless ``threads`` is None or a positive integer (every router kind)."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 1024):
        raise ConfigurationError(f"threads must be an integer in [1, 1024] or None, got {threads!r}")


def make_session(graph_path: Path, device: str, threads: int | None, spinning: bool = True) -> ort.InferenceSession:
    """Create an onnxruntime session on ``device``; raise rather than fall back to another device.

    ``spinning`` keeps idle worker threads spinning: 30% lower batch-1 latency here, at the cost
    of CPU burnt between requests (turn it off on shared machines).
    """
    import onnxruntime as ort  # here, not at the top: about 150 ms that graph-free routers never need

    if device not in DEVICES:
        raise ConfigurationError(f"device must be one of {DEVICES}, got {device!r}")
    check_threads(threads)
    wanted = _PROVIDERS[device][0]
    if wanted not in ort.get_available_providers():
        raise ProviderUnavailableError(
            f"device {device!r} needs onnxruntime's {wanted}, which this onnxruntime build lacks "
            f"(available: {', '.join(ort.get_available_providers())}); "
            "install the GPU build as the README's 'GPU' section says, or load with device='cpu'"
        )
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        disabled = list(CPU_DISABLED_OPTIMIZERS) if device == "cpu" else []
        # From the bytes, not the path: onnxruntime then cannot read external-data files beside the graph,
        # which the manifest does not hash (a graph that needs them fails here).
        graph = graph_path.read_bytes()
        session = ort.InferenceSession(graph, sess_options=options, providers=_PROVIDERS[device], disabled_optimizers=disabled)
    except Exception as exc:  # onnxruntime raises its own untyped errors for unreadable graphs
        if "external" in str(exc).lower():
            raise BundleCorruptError(
                f"{graph_path}: the graph keeps weights in external-data files, which a bundle may not hold (they are not "
                "hash-checked); re-export it with the weights inside the graph"
            ) from exc
        raise BundleCorruptError(
            f"{graph_path}: onnxruntime cannot load this graph ({str(exc).splitlines()[0][:200]}); re-export the bundle"
        ) from exc
    if session.get_providers()[0] != wanted:
        # onnxruntime silently falls back to CPU when CUDA libraries fail to load; refuse that.
        raise ProviderUnavailableError(
            f"device {device!r}: onnxruntime created the session on {session.get_providers()[0]} "
            f"instead of {wanted} (are the CUDA and cuDNN libraries installed?); "
            "fix the CUDA installation, or load with device='cpu'"
        )
    return session


# Tokenizer components a bundle may use: each costs time linear in the prompt and keeps its length within a
# small factor. A regex is allowed only as a plain string (no backtracking); ``_check_expansion`` probes the rest.
NORMALIZERS = frozenset(
    {"BertNormalizer", "NFC", "NFD", "NFKC", "NFKD", "Lowercase", "StripAccents", "Strip", "Nmt", "Precompiled", "Replace", "Sequence"}
)
PRE_TOKENIZERS = frozenset(
    {"BertPreTokenizer", "Whitespace", "WhitespaceSplit", "Punctuation", "Digits", "Metaspace", "ByteLevel", "CharDelimiterSplit"}
    | {"UnicodeScripts", "Split", "Sequence"}
)
MAX_NORMALIZED_GROWTH = 4  # a normalized text may be at most this many times longer than its input
_EXPANSION_PROBE = "Ünïcödé ﬁ ½ ÅΩ 東京 Straße ÆØ İı ǅ " * 4


def _check_components(section: object, allowed: frozenset[str], where: str) -> None:
    """Refuse a normalizer or pre-tokenizer outside ``allowed``, and a regex pattern (only plain strings pass)."""
    if section is None:
        return
    if not isinstance(section, dict) or section.get("type") not in allowed:
        kind = section.get("type") if isinstance(section, dict) else type(section).__name__
        names = ", ".join(sorted(allowed))
        raise BundleCorruptError(f"{where} {kind!r} is not one edgeroute runs (allowed: {names}); re-export the bundle")
    pattern = section.get("pattern")
    if isinstance(pattern, dict) and "Regex" in pattern:
        raise BundleCorruptError(f"{where} {section['type']!r} uses a regex pattern, which edgeroute does not run; re-export the bundle")
    for part in section.get("normalizers") or section.get("pretokenizers") or []:
        _check_components(part, allowed, where)


def _check_expansion(tokenizer: Tokenizer, path: Path) -> None:
    """Refuse a normalizer that makes text more than ``MAX_NORMALIZED_GROWTH`` times longer (probed on a short text)."""
    normalizer = tokenizer.normalizer
    if normalizer is None:
        return
    grown = len(normalizer.normalize_str(_EXPANSION_PROBE))
    if grown > MAX_NORMALIZED_GROWTH * len(_EXPANSION_PROBE):
        raise BundleCorruptError(
            f"{path}: the normalizer makes text {grown / len(_EXPANSION_PROBE):.0f} times longer (at most "
            f"{MAX_NORMALIZED_GROWTH} allowed: scoring cost must stay bounded); re-export the bundle"
        )


def is_tokenizer_panic(exc: BaseException) -> bool:
    """Whether ``exc`` is a Rust panic raised through ``tokenizers`` (pyo3's PanicException, a BaseException)."""
    return type(exc).__name__ == "PanicException"


def load_tokenizer(path: Path, max_length: int | None) -> Tokenizer:
    """Load a `tokenizers` file set to truncate at ``max_length`` and pad to the batch's longest.

    Files over ``MAX_TOKENIZER_BYTES`` or with more than ``MAX_ADDED_TOKENS`` added tokens are
    refused: every added token slows down tokenizing every prompt.
    """
    size = path.stat().st_size
    if size > MAX_TOKENIZER_BYTES:
        raise BundleCorruptError(
            f"{path}: {size} bytes, over the {MAX_TOKENIZER_BYTES}-byte limit for a tokenizer file; re-export the bundle"
        )
    try:
        text = path.read_bytes().decode("utf-8")
        data = json.loads(text)
        added = data.get("added_tokens") or []
        if len(added) > MAX_ADDED_TOKENS:
            raise BundleCorruptError(f"{path}: {len(added)} added tokens, over the limit of {MAX_ADDED_TOKENS}; re-export the bundle")
        for section, allowed in (("normalizer", NORMALIZERS), ("pre_tokenizer", PRE_TOKENIZERS)):
            _check_components(data.get(section), allowed, f"{path}: {section}")
        tokenizer = Tokenizer.from_str(text)
        _check_expansion(tokenizer, path)
    except BundleCorruptError:
        raise
    except RecursionError:
        raise BundleCorruptError(f"{path}: nested too deeply to be a tokenizers file; re-export the bundle") from None
    except BaseException as exc:  # tokenizers' own untyped errors, and its Rust panics (BaseException); json ValueError
        if not isinstance(exc, Exception) and not is_tokenizer_panic(exc):
            raise  # KeyboardInterrupt, SystemExit
        raise BundleCorruptError(f"{path}: not a valid tokenizers file ({str(exc)[:200]}); re-export the bundle") from exc
    if max_length is not None:  # a validated manifest always sets it next to a tokenizer
        tokenizer.enable_truncation(max_length=max_length)
    pad_id = tokenizer.token_to_id("[PAD]")
    tokenizer.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]")
    return tokenizer


class OnnxTextEncoder:
    """Tokenize a batch and run one ONNX graph on it; returns the named output."""

    def __init__(
        self,
        session: ort.InferenceSession,
        tokenizer: Tokenizer,
        input_names: Sequence[str],
        output_name: str,
        per_row: bool = False,
    ) -> None:
        self.session = session
        # Dynamically quantized graphs: one graph run per text, so no text's result depends on another's.
        self.per_row = per_row
        self.tokenizer = tokenizer
        self.input_names = list(input_names)
        self.output_name = output_name

    def tokenize(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Token ids, attention mask and token types for ``texts``, padded to the longest."""
        encodings = self.tokenizer.encode_batch(list(texts))
        columns = {
            "input_ids": [e.ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
        }
        return {name: np.asarray(columns[name], dtype=np.int64) for name in self.input_names}

    def run_tokens(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Run the graph on already tokenized input."""
        return self.session.run([self.output_name], feeds)[0]

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        if self.per_row and len(texts) > 1:
            return np.concatenate([self.run_tokens(self.tokenize([text])) for text in texts])
        return self.run_tokens(self.tokenize(texts))


class OpenAIEmbedder:
    """Prompt embeddings from an OpenAI-compatible ``/embeddings`` endpoint (standard library HTTP).

    The endpoint comes from ``base_url`` or ``EDGEROUTE_EMBEDDINGS_BASE_URL`` (then
    ``OPENAI_BASE_URL``, then OpenAI's own); the key from ``api_key`` or
    ``EDGEROUTE_EMBEDDINGS_API_KEY`` (then ``OPENAI_API_KEY``). Nothing connects until the
    first prompt is scored.
    """

    def __init__(self, model: str, dim: int, base_url: str | None, api_key: str | None, timeout_s: float = 10.0) -> None:
        base_url = (
            base_url or os.environ.get("EDGEROUTE_EMBEDDINGS_BASE_URL") or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        )
        api_key = api_key or os.environ.get("EDGEROUTE_EMBEDDINGS_API_KEY") or os.environ.get("OPENAI_API_KEY")
        if not api_key:
            raise ConfigurationError(
                f"this MF router embeds prompts with {model!r} through an OpenAI-compatible endpoint, "
                "and no API key is set: pass embeddings_api_key= to Router.load or set "
                "EDGEROUTE_EMBEDDINGS_API_KEY (or OPENAI_API_KEY)"
            )
        self.url = base_url.rstrip("/") + "/embeddings"
        self.model = model
        self.dim = dim
        self._api_key = api_key
        self.timeout_s = timeout_s

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        body = json.dumps({"model": self.model, "input": list(texts)}).encode("utf-8")
        request = urllib.request.Request(
            self.url,
            data=body,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self._api_key}"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                payload = json.loads(response.read())
            rows = sorted(payload["data"], key=lambda item: item["index"])
            vectors = np.asarray([row["embedding"] for row in rows], dtype=np.float32)
        except urllib.error.HTTPError as exc:
            raise EmbeddingServiceError(f"embeddings endpoint {self.url} answered HTTP {exc.code}") from exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise EmbeddingServiceError(f"embeddings endpoint {self.url} unreachable: {exc}") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbeddingServiceError(f"embeddings endpoint {self.url} sent a malformed body: {exc}") from exc
        if vectors.shape != (len(texts), self.dim):
            raise EmbeddingServiceError(
                f"embeddings endpoint {self.url} returned shape {vectors.shape}, expected ({len(texts)}, {self.dim})"
            )
        if not np.all(np.isfinite(vectors)):
            raise EmbeddingServiceError(f"embeddings endpoint {self.url} returned NaN or infinite values")
        return vectors


class StaticEmbedder:
    """Static token embeddings (distilled from a sentence encoder): tokenize, average the rows of
    the prompt's tokens, L2-normalize. No neural network runs at scoring time.

    Plain ASCII prompts skip the `tokenizers` pipeline (three quarters of the time) through a
    bounded chunk cache that yields the same ids (``wordcache.ChunkCache``); other prompts, and
    tokenizers the cache is not proven against, go through the tokenizer as before.
    """

    # Up to this many rows the BLAS product stays on the calling thread (measured with the bundled
    # OpenBLAS: process CPU time equals wall time up to 200 rows of 320); longer prompts use numpy's sum.
    MAX_SUMMED_ROWS = 96

    def __init__(self, table: np.ndarray, tokenizer: Tokenizer, fast: bool = True) -> None:
        """``fast=False`` keeps every prompt on the tokenizer path (the reference for the cache's tests)."""
        # Stored as float16 to halve the bundle; held as float32 because averaging float16 rows
        # costs more than the whole rest of the lookup.
        self._rows = np.ascontiguousarray(table, dtype=np.float32)
        self._ones = np.ones(self.MAX_SUMMED_ROWS, dtype=np.float32)
        # ``table`` is a strided view of the first ``dim`` columns once ``append_columns`` ran: gather
        # from ``_rows`` (numpy's take would first copy a strided view's whole table).
        self.table = self._rows
        self.tokenizer = tokenizer
        tokenizer.no_padding()
        # encode_batch_fast (tokenizers >= 0.21) skips character offsets: a third of the time.
        self._encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
        self.chunks = ChunkCache.for_tokenizer(tokenizer) if fast else None

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalized mean embeddings, ``[len(texts), dim]`` float32; zeros for a prompt with no tokens."""
        chunks = self.chunks
        found = [chunks.ids(text) for text in texts] if chunks is not None else [None] * len(texts)
        if len(found) == 1 and found[0] is not None:  # the common case, kept free of per-batch bookkeeping
            return self._embed_ids(found[0])[None]
        out = np.zeros((len(texts), self.table.shape[1]), dtype=np.float32)
        slow: list[int] = []
        for row, ids in enumerate(found):
            if ids is None:
                slow.append(row)
            else:
                out[row] = self._embed_ids(ids)
        if slow:
            encodings = self._encode([texts[row] for row in slow], add_special_tokens=False)
            for row, encoding in zip(slow, encodings):
                out[row] = self._embed_ids(np.asarray(encoding.ids, dtype=np.intp))
        return out

    def append_columns(self, extra: np.ndarray) -> None:
        """Store ``extra`` (one row per token) beside the table, for ``summed_rows`` (the MLP head's fused path)."""
        dim = self.table.shape[1]
        if self._rows.shape[1] != dim:  # a second head would silently replace the first one's columns
            raise ConfigurationError("this static embedder already carries another head's columns; build one per scorer")
        self._rows = np.hstack([self.table, np.asarray(extra, dtype=np.float32)])
        self.table = self._rows[:, :dim]

    def summed_rows(self, ids: np.ndarray) -> np.ndarray:
        """The sum of the stored rows of ``ids``: the embedding's sum, then any appended columns' sums."""
        rows = self._rows.take(ids, axis=0)
        if len(rows) > len(self._ones):
            return rows.sum(axis=0)
        # A BLAS vector-matrix product sums the rows in half the time of numpy's reduction.
        return self._ones[: len(rows)] @ rows

    def _embed_ids(self, ids: np.ndarray) -> np.ndarray:
        """The normalized sum of the table rows of ``ids``; zeros for no ids."""
        # Per prompt, not vectorized: at batch 1 (the common case) numpy's per-call cost dominates.
        vector = self.summed_rows(ids)[: self.table.shape[1]]  # the mean's 1/n cancels under normalization
        norm = math.sqrt(vector @ vector)  # rounds to the same float32 as np.sqrt on the float32
        if norm > 0.0:
            vector /= norm
        else:  # all zeros, or squares that underflow: zeros, as before this shortcut existed
            vector[:] = 0.0
        return vector
