"""Reading the TOML files a user writes (a keys file, a targets file): one rule for what a mistake says."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from edgeroute.runtime.errors import ConfigurationError


def read_toml(path: Path, what: str, fix: str) -> dict[str, Any]:
    """The parsed document; ``ConfigurationError`` naming the file when it cannot be read or is no TOML (``fix``: where the format is)."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{path}: not a TOML {what} ({exc}); {fix}") from None
