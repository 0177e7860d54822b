"""Where an upstream is and how it is called: base URL, model name, key source, wire format."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from edgeroute.runtime.errors import ConfigurationError

OPENAI_HOST = "api.openai.com"
OPENAI_KEY_ENV = "OPENAI_API_KEY"
ANTHROPIC_HOST = "api.anthropic.com"
ANTHROPIC_KEY_ENV = "ANTHROPIC_API_KEY"
# Each wire format's own host and the variable whose key that host gets when none is named.
DEFAULT_KEYS = {OPENAI_HOST: OPENAI_KEY_ENV, ANTHROPIC_HOST: ANTHROPIC_KEY_ENV}
WIRE_FORMATS = ("openai", "anthropic")


def check_base_url(url: str, role: str) -> None:
    """Refuse a base URL that no request could reach: an http(s) scheme, a host and a valid port are required."""
    example = "e.g. http://127.0.0.1:8000/v1"
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        parts, port_ok = urlsplit(""), False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok or any(c.isspace() for c in url):
        raise ConfigurationError(f"{role} base URL {url!r} is not an http(s) URL with a host and a valid port ({example})")


@dataclass
class UpstreamConfig:
    """One upstream: base URL (ending in /v1), model name there, API key variable, wire format.

    ``api_key_env=None`` sends ``OPENAI_API_KEY`` to api.openai.com only (``ANTHROPIC_API_KEY`` to
    api.anthropic.com only): a key goes to the base URL it was configured for, never to a custom one by default.
    """

    model: str
    base_url: str
    api_key_env: str | None = None
    # The key itself, read where the configuration was built (Ray Serve replicas get it with their configuration,
    # which Serve keeps in the cluster's own store, never in a runtime_env the dashboard shows); never printed.
    api_key: str | None = field(default=None, repr=False)
    # The upstream's wire format (runtime/serving/upstream/wire.py): "openai" (chat completions) or "anthropic" (Messages).
    format: str = "openai"

    def key_variable(self) -> str | None:
        """The variable whose key this upstream gets, or None when it gets none."""
        if self.api_key_env:
            return self.api_key_env
        return DEFAULT_KEYS.get(urlsplit(self.base_url).hostname or "")

    def key(self) -> str | None:
        """The key this upstream is sent: ``api_key`` when resolved already, else its key variable's value."""
        variable = self.key_variable()
        return self.api_key or (os.environ.get(variable) if variable else None)

    def headers(self) -> dict[str, str]:
        """The headers its wire format sends: the key (when there is one) and any version header."""
        from edgeroute.runtime.serving.upstream.wire import wire_format

        return wire_format(self.format).headers(self.key())

    def probe(self, role: str, timeout_s: float = 3.0) -> None:
        """Open (and close) one TCP connection to the base URL's host and port: ``serve --check-upstreams``."""
        import socket

        parts = urlsplit(self.base_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            socket.create_connection((parts.hostname or "", port), timeout=timeout_s).close()
        except OSError as exc:
            raise ConfigurationError(
                f"{role} upstream {self.base_url} is not reachable ({type(exc).__name__}); start it or fix --{role}-base-url"
            ) from None

    def check(self, role: str) -> None:
        """Fail at start, not per request: a base URL that cannot work, a named key variable that is unset."""
        check_base_url(self.base_url, role)
        if self.format not in WIRE_FORMATS:
            raise ConfigurationError(f"{role} upstream format must be one of {WIRE_FORMATS}, got {self.format!r}")
        if self.api_key_env and not self.api_key and not os.environ.get(self.api_key_env):
            raise ConfigurationError(f"{role} API key variable {self.api_key_env} is not set: set it, or name no variable to send no key")


def env_proxy(url: str) -> str | None:
    """The proxy that HTTP(S)_PROXY / ALL_PROXY / NO_PROXY name for ``url``, if any (the usual rules of those variables)."""
    import urllib.request
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if not parts.hostname or urllib.request.proxy_bypass(parts.hostname):
        return None
    proxies = urllib.request.getproxies()
    return proxies.get(parts.scheme) or proxies.get("all")
