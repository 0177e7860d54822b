"""API keys of the teams a gateway serves (``serve --keys-file``): who is calling, and each team's strong-call share.

The file is TOML and holds no secret, only each key's SHA-256::

    [[key]]
    name = "search-team"                  # printable ASCII, unique: the label in /metrics
    sha256 = "9f86d081884c7d65..."        # printf %s "$TOKEN" | sha256sum
    strong_share = 0.2                    # optional: this team's own budget (default: --strong-share)

A request's bearer token is hashed and compared with every key (constant time each); the key it
matches names the tenant, whose strong-call budget is held on that tenant's traffic alone.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeroute.runtime.errors import ConfigurationError
from edgeroute.runtime.tomlfile import read_toml

_SHA256 = re.compile(r"[0-9a-f]{64}")
_EMPTY_TOKEN_SHA256 = hashlib.sha256(b"").hexdigest()
_NAME = re.compile(r"[\x21-\x7e]{1,64}")  # a Prometheus label value and a log word: no spaces, no controls


@dataclass(frozen=True)
class ApiKey:
    """One team's key: its name, the SHA-256 of its token, its own strong-call share (None: the server's)."""

    name: str
    sha256: str
    strong_share: float | None = None


@dataclass(frozen=True)
class KeySet:
    """The keys of a keys file."""

    keys: tuple[ApiKey, ...]

    def identify(self, token: str) -> ApiKey | None:
        """The key whose token this is, or None."""
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest().encode()
        found = None
        for key in self.keys:  # every key compared, so that timing says nothing about which matched
            if hmac.compare_digest(digest, key.sha256.encode()):
                found = key
        return found

    def shares(self) -> dict[str, float]:
        """Tenant name -> its own strong-call share, for the keys that set one."""
        return {key.name: key.strong_share for key in self.keys if key.strong_share is not None}


def read_keys_file(path: str | Path) -> KeySet:
    """Parse and check a keys file; a mistake raises ``ConfigurationError`` naming the file, the key and the fix."""
    path = Path(path)
    document = read_toml(path, "keys file", "see runtime/serving/keys.py for the format")
    entries = document.get("key")
    if not isinstance(entries, list) or not entries or set(document) != {"key"}:
        raise ConfigurationError(f"{path}: a keys file holds one or more [[key]] tables and nothing else (name, sha256, strong_share)")
    keys = tuple(_key(path, number, entry) for number, entry in enumerate(entries, 1))
    for field in ("name", "sha256"):
        values = [getattr(key, field) for key in keys]
        if len(set(values)) != len(values):
            raise ConfigurationError(f"{path}: two keys share a {field}; each key needs its own")
    return KeySet(keys)


def _key(path: Path, number: int, entry: Any) -> ApiKey:
    where = f"{path}: key {number}"
    if not isinstance(entry, dict) or not set(entry) <= {"name", "sha256", "strong_share"}:
        raise ConfigurationError(f"{where}: give only name, sha256 and strong_share")
    name, digest, share = entry.get("name"), entry.get("sha256"), entry.get("strong_share")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigurationError(f"{where}: name must be 1 to 64 printable ASCII characters without spaces")
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise ConfigurationError(f'{where} ({name}): sha256 must be 64 lowercase hex digits: printf %s "$TOKEN" | sha256sum')
    if digest == _EMPTY_TOKEN_SHA256:
        raise ConfigurationError(f"{where} ({name}): sha256 is that of an empty token, which would let a bare 'Bearer' in")
    if share is not None and (isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 < share < 1.0):
        raise ConfigurationError(f"{where} ({name}): strong_share must be a number strictly between 0 and 1, got {share!r}")
    return ApiKey(name, digest, None if share is None else float(share))
