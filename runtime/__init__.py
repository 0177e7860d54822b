"""edgeroute's PyTorch-free runtime: load a router bundle and score prompts.

>>> from edgeroute.runtime import Router
>>> router = Router.load("bert-mmlu-gsm8k")          # doctest: +SKIP
>>> router.route("Prove that sqrt(2) is irrational.", threshold=0.5)  # doctest: +SKIP
"""

from .errors import (
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
from .decision import Decision

__version__ = "0.1.0"

# Loaded on first use (PEP 562), not at import: the router pulls in numpy and the tokenizers, and
# `import edgeroute.runtime.errors` (the server's and the CLI's error handling) needs neither.
_LAZY = {
    "Router": "router",
    "default_router_name": "router",
    "models_dir": "router",
    "shipped_routers": "router",
    "Manifest": "manifest",
    "read_manifest": "manifest",
    "SCHEMA_VERSION": "manifest",
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
