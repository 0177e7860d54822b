"""``edgeroute score --engine ray``: the same scoring as ``batch.score_file`` through Ray Data.

``ray.data.read_*`` reads the input in blocks, ``map_batches`` scores them on a pool of actors
(each loads one ``Router`` once), and the scored blocks stream back to the driver in input
order, where ``batch.ScoreWriter`` writes the same file the local engine writes. Ray is the
``ray`` extra, imported only here; runs on a private local cluster started for the call, or on an
existing one (``address``), whose workers must have edgeroute installed.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeroute.runtime.serving.batch import (
    BUCKET_SIZE,
    DEFAULT_COLUMN,
    DEFAULT_ID_COLUMN,
    Progress,
    ScoreSummary,
    write_scored,
    check_prompt,
    decision_columns,
    input_format,
    check_score_paths,
    resolve_threshold,
)
from edgeroute.runtime.errors import ConfigurationError, InvalidInputError, require_extra
from edgeroute.runtime.scoring.router import Router
from edgeroute.runtime.serving.ray_cluster import connect

DEFAULT_BATCH_SIZE = 1024
# Read tasks reserve no CPU: the actors hold one each, and with as many actors as CPUs a read
# task reserving one would never be scheduled. Reading is light next to scoring.
READ_CPUS = 0
_PROMPT, _ID = "__prompt", "__id"  # the columns the scorer reads, whatever the input calls them
_BAD = "__bad_prompt"  # the scorer's answer to a blank or missing prompt: its position in the batch


def _ray() -> Any:
    """The ``ray`` module (with Ray Data), or ``ExtraNotInstalledError`` naming the ``ray`` extra."""
    ray = require_extra("ray", "ray", "edgeroute score --engine ray")
    require_extra("ray.data", "ray", "edgeroute score --engine ray")
    return ray


class RouterScorer:
    """The ``map_batches`` callable: one ``Router`` per actor, loaded in the actor."""

    def __init__(self, router: str, load_options: dict[str, Any], threshold: float, input_name: str) -> None:
        self.router = Router.load(router, **load_options)
        self.threshold = threshold
        self.input_name = input_name

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        prompts = batch[_PROMPT].tolist()
        for position, prompt in enumerate(prompts):
            try:
                check_prompt(prompt, position, self.input_name)
            except InvalidInputError:  # the driver names the row: a Ray task error would bury the message
                return {_BAD: np.array([position])}
        columns = decision_columns(self.router, self.router.strong_win_rates(prompts, bucket_size=BUCKET_SIZE), self.threshold)
        if _ID in batch:
            columns[_ID] = batch[_ID]
        return columns


def _read(ray: Any, path: Path, column: str, id_column: str, batch_size: int) -> Any:
    """The input as a Dataset of blocks of exactly ``batch_size`` rows (the last one excepted), in input
    order, with the prompt (and the id, when the input has that column) under the scorer's names.

    Equal blocks make each ``map_batches`` call score the same rows as one chunk of the local engine
    (``chunk_size == batch_size``): a float32 model's last digits depend on which rows share a call.
    """
    fmt = input_format(path)
    if fmt == "text":
        # As the local engine reads text: str.splitlines() lines, blank and whitespace-only ones skipped.
        ds = ray.data.read_text(str(path), num_cpus=READ_CPUS).map_batches(_text_prompts, batch_format="pyarrow", num_cpus=READ_CPUS)
        return ds.repartition(target_num_rows_per_block=batch_size, strict=True)
    names = _columns(path, fmt)
    if column not in names:
        raise InvalidInputError(f"{path}: no {column!r} column (choose it with --column); columns: {names[:20]}")
    keep = {column: _PROMPT, **({id_column: _ID} if id_column in names else {})}
    if fmt == "parquet":
        ds = ray.data.read_parquet(str(path), columns=list(keep), num_cpus=READ_CPUS)
    elif fmt == "csv":
        import pyarrow as pa
        import pyarrow.csv as pacsv

        types = {name: pa.string() for name in names}  # as Python's csv module reads them: text
        ds = ray.data.read_csv(
            str(path),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=False),
            num_cpus=READ_CPUS,
        )
    else:
        import pyarrow as pa
        import pyarrow.json as pajson

        # pyarrow's reader (not pandas', which coerces types); the prompt column is text whatever it holds.
        parse = pajson.ParseOptions(explicit_schema=pa.schema([(column, pa.string())]), unexpected_field_behavior="infer")
        ds = ray.data.read_json(str(path), parse_options=parse, file_extensions=None, num_cpus=READ_CPUS)
    ds = ds.select_columns(list(keep)).rename_columns(keep)
    return ds.repartition(target_num_rows_per_block=batch_size, strict=True)


def _columns(path: Path, fmt: str) -> list[str]:
    """Column names from the Parquet footer, the CSV header, or the first JSONL row (read here, not by Ray)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return list(pq.ParquetFile(path).schema_arrow.names)
    with open(path, newline="", encoding="utf-8") as handle:
        if fmt == "csv":
            import csv

            return next(csv.reader(handle), [])
        first = next((line for line in handle if line.strip()), "{}")
    try:
        row = json.loads(first)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{path}: the first row is not JSON ({exc.msg})") from None
    return list(row) if isinstance(row, dict) else []


def _text_prompts(table: Any) -> Any:
    import pyarrow as pa

    lines = [line for line in table.column("text").to_pylist() if line.strip()]
    return pa.table({_PROMPT: pa.array(lines, type=pa.string())})


def score_file_ray(
    router: str,
    input_path: str | Path,
    output_path: str | Path,
    *,
    load_options: dict[str, Any] | None = None,
    column: str = DEFAULT_COLUMN,
    id_column: str = DEFAULT_ID_COLUMN,
    threshold: float | None = None,
    strong_share: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    actors: int = 1,
    address: str | None = None,
    num_cpus: int | None = None,
    progress: bool = True,
) -> ScoreSummary:
    """``batch.score_file`` through Ray Data: ``actors`` actors, each holding one ``Router`` and
    scoring ``batch_size`` prompts per call, on the Ray cluster at ``address`` or on a private local one
    (``num_cpus`` CPUs, default all) started for this call and removed after it (``ray_cluster.connect``)."""
    for name, value in (("batch size", batch_size), ("actors", actors)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
    input_path, load_options = Path(input_path), dict(load_options or {})
    check_score_paths(input_path, output_path)
    ray = _ray()
    local = Router.load(router, **load_options)  # fail fast, here, on a bad bundle or option
    chosen = resolve_threshold(local, threshold, strong_share)
    # Logical CPUs of a private cluster: one per actor, plus one for the read and repartition tasks (light next to scoring).
    cluster = connect(ray, address, num_cpus or max(os.cpu_count() or 1, actors + 1))
    try:
        free = ray.cluster_resources().get("CPU", 0)
        if free < actors + 1:
            raise ConfigurationError(f"{actors} actors need {actors + 1} Ray CPUs (one each, one for reading); the cluster has {free:g}")
        return _run(
            ray,
            local,
            str(local.manifest.folder),
            load_options,
            input_path,
            Path(output_path),
            column,
            id_column,
            chosen,
            batch_size,
            actors,
            progress,
        )
    finally:
        if cluster is not None:
            cluster.stop(ray)


def _run(
    ray: Any,
    local: Router,
    bundle: str,
    load_options: dict[str, Any],
    input_path: Path,
    output_path: Path,
    column: str,
    id_column: str,
    threshold: float,
    batch_size: int,
    actors: int,
    progress: bool,
) -> ScoreSummary:
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # rows come back in input order: `index` is the row number
    context.enable_progress_bars = False
    # Each actor holds one Ray CPU: one onnxruntime thread per actor unless --threads says otherwise.
    actor_options = {**load_options, "threads": load_options.get("threads") or 1}
    started = time.perf_counter()
    scored = _read(ray, input_path, column, id_column, batch_size).map_batches(
        RouterScorer,
        fn_constructor_kwargs={"router": bundle, "load_options": actor_options, "threshold": threshold, "input_name": str(input_path)},
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=1,
        batch_format="numpy",
    )
    order = list(decision_columns(local, np.zeros(0), threshold))  # the local engine's column order

    def blocks() -> Any:
        rows = 0
        for batch in scored.iter_batches(batch_size=None, batch_format="numpy"):
            if _BAD in batch:
                raise InvalidInputError(
                    f"{input_path}: prompt {rows + int(batch[_BAD][0])} (0-based) is missing, blank or not a string; no output was written"
                )
            ids = batch.pop(_ID, None)
            yield rows, None if ids is None else ids.tolist(), {name: batch[name] for name in order}
            rows += len(batch["win_rate"])

    bar = Progress(None, f"score {local.name} (ray, {actors} actor{'s' if actors > 1 else ''})", progress)
    rows, n_strong = write_scored(output_path, blocks(), bar)
    return ScoreSummary("ray", local.name, str(output_path), rows, n_strong, threshold, time.perf_counter() - started)
