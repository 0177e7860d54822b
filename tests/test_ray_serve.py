"""edgeroute serve on Ray Serve: 2 replicas on a local Ray cluster, driven by the real openai client.

The replicas serve ``create_app`` (tests/test_server.py covers its behaviour in depth); this checks
that the same endpoints, decision and auth answer through Ray Serve's proxy. Marked ``ray``;
skipped with a message without Ray Serve (the ray extra).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from edgeroute.runtime.errors import ConfigurationError, ExtraNotInstalledError
from servers import free_port, server_config

ROUTER = "static-distilled-gpt4-mixtral"  # shipped; numpy scoring, so replicas start fast
TOKEN_ENV = "EDGEROUTE_TEST_RAY_TOKEN"


def test_replica_options_are_checked():
    from edgeroute.runtime.serving.ray_serve import ReplicaOptions

    assert ReplicaOptions(replicas=2).replicas == 2
    assert ReplicaOptions(replicas=None, min_replicas=0, max_replicas=3).max_replicas == 3
    for bad in (
        dict(replicas=0),
        dict(replicas=None),
        dict(replicas=2, min_replicas=1, max_replicas=2),
        dict(replicas=None, min_replicas=1),
        dict(replicas=None, min_replicas=3, max_replicas=2),
        dict(replicas=1, num_cpus=0),
    ):
        with pytest.raises(ConfigurationError):
            ReplicaOptions(**bad)


def test_ray_serve_names_its_extra(monkeypatch):
    import sys

    from edgeroute.runtime.serving.ray_serve import _serve

    monkeypatch.setitem(sys.modules, "ray.serve", None)
    with pytest.raises(ExtraNotInstalledError, match=r"'ray' extra"):
        _serve()


def test_readme_serve_config_builds_the_app(monkeypatch):
    """docs/scaling-out.md's `serve run` config file: its import path and args build the application (no cluster)."""
    pytest.importorskip("ray.serve", reason="Ray Serve is the ray extra: pip install '.[ray]'")
    yaml = pytest.importorskip("yaml")
    import importlib

    readme = (Path(__file__).resolve().parents[1] / "docs" / "scaling-out.md").read_text()
    block = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    application = yaml.safe_load(block)["applications"][0]
    module, name = application["import_path"].split(":")
    monkeypatch.setenv(application["args"]["auth_token_env"], "t0ken")
    keys = {application["args"][role]["api_key_env"]: f"sk-{role}" for role in ("strong", "weak")}
    for variable, key in keys.items():
        monkeypatch.setenv(variable, key)
    app = getattr(importlib.import_module(module), name)(application["args"])
    config = app._bound_deployment.init_args[0]
    assert config.auth_token == "t0ken" and config.strong.model == application["args"]["strong"]["model"]
    deployment = app._bound_deployment
    # Read here, carried to every replica in its configuration; never in a runtime_env (the dashboard shows those).
    assert (config.strong.api_key, config.weak.api_key) == ("sk-strong", "sk-weak") and "runtime_env" not in deployment.ray_actor_options
    assert "sk-strong" not in repr(config)
    monkeypatch.delenv(next(iter(keys)))
    with pytest.raises(ConfigurationError, match="^strong API key variable OPENAI_API_KEY is not set"):
        getattr(importlib.import_module(module), name)(application["args"])
    assert deployment.name == "edgeroute"
    assert deployment._deployment_config.autoscaling_config.max_replicas == application["args"]["max_replicas"]


@pytest.fixture(scope="module")
def ray_serve_url(upstream):
    ray = pytest.importorskip("ray", reason="Ray Serve is the ray extra: pip install '.[ray]'")
    pytest.importorskip("ray.serve", reason="Ray Serve is the ray extra (ray[serve]): pip install '.[ray]'")
    from ray import serve

    from edgeroute.runtime.serving.ray_serve import ReplicaOptions, run

    os.environ[TOKEN_ENV] = "s3cret"  # the replicas inherit it from the local cluster started here
    # Three logical CPUs on two cores: the two replicas, and room for a second application's light one.
    ray.init(address="local", num_cpus=3, include_dashboard=False, log_to_driver=False)  # private, as above
    try:
        port = free_port()
        # A budget: its window lives in the application's Ray actor, shared by both replicas.
        config = server_config(upstream, routers=[ROUTER], auth_token="s3cret", strong_share=0.3, budget_window=60)
        run(config, ReplicaOptions(replicas=2, num_cpus=1), port=port, blocking=False)
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:  # serve.run returns once the replicas are up; the proxy may need a moment more
            try:
                if httpx.get(url + "/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise RuntimeError("Ray Serve did not answer /health within 60 s")
            time.sleep(0.5)
        yield url
    finally:
        serve.shutdown()
        ray.shutdown()
        os.environ.pop(TOKEN_ENV, None)


@pytest.mark.ray
def test_two_replicas_answer_the_openai_client(ray_serve_url, upstream):
    openai = pytest.importorskip("openai")
    from ray import serve

    status = serve.status().applications["edgeroute"]
    assert status.status == "RUNNING"
    assert status.deployments["edgeroute"].replica_states.get("RUNNING") == 2

    client = openai.OpenAI(base_url=ray_serve_url + "/v1", api_key="s3cret", max_retries=0)
    upstream.reset()
    strong = client.chat.completions.create(model=f"router-{ROUTER}-0", messages=[{"role": "user", "content": "hi"}])
    weak = client.chat.completions.create(model=f"router-{ROUTER}-1", messages=[{"role": "user", "content": "hi"}])
    assert upstream.models_asked == ["strong-llm", "weak-llm"]
    assert strong.choices[0].message.content == "answer from strong-llm"
    routing = strong.model_extra["edgeroute"]
    assert routing["tier"] == "strong" and routing["threshold"] == 0 and routing["router"] == ROUTER
    assert weak.model_extra["edgeroute"]["tier"] == "weak" and weak.model_extra["edgeroute"]["model"] == "weak-llm"

    stream = client.chat.completions.create(model=f"router-{ROUTER}-0", stream=True, messages=[{"role": "user", "content": "tell me"}])
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream) == "answer from strong-llm"

    with pytest.raises(openai.AuthenticationError):  # the same auth: 401 without the token
        openai.OpenAI(base_url=ray_serve_url + "/v1", api_key="wrong", max_retries=0).models.list()

    headers = {"Authorization": "Bearer s3cret"}
    route = httpx.post(
        ray_serve_url + "/v1/route",
        json={"prompts": ["What is 2 + 2?", "Prove Fermat's last theorem."], "router": ROUTER, "threshold": 0.5},
        headers=headers,
    )
    assert route.status_code == 200
    decisions = route.json()["decisions"]
    assert [d["threshold"] for d in decisions] == [0.5, 0.5] and {d["tier"] for d in decisions} <= {"strong", "weak"}

    health = httpx.get(ray_serve_url + "/health")  # open without the token, as under uvicorn
    assert health.status_code == 200 and ROUTER in str(health.json())
    assert httpx.post(ray_serve_url + "/v1/route", json={"prompt": 3}, headers=headers).status_code == 400


@pytest.mark.ray
def test_both_replicas_share_one_budget_window_in_the_applications_actor(ray_serve_url):
    """--strong-share on Ray Serve: the window lives in the actor edgeroute-budget-<app>, so every replica applies
    the threshold of the whole application's traffic (before, each held its own, and /metrics alternated)."""
    import ray

    from servers import realistic_prompts

    headers = {"Authorization": "Bearer s3cret"}
    with httpx.Client(timeout=30, headers=headers) as client:
        for prompt in realistic_prompts(120, seed=5):
            body = {"model": f"router-{ROUTER}", "messages": [{"role": "user", "content": prompt}]}
            assert client.post(ray_serve_url + "/v1/chat/completions", json=body).status_code == 200
        deadline = time.time() + 30
        while True:  # every replica's background exchange has run since the last request
            scrapes = [client.get(ray_serve_url + "/metrics").text for _ in range(8)]
            lines = [
                sorted(line for line in text.splitlines() if line.startswith(("edgeroute_budget_threshold{", "edgeroute_budget_store_up{")))
                for text in scrapes
            ]
            if len({tuple(scrape) for scrape in lines}) == 1 or time.time() > deadline:
                break
            time.sleep(0.2)
    assert all(f'edgeroute_budget_store_up{{router="{ROUTER}"}} 1' in scrape for scrape in lines), lines
    assert len({tuple(scrape) for scrape in lines}) == 1, lines  # one threshold, whichever replica answered
    assert ray.get_actor("edgeroute-budget-edgeroute", namespace="edgeroute") is not None


def test_a_budget_on_ray_serve_gets_the_applications_actor_store(upstream):
    from edgeroute.runtime.serving.ray_serve import Placement, with_budget_store

    assert with_budget_store(server_config(upstream), Placement()).budget_store is None  # no budget, no store
    shared = with_budget_store(server_config(upstream, strong_share=0.3), Placement("team"))
    assert shared.budget_store == "ray-actor://edgeroute-budget-team"
    named = server_config(upstream, strong_share=0.3, budget_store="redis://r:6379/0")
    assert with_budget_store(named, Placement()).budget_store == "redis://r:6379/0"


@pytest.mark.ray
def test_a_second_deployment_never_takes_over_the_first(ray_serve_url, upstream, monkeypatch):
    """Same name or route prefix: refused (the first keeps its token); its own name and prefix: served beside
    the first, with the upstream key read here and set in its replicas; stopping it deletes only it."""
    import ray
    from ray import serve

    from edgeroute.runtime.serving import ray_serve
    from edgeroute.runtime.serving.ray_serve import Placement, ReplicaOptions, run, serving_url
    from edgeroute.runtime.serving.upstream import UpstreamConfig

    config = server_config(upstream, routers=[ROUTER])  # no auth token
    light = ReplicaOptions(replicas=1, num_cpus=0.5)
    message = "a Ray Serve application named 'edgeroute' already runs on this cluster; give another --app-name"
    with pytest.raises(ConfigurationError, match=f"^{message}"):
        run(config, light, port=free_port(), blocking=False)
    with pytest.raises(ConfigurationError, match="^route prefix / is served by the Ray Serve application 'edgeroute'; give another"):
        run(config, light, port=free_port(), blocking=False, placement=Placement("second"))
    assert httpx.post(ray_serve_url + "/v1/route", json={"prompt": "hi"}).status_code == 401  # still the first

    # A key variable set only in this process (the cluster's workers started without it).
    monkeypatch.setenv("EDGEROUTE_TEST_UPSTREAM_KEY", "sk-upstream-test")
    config.strong = UpstreamConfig(config.strong.model, config.strong.base_url, api_key_env="EDGEROUTE_TEST_UPSTREAM_KEY")
    placement = Placement("second", "/second")
    run(config, light, port=free_port(), blocking=False, placement=placement)
    try:
        second = serving_url(serve, placement, "0.0.0.0", 1)
        assert second == ray_serve_url + "/second"  # the proxy that already ran, not the port asked for
        upstream.reset()
        body = {"model": f"router-{ROUTER}-0", "messages": [{"role": "user", "content": "hi"}]}
        assert httpx.post(second + "/v1/chat/completions", json=body, timeout=30).status_code == 200
        assert upstream.authorizations == ["Bearer sk-upstream-test"]
    finally:
        ray_serve._leave(serve, ray, None, placement.app_name)
    assert set(serve.status().applications) == {"edgeroute"}
    assert httpx.get(ray_serve_url + "/health").status_code == 200


def test_placement_is_checked():
    from edgeroute.runtime.serving.ray_serve import Placement

    for bad, message in (
        (dict(app_name=""), "--app-name must be 1 to 100 printable characters (got '')"),
        (dict(route_prefix="api"), "--route-prefix must start with / and not end with one (got 'api')"),
        (dict(route_prefix="/api/"), "--route-prefix must start with / and not end with one (got '/api/')"),
    ):
        with pytest.raises(ConfigurationError) as caught:
            Placement(**bad)
        assert str(caught.value) == message
    Placement(replace=True).check_free({"edgeroute": {"route_prefix": "/"}})  # asked to replace: allowed


@pytest.mark.parametrize("error", ["InvalidAuthToken", "AuthenticationError"])
def test_joining_a_token_auth_cluster_says_what_to_set(error):
    """Ray's error types for a head with token auth (the issue's InvalidAuthToken; Ray 2.60's AuthenticationError)."""
    from edgeroute.runtime.serving.ray_cluster import connect

    refused = type(error, (Exception,), {})

    class TokenHead:
        @staticmethod
        def is_initialized() -> bool:
            return False

        @staticmethod
        def init(**kwargs):
            raise refused("no token was given for this cluster")

    with pytest.raises(ConfigurationError) as caught:
        connect(TokenHead, "10.0.0.1:6379")
    assert str(caught.value) == (
        "the Ray cluster at 10.0.0.1:6379 uses token authentication: set RAY_AUTH_MODE=token and give its token "
        "(RAY_AUTH_TOKEN, or the token file the head was started with) in this environment, then retry"
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--replicas", "2"], "--replicas needs --engine ray"),
        (
            ["--min-replicas", "1", "--max-replicas", "3", "--ray-address", "auto"],
            "--min-replicas, --max-replicas, --ray-address need --engine ray",
        ),
        (["--engine", "ray", "--replicas", "2", "--max-replicas", "3"], "either --replicas or --min-replicas"),
        (["--engine", "ray", "--min-replicas", "2"], "needs both --min-replicas and --max-replicas"),
        (["--engine", "ray", "--replicas", "0"], "--replicas must be a whole number >= 1"),
        (["--engine", "ray", "--replica-cpus", "0"], "CPUs per replica must be a positive number"),
        (["--app-name", "b", "--replace"], "--app-name, --replace need --engine ray"),
    ],
)
def test_cli_refuses_bad_engine_options(argv, message, capsys, monkeypatch):
    import edgeroute.runtime.serving.ray_serve as ray_serve
    from edgeroute.runtime.cli import main

    monkeypatch.setattr(ray_serve, "run", lambda *a, **k: pytest.fail("started despite bad options"))
    assert main(["serve", "--router", ROUTER, *argv]) == 2
    assert message in capsys.readouterr().err


def test_cli_hands_replica_options_to_ray_serve(monkeypatch):
    import edgeroute.runtime.serving.ray_serve as ray_serve
    from edgeroute.runtime.cli import main

    calls = []
    monkeypatch.setattr(ray_serve, "run", lambda config, options, **kwargs: calls.append((config, options, kwargs)))
    assert (
        main(
            [
                "serve",
                "--router",
                ROUTER,
                "--engine",
                "ray",
                "--min-replicas",
                "1",
                "--max-replicas",
                "4",
                "--ray-address",
                "auto",
                "--port",
                "7070",
                "--strong-share",
                "0.3",
            ]
        )
        == 0
    )
    config, options, kwargs = calls[0]
    assert (options.replicas, options.min_replicas, options.max_replicas, options.num_cpus) == (None, 1, 4, 1.0)
    assert options.deployment_options(config)["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4}
    placement = kwargs.pop("placement")
    assert kwargs == {"host": "127.0.0.1", "port": 7070, "address": "auto"} and config.strong_share == 0.3
    assert (placement.app_name, placement.route_prefix, placement.replace) == ("edgeroute", "/", False)
    assert main(["serve", "--router", ROUTER, "--engine", "ray"]) == 0
    assert calls[1][1].replicas == 1 and calls[1][1].deployment_options(calls[1][0])["num_replicas"] == 1


def test_cli_refuses_a_missing_bundle_before_starting_ray(capsys, monkeypatch):
    pytest.importorskip("ray.serve", reason="Ray Serve is the ray extra: pip install '.[ray]'")
    import ray
    from ray import serve

    from edgeroute.runtime.cli import main

    for module, name in ((ray, "init"), (serve, "start"), (serve, "run")):
        monkeypatch.setattr(module, name, lambda *a, **k: pytest.fail("Ray started despite a missing bundle"))
    assert main(["serve", "--router", "no-such-router", "--engine", "ray", "--replicas", "2"]) == 2
    assert "no shipped router of this name" in capsys.readouterr().err
