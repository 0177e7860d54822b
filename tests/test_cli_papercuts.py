"""Issue 26, items 1-5: settings that cannot work are refused at start, odd input is one line and
exit 2, a closed pipe ends quietly. Run as a user would: the ``edgeroute`` command in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

STATIC = "static-distilled-gpt4-mixtral"
NOT_UTF8 = bytes(range(0x80, 0x100)) * 4


def edgeroute(*args: str, stdin: bytes | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "edgeroute.runtime.cli", *args]
    return subprocess.run(command, input=stdin, capture_output=True, timeout=120, env={**os.environ, **(env or {})})


def _error_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.decode().strip().splitlines()
    return lines[-1]


@pytest.mark.runtime_only
@pytest.mark.parametrize("suffix", [".txt", ".jsonl", ".csv"])
def test_score_of_a_file_that_is_not_utf8_is_one_line_and_exit_2(tmp_path, suffix):
    source = tmp_path / f"binary{suffix}"
    source.write_bytes(NOT_UTF8)
    result = edgeroute("score", "--router", STATIC, "--input", str(source), "--output", str(tmp_path / "out.jsonl"))
    assert result.returncode == 2
    assert (
        _error_line(result)
        == f"edgeroute: error: {source}: not UTF-8 text (invalid start byte); convert it to UTF-8 first (e.g. iconv -t UTF-8)"
    )
    assert b"Traceback" not in result.stderr


@pytest.mark.runtime_only
def test_calibrate_on_a_file_that_is_not_utf8_is_one_line_and_exit_2(tmp_path):
    source = tmp_path / "binary.bin"
    source.write_bytes(NOT_UTF8)
    result = edgeroute("calibrate", "--router", STATIC, "--prompts", str(source), "--strong-pct", "0.3")
    assert (result.returncode, result.stderr.decode()) == (
        2,
        f"edgeroute: error: {source}: not UTF-8 text (invalid start byte); convert it to UTF-8 first (e.g. iconv -t UTF-8)\n",
    )


@pytest.mark.runtime_only
def test_route_of_stdin_that_is_not_utf8_scores_nothing(tmp_path):
    result = edgeroute("route", "--router", STATIC, "-", stdin=b"hello\n" + NOT_UTF8)
    assert (result.returncode, result.stdout) == (2, b"")
    assert result.stderr.decode() == (
        "edgeroute: error: standard input: not UTF-8 text (invalid start byte); convert it to UTF-8 first (e.g. iconv -t UTF-8)\n"
    )


@pytest.mark.runtime_only
def test_a_reader_closing_the_pipe_ends_quietly():
    prompts = b"".join(f"prompt number {n}\n".encode() for n in range(3000))
    command = [sys.executable, "-m", "edgeroute.runtime.cli", "route", "--router", STATIC, "-"]
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        assert process.stdin is not None and process.stdout is not None and process.stderr is not None
        process.stdin.write(prompts)
        process.stdin.close()
        first = process.stdout.readline()
        process.stdout.close()  # what `| head -1` does
        error = process.stderr.read()
        assert process.wait(timeout=120) == 141
    assert first.startswith(b'{"router": "static-distilled-gpt4-mixtral"')
    assert error == b""


@pytest.mark.runtime_only
@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_serve_refuses_a_port_out_of_range(port):
    result = edgeroute("serve", "--port", port)
    assert result.returncode == 2
    assert _error_line(result) == f"edgeroute serve: error: argument --port: {port!r} is not a port number (0..65535)"


def test_serve_refuses_a_base_url_that_cannot_work():
    pytest.importorskip("starlette")
    result = edgeroute("serve", "--strong-base-url", "notaurl", "--port", "0")
    assert (result.returncode, _error_line(result)) == (
        2,
        "edgeroute: error: strong base URL 'notaurl' is not an http(s) URL with a host and a valid port (e.g. http://127.0.0.1:8000/v1)",
    )


def test_serve_refuses_a_named_key_variable_that_is_unset():
    pytest.importorskip("starlette")
    env = {k: v for k, v in os.environ.items() if k != "EDGEROUTE_UNSET_KEY"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeroute.runtime.cli",
            "serve",
            "--weak-base-url",
            "http://127.0.0.1:9/v1",
            "--weak-api-key-env",
            "EDGEROUTE_UNSET_KEY",
        ],
        capture_output=True,
        timeout=120,
        env=env,
    )
    assert (result.returncode, _error_line(result)) == (
        2,
        "edgeroute: error: weak API key variable EDGEROUTE_UNSET_KEY is not set: set it, or name no variable to send no key",
    )


@pytest.fixture
def prompts_file(tmp_path):
    source = tmp_path / "prompts.jsonl"
    source.write_text("".join(f'{{"prompt": "question {n}"}}\n' for n in range(50)), encoding="utf-8")
    return source


@pytest.mark.runtime_only
@pytest.mark.parametrize(
    "output, message",
    [
        ("{input}", "--output {input} is the input file: scores would replace the prompts; name another output"),
        ("{tmp}/missing/s.jsonl", "--output {tmp}/missing/s.jsonl: folder {tmp}/missing does not exist; create it first"),
        ("{tmp}/folder.jsonl", "--output {tmp}/folder.jsonl: a folder; name a .jsonl or .parquet file inside it"),
    ],
)
def test_score_refuses_outputs_that_cannot_be_written(prompts_file, tmp_path, output, message):
    (tmp_path / "folder.jsonl").mkdir()
    before = prompts_file.read_bytes()
    values = {"input": prompts_file, "tmp": tmp_path}
    result = edgeroute("score", "--router", STATIC, "--input", str(prompts_file), "--output", output.format(**values), "--no-progress")
    assert (result.returncode, result.stderr.decode()) == (2, f"edgeroute: error: {message.format(**values)}\n")
    assert prompts_file.read_bytes() == before and not (tmp_path / "missing").exists()


@pytest.mark.runtime_only
def test_score_input_that_is_a_folder_says_so(tmp_path):
    result = edgeroute("score", "--router", STATIC, "--input", str(tmp_path), "--output", str(tmp_path / "s.jsonl"))
    assert (result.returncode, _error_line(result)) == (
        2,
        f"edgeroute: error: --input {tmp_path}: a folder, not a file; name one .jsonl, .csv, .parquet or text file",
    )


@pytest.mark.runtime_only
def test_a_second_writer_of_one_output_is_refused_and_planted_links_are_not_followed(prompts_file, tmp_path):
    from edgeroute.runtime import InvalidInputError, Router
    from edgeroute.runtime.serving.batch import ScoreWriter, score_file

    target = tmp_path / "scores.jsonl"
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me", encoding="utf-8")
    (tmp_path / "scores.jsonl.partial").symlink_to(victim)  # the old fixed partial name, planted
    first = ScoreWriter(target)
    try:
        with pytest.raises(InvalidInputError) as caught:
            score_file(Router.load(STATIC), prompts_file, target, progress=False)
        assert str(caught.value) == f"--output {target}: another run is writing it; wait for it or name another output"
    finally:
        first.abort()
    summary = score_file(Router.load(STATIC), prompts_file, target, progress=False)
    assert summary.n_prompts == 50 and not target.is_symlink() and len(target.read_text().splitlines()) == 50
    assert victim.read_text(encoding="utf-8") == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prompts.jsonl", "scores.jsonl", "scores.jsonl.partial", "victim.txt"]


@pytest.mark.runtime_only
@pytest.mark.parametrize(
    "name, content, message",
    [
        ("deep.jsonl", "[" * 100_000 + "]" * 100_000 + "\n", "line 1 cannot be read (RecursionError: too deep or too long)"),
        ("long.jsonl", '{"prompt": "hi", "id": ' + "9" * 5000 + "}\n", "line 1 cannot be read (ValueError: too deep or too long)"),
        ("ids.jsonl", '{"prompt": "hi", "id": [1]}\n', "the id of prompt 0 (0-based) is a list; ids must be strings or numbers"),
    ],
)
def test_score_of_unreadable_rows_is_one_line_and_exit_2(tmp_path, name, content, message):
    source = tmp_path / name
    source.write_text(content, encoding="utf-8")
    result = edgeroute("score", "--router", STATIC, "--input", str(source), "--output", str(tmp_path / "s.jsonl"), "--no-progress")
    assert (result.returncode, result.stderr.decode()) == (2, f"edgeroute: error: {source}: {message}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # nothing half-written stays behind


@pytest.mark.runtime_only
def test_score_writes_a_nan_id_as_null(tmp_path):
    source = tmp_path / "nan.jsonl"
    source.write_text('{"prompt": "hi", "id": NaN}\n{"prompt": "yo", "id": 7}\n', encoding="utf-8")
    result = edgeroute("score", "--router", STATIC, "--input", str(source), "--output", str(tmp_path / "s.jsonl"), "--no-progress")
    assert result.returncode == 0, result.stderr
    import json

    rows = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]  # strict JSON: no bare NaN
    assert [row["id"] for row in rows] == [None, 7]


def test_score_of_a_file_that_is_not_parquet_is_one_line_and_exit_2(tmp_path):
    pytest.importorskip("pyarrow")
    source = tmp_path / "fake.parquet"
    source.write_text("not parquet at all", encoding="utf-8")
    result = edgeroute("score", "--router", STATIC, "--input", str(source), "--output", str(tmp_path / "s.jsonl"), "--no-progress")
    assert result.returncode == 2 and _error_line(result).startswith(f"edgeroute: error: {source}: not a Parquet file (")


@pytest.mark.runtime_only
def test_sigterm_during_score_leaves_no_partial_file(tmp_path):
    import signal
    import time

    source = tmp_path / "many.txt"
    source.write_text("".join(f"question number {n} about topic {n % 97}\n" for n in range(400_000)), encoding="utf-8")
    output = tmp_path / "s.jsonl"
    command = [sys.executable, "-m", "edgeroute.runtime.cli", "score", "--router", STATIC, "--input", str(source), "--output", str(output)]
    command += ["--no-progress", "--chunk-size", "1000"]
    with subprocess.Popen(command, stderr=subprocess.PIPE) as process:
        deadline = time.time() + 60
        while not list(tmp_path.glob(".s.jsonl.*.partial")) and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 143
    assert sorted(p.name for p in tmp_path.iterdir()) == ["many.txt"]


@pytest.mark.runtime_only
@pytest.mark.parametrize(
    "args, flag",
    [
        (["route", "--strong-pct", "0", "hi"], "--strong-share/--strong-pct"),
        (["calibrate", "--router", STATIC, "--prompts", "x.txt", "--strong-pct", "1"], "--strong-share/--strong-pct"),
        (["calibrate", "--router", STATIC, "--prompts", "x.txt", "--strong-pct", "0"], "--strong-share/--strong-pct"),
        (["score", "--input", "x.txt", "--output", "o.jsonl", "--strong-share", "0"], "--strong-share/--strong-pct"),
        (["serve", "--strong-share", "1.5"], "--strong-share"),
    ],
)
def test_one_share_rule_for_every_command_naming_the_flag_typed(args, flag):
    result = edgeroute(*args)
    value = args[args.index(next(a for a in args if a.startswith("--strong-"))) + 1]
    assert result.returncode == 2
    assert _error_line(result).endswith(f"error: argument {flag}: {value!r} is not a share of strong calls strictly between 0 and 1")


@pytest.mark.runtime_only
def test_an_empty_router_name_is_refused_not_replaced_by_the_default():
    result = edgeroute("route", "--router", "", "hi")
    assert (result.returncode, result.stdout) == (2, b"")
    assert _error_line(result).startswith("edgeroute: error: empty router name or path; ")


@pytest.mark.runtime_only
def test_calibrate_scores_that_are_not_score_output_says_so(tmp_path):
    source = tmp_path / "empty.txt"
    source.write_text("", encoding="utf-8")
    result = edgeroute("calibrate", "--router", STATIC, "--scores", str(source), "--strong-pct", "0.3")
    assert (result.returncode, _error_line(result)) == (
        2,
        f"edgeroute: error: --scores {source}: not `edgeroute score` output, which ends in .jsonl or .parquet",
    )


@pytest.mark.runtime_only
def test_calibrate_reads_prompt_files_as_score_does(tmp_path):
    source = tmp_path / "p.jsonl"
    source.write_text('{"text": "hi"}\n', encoding="utf-8")
    result = edgeroute("calibrate", "--router", STATIC, "--prompts", str(source), "--strong-pct", "0.3")
    assert (result.returncode, _error_line(result)) == (
        2,
        f"edgeroute: error: {source}: line 1 has no 'prompt' key (choose it with --column)",
    )
    result = edgeroute("calibrate", "--router", STATIC, "--prompts", str(source), "--strong-pct", "0.3", "--column", "text")
    assert result.returncode == 0 and b'"n_prompts": 1' in result.stdout


@pytest.mark.runtime_only
def test_route_jsonl_reads_multi_line_prompts_from_stdin():
    import json

    from edgeroute.runtime import Router

    prompts = ["Line one\nline two\n\nline four", "hi"]
    stdin = "\n".join([json.dumps(prompts[0]), json.dumps({"prompt": prompts[1]})]).encode()
    result = edgeroute("route", "--router", STATIC, "--threshold", "0.5", "--jsonl", "-", stdin=stdin)
    assert result.returncode == 0, result.stderr
    rates = [json.loads(line)["win_rate"] for line in result.stdout.decode().splitlines()]
    router = Router.load(STATIC)  # `route` scores each prompt alone: a batch may differ in the 7th digit
    assert rates == [round(float(router.strong_win_rates([prompt])[0]), 6) for prompt in prompts]


@pytest.mark.runtime_only
@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "standard input: JSON line 1 is not JSON; nothing was scored"),
        ('{"text": "hi"}', 'standard input: JSON line 1 is neither a string nor {"prompt": "..."}; nothing was scored'),
    ],
)
def test_route_jsonl_refuses_lines_it_cannot_read(line, message):
    result = edgeroute("route", "--router", STATIC, "--jsonl", "-", stdin=line.encode())
    assert (result.returncode, result.stdout, _error_line(result)) == (2, b"", f"edgeroute: error: {message}")


@pytest.mark.runtime_only
def test_calibrate_out_writes_a_calibrated_copy_and_leaves_the_bundle_alone(tmp_path):
    from edgeroute.runtime import Router
    from edgeroute.runtime.scoring.router import models_dir

    shipped = (models_dir() / STATIC / "manifest.json").read_bytes()
    source = tmp_path / "p.txt"
    source.write_text("".join(f"question {n}\n" for n in range(40)), encoding="utf-8")
    out = tmp_path / "calibrated"
    result = edgeroute("calibrate", "--router", STATIC, "--prompts", str(source), "--strong-pct", "0.3", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert (models_dir() / STATIC / "manifest.json").read_bytes() == shipped
    copy = Router.load(out)
    assert copy.manifest.calibration is not None and copy.manifest.calibration.get("n_prompts") == 40
    again = edgeroute("calibrate", "--router", STATIC, "--prompts", str(source), "--strong-pct", "0.3", "--out", str(out))
    assert (again.returncode, _error_line(again)) == (
        2,
        f"edgeroute: error: --out {out}: already exists; name a new folder for the calibrated copy",
    )


@pytest.mark.runtime_only
def test_calibrate_write_refuses_a_bundle_inside_the_installed_package(tmp_path, monkeypatch):
    import sysconfig

    from edgeroute.runtime import InvalidInputError, Router
    from edgeroute.runtime.evaluation.report import calibrate
    from edgeroute.runtime.scoring.router import models_dir

    site = tmp_path / "site-packages"
    (site / "edgeroute" / "models").mkdir(parents=True)
    bundle = site / "edgeroute" / "models" / STATIC
    import shutil

    shutil.copytree(models_dir() / STATIC, bundle)
    paths = dict(sysconfig.get_paths(), purelib=str(site), platlib=str(site))
    monkeypatch.setattr(sysconfig, "get_paths", lambda *a, **k: paths)
    with pytest.raises(InvalidInputError) as caught:
        calibrate(Router.load(bundle), [tmp_path / "never-read.txt"], 0.3, write=True)
    assert str(caught.value) == (
        f"{bundle} is inside the installed package: pass --out DIR to write a calibrated copy there, then use --router DIR"
    )


def test_serve_check_upstreams_refuses_an_upstream_that_takes_no_connection():
    pytest.importorskip("starlette")
    import socket

    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    result = edgeroute("serve", "--check-upstreams", "--strong-base-url", url, "--weak-base-url", url, "--port", "0")
    assert (result.returncode, _error_line(result)) == (
        2,
        f"edgeroute: error: strong upstream {url} is not reachable (ConnectionRefusedError); start it or fix --strong-base-url",
    )


@pytest.mark.runtime_only
def test_serve_flags_are_derived_from_the_config_fields_with_one_default_each():
    from dataclasses import MISSING, fields

    from edgeroute.runtime.cli import build_parser, config_from_flags
    from edgeroute.runtime.serving.config import ServerConfig

    flagged = [f for f in fields(ServerConfig) if "flag" in f.metadata]
    assert len(flagged) >= 20
    args = build_parser().parse_args(["serve"])
    given = config_from_flags(args)
    for config_field in flagged:  # no flag given: each field keeps the one default it declares
        default = config_field.default if config_field.default is not MISSING else config_field.default_factory()
        assert given.get(config_field.name, default) == default, config_field.name
    args = build_parser().parse_args(["serve", "--no-fallback", "--cors-origin", "a", "--cors-origin", "b", "--upstream-client", "aiohttp"])
    assert config_from_flags(args).items() >= {"fallback": False, "cors_origins": ("a", "b"), "upstream_client": "aiohttp"}.items()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--device", "tpu"])
