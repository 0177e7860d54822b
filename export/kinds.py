"""Export kinds as data: each ``edgeroute export KIND`` to the exporter that writes its bundle.

The build side's half of the router-kind registry (the runtime's half, ``runtime/scoring/kinds.py``,
reads bundles and never imports this package). A new exporter is its function and one entry in
``EXPORT_KINDS``; the runtime CLI lists the same names (a test holds the two lists equal).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeroute.export.exporter import ExportOptions, export_bert, export_distilled, export_mf, export_probe


@dataclass(frozen=True)
class ExportKind:
    """One ``edgeroute export`` kind: what its checkpoint is, which runtime kind it writes, and how."""

    name: str
    checkpoint: str  # what --checkpoint holds
    manifest_kind: str  # the bundle's ``kind`` (runtime/scoring/kinds.py)
    export: Callable[[Path, ExportOptions, Any], Path]  # (checkpoint, options, parsed CLI arguments) -> manifest path


EXPORT_KINDS: dict[str, ExportKind] = {
    kind.name: kind
    for kind in (
        ExportKind("bert", "RouteLLM BertForSequenceClassification folder", "bert", lambda ckpt, options, args: export_bert(ckpt, options)),
        ExportKind(
            "mf",
            "RouteLLM MF checkpoint folder",
            "mf",
            lambda ckpt, options, args: export_mf(ckpt, options, args.embedder, args.model_names),
        ),
        ExportKind(
            "distilled",
            "distilled fast-tier checkpoint (edgeroute train distilled)",
            "mf",
            lambda ckpt, options, args: export_distilled(ckpt, options),
        ),
        ExportKind(
            "probe",
            "transformer-tier probe checkpoint (edgeroute train probe)",
            "mf",
            lambda ckpt, options, args: export_probe(ckpt, options),
        ),
    )
}


def run_export_command(args: Any) -> Path:
    """Run ``edgeroute export`` from parsed CLI arguments; returns the manifest path."""
    options = ExportOptions(
        out=Path(args.out),
        name=args.name,
        precisions=tuple(p.strip() for p in args.precisions.split(",") if p.strip()),
        opset=args.opset,
        max_length=args.max_length,
        int8_tolerance=args.int8_tolerance,
        int8_min_share_agreement=args.int8_min_agreement,
        per_channel=args.per_channel,
        reduce_range=args.reduce_range,
        overwrite=args.overwrite,
        strong_name=args.strong_name,
        weak_name=args.weak_name,
    )
    return EXPORT_KINDS[args.kind].export(Path(args.checkpoint), options, args)
