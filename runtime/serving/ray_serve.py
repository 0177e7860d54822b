"""``edgeroute serve --engine ray``: the routing server as a Ray Serve deployment.

Each replica builds the very app ``edgeroute serve`` runs (``server.create_app``: same endpoints,
decision shape, auth and limits) and Ray Serve's HTTP proxy spreads requests over the replicas
(Serve's ASGI ingress, late-bound through ``__serve_build_asgi_app__``, so that each replica loads
its own routers). Ray is the ``ray`` extra with Ray Serve (``ray[serve]``), imported only inside
functions here.

State is per replica but for the strong-call budget: sticky conversations and the ``/metrics``
counters live in each replica's process; a request reaches one replica, chosen by Serve, so
``/metrics`` through the proxy answers for that replica only. The budget window lives in the
application's Ray actor (``with_budget_store``), so every replica applies one threshold.

On a shared cluster: the application has a name and route prefix of its own (``Placement``), one
already there is never replaced unless asked, and stopping deletes only this application.

Two ways to start it: ``run`` (what the CLI calls: starts Serve on a local or existing cluster
and blocks, or returns a handle), or Ray's ``serve run`` with a config file whose ``import_path``
is ``edgeroute.runtime.serving.ray_serve:app_builder`` (README "Online replicas (Ray Serve)").
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass, fields
from typing import Any

from edgeroute.runtime.errors import ConfigurationError, EdgerouteError, require_extra
from edgeroute.runtime.scoring.router import resolve_bundle
from edgeroute.runtime.serving.budget_store import actor_store_url, remove_actor_store
from edgeroute.runtime.serving.ray_cluster import RayCluster, connect
from edgeroute.runtime.serving.server import ServerConfig, UpstreamConfig, create_app, shutdown_grace_s

__all__ = [
    "ReplicaOptions",
    "Placement",
    "EdgerouteReplica",
    "build_app",
    "app_builder",
    "run",
    "serving_url",
    "APP_NAME",
    "DEPLOYMENT_NAME",
]

APP_NAME = "edgeroute"  # the Serve application
DEPLOYMENT_NAME = "edgeroute"  # its one deployment (the name a config file's `deployments:` section uses)
KEEP_ALIVE_S = 75  # as `edgeroute serve` (uvicorn_config): longer than clients' pools keep idle connections


def _serve() -> Any:
    """The ``ray.serve`` module, or ``ExtraNotInstalledError`` naming the ``ray`` extra."""
    require_extra("ray", "ray", "edgeroute serve --engine ray")
    return require_extra("ray.serve", "ray", "edgeroute serve --engine ray (Ray Serve: ray[serve])")


@dataclass(frozen=True)
class ReplicaOptions:
    """How many replicas and what each reserves.

    Either a fixed ``replicas`` count, or autoscaling between ``min_replicas`` and ``max_replicas``
    (Ray Serve's autoscaler, on ongoing requests per replica; ``replicas`` is then left as None).
    """

    replicas: int | None = 1
    min_replicas: int | None = None
    max_replicas: int | None = None
    num_cpus: float = 1.0  # Ray CPUs each replica reserves; scoring then uses that many onnxruntime threads
    max_ongoing_requests: int = 100  # per replica, before Serve queues at the proxy

    def __post_init__(self) -> None:
        autoscaling = self.min_replicas is not None or self.max_replicas is not None
        if autoscaling:
            if self.replicas is not None:
                raise ConfigurationError("give either a fixed number of replicas or --min-replicas/--max-replicas, not both")
            if self.min_replicas is None or self.max_replicas is None:
                raise ConfigurationError("autoscaling needs both --min-replicas and --max-replicas")
            if not _count(self.min_replicas, 0) or not _count(self.max_replicas, 1) or self.min_replicas > self.max_replicas:
                raise ConfigurationError(
                    f"replicas: need 0 <= --min-replicas <= --max-replicas and --max-replicas >= 1 "
                    f"(got {self.min_replicas} and {self.max_replicas})"
                )
        elif self.replicas is None or not _count(self.replicas, 1):
            raise ConfigurationError(f"--replicas must be a whole number >= 1 (got {self.replicas})")
        if (
            isinstance(self.num_cpus, bool)
            or not isinstance(self.num_cpus, (int, float))
            or not math.isfinite(self.num_cpus)
            or self.num_cpus <= 0
        ):
            raise ConfigurationError(f"CPUs per replica must be a positive number (got {self.num_cpus})")
        if not _count(self.max_ongoing_requests, 1):
            raise ConfigurationError(f"max ongoing requests per replica must be >= 1 (got {self.max_ongoing_requests})")

    @classmethod
    def from_flags(
        cls,
        replicas: int | None = None,
        min_replicas: int | None = None,
        max_replicas: int | None = None,
        num_cpus: float | None = None,
        max_ongoing_requests: int | None = None,
    ) -> ReplicaOptions:
        """The options of ``edgeroute serve --engine ray`` (None: not given): 1 replica by default."""
        autoscale = min_replicas is not None or max_replicas is not None
        if autoscale and replicas is not None:
            raise ConfigurationError("give either --replicas or --min-replicas/--max-replicas, not both")
        return cls(
            replicas=None if autoscale else (1 if replicas is None else replicas),
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            num_cpus=1.0 if num_cpus is None else num_cpus,
            max_ongoing_requests=100 if max_ongoing_requests is None else max_ongoing_requests,
        )

    def deployment_options(self, config: ServerConfig) -> dict[str, Any]:
        """``serve.deployment`` keyword arguments."""
        options: dict[str, Any] = {
            "name": DEPLOYMENT_NAME,
            "ray_actor_options": {"num_cpus": self.num_cpus},
            "max_ongoing_requests": self.max_ongoing_requests,
            # As `edgeroute serve` at SIGTERM: in-flight requests get an upstream call and its fallback.
            "graceful_shutdown_timeout_s": shutdown_grace_s(config),
        }
        if self.replicas is None:
            options["autoscaling_config"] = {"min_replicas": self.min_replicas, "max_replicas": self.max_replicas}
        else:
            options["num_replicas"] = self.replicas
        return options


def _count(value: Any, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


class EdgerouteReplica:
    """One replica: holds the configuration; Ray Serve calls ``__serve_build_asgi_app__`` in the replica."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config

    def __serve_build_asgi_app__(self) -> Any:
        # The routers load here, in the replica's process (a bundle folder must exist on its node).
        return create_app(self.config)


def _replica_config(config: ServerConfig, options: ReplicaOptions) -> ServerConfig:
    """``config`` with onnxruntime threads matched to the replica's CPUs when not set, so replicas do not oversubscribe."""
    if config.threads is not None:
        return config
    from dataclasses import replace

    return replace(config, threads=max(1, int(options.num_cpus)))


def build_app(config: ServerConfig, options: ReplicaOptions | None = None) -> Any:
    """The Serve application (``Application``: a bound deployment) serving ``create_app(config)`` on each replica.

    The upstream keys are read here, in the process that builds the application, and travel to every
    replica inside its configuration (as the bearer token does; Serve keeps it in the cluster's own store,
    not in a runtime_env that the dashboard and ``ray list actors --detail`` show): a replica on a node
    started without the key variables still sends each upstream its key. A named variable that is unset
    here is refused, as ``edgeroute serve`` refuses it.
    """
    serve = _serve()
    options = options or ReplicaOptions()
    deployment = serve.deployment(serve.ingress()(EdgerouteReplica), **options.deployment_options(config))
    return deployment.bind(_replica_config(with_upstream_keys(config), options))


def with_upstream_keys(config: ServerConfig) -> ServerConfig:
    """``config`` with each upstream's key read from this process's environment into its ``api_key``."""
    from dataclasses import replace

    resolved = {}
    for role in ("strong", "weak"):
        upstream = getattr(config, role)
        upstream.check(role)
        resolved[role] = replace(upstream, api_key=upstream.key())
    config = replace(config, **resolved)
    if config.targets is not None:
        keys = [upstream.key() for _, upstream in config.upstream_roles()]
        for role, upstream in config.upstream_roles():
            upstream.check(role)
        targets = tuple(replace(target, api_key=key) for target, key in zip(config.targets.targets, keys))
        config = replace(config, targets=replace(config.targets, targets=targets))
    return config


def app_builder(args: dict[str, Any]) -> Any:
    """The application builder for Ray's ``serve run`` / ``serve deploy`` config files.

    ``args`` holds ``ServerConfig`` fields by name (``strong`` and ``weak`` as ``{model, base_url,
    api_key_env}``), plus ``auth_token_env`` (the variable holding the bearer token, read where
    the application is built) and the ``ReplicaOptions`` fields (``replicas``, or ``min_replicas``
    and ``max_replicas``; ``num_cpus``, ``max_ongoing_requests``), as ``edgeroute serve --engine ray``
    takes them.
    """
    import os

    args = dict(args or {})
    replica_names = {f.name for f in fields(ReplicaOptions)}
    replica_args = {name: args.pop(name) for name in list(args) if name in replica_names}
    token_env = args.pop("auth_token_env", None)
    if token_env:
        token = os.environ.get(token_env)
        if not token:
            raise ConfigurationError(f"auth_token_env {token_env}: that variable is not set")
        args["auth_token"] = token
    config_names = {f.name for f in fields(ServerConfig)}
    unknown = sorted(set(args) - config_names)
    if unknown:
        raise ConfigurationError(f"unknown edgeroute argument(s) {unknown}; known: {sorted(config_names | replica_names)}")
    for role in ("strong", "weak"):
        if not isinstance(args.get(role), dict):
            raise ConfigurationError(f"args.{role} must be a mapping with model, base_url and api_key_env")
        args[role] = UpstreamConfig(**args[role])
    return build_app(ServerConfig(**args), ReplicaOptions.from_flags(**replica_args))


@dataclass(frozen=True)
class Placement:
    """Where the application goes: its Serve name and route prefix, and whether it may replace one of that name."""

    app_name: str = APP_NAME
    route_prefix: str = "/"
    replace: bool = False

    def __post_init__(self) -> None:
        if not self.app_name or not self.app_name.isprintable() or len(self.app_name) > 100:
            raise ConfigurationError(f"--app-name must be 1 to 100 printable characters (got {self.app_name!r})")
        if not self.route_prefix.startswith("/") or (len(self.route_prefix) > 1 and self.route_prefix.endswith("/")):
            raise ConfigurationError(f"--route-prefix must start with / and not end with one (got {self.route_prefix!r})")

    def check_free(self, applications: dict[str, dict[str, Any]]) -> None:
        """Refuse to take an application name or route prefix that another deployment holds (``--replace``: the name may be taken over)."""
        if self.app_name in applications and not self.replace:
            raise ConfigurationError(
                f"a Ray Serve application named {self.app_name!r} already runs on this cluster; "
                "give another --app-name (and --route-prefix), or pass --replace to replace it"
            )
        for name, details in applications.items():
            if name != self.app_name and details.get("route_prefix") == self.route_prefix:
                raise ConfigurationError(
                    f"route prefix {self.route_prefix} is served by the Ray Serve application {name!r}; give another --route-prefix"
                )


def _serve_details(serve: Any) -> dict[str, Any]:
    """Serve's own account of the cluster (applications with their route prefixes, the proxy's address); {} before Serve runs."""
    from ray.serve.context import _get_global_client

    client = _get_global_client(raise_if_no_controller_running=False)
    return {} if client is None else dict(client.get_serve_details())


def run(
    config: ServerConfig,
    options: ReplicaOptions | None = None,
    host: str = "127.0.0.1",
    port: int = 6060,
    address: str | None = None,
    num_cpus: int | None = None,
    blocking: bool = True,
    placement: Placement | None = None,
) -> Any:
    """Deploy the routing server on Ray Serve and return its ``DeploymentHandle``, or block until interrupted.

    Without ``address`` a private local Ray cluster is started for the call (``num_cpus`` logical CPUs,
    default all cores; ``ray_cluster.connect``) unless Ray is already initialized in this process; with
    it, this process joins that cluster (``auto``, ``HOST:6379`` or ``ray://HOST:10001``), whose nodes
    must have edgeroute. Upstream keys are read here and handed to the replicas (``build_app``).
    ``placement`` names the application and its route prefix; one of that name or prefix already on the
    cluster is refused unless ``placement.replace``. ``host``/``port`` are those of Serve's HTTP proxy:
    when Serve already runs on the cluster, its proxy keeps its own, and the address printed is that one.

    Blocking: SIGINT or SIGTERM deletes this application only (and stops the private cluster this call
    started); replicas get ``shutdown_grace_s(config)`` to finish in-flight requests.
    """
    serve = _serve()
    import ray

    options, placement = options or ReplicaOptions(), placement or Placement()
    config = with_budget_store(config, placement)
    app = build_app(config, options)  # options and keys are checked before any cluster starts
    if address is None:  # the replicas share this machine's files: a missing bundle is a usage error now
        for router in config.routers:
            resolve_bundle(router)
    cluster = connect(ray, address, num_cpus)
    deployed: str | None = None  # once serve.run began, a failed or interrupted deploy leaves this application behind
    try:
        placement.check_free(_serve_details(serve).get("applications") or {})
        serve.start(http_options={"host": host, "port": port, "keep_alive_timeout_s": KEEP_ALIVE_S})
        deployed = placement.app_name
        handle = serve.run(app, name=placement.app_name, route_prefix=placement.route_prefix, blocking=False)
    except BaseException as exc:
        _leave(serve, ray, cluster, deployed, config.budget_store if deployed else None)
        if isinstance(exc, RuntimeError):  # Serve's "Deploying application ... failed": a replica could not start
            raise EdgerouteError(
                f"the Ray Serve deployment did not start: {exc} The replicas' errors are in Ray's logs "
                "(logs/serve/ in the Ray session folder, /tmp/ray/session_latest on the head node)"
            ) from exc
        raise
    if not blocking:
        if cluster is not None and cluster.private:  # the caller holds the application: the folder goes at exit
            import atexit

            atexit.register(cluster.stop, ray)
        return handle
    _block_until_stopped(serving_url(serve, placement, host, port), options)
    _leave(serve, ray, cluster, placement.app_name, config.budget_store)
    return handle


def with_budget_store(config: ServerConfig, placement: Placement) -> ServerConfig:
    """``config``, with the application's Ray actor as its budget store when a budget runs and no store is named:
    every replica then holds the share on the application's whole traffic (``budget_store.py``)."""
    from dataclasses import replace

    budgets = config.strong_share is not None or (config.keys is not None and bool(config.keys.shares()))
    if not budgets or config.budget_store is not None:
        return config
    return replace(config, budget_store=actor_store_url(placement.app_name))


def serving_url(serve: Any, placement: Placement, host: str, port: int) -> str:
    """The address Serve's proxy really answers on for this application (its own when it ran before this call)."""
    http = _serve_details(serve).get("http_options") or {}
    shown_host = http.get("host") or host
    prefix = "" if placement.route_prefix == "/" else placement.route_prefix
    return f"http://{'127.0.0.1' if shown_host == '0.0.0.0' else shown_host}:{http.get('port') or port}{prefix}"


def _block_until_stopped(url: str, options: ReplicaOptions) -> None:
    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    print(f"edgeroute: serving on {url} through Ray Serve ({_describe(options)}); Ctrl-C stops", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def _leave(serve: Any, ray: Any, cluster: RayCluster | None, app_name: str | None, budget_store: str | None = None) -> None:
    """Delete this process's application (``app_name``) and its actor budget store from a joined cluster; stop a
    private one whole."""
    if cluster is not None and cluster.private:
        serve.shutdown()
    elif app_name is not None:
        serve.delete(app_name)
        if budget_store is not None and budget_store.startswith("ray-actor://"):
            remove_actor_store(ray, budget_store)
    if cluster is not None:  # None: the caller's own connection, left open
        cluster.stop(ray)


def _describe(options: ReplicaOptions) -> str:
    if options.replicas is None:
        return f"{options.min_replicas} to {options.max_replicas} replicas, autoscaled"
    return f"{options.replicas} replica{'s' if options.replicas != 1 else ''}"
