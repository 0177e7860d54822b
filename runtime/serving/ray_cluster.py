"""The Ray cluster an ``edgeroute`` command runs on: a private local one, or one it joins by address.

Without an address, a command starts a *private* local cluster (``address="local"``), never joining
a cluster that happens to run on the machine, in a temporary folder of its own that is removed when
the cluster stops (a Ray session folder is 0.5-10 MB, and Ray itself never removes one). With an
address, it joins that cluster and, when it leaves, disconnects only: what runs there is not its to stop.
Ray is the ``ray`` extra, imported by the callers.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeroute.runtime.errors import ConfigurationError

# Ray's sockets live under the temporary folder, and a Unix socket path holds at most 107 bytes: a short root.
_TEMP_ROOT = "/tmp"


@dataclass
class RayCluster:
    """A connection this process made: ``private`` when it started the cluster (and ``folder`` is its session root)."""

    address: str | None
    private: bool
    folder: Path | None = None

    def stop(self, ray: Any) -> None:
        """Disconnect; a private cluster is stopped and its folder removed."""
        ray.shutdown()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def connect(ray: Any, address: str | None, num_cpus: int | None = None) -> RayCluster | None:
    """Join ``address``, or start a private local cluster (``num_cpus`` logical CPUs, default all cores);
    None when this process is connected already (its caller owns that connection)."""
    if ray.is_initialized():
        return None
    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    if address:
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        except Exception as exc:  # Ray raises several types here, among them its auth errors
            raise _join_error(address, exc) from exc
        return RayCluster(address, private=False)
    folder = Path(tempfile.mkdtemp(prefix="edgeroute-ray-", dir=_TEMP_ROOT))
    try:
        ray.init(address="local", num_cpus=num_cpus, _temp_dir=str(folder), **quiet)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return RayCluster(None, private=True, folder=folder)


def _join_error(address: str, exc: Exception) -> Exception:
    """What to do when joining ``address`` failed: Ray's token authentication named, other errors passed on."""
    text = f"{type(exc).__name__}: {exc}"
    # Ray's words for it: InvalidAuthToken (the report), AuthenticationError naming RAY_AUTH_MODE (Ray 2.60).
    if "InvalidAuthToken" in text or "AuthenticationError" in text or "AUTH_MODE" in text.upper() or "authentication token" in text.lower():
        return ConfigurationError(
            f"the Ray cluster at {address} uses token authentication: set RAY_AUTH_MODE=token and give its token "
            "(RAY_AUTH_TOKEN, or the token file the head was started with) in this environment, then retry"
        )
    return exc
