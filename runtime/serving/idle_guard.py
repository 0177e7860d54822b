"""aiohttp connections that are never reused once an upstream sends bytes nobody asked for.

HTTP/1.1 answers carry no request id: an answer an upstream sends on a kept-alive connection after
the real one is read, by aiohttp, as the answer to the next request on that connection, which may
be another client's. The lean client (``http1.py``) checks idle connections before reuse; this is
the same rule for aiohttp: a pooled connection that receives bytes while idle is closed at once
(so the pool never hands it out), and that upstream's connections are from then on closed after
each answer instead of pooled (the first unsolicited answer can already have met a request sent on
a reused connection; later ones then never can).

aiohttp has no public hook for either step: this subclasses its connection protocol and connector
and uses two of their internals (``_factory``, ``_release``). Where an aiohttp release lacks them,
``guarded_connector`` returns a connector that closes every connection after its answer (safe,
slower) and logs that once.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from edgeroute.runtime.serving.http1 import SETTLE_S

log = logging.getLogger("edgeroute.serve")


@functools.cache
def _classes(aiohttp: Any) -> tuple[type, type] | None:
    """The guarded protocol and connector classes for this aiohttp, or None where its internals differ."""
    from aiohttp.client_proto import ResponseHandler

    connector_class = aiohttp.TCPConnector
    if not (hasattr(connector_class, "_release") and hasattr(ResponseHandler, "set_response_params")):
        return None

    class IdleWatch(ResponseHandler):
        """Closes itself when bytes arrive while it waits in the pool, and tells its connector."""

        idle = False
        pool_key: Any = None
        on_unsolicited: Any = None

        def set_response_params(self, **kwargs: Any) -> None:
            self.idle = False  # a request now owns the connection
            super().set_response_params(**kwargs)

        def data_received(self, data: bytes) -> None:
            if self.idle and data:
                if self.on_unsolicited is not None:
                    self.on_unsolicited(self.pool_key)
                if self.transport is not None:
                    self.transport.close()
                return
            super().data_received(data)

    class GuardedConnector(connector_class):  # type: ignore[misc, valid-type]
        """A ``TCPConnector`` whose pooled connections are ``IdleWatch`` ones; distrusted peers are never pooled."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.distrusted: set[Any] = set()
            if not hasattr(self, "_factory"):
                raise AttributeError("_factory")
            self._factory = functools.partial(IdleWatch, loop=self._loop)

        def _distrust(self, key: Any) -> None:
            if key not in self.distrusted:
                log.warning("an upstream sent an answer nobody asked for: its connections are no longer reused")
                self.distrusted.add(key)

        def _release(self, key: Any, protocol: Any, *args: Any, **kwargs: Any) -> Any:
            if not isinstance(protocol, IdleWatch):
                return super()._release(key, protocol, *args, **kwargs)
            closing = self._force_close or kwargs.get("should_close") or protocol.should_close
            if closing or key in self.distrusted:  # an answer not read to its end: closed now, never idle
                kwargs["should_close"] = True
                return super()._release(key, protocol, *args, **kwargs)
            protocol.idle, protocol.pool_key, protocol.on_unsolicited = True, key, self._distrust
            # Back in the pool only once settled (http1.SETTLE_S): bytes arriving meanwhile close it first.
            self._loop.call_later(SETTLE_S, functools.partial(super()._release, key, protocol, *args, **kwargs))
            return None

    return IdleWatch, GuardedConnector


def guarded_connector(aiohttp: Any, **kwargs: Any) -> Any:
    """``aiohttp.TCPConnector(**kwargs)`` whose idle connections are dropped on unsolicited bytes (see the module)."""
    classes = _classes(aiohttp)
    if classes is not None:
        try:
            return classes[1](**kwargs)
        except AttributeError:
            pass
    log.warning("this aiohttp release cannot be guarded against unsolicited answers: upstream connections are not reused")
    kwargs.pop("keepalive_timeout", None)  # aiohttp refuses it beside force_close
    return aiohttp.TCPConnector(**kwargs, force_close=True)
