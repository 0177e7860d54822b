"""The ``mf`` router kind: an embedder (ONNX, static table or remote endpoint) and a head over its
embeddings, either RouteLLM's matrix factorization folded to one row per model or a distilled MLP."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgeroute.runtime.scoring.kinds import RouterKind
from edgeroute.runtime.scoring.manifest import Manifest, parse_embedder, parse_mf_head
from edgeroute.runtime.scoring.scorers import MFScorer, MLPScorer

if TYPE_CHECKING:
    from edgeroute.runtime.scoring.kinds import ScorerBuild


def _scorer(manifest: Manifest) -> ScorerBuild:
    assert manifest.head is not None  # parse_mf_head requires one
    return MLPScorer.build if manifest.head.kind == "mlp" else MFScorer.build


def _info_lines(manifest: Manifest) -> list[str]:
    embedder, head = manifest.data["embedder"], manifest.data["head"]
    return [
        f"embedder:    {embedder.get('kind')} {embedder.get('model', '')} dim={embedder['dim']}",
        f"MF models:   {len(head['model_names'])} (default pair {head.get('default_strong')} vs {head.get('default_weak')})",
    ]


def _folded_mf(manifest: Manifest) -> bool:
    """RouteLLM's MF scale: a folded MF head, not a distilled MLP whose win rates sit on another scale."""
    return manifest.head is not None and manifest.head.kind is None


KIND = RouterKind(
    name="mf",
    encoder_section="embedder",
    parse_encoder=parse_embedder,
    parse_head=parse_mf_head,
    # A remote embedder tokenizes on its own side: the bundle has no tokenizer.
    has_tokenizer=lambda raw_encoder: raw_encoder.get("kind") != "openai",
    scorer=_scorer,
    info_lines=_info_lines,
    routellm_name="mf",
    on_routellm_scale=_folded_mf,
    scores_every_model=_folded_mf,
)
