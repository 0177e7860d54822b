"""Token ids of plain ASCII prompts without running the `tokenizers` pipeline on every call.

A BERT-uncased `tokenizers` file (BertNormalizer with clean_text and lowercase, BertPreTokenizer,
WordPiece) gives, on text made of printable ASCII, tabs and newlines only, the same ids as:
lowercase; split on whitespace into chunks; split each chunk into runs of ``[a-z0-9]`` and single
other characters (every other printable ASCII character is punctuation to BERT); WordPiece each
piece. A chunk's ids depend on the chunk alone, so they are computed once with the tokenizer's own
WordPiece model and kept in a bounded dict. Anything else (non-ASCII text, control characters,
text that contains an added token such as ``[MASK]``, a tokenizer of another shape) is left to the
real tokenizer: ``ids`` returns None and the caller falls back.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable

import numpy as np
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

# Control characters BERT's clean_text deletes. \x0b, \x0c and \x1c-\x1f are also whitespace to
# str.split, which would split where BERT joins: such text must take the tokenizer's path.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Within a whitespace-free ASCII chunk: a run of letters and digits, or one punctuation character.
_PIECES = re.compile(r"[a-z0-9]+|[^a-z0-9]")
_ID_BYTES = np.dtype(np.intp).itemsize

DEFAULT_MAX_CHUNKS = 100_000
# Longer chunks (URLs, long numbers, code) are tokenized on each call rather than cached, so that
# one cache entry stays under about 0.5 KB and the whole cache under about 50 MB.
DEFAULT_MAX_CHUNK_CHARS = 40


class ChunkCache:
    """Token ids of ASCII prompts through a cache of whitespace-delimited chunks.

    Build with ``ChunkCache.for_tokenizer``, which returns None for a tokenizer this shortcut
    is not proven against. Thread-safe: entries are immutable bytes, lookups take no lock, and
    inserts (rare once the cache is warm) take one.
    """

    def __init__(
        self,
        model: models.WordPiece,
        max_length: int | None,
        truncate_left: bool,
        added: Iterable[str],
        max_chunks: int = DEFAULT_MAX_CHUNKS,
        max_chunk_chars: int = DEFAULT_MAX_CHUNK_CHARS,
    ) -> None:
        self._model = model
        self._max_bytes = None if max_length is None else max_length * _ID_BYTES
        self._truncate_left = truncate_left
        contents = sorted({text for text in added if text}, key=len, reverse=True)
        # Texts containing an added token take the tokenizer's path; case-insensitive to cover
        # tokens matched after lowercasing (over-matching only costs speed, never correctness).
        self._added = re.compile("|".join(map(re.escape, contents)), re.IGNORECASE) if contents else None
        # The first characters of the added tokens: a `in` test is ten times cheaper than the regex.
        self._added_first = frozenset(c for text in contents for c in (text[0].lower(), text[0].upper()))
        self.max_chunks = max_chunks
        self.max_chunk_chars = max_chunk_chars
        self._cache: dict[str, bytes] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_tokenizer(cls, tokenizer: Tokenizer, **limits: int) -> ChunkCache | None:
        """A cache for ``tokenizer`` if it is a BERT-uncased WordPiece tokenizer, else None.

        Truncation is read now: change the tokenizer's truncation later and this cache is stale.
        """
        normalizer, pre_tokenizer, model = tokenizer.normalizer, tokenizer.pre_tokenizer, tokenizer.model
        if not (
            isinstance(normalizer, normalizers.BertNormalizer)
            and normalizer.clean_text
            and normalizer.lowercase
            and isinstance(pre_tokenizer, pre_tokenizers.BertPreTokenizer)
            and isinstance(model, models.WordPiece)
        ):
            return None
        truncation = tokenizer.truncation
        max_length = None if truncation is None else int(truncation["max_length"])
        if truncation is not None and (
            max_length == 0 or truncation.get("stride", 0) != 0 or truncation.get("direction", "right") not in ("right", "left")
        ):
            return None
        added: list[str] = []
        for token in tokenizer.get_added_tokens_decoder().values():
            added.append(token.content)
            if token.normalized:  # matched against normalized text, as normalized content
                added.append(normalizer.normalize_str(token.content))
        left = truncation is not None and truncation.get("direction") == "left"
        return cls(model, max_length, left, added, **limits)

    def __len__(self) -> int:
        return len(self._cache)

    def ids(self, text: str) -> np.ndarray | None:
        """The prompt's token ids (no special tokens, truncated as the tokenizer truncates), or
        None when only the real tokenizer can say."""
        if not text.isascii():
            return None
        if not text.isprintable() and _CONTROL.search(text):  # isprintable: no tab, newline nor control
            return None
        if self._added is not None and any(map(text.__contains__, self._added_first)) and self._added.search(text):
            return None
        chunks = text.lower().split()
        try:
            joined = b"".join(map(self._cache.__getitem__, chunks))
        except KeyError:
            joined = b"".join([self._cache.get(chunk) or self._miss(chunk) for chunk in chunks])
        if self._max_bytes is not None and len(joined) > self._max_bytes:
            joined = joined[-self._max_bytes :] if self._truncate_left else joined[: self._max_bytes]
        return np.frombuffer(joined, dtype=np.intp)

    def _miss(self, chunk: str) -> bytes:
        """WordPiece ids of one lowercase, whitespace-free, printable ASCII chunk; cached if short."""
        ids = [token.id for piece in _PIECES.findall(chunk) for token in self._model.tokenize(piece)]
        packed = np.asarray(ids, dtype=np.intp).tobytes()
        if len(chunk) <= self.max_chunk_chars:
            with self._lock:
                if len(self._cache) >= self.max_chunks:
                    # Start over rather than track recency: a full cache means the workload moved.
                    self._cache.clear()
                self._cache[chunk] = packed
        return packed
