"""The ``bert`` router kind: RouteLLM's BERT classifier, an ONNX transformer whose softmax gives the win rate."""

from __future__ import annotations

from typing import Any

from edgeroute.runtime.scoring.kinds import RouterKind
from edgeroute.runtime.scoring.manifest import parse_classifier
from edgeroute.runtime.scoring.scorers import ClassifierScorer


def _no_head(head: Any, check: Any, files: Any) -> None:
    """A classifier has no head section: whatever is there is kept as written and never read."""
    return None


KIND = RouterKind(
    name="bert",
    encoder_section="classifier",
    parse_encoder=parse_classifier,
    parse_head=_no_head,
    has_tokenizer=lambda raw_encoder: True,
    scorer=lambda manifest: ClassifierScorer.build,
    info_lines=lambda manifest: [],
    routellm_name="bert",
    on_routellm_scale=lambda manifest: True,
)
