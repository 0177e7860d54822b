"""``edgeroute serve``'s configuration: one dataclass, checked when built, from which the CLI derives its flags.

Light on purpose (no numpy, no routers, no HTTP libraries): ``edgeroute --help`` and every CLI call build
the ``serve`` parser from these fields.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from edgeroute.runtime.errors import ConfigurationError
from edgeroute.runtime.serving.keys import KeySet
from edgeroute.runtime.serving.upstream.config import UpstreamConfig

if TYPE_CHECKING:
    from edgeroute.runtime.scoring.targets import Targets


def flag(name: str, help: str | None = None, **options: Any) -> dict[str, Any]:
    """Field metadata: the ``edgeroute serve`` flag that sets a ``ServerConfig`` field (``runtime/cli.py`` derives
    the flags, their types, choices and defaults from the fields). ``options``: ``inverse`` (a ``--no-X`` flag
    that clears a bool), ``repeat`` (a flag given once per value), ``parse`` (the name of a CLI value parser),
    ``metavar``."""
    return {"flag": name, "help": help, **options}


@dataclass
class ServerConfig:
    """Everything ``create_app`` needs, checked when built (``__post_init__``); ``edgeroute serve``'s flags are
    derived from the fields that carry a ``flag`` in their metadata, with the fields' defaults."""

    strong: UpstreamConfig
    weak: UpstreamConfig
    routers: Sequence[str | Path] = ()
    fallback: bool = field(
        default=True, metadata=flag("--no-fallback", "do not retry failed upstream calls on the other model", inverse=True)
    )
    upstream_timeout_s: float = field(default=60.0, metadata=flag("--upstream-timeout", "seconds (default 60)"))
    upstream_client: Literal["auto", "aiohttp"] = field(
        default="auto",
        metadata=flag(
            "--upstream-client",
            "auto (default): plain-http upstreams without a proxy get edgeroute's lean HTTP/1.1 client, "
            "the others aiohttp; aiohttp: every upstream gets aiohttp",
        ),
    )
    route_on: Literal["last_user", "conversation"] = field(default="last_user", metadata=flag("--route-on"))
    sticky: bool = field(default=False, metadata=flag("--sticky", "keep a conversation on the model of its first turn"))
    score_budget_ms: float | None = field(
        default=None, metadata=flag("--score-budget-ms", "past this scoring time, use --default-model and record it")
    )
    default_model: Literal["strong", "weak"] = field(default="weak", metadata=flag("--default-model"))
    auth_token: str | None = field(default=None, repr=False)  # serve --auth-token-env names the variable holding it
    # Teams' API keys (serve --keys-file, runtime/serving/keys.py): each authenticates, and one with a
    # strong_share of its own has a strong-call budget held on its traffic alone.
    keys: KeySet | None = None
    max_body_bytes: int = field(default=4 * 1024 * 1024, metadata=flag("--max-body-bytes"))
    max_messages: int = field(default=1000, metadata=flag("--max-messages", "messages per chat request"))
    max_batch: int = field(default=1024, metadata=flag("--max-batch", "prompts per /v1/route call (default 1024)"))
    # Characters of message text per request. A router reads at most its first max_length tokens
    # (a few thousand characters); this bounds what is parsed and relayed. Raise it for long-context upstreams.
    max_prompt_chars: int = field(
        default=100_000,
        metadata=flag("--max-prompt-chars", "characters of message text per request, content parts included (default 100000)"),
    )
    # A strong-call budget held on live traffic (runtime/serving/budget.py): None keeps the calibrated threshold.
    strong_share: float | None = field(
        default=None,
        metadata=flag(
            "--strong-share",
            "hold this share of strong calls on live traffic: the threshold follows the running "
            "quantile of recent win rates (requests with their own threshold are exempt)",
            parse="share",
        ),
    )
    budget_window: int = field(default=1000, metadata=flag("--budget-window", "requests the --strong-share or --target-cost budget keeps"))
    # The budget's threshold never goes below the floor, nor above the ceiling; None: the bundle's calibrated
    # thresholds for 90% and 10% strong calls.
    budget_floor: float | None = field(
        default=None,
        metadata=flag(
            "--budget-floor",
            "lowest threshold the --strong-share budget sets (default: the bundle's calibrated threshold for 90%% strong calls)",
        ),
    )
    budget_ceiling: float | None = field(
        default=None,
        metadata=flag(
            "--budget-ceiling",
            "highest threshold the --strong-share budget sets (default: the bundle's calibrated threshold for 10%% strong calls)",
        ),
    )
    budget_counts_route: bool = field(
        default=False,
        metadata=flag(
            "--budget-counts-route",
            "let /v1/route calls (decisions only) enter the --strong-share window too; a batch counts at most 8 prompts",
        ),
    )
    # A store every replica's budget window lives in (runtime/serving/budget_store.py): redis://HOST:6379/0.
    budget_store: str | None = field(
        default=None,
        metadata=flag("--budget-store", "redis://HOST:6379/0: one strong-call budget window shared by every replica [redis extra]"),
    )
    client_timeout_s: float = field(
        default=30.0,
        metadata=flag("--client-timeout", "seconds a client gets to send the request headers, and again the body (default 30)"),
    )
    shutdown_grace_s: float | None = field(
        default=None,
        metadata=flag(
            "--shutdown-grace",
            "seconds in-flight requests get at SIGTERM (default: the upstream timeout per model a request may try, + 5)",
        ),
    )
    cors_origins: Sequence[str] = field(
        default=(), metadata=flag("--cors-origin", "allowed CORS origin; repeat; none by default", repeat=True)
    )
    device: Literal["cpu", "cuda"] = field(default="cpu", metadata=flag("--device"))
    threads: int | None = field(default=None, metadata=flag("--threads", "onnxruntime threads per router (default: its own)"))
    # N targets (serve --config, runtime/scoring/targets.py), most capable first; None: the strong/weak pair.
    # A target without a base URL of its own uses the strong upstream's base URL and key variable.
    targets: Targets | None = None
    # N targets: an average estimated cost per request (USD) held on live traffic (runtime/serving/spend.py).
    target_cost: float | None = field(
        default=None,
        metadata=flag(
            "--target-cost",
            "with --config: hold this average estimated cost per request on live traffic (a spend budget over --budget-window requests)",
            metavar="USD",
        ),
    )

    def __post_init__(self) -> None:
        """Refuse settings that cannot work, before anything loads (the CLI and Ray's app builder build one too)."""
        for name in ("upstream_timeout_s", "client_timeout_s", "shutdown_grace_s"):
            value = getattr(self, name)
            if value is None and name == "shutdown_grace_s":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigurationError(f"{name.replace('_s', '').replace('_', ' ')} must be a positive number of seconds")
        for name in ("max_body_bytes", "max_messages", "max_batch", "max_prompt_chars", "budget_window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")

    def target_upstreams(self) -> list[UpstreamConfig]:
        """Each target's upstream, in the targets' order (empty for two models)."""
        if self.targets is None:
            return []
        return [
            UpstreamConfig(target.name, target.base_url, target.api_key_env, target.api_key, target.format)
            if target.base_url
            else UpstreamConfig(
                target.name,
                self.strong.base_url,
                target.api_key_env or self.strong.api_key_env,
                target.api_key or self.strong.api_key,
                target.format,
            )
            for target in self.targets.targets
        ]

    def upstream_roles(self) -> list[tuple[str, UpstreamConfig]]:
        """(role, upstream) of every upstream the server calls: strong and weak, or each target by name."""
        if self.targets is None:
            return [("strong", self.strong), ("weak", self.weak)]
        return [(f"target {upstream.model!r}", upstream) for upstream in self.target_upstreams()]
