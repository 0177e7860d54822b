"""The build side's ``edgeroute`` commands, registered under the ``edgeroute.build`` entry points.

The runtime's CLI finds them through ``pyproject.toml`` (``[project.entry-points."edgeroute.build"]``)
and never names this package, so a runtime-only install keeps a working ``edgeroute``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeroute.export.kinds import run_export_command
from edgeroute.export.training.recipes import run_recipe_command
from edgeroute.export.training.classic import run_train_command


def export(args: Any) -> Path:
    """``edgeroute export bert|mf|distilled|probe``: returns the written manifest's path."""
    return run_export_command(args)


def train(args: Any) -> dict[str, Any]:
    """``edgeroute train bert|mf|finetuned|teacher|distilled|probe``: returns a JSON-ready summary of the run."""
    if args.kind in ("finetuned", "teacher", "distilled", "probe"):
        return run_recipe_command(args)
    report = run_train_command(args)
    return {"checkpoint": args.out, "best": report.best, "n_train": report.n_train, "n_val": report.n_val}
