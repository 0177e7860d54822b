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
from .manifest import SCHEMA_VERSION, Manifest, read_manifest
from .decision import Decision
from .router import Router, default_router_name, models_dir, shipped_routers

__version__ = "0.1.0"

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
