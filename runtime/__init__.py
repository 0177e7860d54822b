"""edgeroute's PyTorch-free runtime: load a router bundle and score prompts.

Stages, each a package that only looks down: ``scoring`` (bundles, manifests, scorers, the one
``Decision``: what ships without torch), ``serving`` (routing policy, strong-call budget,
controller, OpenAI-compatible server, batch scoring), ``evaluation`` (data readers, split rules,
APGR curves, calibration), and the ``cli`` on top. ``errors`` is shared by all of them.

>>> from edgeroute.runtime import Router
>>> router = Router.load("bert-mmlu-gsm8k")          # doctest: +SKIP
>>> router.route("Prove that sqrt(2) is irrational.", threshold=0.5)  # doctest: +SKIP
"""

from edgeroute.runtime.errors import (
    BundleCorruptError,
    BundleError,
    BundleFileMissingError,
    BundleIntegrityError,
    BundleNotFoundError,
    ConfigurationError,
    EdgerouteError,
    EmbeddingServiceError,
    ExtraNotInstalledError,
    InvalidInputError,
    InvalidPromptError,
    InvalidThresholdError,
    ManifestError,
    ParityDriftError,
    PrecisionUnavailableError,
    ProviderUnavailableError,
    UnknownModelError,
    UnsupportedSchemaError,
)
from edgeroute.runtime.scoring.decision import BudgetState, Decision

__version__ = "0.1.0"

# Loaded on first use (PEP 562), not at import: the router pulls in numpy and the tokenizers, and
# `import edgeroute.runtime.errors` (the server's and the CLI's error handling) needs neither.
_LAZY = {
    "Router": "scoring.router",
    "default_router_name": "scoring.router",
    "models_dir": "scoring.router",
    "shipped_routers": "scoring.router",
    "Manifest": "scoring.manifest",
    "read_manifest": "scoring.manifest",
    "SCHEMA_VERSION": "scoring.manifest",
}


def __getattr__(name: str) -> object:
    """Import the module that defines ``name`` on first access and cache the attribute here."""
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module_name}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "Router",
    "Decision",
    "BudgetState",
    "Manifest",
    "read_manifest",
    "SCHEMA_VERSION",
    "default_router_name",
    "models_dir",
    "shipped_routers",
    "EdgerouteError",
    "BundleError",
    "BundleNotFoundError",
    "BundleFileMissingError",
    "BundleIntegrityError",
    "BundleCorruptError",
    "ManifestError",
    "UnsupportedSchemaError",
    "ParityDriftError",
    "PrecisionUnavailableError",
    "ProviderUnavailableError",
    "ConfigurationError",
    "ExtraNotInstalledError",
    "InvalidInputError",
    "InvalidPromptError",
    "InvalidThresholdError",
    "UnknownModelError",
    "EmbeddingServiceError",
]
