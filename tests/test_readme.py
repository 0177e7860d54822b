"""Every README and docs/ example runs as written: their ```python blocks, and their `edgeroute` command
lines that work offline (route, info, list on the shipped routers).

A block that cannot run here (it calls LLM endpoints or a server) carries the line
``<!-- skip-test: why -->`` right above its fence; use it sparingly.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.runtime_only

README = Path(__file__).resolve().parents[1] / "README.md"
# The reference pages the README links: checked by the same rules.
DOCUMENTS = [README, *sorted((README.parent / "docs").glob("*.md"))]
SKIP_MARK = re.compile(r"^<!--\s*skip-test:.*-->$")
OFFLINE_COMMANDS = ("route", "info", "list")
# Synopsis lines and placeholders are not commands to run.
PLACEHOLDER = re.compile(r"\[|\.\.\.|…|\b[A-Z][A-Z_]{1,}\b")


def readme_blocks(language: str, document: Path = README) -> list[tuple[int, str, bool]]:
    """(line number, code, skip marked) of each fenced block of ``language`` in ``document``."""
    lines = document.read_text(encoding="utf-8").splitlines()
    blocks, index = [], 0
    while index < len(lines):
        if lines[index].strip() == f"```{language}":
            start = index
            index += 1
            body = []
            while lines[index].strip() != "```":
                body.append(lines[index])
                index += 1
            previous = next((line.strip() for line in reversed(lines[:start]) if line.strip()), "")
            blocks.append((start + 1, "\n".join(body), bool(SKIP_MARK.match(previous))))
        index += 1
    return blocks


def cli_examples() -> list[tuple[str, str]]:
    """The shell lines of the README and docs/ that run `edgeroute route|info|list` with concrete arguments,
    as ("FILE:LINE", command)."""
    examples = []
    for document, (line_number, code, skipped) in ((d, block) for d in DOCUMENTS for block in readme_blocks("bash", d)):
        if skipped:
            continue
        for command in code.replace("\\\n", " ").splitlines():
            words = shlex.split(command, comments=True)
            for position, word in enumerate(words[:-1]):
                if word == "edgeroute" and words[position + 1] in OFFLINE_COMMANDS:
                    if not PLACEHOLDER.search(" ".join(words)) and "cuda" not in words:  # no GPU in CI
                        # `pip install . && edgeroute ...`: the install is the reader's, the command ours.
                        parts = [part.strip() for part in command.split("&&") if "edgeroute" in part]
                        examples.append((f"{document.name}:{line_number}", " && ".join(parts)))
                    break
    return examples


PYTHON_BLOCKS = [
    (f"{document.name}:{number}", code)
    for document in DOCUMENTS
    for number, code, skipped in readme_blocks("python", document)
    if not skipped
]


def test_readme_has_runnable_examples():
    assert PYTHON_BLOCKS, "no runnable ```python block found in README.md"
    assert len(cli_examples()) >= 4, cli_examples()
    skipped = sum(skip for d in DOCUMENTS for language in ("python", "bash") for _, _, skip in readme_blocks(language, d))
    assert skipped <= 2, "skip-test is for the few blocks that need live endpoints; make the others runnable"


@pytest.mark.parametrize("code", [code for _, code in PYTHON_BLOCKS], ids=[where for where, _ in PYTHON_BLOCKS])
def test_readme_python_block_runs(code):
    exec(compile(code, str(README), "exec"), {"__name__": "__readme__"})


@pytest.mark.parametrize(
    "command", [command for _, command in cli_examples()], ids=[f"{where}-{k}" for k, (where, _) in enumerate(cli_examples())]
)
def test_readme_cli_example_runs(command, tmp_path):
    # `edgeroute` is this interpreter's, whatever else is on PATH.
    shim = f'edgeroute() {{ {shlex.quote(sys.executable)} -m edgeroute.runtime.cli "$@"; }}\nset -o pipefail\n'
    result = subprocess.run(
        ["bash", "-c", shim + command], capture_output=True, text=True, cwd=tmp_path, timeout=120, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 0, f"{command}\n{result.stderr}"
    assert result.stdout.strip()
    if " route " in f" {command} ":
        for line in result.stdout.splitlines():
            assert {"router", "tier", "model", "win_rate", "threshold", "score_us", "fallback", "budget"} == set(json.loads(line))


def test_quick_start_output_has_the_readme_keys(capsys):
    from edgeroute.runtime.cli import main

    shown = json.loads(next(code for _, code, _ in readme_blocks("json") if '"win_rate"' in code))
    assert main(["route", "Prove that there are infinitely many primes."]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == set(shown) and printed["router"] == shown["router"]


def test_every_docs_page_is_linked_from_the_readme_and_every_relative_link_resolves():
    readme = README.read_text(encoding="utf-8")
    for page in DOCUMENTS[1:]:
        assert f"](docs/{page.name})" in readme, f"README.md does not link docs/{page.name}"
    for document in DOCUMENTS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", document.read_text(encoding="utf-8")):
            if "://" not in target:
                assert (document.parent / target).exists(), f"{document.name}: broken link {target}"
