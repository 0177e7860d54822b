"""Router kinds as data (runtime/scoring/kinds.py): a new kind is its own module plus a registry entry.

The toy kind below lives only in this file. Registering it makes a bundle of that kind load, score,
describe itself in ``edgeroute info`` and serve, with no other file touched; unregistered, the same
bundle is refused at load with the manifest named.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgeroute.runtime import Router
from edgeroute.runtime.cli import main
from edgeroute.runtime.errors import ManifestError
from edgeroute.runtime.scoring.kinds import RouterKind, kind_names, register_kind, router_kind, routellm_kinds, unregister_kind
from edgeroute.runtime.scoring.manifest import Manifest, parse_embedder, read_manifest
from edgeroute.runtime.scoring.router import resolve_bundle
from edgeroute.runtime.scoring.scorers import LoadOptions, static_embedder

pytestmark = pytest.mark.runtime_only


class DigitShareScorer:
    """Scores the share of digits among a prompt's characters: math-heavy prompts go strong."""

    precision = None
    encoder = None

    def __init__(self, manifest: Manifest) -> None:
        assert manifest.models is not None
        self.strong_model, self.weak_model = manifest.models.strong, manifest.models.weak
        spec = manifest.encoder
        self.embedder = static_embedder(manifest, spec)  # type: ignore[arg-type]  # reads the bundle's own table

    @classmethod
    def build(cls, manifest: Manifest, options: LoadOptions) -> DigitShareScorer:
        return cls(manifest)

    def win_rates(self, prompts: list[str]) -> np.ndarray:
        return np.array([sum(c.isdigit() for c in p) / max(len(p), 1) for p in prompts], dtype=np.float64)


TOY = RouterKind(
    name="digits",
    encoder_section="embedder",
    parse_encoder=parse_embedder,
    parse_head=lambda head, check, files: None,
    has_tokenizer=lambda raw_encoder: True,
    scorer=lambda manifest: DigitShareScorer.build,
    info_lines=lambda manifest: ["toy:         share of digits"],
)


@pytest.fixture
def toy_bundle(tmp_path: Path) -> Path:
    """The shipped static bundle's files with ``kind`` set to the toy kind."""
    folder = tmp_path / "digits-router"
    shutil.copytree(resolve_bundle("static-distilled-gpt4-mixtral"), folder)
    data = json.loads((folder / "manifest.json").read_text())
    data.update(kind="digits", name="digits-router")
    for key in ("head", "golden", "calibration"):
        data.pop(key, None)
    (folder / "manifest.json").write_text(json.dumps(data))
    return folder


@pytest.fixture
def toy_kind() -> Iterator[RouterKind]:
    register_kind(TOY)
    yield TOY
    unregister_kind(TOY.name)


def test_builtin_kinds_come_from_the_registry():
    assert kind_names()[:2] == ("bert", "mf")
    assert set(routellm_kinds()) == {"bert", "mf"}
    bert = router_kind("bert")
    assert bert is not None and bert.encoder_section == "classifier"


def test_an_unregistered_kind_is_refused_at_load_naming_the_manifest(toy_bundle):
    with pytest.raises(ManifestError) as caught:
        Router.load(toy_bundle)
    assert str(caught.value) == (
        f"{toy_bundle / 'manifest.json'}: 'kind' must be one of ('bert', 'mf'), got 'digits'; re-export the bundle with `edgeroute export`"
    )


def test_a_registered_kind_loads_scores_and_describes_itself(toy_kind, toy_bundle, capsys):
    router = Router.load(toy_bundle)
    assert router.kind == "digits"
    rates = router.strong_win_rates(["What is 12345 * 6789?", "Tell me a story about a cat."])
    assert rates[0] > 0.3 and rates[1] == 0.0
    assert router.route("12 + 34 = ?", threshold=0.2).tier == "strong"
    assert main(["info", str(toy_bundle)]) == 0
    out = capsys.readouterr().out
    assert "kind:        digits" in out and "toy:         share of digits" in out
    # Written back byte for byte through the kind's own section name.
    manifest = read_manifest(toy_bundle)
    assert "embedder" in manifest.to_dict() and "classifier" not in manifest.to_dict()


def test_a_kind_without_a_routellm_name_never_answers_to_router_bert_or_mf(toy_kind, toy_bundle):
    from edgeroute.runtime.serving.policy import RouterSet

    routers = RouterSet([str(toy_bundle)])
    assert routers.get("digits-router").kind == "digits"
    with pytest.raises(Exception, match="names RouteLLM's mf router, and no bundle of that kind is loaded here"):
        routers.get("mf")


def test_registering_a_name_twice_is_refused(toy_kind):
    with pytest.raises(ValueError, match="router kind 'digits' is already registered"):
        register_kind(RouterKind(**{**TOY.__dict__, "info_lines": lambda manifest: []}))


def test_the_cli_lists_exactly_the_build_sides_export_kinds():
    pytest.importorskip("torch", reason="the export extra is not installed")
    import argparse

    from edgeroute.export.kinds import EXPORT_KINDS
    from edgeroute.runtime.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    export_kinds = next(a for a in commands.choices["export"]._actions if isinstance(a, argparse._SubParsersAction))
    assert list(export_kinds.choices) == list(EXPORT_KINDS)
    assert {kind.manifest_kind for kind in EXPORT_KINDS.values()} <= set(kind_names())
