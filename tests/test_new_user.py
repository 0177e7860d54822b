"""What a new user hit with the shipped routers (issue 11, item 8): each case has one typed error
or one documented default. Runtime only: these tests need no extra and no exported fixture."""

from __future__ import annotations

import io
import json
import sys

import pytest

from edgeroute.runtime import (
    BundleNotFoundError,
    ConfigurationError,
    ExtraNotInstalledError,
    PrecisionUnavailableError,
    Router,
)
from edgeroute.runtime.cli import main

pytestmark = pytest.mark.runtime_only

STATIC, BERT = "static-distilled-gpt4-mixtral", "bert-minilm-gpt4-mixtral"


@pytest.fixture(scope="module")
def static_router() -> Router:
    return Router.load(STATIC)


def test_route_without_threshold_uses_the_default_threshold(static_router):
    decision = static_router.route("hi")
    assert decision.threshold == static_router.default_threshold()
    assert decision.tier == ("strong" if decision.win_rate >= decision.threshold else "weak")


def test_route_without_threshold_matches_the_cli(static_router, capsys):
    assert main(["route", "--router", STATIC, "hi"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["threshold"] == round(static_router.route("hi").threshold, 6)


@pytest.mark.parametrize("argument", [None, 3, b"mf"])
def test_load_without_a_name_is_a_configuration_error(argument):
    with pytest.raises(ConfigurationError) as caught:
        Router.load(argument)
    assert str(caught.value) == (
        f"path_or_name must be a bundle folder or a shipped router name, got {type(argument).__name__}; "
        "`edgeroute list` shows the shipped names; Router.load(default_router_name()) loads the default"
    )


@pytest.mark.parametrize("argument", ["", "  "])
def test_load_of_an_empty_name_is_bundle_not_found(argument):
    with pytest.raises(BundleNotFoundError, match="^empty router name or path; "):
        Router.load(argument)


def test_cuda_on_the_static_router_is_refused_not_run_on_cpu():
    with pytest.raises(ConfigurationError) as caught:
        Router.load(STATIC, device="cuda")
    assert "has no ONNX graph (its embedder is 'static'), so it scores on the CPU only" in str(caught.value)
    assert "device='cpu'" in str(caught.value)


@pytest.mark.parametrize("name", [STATIC, BERT])
@pytest.mark.parametrize("threads", [0, -1, True, 1.5, "2"])
def test_threads_follow_one_rule_for_every_kind(name, threads):
    with pytest.raises(ConfigurationError) as caught:
        Router.load(name, threads=threads)
    assert str(caught.value) == f"threads must be an integer in [1, 1024] or None, got {threads!r}"


@pytest.mark.parametrize("name", [STATIC, BERT])
def test_one_thread_is_accepted_for_every_kind(name):
    assert 0.0 <= Router.load(name, threads=1).strong_win_rate("hi") <= 1.0


def test_cli_precision_on_the_static_router_gives_a_cli_hint(capsys):
    assert main(["route", "--router", STATIC, "--precision", "int8", "hi"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("edgeroute: error: ") and "--precision on the command line" in error


def test_python_precision_on_the_static_router_is_typed():
    with pytest.raises(PrecisionUnavailableError, match="omit precision= in Python"):
        Router.load(STATIC, precision="int8")


def test_cli_int4_is_an_argparse_usage_error(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["route", "--precision", "int4", "hi"])
    assert caught.value.code == 2
    assert "argument --precision: invalid choice: 'int4'" in capsys.readouterr().err


def test_cli_reports_an_empty_prompt_before_scoring_any(capsys):
    assert main(["route", "--router", STATIC, "hi", "", "there", " "]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing half-printed
    assert captured.err == (
        "edgeroute: error: prompt 2 of 4: prompt is empty or whitespace only; "
        "prompt 4 of 4: prompt is empty or whitespace only; nothing was scored\n"
    )


def test_cli_dash_reads_prompts_from_stdin(monkeypatch, capsys, static_router):
    monkeypatch.setattr(sys, "stdin", io.StringIO("hi\n\nProve Fermat's little theorem.\r\n"))
    assert main(["route", "--router", STATIC, "--threshold", "0.5", "-"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2  # the blank line is skipped
    expected = static_router.strong_win_rates(["hi", "Prove Fermat's little theorem."])
    assert [line["win_rate"] for line in lines] == [round(float(rate), 6) for rate in expected]


def test_cli_dash_with_empty_stdin_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n  \n"))
    assert main(["route", "--router", STATIC, "-"]) == 2
    assert "standard input ('-') held no non-blank line" in capsys.readouterr().err


def test_eval_plot_without_matplotlib_fails_before_evaluating(monkeypatch, tmp_path, capsys):
    import edgeroute.runtime.evaluation.report as evaluation

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    monkeypatch.setattr(evaluation, "evaluate", lambda *a, **k: pytest.fail("evaluated before checking --plot"))
    code = main(["eval", "--router", STATIC, "--benchmark", "gsm8k", "--data-dir", str(tmp_path), "--plot", str(tmp_path / "out.png")])
    assert code == 2
    assert capsys.readouterr().err == (
        "edgeroute: error: edgeroute eval --plot needs the 'plot' extra (matplotlib is not installed): "
        "in your edgeroute clone, pip install '.[plot]'\n"
    )


def test_missing_extra_hint_names_the_clone_not_an_index(monkeypatch):
    from edgeroute.runtime.errors import require_extra

    monkeypatch.setitem(sys.modules, "edgeroute_no_such_module", None)
    with pytest.raises(ExtraNotInstalledError, match=r"in your edgeroute clone, pip install '\.\[serve\]'$"):
        require_extra("edgeroute_no_such_module", "serve", "edgeroute serve")


# Python run from the parent folder of a clone named `edgeroute` (sys.path[0] is that folder).
PARENT_FOLDER_SCRIPT = """
import json
import edgeroute
from edgeroute.runtime import Router
import edgeroute.runtime
decision = Router.load("static-distilled-gpt4-mixtral").route("hi")
print(json.dumps({"package": edgeroute.__file__, "path": list(edgeroute.__path__), "runtime": edgeroute.runtime.__file__,
                  "namespace": type(edgeroute.__path__).__name__ == "_NamespacePath", "tier": decision.tier}))
"""


def _run_in(folder, script: str) -> dict:
    import os
    import subprocess

    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONSAFEPATH")}
    result = subprocess.run([sys.executable, "-c", script], cwd=folder, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def _link(target, link) -> None:
    try:
        link.symlink_to(target, target_is_directory=True)
    except OSError as error:  # e.g. Windows without the symlink privilege
        pytest.skip(f"cannot create a directory symlink here: {error}")


def test_the_installed_package_is_a_regular_package():
    import edgeroute

    assert edgeroute.__file__ is not None and type(edgeroute.__path__) is list  # not an implicit namespace package


def test_parent_folder_of_a_clone_imports_the_clone_as_one_regular_package(tmp_path):
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    _link(repo, tmp_path / "edgeroute")
    found = _run_in(tmp_path, PARENT_FOLDER_SCRIPT)
    # The clone, first on sys.path, is the whole package: no merge with the install's folder.
    assert found["namespace"] is False
    assert [Path(entry).resolve() for entry in found["path"]] == [repo]  # one portion: the clone, not also the install
    assert Path(found["package"]).resolve() == repo / "__init__.py"
    assert Path(found["runtime"]).resolve() == repo / "runtime" / "__init__.py"
    assert found["tier"] in ("strong", "weak")


def test_a_folder_named_edgeroute_that_is_no_clone_does_not_shadow_the_install(tmp_path):
    from pathlib import Path

    import edgeroute

    if Path(edgeroute.__file__).resolve().parent == Path(__file__).resolve().parents[1]:
        # setuptools' editable finder comes after the path finder, which takes the stray folder as a namespace.
        pytest.skip("editable install of this clone: the regular-package rule holds for `pip install .`")
    (tmp_path / "edgeroute" / "runtime").mkdir(parents=True)  # e.g. an output folder, no __init__.py
    found = _run_in(tmp_path, PARENT_FOLDER_SCRIPT)
    assert found["namespace"] is False
    assert Path(found["package"]).resolve() == Path(edgeroute.__file__).resolve()
    assert found["tier"] in ("strong", "weak")
