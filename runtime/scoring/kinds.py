"""Router kinds as data: the one table that says, for each manifest ``kind``, how its bundle is read,
scored and described.

A kind is a ``RouterKind``: the manifest section holding its encoder and that section's parser, the
head parser (kinds without a head return None), the scorer builder, the lines ``edgeroute info``
prints, and the RouteLLM name whose threshold scale its bundles share. The manifest parser, the
scorer choice in ``Router.load``, ``edgeroute info`` and the server's ``router-bert``/``router-mf``
aliases all read this table; none of them tests a kind by name.

The built-in kinds live in their own modules (``kind_bert``, ``kind_mf``), each defining ``KIND``,
read the first time the table is, so that this module imports neither the manifest nor the scorers.
A new kind is a module that defines its ``KIND`` and one line in ``_BUILTIN`` (or a ``register_kind``
call from outside the package: the tests register a toy kind that way). Exporting a kind is the build side's
business: ``export/kinds.py`` maps each ``edgeroute export`` kind to its exporter, because the
runtime never imports the build side.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeroute.runtime.scoring.manifest import EncoderSpec, HeadSpec, Manifest, ManifestChecker
    from edgeroute.runtime.scoring.scorers import LoadOptions, Scorer

    ScorerBuild = Callable[[Manifest, LoadOptions], Scorer]

# Modules whose ``KIND`` is a kind shipped with edgeroute, in the order errors list them.
_BUILTIN = ("edgeroute.runtime.scoring.kind_bert", "edgeroute.runtime.scoring.kind_mf")


@dataclass(frozen=True)
class RouterKind:
    """One manifest ``kind``: how a bundle of it is parsed, scored and described."""

    name: str
    # The manifest key of the encoder section ("classifier" for BERT, "embedder" for MF).
    encoder_section: str
    # (raw section, checker, files) -> typed encoder spec; raises ManifestError through the checker.
    parse_encoder: Callable[[dict[str, Any], ManifestChecker, Mapping[str, Any]], EncoderSpec]
    # (raw head or None, checker, files) -> typed head spec, or None for kinds without a head.
    parse_head: Callable[[Any, ManifestChecker, Mapping[str, Any]], HeadSpec | None]
    # Whether a bundle with this raw encoder section ships its own tokenizer (remote embedders do not).
    has_tokenizer: Callable[[dict[str, Any]], bool]
    # The scorer class's ``build`` for a parsed bundle of this kind.
    scorer: Callable[[Manifest], ScorerBuild]
    # Lines ``edgeroute info`` prints about this kind (after the lines every bundle has).
    info_lines: Callable[[Manifest], list[str]]
    # RouteLLM's name for this kind (``router-bert-0.3``), or None; a bundle of this kind answers to it
    # only when ``on_routellm_scale`` says its win rates are on that router's threshold scale.
    routellm_name: str | None = None
    on_routellm_scale: Callable[[Manifest], bool] = lambda manifest: False
    # Whether a bundle's scorer scores every model it knows (``model_rows``/``model_scores``), so that it
    # can route among N targets; a router that predicts one pair cannot.
    scores_every_model: Callable[[Manifest], bool] = lambda manifest: False


_KINDS: dict[str, RouterKind] = {}
_builtin_loaded = False


def _load_builtin() -> None:
    global _builtin_loaded
    if not _builtin_loaded:
        for module in _BUILTIN:
            kind = importlib.import_module(module).KIND
            _KINDS.setdefault(kind.name, kind)
        _builtin_loaded = True


def register_kind(kind: RouterKind, *, replace: bool = False) -> RouterKind:
    """Add ``kind`` to the table; registering a name twice is an error unless ``replace``."""
    _load_builtin()
    if kind.name in _KINDS and not replace and _KINDS[kind.name] is not kind:
        raise ValueError(f"router kind {kind.name!r} is already registered; pass replace=True to replace it")
    _KINDS[kind.name] = kind
    return kind


def unregister_kind(name: str) -> None:
    """Remove a kind added by ``register_kind`` (tests clean up with it)."""
    _KINDS.pop(name, None)


def kind_names() -> tuple[str, ...]:
    """The registered kinds' names, built-in ones first."""
    _load_builtin()
    return tuple(_KINDS)


def router_kind(name: str) -> RouterKind | None:
    """The registered kind called ``name``, or None."""
    _load_builtin()
    return _KINDS.get(name)


def routellm_kinds() -> dict[str, Callable[[Manifest], bool]]:
    """RouteLLM's kind names (``bert``, ``mf``) to the test of whether a bundle scores on that kind's scale."""
    _load_builtin()
    return {kind.routellm_name: partial(_on_scale_of, kind) for kind in _KINDS.values() if kind.routellm_name}


def _on_scale_of(kind: RouterKind, manifest: Manifest) -> bool:
    return manifest.kind == kind.name and kind.on_routellm_scale(manifest)
