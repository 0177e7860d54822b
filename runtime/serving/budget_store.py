"""One strong-call budget window shared by every replica (``serve --budget-store redis://HOST:6379/0``).

Without a store, each server process holds its own window (``budget.py``): N replicas behind a load
balancer each hold the share on their slice, each restarts from the calibrated threshold, and a
prompt's tier depends on which replica took it. With one, every replica appends the win rates it
admits to one Redis list per router (and per team key), trimmed to the window, and reads the whole
list back: all replicas apply the threshold of the same window, so the share is held on the global
traffic, and a replica that starts late or restarts starts from it.

No request waits on the store: a background thread per budget exchanges every ``interval_s``
(batched: one pipelined round trip for any number of win rates). A replica that cannot reach the
store keeps the threshold of the last window it read, and says so (``edgeroute_budget_store_up`` 0
in ``/metrics``, one warning in the log). Redis is the ``redis`` extra (redis-py), imported here only.

On Ray Serve (``serve --engine ray``) the window can live in a named Ray actor instead
(``ray-actor://NAME``, the default there when a budget runs and no store is given): every replica of
the application reaches the same actor, and stopping the application removes it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

from edgeroute.runtime.errors import ConfigurationError, require_extra

log = logging.getLogger("edgeroute.server")
DEFAULT_INTERVAL_S = 0.25
KEY_TTL_S = 86_400  # a window nobody has written to for a day is dropped
Entry = tuple[float, bool]  # a win rate, and whether it went to the strong model


class WindowStore(Protocol):
    """Where the shared windows live."""

    def exchange(self, key: str, entries: Sequence[Entry], window: int, keep: int | None = None) -> list[Entry]:
        """Append ``entries`` to window ``key``, trim it to its newest ``window`` (``keep``: to its newest ``keep``,
        after a drift reset), and return what it holds, oldest first."""
        ...


class RedisWindowStore:
    """Windows as Redis lists of ``"<win rate> <0|1>"``: RPUSH, LTRIM, LRANGE and EXPIRE in one pipelined transaction."""

    def __init__(self, url: str, timeout_s: float = 0.5) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ConfigurationError(f"--budget-store {parts.scheme}://...: give a redis:// (or rediss://, unix://, ray-actor://NAME) URL")
        redis = require_extra("redis", "redis", "serve --budget-store")
        self.url = url
        self._client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)

    def check(self) -> None:
        """Fail at start, not per request, when the store does not answer."""
        try:
            self._client.ping()
        except self._errors as exc:
            host = urlsplit(self.url).hostname or self.url
            problem = f"Redis at {host} does not answer ({type(exc).__name__})"
            raise ConfigurationError(f"--budget-store: {problem}; start it or fix the URL") from None

    def exchange(self, key: str, entries: Sequence[Entry], window: int, keep: int | None = None) -> list[Entry]:
        pipe = self._client.pipeline(transaction=True)
        if entries:
            pipe.rpush(key, *[f"{rate:.17g} {int(strong)}" for rate, strong in entries])
        pipe.ltrim(key, -(keep or window), -1)
        pipe.lrange(key, 0, -1)
        pipe.expire(key, KEY_TTL_S)
        values = pipe.execute()[-2]
        out = []
        for value in values:
            rate, _, strong = value.decode("ascii", "replace").partition(" ")
            try:
                out.append((float(rate), strong == "1"))
            except ValueError:
                continue  # not ours: skipped, never a crash
        return out


class MemoryWindowStore:
    """Windows in this process's memory: the state of the Ray actor behind ``ray-actor://NAME``, and of replays."""

    def __init__(self) -> None:
        self.windows: dict[str, list[Entry]] = {}

    def exchange(self, key: str, entries: Sequence[Entry], window: int, keep: int | None = None) -> list[Entry]:
        kept = (self.windows.get(key, []) + list(entries))[-(keep or window) :]
        self.windows[key] = kept
        return list(kept)


class RayActorWindowStore:
    """Windows in one named, detached Ray actor (0 CPUs), found or created by every replica of the application."""

    NAMESPACE = "edgeroute"  # one namespace for the replicas that create it and the driver that removes it

    def __init__(self, name: str, timeout_s: float = 0.5) -> None:
        ray = require_extra("ray", "ray", "serve --budget-store ray-actor://NAME")
        if not ray.is_initialized():
            raise ConfigurationError(f"--budget-store ray-actor://{name}: only replicas on a Ray cluster (serve --engine ray) can use it")
        self._ray, self.name, self.timeout_s = ray, name, timeout_s
        actor = ray.remote(num_cpus=0)(MemoryWindowStore)
        self._actor = actor.options(name=name, namespace=self.NAMESPACE, get_if_exists=True, lifetime="detached").remote()

    def check(self, timeout_s: float = 60.0) -> None:
        """The actor answers (its first start needs a worker process: a long wait on a busy machine)."""
        try:
            self._ray.get(self._actor.exchange.remote("edgeroute:check", [], 1), timeout=timeout_s)
        except Exception as exc:  # Ray's timeout and actor errors
            raise ConfigurationError(f"--budget-store ray-actor://{self.name}: the actor did not answer ({type(exc).__name__})") from None

    def exchange(self, key: str, entries: Sequence[Entry], window: int, keep: int | None = None) -> list[Entry]:
        reference = self._actor.exchange.remote(key, list(entries), window, keep)
        return list(self._ray.get(reference, timeout=self.timeout_s))


def actor_store_url(app_name: str) -> str:
    """The actor store of a Ray Serve application."""
    return f"ray-actor://edgeroute-budget-{app_name}"


def remove_actor_store(ray: Any, url: str) -> None:
    """Kill the actor behind ``url`` (when the application that used it stops); nothing when there is none."""
    name = urlsplit(url).netloc
    try:
        ray.kill(ray.get_actor(name, namespace=RayActorWindowStore.NAMESPACE))
    except ValueError:  # no such actor
        pass


def open_store(url: str) -> RedisWindowStore | RayActorWindowStore:
    """The store at ``url``, checked now (``ConfigurationError`` when it cannot work)."""
    parts = urlsplit(url)
    store: RedisWindowStore | RayActorWindowStore
    store = RayActorWindowStore(parts.netloc) if parts.scheme == "ray-actor" and parts.netloc else RedisWindowStore(url)
    store.check()
    return store


class SharedWindowSync:
    """Keeps one budget's window in step with the store: a daemon thread exchanging every ``interval_s``."""

    def __init__(self, budget: Any, store: WindowStore, key: str, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self.budget, self.store, self.key, self.interval_s = budget, store, key, interval_s
        budget.share()
        self.up: bool | None = None  # None until the first exchange
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edgeroute-budget-store", daemon=True)

    def start(self) -> SharedWindowSync:
        """The exchanges, first one at once: a replica that starts late begins from the shared window within one
        round trip (on this thread, never on the caller's: a request or an event loop never waits on the store)."""
        self._thread.start()
        return self

    def _run(self) -> None:
        self.sync_once()
        while not self._stop.wait(self.interval_s):
            self.sync_once()

    def sync_once(self) -> None:
        """One exchange; on failure the budget keeps the last shared window, and this batch of win rates is dropped
        (a timed-out exchange may still have been applied: sending it again could count it twice)."""
        entries, keep = self.budget.take_pending()
        try:
            shared = self.store.exchange(self.key, entries, self.budget.window_size, keep)
        except Exception as exc:  # any failure of the store: the replica goes on with what it had
            if self.up is not False:
                log.warning("budget store unreachable (%s): keeping the last shared threshold", type(exc).__name__)
            self.up = False
            return
        if self.up is False:
            log.warning("budget store reachable again")
        self.up = True
        self.budget.use_shared(shared)

    def stop(self) -> None:
        self._stop.set()
