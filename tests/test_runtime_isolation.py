"""The runtime never imports torch, transformers, optimum or the export stage (checked in a fresh process)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

HEAVY = ("torch", "transformers", "optimum", "sentence_transformers", "edgeroute.export")

SCRIPT = """
import json, sys
from edgeroute.runtime import Router
from edgeroute.runtime.cli import main
router = Router.load(sys.argv[1])
router.route("Is this routed without torch?", 0.5)
router.strong_win_rates(["a", "b c"])
main(["route", "--router", sys.argv[1], "hello"])
main(["info", sys.argv[1]])
print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] in {heavy} or name.startswith("edgeroute.export"))))
"""


def test_runtime_scores_without_heavy_imports(bert_bundle, mf_bundle):
    heavy_roots = sorted({name.split(".")[0] for name in HEAVY} - {"edgeroute"})
    for bundle in (bert_bundle, mf_bundle):
        result = subprocess.run(
            [sys.executable, "-c", SCRIPT.format(heavy=heavy_roots), str(bundle)],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_runtime_sources_import_no_heavy_framework():
    from pathlib import Path

    import edgeroute.runtime

    for source in Path(edgeroute.runtime.__file__).parent.rglob("*.py"):
        text = source.read_text()
        for name in (
            "import torch",
            "from torch",
            "import transformers",
            "from transformers",
            "import optimum",
            "from optimum",
            "edgeroute.export import",
            "from edgeroute.export",
        ):
            assert name not in text, f"{source.name} contains {name!r}"


def test_runtime_never_names_the_build_package():
    """Not even as a string handed to importlib: build commands come through entry points."""
    from pathlib import Path

    import edgeroute.runtime

    for source in Path(edgeroute.runtime.__file__).parent.rglob("*.py"):
        assert "edgeroute.export" not in source.read_text(), f"{source.name} names edgeroute.export"


def test_build_commands_are_found_through_entry_points(monkeypatch):
    import importlib.metadata

    from edgeroute.runtime import ExtraNotInstalledError
    from edgeroute.runtime.cli import _build_command

    assert _build_command("export").__module__ == "edgeroute.export.commands"
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [])
    try:
        _build_command("train")
    except ExtraNotInstalledError as caught:
        assert str(caught) == (
            "edgeroute train needs the 'export' extra (edgeroute build side is not installed): "
            "in your edgeroute clone, pip install '.[export]'"
        )
    else:
        raise AssertionError("a missing build command must raise ExtraNotInstalledError")


STAGES = """
import importlib, json, pkgutil, sys
import edgeroute.runtime.{stage} as stage
for module in pkgutil.iter_modules(stage.__path__):
    if module.name != "ray_batch":  # needs the ray extra; tests/test_batch.py covers it
        importlib.import_module(f"edgeroute.runtime.{stage}." + module.name)
print(json.dumps(sorted(name for name in sys.modules if name.startswith("edgeroute."))))
"""


def test_stages_only_look_down():
    """Scoring never loads serving or evaluation; serving and evaluation never load each other or the CLI;
    none loads the build side (traced in a fresh process: every module of a stage imported, sys.modules read)."""
    forbidden = {
        "scoring": ("edgeroute.runtime.serving", "edgeroute.runtime.evaluation", "edgeroute.runtime.cli"),
        "serving": ("edgeroute.runtime.evaluation", "edgeroute.runtime.cli"),
        "evaluation": ("edgeroute.runtime.serving", "edgeroute.runtime.cli"),
    }
    for stage, above in forbidden.items():
        result = subprocess.run(
            [sys.executable, "-c", STAGES.replace("{stage}", stage)], capture_output=True, text=True, check=True, timeout=120
        )
        loaded = json.loads(result.stdout.strip().splitlines()[-1])
        assert f"edgeroute.runtime.{stage}" in loaded
        assert [m for m in loaded if m.startswith((*above, "edgeroute.export"))] == [], stage


def _import_graph(folder: Path, package: str) -> dict[str, set[str]]:
    """Each module of ``folder`` to the modules of ``folder`` it imports, at top level or inside a
    function (``if TYPE_CHECKING:`` blocks excluded: they never run)."""
    modules = {}
    for path in folder.rglob("*.py"):
        parts = path.relative_to(folder).with_suffix("").parts
        name = ".".join(p for p in (package, *parts) if p).removesuffix(".__init__")
        modules[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {
            id(node)
            for block in ast.walk(tree)
            if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
            for statement in block.body
            for node in ast.walk(statement)
        }
        targets: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom) and node.module:
                targets |= {f"{node.module}.{alias.name}" for alias in node.names} | {node.module}
            elif isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
        graph[name] = {target for target in targets if target in modules and target != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in graph[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while group[-1:] != [module]:
                group.append(stack.pop())
            if len(group) > 1:
                found.append(sorted(group))

    for module in graph:
        if module not in index:
            visit(module)
    return found


def test_no_import_cycles_in_any_stage_or_the_benchmarks():
    """No module imports, even inside a function, one that imports it back (the exporter and the
    training recipes share their features through export/training/features.py; the benchmarks their
    machine facts through benchmarks/machine.py; router kinds are a leaf registry)."""
    root = Path(__file__).resolve().parents[1]
    for folder, package in (("runtime", "edgeroute.runtime"), ("export", "edgeroute.export"), ("benchmarks", "")):
        assert _cycles(_import_graph(root / folder, package)) == [], folder


def test_the_cycle_finder_finds_a_cycle(tmp_path):
    (tmp_path / "a.py").write_text("from b import thing\n")
    (tmp_path / "b.py").write_text("def f():\n    import a\n")
    (tmp_path / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import a\n")
    assert _cycles(_import_graph(tmp_path, "")) == [["a", "b"]]


def test_every_package_folder_is_listed_for_installation():
    """``pip install .`` installs only the packages pyproject.toml lists: a new folder left out works in a clone
    and fails once installed."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(("edgeroute", *init.parent.relative_to(root).parts))
        for folder in ("runtime", "export")
        for init in (root / folder).rglob("__init__.py")
    }
    assert found - listed == set()
