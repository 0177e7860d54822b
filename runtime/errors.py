"""Typed errors of edgeroute. Every error a caller can provoke is one of these.

Bundle errors are raised by ``Router.load`` (fail fast); input errors by the scoring
calls. Input errors subclass ``ValueError`` or ``TypeError`` as well, so code written
against the standard exceptions keeps working.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO


class EdgerouteError(Exception):
    """Base class of every error edgeroute raises on purpose."""


# --- bundle (load-time) errors -------------------------------------------------------


class BundleError(EdgerouteError):
    """A router bundle cannot be used. The message names the file and the fix."""


class BundleNotFoundError(BundleError, FileNotFoundError):
    """No bundle folder at the given path, and no shipped router of that name."""


class BundleFileMissingError(BundleError, FileNotFoundError):
    """A file that the manifest lists is not in the bundle folder."""


class ManifestError(BundleError):
    """The manifest is missing, not JSON, or does not follow the schema."""


class UnsupportedSchemaError(ManifestError):
    """The manifest was written by a newer edgeroute than this runtime."""


class BundleIntegrityError(BundleError):
    """A bundle file's sha256 differs from the one recorded in the manifest."""


class BundleCorruptError(BundleError):
    """A bundle file has the right name but cannot be read as what it claims to be."""


class ParityDriftError(BundleError):
    """Re-scored golden prompts differ from the win rates stored at export by more than the tolerance."""


class PrecisionUnavailableError(BundleError):
    """The bundle holds no graph of the asked precision."""


class ProviderUnavailableError(EdgerouteError):
    """The asked device (for example CUDA) is not usable by onnxruntime here."""


class ConfigurationError(EdgerouteError, ValueError):
    """An argument of ``Router.load`` or a required setting (such as an endpoint) is wrong."""


class ExtraNotInstalledError(EdgerouteError, ImportError):
    """A feature needs an optional extra that is not installed."""


# --- request (score-time) errors -----------------------------------------------------


class InvalidInputError(EdgerouteError, ValueError):
    """A request argument is unusable; nothing was scored."""


class InvalidPromptError(InvalidInputError):
    """The prompt is empty, whitespace only, or not a string."""


class InvalidThresholdError(InvalidInputError):
    """The threshold is not a finite number in [0, 1]."""


class UnknownModelError(InvalidInputError, KeyError):
    """A model name is not among the bundle's models."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class EmbeddingServiceError(EdgerouteError):
    """The remote embeddings endpoint of an MF router failed or answered nonsense."""


def require_extra(module: str, extra: str, feature: str):
    """Import ``module`` or raise ``ExtraNotInstalledError`` naming the pip extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ExtraNotInstalledError(
            f"{feature} needs the '{extra}' extra ({module} is not installed): in your edgeroute clone, pip install '.[{extra}]'"
        ) from exc


def not_utf8(source: str | Path, exc: UnicodeDecodeError) -> InvalidInputError:
    """The one error for input that is not UTF-8 text, naming where it came from."""
    return InvalidInputError(f"{source}: not UTF-8 text ({exc.reason}); convert it to UTF-8 first (e.g. iconv -t UTF-8)")


@contextlib.contextmanager
def utf8_text(path: str | Path, newline: str | None = None) -> Iterator[TextIO]:
    """``open(path)`` for UTF-8 text whose decoding errors, wherever they surface, become ``not_utf8``."""
    with open(path, encoding="utf-8", newline=newline) as handle:
        try:
            yield handle
        except UnicodeDecodeError as exc:
            raise not_utf8(path, exc) from None


def read_stdin_text() -> str:
    """Standard input as UTF-8 text (strictly: no bytes silently replaced)."""
    import sys

    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:  # a text stream put in its place (tests, embedding applications): already decoded
        return sys.stdin.read()
    try:
        return buffer.read().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise not_utf8("standard input", exc) from None
