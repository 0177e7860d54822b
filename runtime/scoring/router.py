"""The entry class: ``Router.load(...)`` then ``strong_win_rate``, ``strong_win_rates`` or ``route``."""

from __future__ import annotations

import contextlib
import math
import os
import re
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Callable, cast

import numpy as np

from edgeroute.runtime.scoring.decision import (
    Decision,
    check_threshold,
    decision_for,
    old_share_name,
    resolve_threshold,
    threshold_from_table,
)
from edgeroute.runtime.errors import (
    BundleCorruptError,
    BundleNotFoundError,
    ConfigurationError,
    InvalidInputError,
    InvalidPromptError,
)
from edgeroute.runtime.scoring.encoders import is_tokenizer_panic
from edgeroute.runtime.scoring.kinds import router_kind
from edgeroute.runtime.scoring.lru import LRUCache
from edgeroute.runtime.scoring.manifest import Manifest, StaticEmbedderSpec, read_manifest
from edgeroute.runtime.scoring.scorers import LoadOptions, PerModelScorer, Scorer, scorer_for
from edgeroute.runtime.scoring.targets import Targets, decision_for_targets

# A router name (as opposed to a path) is one plain folder name inside models/.
_ROUTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SURROGATE = re.compile("[\ud800-\udfff]")
# Prompts are cut to this many characters per token of max_length before tokenizing: the
# tokenizer would otherwise process the whole text only to keep its first max_length tokens.
# Ordinary text runs 3-5 characters a token, so the first max_length tokens never reach the cut.
CHARS_PER_TOKEN_BOUND = 16


def cut_prompt(prompt: str, max_length: int | None) -> str:
    """The part of ``prompt`` that ``max_length`` tokens can use: its first ``max_length * 16`` characters.

    Cut before tokenizing, so that checking a megabyte prompt costs no more than a short one; a long
    run of leading whitespace holds no tokens, so it is skipped rather than kept as the whole cut.
    Training uses this too, so that a head's length feature sees what the router scores.
    """
    if max_length is None:
        return prompt
    limit = max_length * CHARS_PER_TOKEN_BOUND
    if len(prompt) <= limit:
        return prompt
    cut = prompt[:limit]
    return cut if not cut.isspace() else prompt.lstrip()[:limit]


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
        raise BundleNotFoundError(f"no router is shipped in {models_dir()}; pass a bundle path (see README 'Export')")
    return names[0]


def resolve_bundle(path_or_name: str | Path) -> Path:
    """Find a bundle folder: an existing path, else a shipped router's name."""
    if not isinstance(path_or_name, (str, os.PathLike)):
        raise ConfigurationError(
            f"path_or_name must be a bundle folder or a shipped router name, got {type(path_or_name).__name__}; "
            "`edgeroute list` shows the shipped names; Router.load(default_router_name()) loads the default"
        )
    if not str(path_or_name).strip():
        raise BundleNotFoundError("empty router name or path; pass a bundle folder or a shipped router name (see `edgeroute list`)")
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
    if not isinstance(prompt, str):
        raise InvalidPromptError(f"prompt{_where(position)} must be a string, got {type(prompt).__name__}")
    if not prompt or prompt.isspace():  # isspace allocates nothing, unlike strip (batch 1 is microseconds)
        raise InvalidPromptError(f"prompt{_where(position)} is empty or whitespace only")
    if prompt.isascii():
        return prompt
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates cannot be encoded; "replace" would give "?"
        prompt = _SURROGATE.sub("\ufffd", prompt)
    return prompt


def _where(position: int | None) -> str:
    return "" if position is None else f" at position {position}"


class Router:
    """A loaded router bundle. Thread-safe: one instance may score from many threads."""

    def __init__(self, manifest: Manifest, scorer: Scorer, device: str = "cpu", cache_size: int = 0) -> None:
        """A router over an already built scorer; ``Router.load`` is the usual way to get one."""
        self.manifest = manifest
        self.scorer = scorer
        self._cache: LRUCache[str, float] | None = LRUCache(cache_size) if cache_size else None
        self._win_rates = _finite(scorer.win_rates, manifest.folder)
        self.precision = scorer.precision
        self.device = device
        self.strong_model = scorer.strong_model
        self.weak_model = scorer.weak_model
        self.encoder = scorer.encoder
        self._max_length = manifest.max_length
        # Characters of conversation worth sending to the router: enough to fill its token window
        # (about 4 characters a token, with margin); read per request by the routing policy.
        self.max_chars = 8 * (manifest.max_length or 512)
        self.name: str = manifest.name
        # True for a static-table router: microseconds of CPU, bounded by the prompt cut, no graph, no network.
        # Servers call such a router on their event loop: a thread-pool hop costs more than the scoring.
        self.scores_inline: bool = isinstance(manifest.encoder, StaticEmbedderSpec)
        # Whether it scores every model it knows (a folded MF head), so that it can route among N targets.
        kind = router_kind(manifest.kind)
        self.scores_every_model: bool = kind is not None and kind.scores_every_model(manifest)
        # Sorted once: the server resolves a threshold on every request.
        points = manifest.calibration.points() if manifest.calibration else []
        self._calibration = ([p for p, _ in points], [t for _, t in points]) if points else None
        self._default_threshold = 0.5
        with contextlib.suppress(InvalidInputError):  # not calibrated, or 50% off the table: 0.5
            self._default_threshold = self.threshold_for(0.5)

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
        options = LoadOptions(device, precision, threads, spinning, strong_model, weak_model, embeddings_base_url, embeddings_api_key)
        manifest = read_manifest(resolve_bundle(path_or_name))
        router = cls(manifest, scorer_for(manifest)(manifest, options), device, cache_size)
        if verify:
            from edgeroute.runtime.scoring.golden import check_golden

            check_golden(router)
        return router

    # ----------------------------------------------------------------- scoring
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
        # list and tuple first: the Sequence ABC check costs a microsecond on the batch-1 path.
        if type(prompts) not in (list, tuple) and (isinstance(prompts, str) or not isinstance(prompts, Sequence)):
            raise InvalidPromptError(f"prompts must be a sequence of strings, got {type(prompts).__name__}")
        if type(bucket_size) is not int or bucket_size < 1:  # the exact-type test first: it is the batch-1 path
            if isinstance(bucket_size, bool) or not isinstance(bucket_size, (int, np.integer)) or bucket_size < 1:
                raise InvalidInputError(f"bucket_size must be a positive integer, got {bucket_size!r}")
            bucket_size = int(bucket_size)
        if len(prompts) == 1:
            cleaned = [self._prepare(prompts[0], 0)]
        else:
            cleaned = [self._prepare(prompt, position) for position, prompt in enumerate(prompts)]
        if len(cleaned) <= bucket_size:
            if not cleaned:
                return np.zeros(0, dtype=np.float64)
            return self._win_rates(cleaned).astype(np.float64, copy=False)
        order = np.argsort([len(p) for p in cleaned], kind="stable")
        rates = np.empty(len(cleaned), dtype=np.float64)
        for start in range(0, len(order), bucket_size):
            rows = order[start : start + bucket_size]
            rates[rows] = self._win_rates([cleaned[i] for i in rows])
        return rates

    def model_rows(self, models: Sequence[str]) -> np.ndarray:
        """The head's rows for ``models`` (checked once, e.g. when a server loads its targets), for ``model_scores``."""
        return self._per_model().model_rows(models, self.manifest.folder)

    def model_scores(self, prompts: Sequence[str], rows: np.ndarray) -> np.ndarray:
        """Each model's score per prompt, ``[prompts, models]``, for the rows ``model_rows`` gave."""
        cleaned = [self._prepare(prompt, position) for position, prompt in enumerate(prompts)]
        scores = self._per_model().model_scores(cleaned, rows)
        if not np.isfinite(scores).all():
            raise BundleCorruptError(f"{self.manifest.folder}: the router produced non-finite model scores; re-export the bundle")
        return scores

    def _per_model(self) -> PerModelScorer:
        """The scorer, when it scores every model; ``ConfigurationError`` naming the bundle otherwise."""
        if not self.scores_every_model:
            pair = f"strong {self.strong_model!r} vs weak {self.weak_model!r}"
            raise ConfigurationError(
                f"{self.manifest.folder}: this router predicts one pair ({pair}), not a score per model; "
                "route among N targets with an MF router (edgeroute export mf), or configure two targets"
            )
        return cast(PerModelScorer, self.scorer)

    def embed(self, prompts: Sequence[str]) -> np.ndarray:
        """MF routers: the prompt embeddings the head scores, one row per prompt."""
        embedder = self.scorer.embedder
        if embedder is None:
            raise ConfigurationError(f"router {self.name!r} is a BERT router; only MF routers embed prompts")
        return embedder([self._prepare(prompt, position) for position, prompt in enumerate(prompts)])

    def _prepare(self, prompt: Any, position: int | None = None) -> str:
        """``clean_prompt``, then cut to what ``max_length`` tokens can use (the first tokens are kept)."""
        if isinstance(prompt, str):
            prompt = cut_prompt(prompt, self._max_length)
        return clean_prompt(prompt, position)

    def route(
        self, prompt: str, threshold: float | None = None, strong_share: float | None = None, *, strong_pct: float | None = None
    ) -> Decision:
        """Strong when the win rate is at least the threshold (RouteLLM's rule), else weak.

        The threshold is ``threshold``, else the one for ``strong_share`` strong calls, else
        ``default_threshold()``, as in ``edgeroute route`` (``decision.resolve_threshold``).
        ``strong_pct`` is ``strong_share``'s old name, still accepted.
        """
        if strong_pct is not None:  # the warning names the caller's line
            strong_share = old_share_name(strong_share, strong_pct)
        chosen = resolve_threshold(self, threshold, strong_share)
        started = time.perf_counter()
        win_rate = self.strong_win_rate(prompt)
        score_us = (time.perf_counter() - started) * 1e6
        return decision_for(self.name, win_rate, chosen, score_us, {"strong": self.strong_model, "weak": self.weak_model})

    def route_targets(self, prompt: str, targets: Targets, threshold: float | None = None) -> Decision:
        """The N-target decision for ``prompt`` (``runtime/scoring/targets.py``): the targets' policy over this router's
        score of each target; ``threshold`` (cheapest acceptable) defaults to the targets' own. MF routers only."""
        rows = self.model_rows(targets.scored_as)
        chosen = None if threshold is None else check_threshold(threshold)
        started = time.perf_counter()
        scores = self.model_scores([prompt], rows)[0]
        score_us = (time.perf_counter() - started) * 1e6
        return decision_for_targets(self.name, targets, scores, len(self._prepare(prompt)), chosen, score_us)

    def threshold_for(self, strong_share: float | None = None, *, strong_pct: float | None = None) -> float:
        """Threshold that sends a share ``strong_share`` of prompts to the strong model (``strong_pct``: its old name).

        Read from the manifest's calibration table (linear between its points); raises
        ``InvalidInputError`` when the bundle is not calibrated or the share is off its range.
        """
        if strong_pct is not None:
            strong_share = old_share_name(strong_share, strong_pct)
        if self._calibration is None:
            raise InvalidInputError(f"router {self.name!r} has no calibration table; run `edgeroute calibrate --write` or pass a threshold")
        if isinstance(strong_share, bool) or not isinstance(strong_share, (int, float)):
            raise InvalidInputError(f"strong_share must be a number, got {type(strong_share).__name__}")
        try:
            strong_share = float(strong_share)
        except OverflowError:  # an int with hundreds of digits
            raise InvalidInputError("strong_share must be a number in [0, 1], got an integer too large for a float") from None
        if not math.isfinite(strong_share):
            raise InvalidInputError(f"strong_share must be a number, got {strong_share!r}")
        shares, thresholds = self._calibration
        if not shares[0] <= strong_share <= shares[-1]:
            raise InvalidInputError(f"strong_share must be within the calibrated range [{shares[0]}, {shares[-1]}], got {strong_share}")
        return threshold_from_table(shares, thresholds, strong_share)

    def calibrated_shares(self) -> list[float]:
        """The strong shares of the manifest's calibration table, ascending; ``InvalidInputError`` when there is none."""
        if self._calibration is None:
            raise InvalidInputError(f"router {self.name!r} has no calibration table; run `edgeroute calibrate --write`")
        return list(self._calibration[0])

    def default_threshold(self) -> float:
        """The calibrated threshold for 50% strong calls, or 0.5 when the bundle is not calibrated (worked out at load)."""
        return self._default_threshold

    def __repr__(self) -> str:
        return f"Router(name={self.name!r}, kind={self.kind!r}, precision={self.precision!r}, device={self.device!r})"


# ---------------------------------------------------------------------- helpers
def _finite(win_rates: Callable[[list[str]], np.ndarray], folder: Path) -> Callable[[list[str]], np.ndarray]:
    """Raise rather than return a NaN win rate: NaN compares false with every threshold (always weak)."""

    def checked(prompts: list[str]) -> np.ndarray:
        try:
            rates = win_rates(prompts)
        except BaseException as exc:  # a Rust panic in tokenizers is a BaseException: typed here, never a bare 500
            if is_tokenizer_panic(exc):
                raise BundleCorruptError(f"{folder}: the tokenizer panicked on a prompt; re-export the bundle") from None
            raise
        # One prompt (the common case): math.isfinite is a tenth of numpy's per-call cost.
        if not (math.isfinite(rates[0]) if len(rates) == 1 else np.isfinite(rates).all()):
            raise BundleCorruptError(f"{folder}: the router scored a non-finite win rate; re-export the bundle")
        return rates

    return checked
