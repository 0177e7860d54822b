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
