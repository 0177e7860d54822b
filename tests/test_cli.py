"""The edgeroute command: JSON output and exit codes (0 ok, 2 usage/input, 1 other)."""

from __future__ import annotations

import json

import pytest

from edgeroute.runtime.cli import main


def test_route_prints_one_json_object_per_prompt(bert_bundle, capsys):
    assert main(["route", "--router", str(bert_bundle), "--threshold", "0.3", "hi", "Prove it."]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        record = json.loads(line)
        assert {"router", "win_rate", "threshold", "tier", "score_us"} <= set(record)
        assert record["threshold"] == 0.3 and record["tier"] in ("strong", "weak")
        assert record["tier"] == ("strong" if record["win_rate"] >= 0.3 else "weak")


def test_route_without_calibration_defaults_to_half(bert_bundle, capsys):
    assert main(["route", "--router", str(bert_bundle), "hi"]) == 0
    assert json.loads(capsys.readouterr().out)["threshold"] == 0.5


@pytest.mark.parametrize(
    "arguments",
    [
        ["route", "--router", "no-such-router", "hi"],
        ["route", "--threshold", "1.5", "--router", "{bundle}", "hi"],
        ["route", "--threshold", "nan", "--router", "{bundle}", "hi"],
        ["route", "--router", "{bundle}", " "],
        ["route", "--router", "{bundle}", "--strong-pct", "0.3", "hi"],  # not calibrated
    ],
)
def test_input_errors_exit_2(bert_bundle, capsys, arguments):
    assert main([a.replace("{bundle}", str(bert_bundle)) for a in arguments]) == 2
    assert capsys.readouterr().err.startswith("edgeroute: error: ")


def test_usage_error_exits_2():
    with pytest.raises(SystemExit) as caught:
        main(["route"])
    assert caught.value.code == 2


def test_corrupt_bundle_exits_1(bundle_copy, capsys):
    (bundle_copy / "tokenizer.json").write_text("{}")
    assert main(["route", "--router", str(bundle_copy), "hi"]) == 1
    assert "does not match the manifest" in capsys.readouterr().err


def test_info_summarizes_manifest(mf_bundle, capsys):
    assert main(["info", str(mf_bundle)]) == 0
    out = capsys.readouterr().out
    assert "kind:        mf" in out and "parity int8" in out and "default pair gpt-4-1106-preview" in out
    assert main(["info", "--json", str(mf_bundle)]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "mf"


def test_export_through_cli(tmp_path, bert_checkpoint, capsys):
    out = tmp_path / "cli_bundle"
    assert (
        main(
            [
                "export",
                "bert",
                "--checkpoint",
                str(bert_checkpoint),
                "--out",
                str(out),
                "--precisions",
                "int8",
                "--name",
                "tiny",
                "--int8-min-agreement",
                "0",
            ]
        )
        == 0
    )
    assert json.loads((out / "manifest.json").read_text())["name"] == "tiny"
    assert main(["export", "bert", "--checkpoint", str(bert_checkpoint), "--out", str(out)]) == 2


@pytest.mark.parametrize("command", ["route", "info"])
def test_deeply_nested_manifest_is_an_error_line_not_a_traceback(bert_bundle, tmp_path, capsys, command):
    import shutil

    bundle = tmp_path / "deep"
    shutil.copytree(bert_bundle, bundle)
    (bundle / "manifest.json").write_text("[" * 100_000)
    arguments = ["route", "--router", str(bundle), "hi"] if command == "route" else ["info", str(bundle)]
    assert main(arguments) == 1
    assert capsys.readouterr().err == (
        f"edgeroute: error: {bundle / 'manifest.json'}: nested too deeply to be a "
        "manifest; restore it from the original bundle or re-export\n"
    )
