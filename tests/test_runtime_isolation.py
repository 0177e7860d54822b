"""The runtime never imports torch, transformers, optimum or the export stage (checked in a fresh process)."""

from __future__ import annotations

import json
import subprocess
import sys

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
            capture_output=True, text=True, check=True, timeout=120,
        )
        assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_runtime_sources_import_no_heavy_framework():
    from pathlib import Path

    import edgeroute.runtime

    for source in Path(edgeroute.runtime.__file__).parent.glob("*.py"):
        text = source.read_text()
        for name in ("import torch", "from torch", "import transformers", "from transformers",
                     "import optimum", "from optimum", "edgeroute.export import", "from edgeroute.export"):
            assert name not in text, f"{source.name} contains {name!r}"


def test_runtime_never_names_the_build_package():
    """Not even as a string handed to importlib: build commands come through entry points."""
    from pathlib import Path

    import edgeroute.runtime

    for source in Path(edgeroute.runtime.__file__).parent.glob("*.py"):
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
