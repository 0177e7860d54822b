"""Batch scoring of prompt logs (``edgeroute score``): the local engine and the pieces both engines share.

Input: JSONL (one object per line), CSV (header row), Parquet, or plain text (one prompt per
line, blank lines skipped), read in chunks so that memory stays bounded by the chunk size. Output:
one row per prompt (JSONL or Parquet, by the output's suffix) holding the prompt's position in the
input (``index``), its ``id`` when the input has that column, and the decision columns of
``decision_columns``. Prompt text is never written or logged. Parquet needs pyarrow, imported only
when a Parquet file is read or written.
"""

from __future__ import annotations

import csv
import json
import math
import os
import secrets
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeroute.runtime.scoring.decision import is_strong
from edgeroute.runtime.scoring.decision import resolve_threshold as _resolve_threshold
from edgeroute.runtime.errors import InvalidInputError, require_extra, utf8_text
from edgeroute.runtime.scoring.router import Router

DEFAULT_COLUMN = "prompt"
DEFAULT_ID_COLUMN = "id"
DEFAULT_CHUNK_SIZE = 1024
BUCKET_SIZE = 32  # Router.strong_win_rates' length buckets, the same in both engines


def free_cores() -> int:
    """``edgeroute score``'s onnxruntime threads without ``--threads``: the cores this process may use that were
    not busy over the last minute (load average), at least one. On a busy 2-core machine onnxruntime's all-cores
    default was the slowest setting (88 prompts/s, 180 with one thread); on an idle one two threads score about
    twice as fast as one (docs/scaling-out.md)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average on this platform
        load = 0.0
    return max(1, min(cores, round(cores - load)))


_INPUT_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
_OUTPUT_SUFFIXES = {".jsonl": "jsonl", ".parquet": "parquet"}


@dataclass(frozen=True)
class Chunk:
    """Consecutive prompts of an input: ``start`` is the index of the first one."""

    start: int
    prompts: list[str]
    ids: list[Any] | None


@dataclass(frozen=True)
class ScoreSummary:
    """What ``score_file`` did (no prompt text)."""

    engine: str
    router: str
    output: str
    n_prompts: int
    n_strong: int
    threshold: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        result = asdict(self)
        result["prompts_per_s"] = round(self.n_prompts / self.seconds, 1) if self.seconds > 0 else None
        return result


# ------------------------------------------------------------------ decisions (one place)
def resolve_threshold(router: Router, threshold: float | None = None, strong_share: float | None = None) -> float:
    """The threshold ``edgeroute route`` would use (``decision.resolve_threshold``): explicit, from the
    calibration table for a strong share, or the router's default (calibrated 50%, else 0.5)."""
    return _resolve_threshold(router, threshold, strong_share)


def decision_columns(router: Router, win_rates: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    """The decision columns of scored rows: the ``Decision`` fields ``router``, ``win_rate``, ``tier``
    (strong/weak), ``model`` and ``threshold``, by ``decision.is_strong`` (``score_us`` and
    ``fallback`` belong to one routed request, not to a batch).

    The only place in batch scoring that knows the decision's shape: both engines and writers use it.
    """
    rates = np.asarray(win_rates, dtype=np.float64)
    strong = np.asarray(is_strong(rates, threshold), dtype=bool)
    names = np.array([router.weak_model, router.strong_model], dtype=object)
    return {
        "router": np.full(len(rates), router.name, dtype=object),
        "win_rate": rates,
        "tier": np.where(strong, "strong", "weak").astype(object),
        "model": names[strong.astype(np.int64)],
        "threshold": np.full(len(rates), threshold, dtype=np.float64),
    }


# ------------------------------------------------------------------ formats
def input_format(path: str | Path) -> str:
    """``jsonl``, ``csv``, ``parquet`` by suffix; anything else is plain text, one prompt per line."""
    return _INPUT_SUFFIXES.get(Path(path).suffix.lower(), "text")


def output_format(path: str | Path) -> str:
    """``jsonl`` or ``parquet`` by suffix; raises ``InvalidInputError`` for any other."""
    fmt = _OUTPUT_SUFFIXES.get(Path(path).suffix.lower())
    if fmt is None:
        raise InvalidInputError(f"{path}: the output must end in .jsonl or .parquet")
    return fmt


def check_score_paths(input_path: str | Path, output_path: str | Path) -> None:
    """Refuse, before anything is read or written: an input that is no file, an output with a wrong
    suffix, in a missing folder, that is a folder, or that is the input itself."""
    source, target = Path(input_path), Path(output_path)
    if source.is_dir():
        raise InvalidInputError(f"--input {source}: a folder, not a file; name one .jsonl, .csv, .parquet or text file")
    if not source.is_file():
        raise InvalidInputError(f"{source}: no such input file")
    output_format(target)
    if target.is_dir():
        raise InvalidInputError(f"--output {target}: a folder; name a .jsonl or .parquet file inside it")
    if not target.parent.is_dir():
        raise InvalidInputError(f"--output {target}: folder {target.parent} does not exist; create it first")
    if target.exists() and os.path.samefile(source, target):
        raise InvalidInputError(f"--output {target} is the input file: scores would replace the prompts; name another output")


def _pyarrow(feature: str) -> Any:
    require_extra("pyarrow", "parquet", feature)
    import pyarrow
    import pyarrow.parquet  # noqa: F401  (loads the submodule)

    return pyarrow


def check_prompt(prompt: Any, index: int | None, path: str | Path) -> str:
    """``prompt`` when it is a non-blank string, else ``InvalidInputError`` naming the row (not its text)."""
    if not isinstance(prompt, str) or not prompt.strip():
        what = "missing" if prompt is None else ("blank" if isinstance(prompt, str) else f"a {type(prompt).__name__}")
        where = "a prompt" if index is None else f"prompt {index} (0-based)"
        raise InvalidInputError(f"{path}: {where} is {what}; no output was written")
    return prompt


def check_id(row_id: Any, index: int, path: str | Path) -> Any:
    """An id that JSON and Parquet can carry: a string, a number or None; NaN and infinities become None."""
    if isinstance(row_id, float) and not math.isfinite(row_id):
        return None
    if row_id is None or isinstance(row_id, (str, int, float, np.integer, np.floating)):
        return row_id
    raise InvalidInputError(f"{path}: the id of prompt {index} (0-based) is a {type(row_id).__name__}; ids must be strings or numbers")


# ------------------------------------------------------------------ reading
def iter_chunks(
    path: str | Path, column: str = DEFAULT_COLUMN, chunk_size: int = DEFAULT_CHUNK_SIZE, id_column: str = DEFAULT_ID_COLUMN
) -> Iterator[Chunk]:
    """The input's prompts in chunks of at most ``chunk_size``; only one chunk is held at a time."""
    path = Path(path)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise InvalidInputError(f"chunk size must be a positive integer, got {chunk_size!r}")
    if not path.is_file():
        raise InvalidInputError(f"{path}: no such input file")
    rows = {"jsonl": _jsonl_rows, "csv": _csv_rows, "parquet": _parquet_rows, "text": _text_rows}[input_format(path)]
    start, has_ids = 0, False
    prompts: list[str] = []
    ids: list[Any] = []
    for prompt, row_id, with_id in rows(path, column, id_column, chunk_size):
        prompts.append(check_prompt(prompt, start + len(prompts), path))
        ids.append(check_id(row_id, start + len(prompts) - 1, path))
        has_ids = has_ids or with_id
        if len(prompts) == chunk_size:
            yield Chunk(start, prompts, ids if has_ids else None)
            start, prompts, ids = start + len(prompts), [], []
    if prompts:
        yield Chunk(start, prompts, ids if has_ids else None)


def _json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) of each non-blank line; a line that is not JSON raises ``InvalidInputError``."""
    with utf8_text(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidInputError(f"{path}: line {line_number} is not JSON ({exc.msg})") from None
            except (ValueError, RecursionError) as exc:  # a nesting or an integer too deep or long to read
                raise InvalidInputError(f"{path}: line {line_number} cannot be read ({type(exc).__name__}: too deep or too long)") from None
            yield line_number, value


def _jsonl_rows(path: Path, column: str, id_column: str, _: int) -> Iterator[tuple[Any, Any, bool]]:
    for line_number, row in _json_lines(path):
        if not isinstance(row, dict):
            raise InvalidInputError(f"{path}: line {line_number} is not a JSON object")
        if column not in row:
            raise InvalidInputError(f"{path}: line {line_number} has no {column!r} key (choose it with --column)")
        yield row[column], row.get(id_column), id_column in row


def _csv_rows(path: Path, column: str, id_column: str, _: int) -> Iterator[tuple[Any, Any, bool]]:
    csv.field_size_limit(1 << 30)
    with utf8_text(path, newline="") as handle:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames or []
        if column not in fields:
            raise InvalidInputError(f"{path}: no {column!r} column (choose it with --column); columns: {fields[:20]}")
        with_id = id_column in fields
        for row in reader:
            yield row[column], row.get(id_column), with_id


def _parquet_rows(path: Path, column: str, id_column: str, chunk_size: int) -> Iterator[tuple[Any, Any, bool]]:
    handle = _parquet_file(path)
    names = handle.schema_arrow.names
    if column not in names:
        raise InvalidInputError(f"{path}: no {column!r} column (choose it with --column); columns: {names[:20]}")
    with_id = id_column in names
    for batch in handle.iter_batches(batch_size=chunk_size, columns=[column, id_column] if with_id else [column]):
        prompts = batch.column(column).to_pylist()
        ids = batch.column(id_column).to_pylist() if with_id else [None] * len(prompts)
        for prompt, row_id in zip(prompts, ids):
            yield prompt, row_id, with_id


def _text_rows(path: Path, column: str, id_column: str, _: int) -> Iterator[tuple[Any, Any, bool]]:
    # Lines as str.splitlines() cuts them (what Ray's read_text does), read one at a time.
    with utf8_text(path, newline="") as handle:
        for raw in handle:
            for line in raw.splitlines():
                if line.strip():
                    yield line, None, False


def count_rows(path: str | Path) -> int | None:
    """Rows of a Parquet input from its footer (for the progress bar); None for the other formats."""
    if input_format(path) != "parquet":
        return None
    return int(_parquet_file(Path(path)).metadata.num_rows)


def _parquet_file(path: Path) -> Any:
    pyarrow = _pyarrow("reading Parquet")
    try:
        return pyarrow.parquet.ParquetFile(path)
    except (pyarrow.ArrowInvalid, OSError) as exc:
        raise InvalidInputError(f"{path}: not a Parquet file ({str(exc)[:120]})") from None


# ------------------------------------------------------------------ writing
class ScoreWriter:
    """Writes scored rows to ``path`` (JSONL or Parquet) through ``path.partial``, renamed on ``close``,
    so an interrupted run never leaves a half-written output under the final name."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.format = output_format(self.path)
        self._lock = _OutputLock(self.path)
        # A fresh name, created exclusively: two runs never share a partial file, and a link planted
        # under a predictable name is never followed.
        self.partial = self.path.with_name(f".{self.path.name}.{secrets.token_hex(6)}.partial")
        descriptor = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666)
        self._parquet: Any = None
        self._handle: Any = os.fdopen(descriptor, "w", encoding="utf-8")
        if self.format == "parquet":
            self._handle.close()
            self._handle = None
            self._pa = _pyarrow("writing Parquet")
        self.rows = 0

    def write(self, start: int, ids: Sequence[Any] | None, columns: dict[str, np.ndarray]) -> None:
        """Append rows ``start``.. with their ids (or None) and decision columns."""
        n = len(columns["win_rate"])
        table: dict[str, list[Any]] = {"index": list(range(start, start + n))}
        if ids is not None:
            table["id"] = [_plain(value) for value in ids]
        for name, values in columns.items():
            table[name] = [_plain(value) for value in values]
        if self.format == "jsonl":
            names = list(table)
            for row in zip(*table.values()):
                self._handle.write(json.dumps(dict(zip(names, row))) + "\n")
        else:
            self._write_parquet(table)
        self.rows += n

    def _write_parquet(self, table: dict[str, list[Any]]) -> None:
        pa = self._pa
        if "id" in table:  # ids may be ints in one chunk and absent in another: strings, always
            table["id"] = [None if value is None else str(value) for value in table["id"]]
        types = {
            "index": pa.int64(),
            "id": pa.string(),
            "router": pa.string(),
            "win_rate": pa.float64(),
            "tier": pa.string(),
            "model": pa.string(),
            "threshold": pa.float64(),
        }
        arrow = pa.table({name: pa.array(values, type=types.get(name)) for name, values in table.items()})
        if self._parquet is None:
            self._parquet = pa.parquet.ParquetWriter(self.partial, arrow.schema)
        self._parquet.write_table(arrow)

    def close(self) -> None:
        """Finish the file and move it to its final name."""
        if self._handle is not None:
            self._handle.close()
        elif self._parquet is None:  # no rows: still a valid, empty Parquet file
            self._parquet = self._pa.parquet.ParquetWriter(self.partial, self._pa.schema([("index", self._pa.int64())]))
        if self._parquet is not None:
            self._parquet.close()
        os.replace(self.partial, self.path)
        self._lock.release()

    def abort(self) -> None:
        """Drop the partial file (after an error)."""
        if self._handle is not None:
            self._handle.close()
        if self._parquet is not None:
            self._parquet.close()
        self.partial.unlink(missing_ok=True)
        self._lock.release()


class _OutputLock:
    """An exclusive lock on one output path (a hidden ``.NAME.lock`` beside it, removed on release):
    a second run writing the same output is refused instead of mixing rows into it."""

    def __init__(self, path: Path) -> None:
        self.path = path.with_name(f".{path.name}.lock")
        self._descriptor: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        try:
            import fcntl

            fcntl.flock(self._descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # no flock (Windows): unique partial names still keep runs apart
            pass
        except OSError:
            os.close(self._descriptor)
            self._descriptor = None
            raise InvalidInputError(f"--output {path}: another run is writing it; wait for it or name another output") from None

    def release(self) -> None:
        if self._descriptor is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._descriptor)
            self._descriptor = None


def _plain(value: Any) -> Any:
    """numpy scalars to Python ones, so that both engines write the same JSON."""
    return value.item() if isinstance(value, np.generic) else value


class Progress:
    """A tqdm bar on stderr when tqdm is installed (the runtime does not depend on it), else a plain line on a terminal."""

    def __init__(self, total: int | None, label: str, enabled: bool = True) -> None:
        self.done, self.label, self.total, self.started = 0, label, total, time.perf_counter()
        self._bar: Any = None
        self._line = False
        if not enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            self._line = sys.stderr.isatty()
        else:
            self._bar = tqdm(total=total, desc=label, unit=" prompts", file=sys.stderr, dynamic_ncols=True)

    def update(self, count: int) -> None:
        self.done += count
        if self._bar is not None:
            self._bar.update(count)
        elif self._line:
            rate = self.done / max(time.perf_counter() - self.started, 1e-9)
            sys.stderr.write(f"\r{self.label}: {self.done} prompts ({rate:.0f}/s)")
            sys.stderr.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._line:
            sys.stderr.write("\n")


# ------------------------------------------------------------------ the local engine
def score_file(
    router: Router,
    input_path: str | Path,
    output_path: str | Path,
    *,
    column: str = DEFAULT_COLUMN,
    id_column: str = DEFAULT_ID_COLUMN,
    threshold: float | None = None,
    strong_share: float | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool = True,
) -> ScoreSummary:
    """Score every prompt of ``input_path`` in chunks of ``chunk_size`` and write one row per prompt
    to ``output_path`` (JSONL or Parquet). Memory is bounded by the chunk size, not the input."""
    chosen = resolve_threshold(router, threshold, strong_share)
    check_score_paths(input_path, output_path)
    started = time.perf_counter()
    blocks = (
        (chunk.start, chunk.ids, decision_columns(router, router.strong_win_rates(chunk.prompts, bucket_size=BUCKET_SIZE), chosen))
        for chunk in iter_chunks(input_path, column, chunk_size, id_column)
    )
    rows, n_strong = write_scored(output_path, blocks, Progress(count_rows(input_path), f"score {router.name}", progress))
    return ScoreSummary("local", router.name, str(output_path), rows, n_strong, chosen, time.perf_counter() - started)


def write_scored(
    output_path: str | Path, blocks: Iterator[tuple[int, list[Any] | None, dict[str, np.ndarray]]], bar: Progress
) -> tuple[int, int]:
    """Write scored blocks ``(first row, ids, decision columns)`` to ``output_path``, complete or not at all
    (both engines); returns (rows written, strong decisions)."""
    writer = ScoreWriter(output_path)
    n_strong = 0
    try:
        for start, ids, columns in blocks:
            writer.write(start, ids, columns)
            n_strong += int(np.count_nonzero(columns["tier"] == "strong"))
            bar.update(len(columns["win_rate"]))
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
    writer.close()
    return writer.rows, n_strong


# ------------------------------------------------------------------ reading scored output back
def read_win_rates(paths: Sequence[str | Path], router: str | None = None, chunk_size: int = 65536) -> np.ndarray:
    """The ``win_rate`` column of ``edgeroute score`` outputs (JSONL or Parquet), as one float array;
    nothing else is kept. With ``router``, rows scored by another router raise ``InvalidInputError``."""
    parts: list[np.ndarray] = []
    for path in map(Path, paths):
        if not path.is_file():
            raise InvalidInputError(f"{path}: no such scores file")
        for rates, routers in _score_chunks(path, chunk_size):
            others = sorted(str(name) for name in routers if name not in (None, router))
            if router is not None and others:
                other = others[0]
                raise InvalidInputError(f"{path}: scored by router {other!r}, not {router!r}")
            parts.append(rates)
    rates = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float64)
    if rates.size == 0:
        raise InvalidInputError("no win rates in " + ", ".join(map(str, paths)))
    if not np.all(np.isfinite(rates)) or rates.min() < 0.0 or rates.max() > 1.0:
        raise InvalidInputError("win rates must be finite numbers in [0, 1]")
    return rates


def _score_chunks(path: Path, chunk_size: int) -> Iterator[tuple[np.ndarray, set[Any]]]:
    if Path(path).suffix.lower() not in _OUTPUT_SUFFIXES:
        raise InvalidInputError(f"--scores {path}: not `edgeroute score` output, which ends in .jsonl or .parquet")
    if output_format(path) == "parquet":
        handle = _pyarrow("reading Parquet").parquet.ParquetFile(path)
        names = handle.schema_arrow.names
        if "win_rate" not in names:
            raise InvalidInputError(f"{path}: no 'win_rate' column (is it the output of `edgeroute score`?)")
        columns = ["win_rate", "router"] if "router" in names else ["win_rate"]
        for batch in handle.iter_batches(batch_size=chunk_size, columns=columns):
            found = set(batch.column("router").unique().to_pylist()) if "router" in names else set()
            yield batch.column("win_rate").to_numpy(zero_copy_only=False).astype(np.float64), found
        return
    rates: list[float] = []
    routers: set[Any] = set()
    for line_number, row in _json_lines(path):
        try:
            rates.append(float(row["win_rate"]))
            routers.add(row.get("router"))
        except (KeyError, TypeError, ValueError):
            raise InvalidInputError(
                f"{path}: line {line_number} holds no 'win_rate' number (is it the output of `edgeroute score`?)"
            ) from None
        if len(rates) == chunk_size:
            yield np.array(rates, dtype=np.float64), routers
            rates, routers = [], set()
    if rates:
        yield np.array(rates, dtype=np.float64), routers
