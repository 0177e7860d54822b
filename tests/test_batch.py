"""`edgeroute score`: the local engine streams prompt logs in bounded chunks and writes exact rows;
the Ray engine (marked `ray`, skipped without the ray extra) writes the same file on a local cluster;
`edgeroute calibrate --scores` fits the same thresholds from the scored output."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeroute.runtime import ExtraNotInstalledError, InvalidInputError, Router
from edgeroute.runtime.serving.batch import decision_columns, iter_chunks, read_win_rates, resolve_threshold, score_file
from edgeroute.runtime.cli import main

ROUTER = "static-distilled-gpt4-mixtral"  # shipped, calibrated, scores in microseconds
N, CHUNK = 50, 7


def _prompts() -> list[str]:
    # Prompt 5 looks like a number: every reader must keep it as text.
    return [
        "12345"
        if i == 5
        else f"Question {i}: what is {i} times {i + 3}?"
        + " Show every step, then check it." * (i % 4)
        + ('\nProve it, with a comma, and "quotes".' if i % 9 == 0 else "")
        for i in range(N)
    ]


@pytest.fixture(scope="module")
def router() -> Router:
    return Router.load(ROUTER)


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("logs")
    prompts = _prompts()
    paths = {"jsonl": folder / "log.jsonl", "csv": folder / "log.csv", "text": folder / "log.txt"}
    with open(paths["jsonl"], "w", encoding="utf-8") as handle:
        for i, prompt in enumerate(prompts):
            handle.write(json.dumps({"id": f"req-{i}", "prompt": prompt, "user": "u"}) + "\n")
            if i == 3:
                handle.write("\n")  # blank lines between rows are skipped
    with open(paths["csv"], "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        writer.writerows([i, prompt] for i, prompt in enumerate(prompts))
    # Plain text: one prompt per line, so the multi-line prompts lose their second line; blank and
    # whitespace-only lines are skipped, "\r\n" endings are dropped.
    lines = [prompt.split("\n")[0] for prompt in prompts]
    paths["text"].write_bytes(("\r\n".join(lines[:10]) + "\n\n   \n" + "\n".join(lines[10:]) + "\n").encode("utf-8"))
    return paths


def _expected(router: Router, prompts: list[str], ids: list | None, threshold: float, chunk: int) -> list[dict]:
    rows = []
    for start in range(0, len(prompts), chunk):
        rates = router.strong_win_rates(prompts[start : start + chunk])
        columns = decision_columns(router, rates, threshold)
        for offset in range(len(rates)):
            row = {"index": start + offset}
            if ids is not None:
                row["id"] = ids[start + offset]
            row.update(
                {
                    name: values[offset].item() if isinstance(values[offset], np.generic) else values[offset]
                    for name, values in columns.items()
                }
            )
            rows.append(row)
    return rows


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_local_engine_streams_jsonl_in_bounded_chunks(router, logs, tmp_path, monkeypatch):
    calls: list[int] = []
    score = router.strong_win_rates
    monkeypatch.setattr(
        router, "strong_win_rates", lambda prompts, bucket_size=32: calls.append(len(prompts)) or score(prompts, bucket_size)
    )
    out = tmp_path / "scores.jsonl"
    summary = score_file(router, logs["jsonl"], out, chunk_size=CHUNK, progress=False)
    monkeypatch.undo()
    assert calls == [CHUNK] * (N // CHUNK) + [N % CHUNK]  # never more than one chunk at a time
    threshold = router.default_threshold()
    expected = _expected(router, _prompts(), [f"req-{i}" for i in range(N)], threshold, CHUNK)
    assert _read_jsonl(out) == expected
    assert expected[0].keys() == {"index", "id", "router", "win_rate", "tier", "model", "threshold"}
    assert {row["tier"] for row in expected} <= {"strong", "weak"}
    assert summary.n_prompts == N and summary.n_strong == sum(row["tier"] == "strong" for row in expected)
    assert list(tmp_path.glob(".scores.jsonl*")) == []  # neither the partial file nor the lock stays behind


def test_local_engine_reads_csv_columns_and_text_lines(router, logs, tmp_path):
    threshold = router.threshold_for(0.3)
    out = tmp_path / "csv.jsonl"
    score_file(router, logs["csv"], out, column="text", strong_share=0.3, chunk_size=16, progress=False)
    assert _read_jsonl(out) == _expected(router, _prompts(), [str(i) for i in range(N)], threshold, 16)

    out = tmp_path / "text.jsonl"
    score_file(router, logs["text"], out, threshold=0.1, chunk_size=CHUNK, progress=False)
    lines = [prompt.split("\n")[0] for prompt in _prompts()]
    assert _read_jsonl(out) == _expected(router, lines, None, 0.1, CHUNK)


def test_chunks_hold_at_most_chunk_size_prompts(logs):
    chunks = list(iter_chunks(logs["text"], chunk_size=CHUNK))
    assert [len(c.prompts) for c in chunks] == [CHUNK] * (N // CHUNK) + [N % CHUNK]
    assert [c.start for c in chunks] == list(range(0, N, CHUNK))


def test_parquet_in_and_out(router, logs, tmp_path):
    pa = pytest.importorskip("pyarrow", reason="Parquet needs pyarrow (the parquet or ray extra)")
    import pyarrow.parquet as pq

    out = tmp_path / "scores.parquet"
    score_file(router, logs["jsonl"], out, chunk_size=CHUNK, progress=False)
    table = pq.read_table(out).to_pylist()
    assert table == _expected(router, _prompts(), [f"req-{i}" for i in range(N)], router.default_threshold(), CHUNK)
    again = tmp_path / "again.jsonl"
    source = tmp_path / "log.parquet"
    pq.write_table(pa.table({"id": list(range(N)), "prompt": _prompts()}), source)
    score_file(router, source, again, chunk_size=CHUNK, progress=False)
    assert [row["win_rate"] for row in _read_jsonl(again)] == [row["win_rate"] for row in table]


def test_bad_inputs_write_nothing(router, logs, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"prompt": "   "}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    with pytest.raises(InvalidInputError, match=r"prompt 1 \(0-based\) is blank"):
        score_file(router, bad, out, progress=False)
    assert list(tmp_path.glob("out.jsonl*")) == []
    with pytest.raises(InvalidInputError, match="no 'question' column"):
        score_file(router, logs["csv"], out, column="question", progress=False)
    with pytest.raises(InvalidInputError, match=".jsonl or .parquet"):
        score_file(router, logs["csv"], tmp_path / "out.csv", progress=False)
    with pytest.raises(InvalidInputError, match="not both"):
        resolve_threshold(router, 0.5, 0.3)


def test_cli_score_then_calibrate_from_scores(logs, tmp_path, capsys):
    out = tmp_path / "scores.jsonl"
    assert main(["score", "--router", ROUTER, "--input", str(logs["jsonl"]), "--output", str(out), "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_prompts"] == N and summary["engine"] == "local"
    assert read_win_rates([out], router=ROUTER).shape == (N,)

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in _prompts()), encoding="utf-8")
    results = []
    for source in (["--scores", str(out)], ["--prompts", str(prompts)]):
        assert main(["calibrate", "--router", ROUTER, *source, "--strong-pct", "0.3"]) == 0
        results.append(json.loads(capsys.readouterr().out))
    assert results[0] == results[1]  # the same thresholds, with no prompt held
    assert main(["calibrate", "--router", "bert-minilm-gpt4-mixtral", "--scores", str(out), "--strong-pct", "0.3"]) == 2
    assert f"scored by router {ROUTER!r}" in capsys.readouterr().err


def test_ray_engine_names_its_extra(monkeypatch):
    from edgeroute.runtime.serving.ray_batch import _ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ExtraNotInstalledError, match=r"needs the 'ray' extra .* pip install '\.\[ray\]'"):
        _ray()


# ------------------------------------------------------------------------- Ray Data engine
@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="the Ray engine needs the ray extra: pip install '.[ray]'")
    pytest.importorskip("ray.data", reason="the Ray engine needs Ray Data: pip install '.[ray]'")
    # address="local": a private cluster, whatever other cluster runs (or left its address file) on the machine.
    ray.init(address="local", num_cpus=3, include_dashboard=False, log_to_driver=False)  # 2 actors + reading, on 2 cores
    yield ray
    ray.shutdown()


@pytest.mark.ray
@pytest.mark.parametrize("source, output, actors", [("jsonl", "jsonl", 2), ("csv", "parquet", 1), ("text", "jsonl", 2)])
def test_ray_engine_writes_what_the_local_engine_writes(ray_cluster, router, logs, tmp_path, source, output, actors):
    from edgeroute.runtime.serving.ray_batch import score_file_ray

    column = "text" if source == "csv" else "prompt"
    local, distributed = tmp_path / f"local.{output}", tmp_path / f"ray.{output}"
    score_file(router, logs[source], local, column=column, chunk_size=CHUNK, progress=False)
    summary = score_file_ray(ROUTER, logs[source], distributed, column=column, batch_size=CHUNK, actors=actors, progress=False)
    assert summary.engine == "ray" and summary.n_prompts == N
    if output == "jsonl":
        assert distributed.read_bytes() == local.read_bytes()  # identical scores, bit for bit
    else:
        import pyarrow.parquet as pq

        assert pq.read_table(distributed).equals(pq.read_table(local))


def test_local_engine_scores_on_the_free_cores_unless_told(logs, tmp_path, monkeypatch, capsys):
    """`score` without --threads loads the router with as many onnxruntime threads as cores were free over the last
    minute (threads contend on a busy machine: one there); --threads is passed on as given."""
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.7, 1.0, 1.0))  # a busy 2-core machine
    from edgeroute.runtime.scoring.router import Router as RouterClass

    asked = []
    load = RouterClass.load.__func__

    def recording(cls, name, **options):
        asked.append(options.get("threads"))
        return load(cls, name, **options)

    monkeypatch.setattr(RouterClass, "load", classmethod(recording))
    for extra, name in (([], "a.jsonl"), (["--threads", "2"], "b.jsonl")):
        argv = ["score", "--router", ROUTER, "--input", str(logs["jsonl"]), "--output", str(tmp_path / name), "--no-progress"]
        assert main(argv + extra) == 0
    assert asked == [1, 2]
    monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.1, 0.1))  # an idle one
    asked.clear()
    argv = ["score", "--router", ROUTER, "--input", str(logs["jsonl"]), "--output", str(tmp_path / "c.jsonl"), "--no-progress"]
    assert main(argv) == 0 and asked == [2]
    capsys.readouterr()
