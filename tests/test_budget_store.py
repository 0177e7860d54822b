"""One strong-call budget across replicas (`serve --budget-store redis://...`), against a real redis-server started
here on a free port (.ci/run installs it; skipped with a message where the binary is missing)."""

from __future__ import annotations

import shutil
import subprocess
import time

import httpx
import numpy as np
import pytest

from edgeroute.runtime.errors import ConfigurationError
from edgeroute.runtime.serving.budget import StrongShareBudget
from edgeroute.runtime.serving.policy import RouterSet
from edgeroute.runtime.serving.server import create_app
from servers import free_port, realistic_prompts, server_config, serving


@pytest.fixture
def redis_url(tmp_path):
    pytest.importorskip("redis", reason="the budget store is the redis extra: pip install '.[redis]'")
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run installs it)")
    port = free_port()
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=port)
    deadline = time.time() + 20
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.time() > deadline:
                pytest.fail("redis-server did not start")
            time.sleep(0.1)
    try:
        yield f"redis://127.0.0.1:{port}/0", server
    finally:
        server.terminate()
        server.wait(timeout=10)


def _replay(budgets_and_rates, syncs, every: int = 25) -> list[np.ndarray]:
    """Admit the streams in turns (one win rate per replica per turn), exchanging with the store every ``every`` turns."""
    decisions = [[] for _ in budgets_and_rates]
    for turn in range(len(budgets_and_rates[0][1])):
        for index, (budget, rates) in enumerate(budgets_and_rates):
            rate = float(rates[turn])
            decisions[index].append(rate >= budget.admit(rate))
        if turn % every == 0:
            for sync in syncs:
                sync.sync_once()
    return [np.array(d) for d in decisions]


def test_two_replicas_hold_the_global_share_with_one_threshold(redis_url):
    """Replica A sees hard traffic, replica B easy traffic. Alone, each holds 30% of its own slice; sharing the
    window, both apply one threshold: A sends more strong, B fewer, and the global share is held at 30%."""
    from edgeroute.runtime.serving.budget_store import RedisWindowStore, SharedWindowSync

    rng = np.random.default_rng(5)
    hard, easy = rng.beta(4, 5, 3000), rng.beta(2, 8, 3000)
    alone = _replay([(StrongShareBudget(0.3, 0.3, window=1000), hard), (StrongShareBudget(0.3, 0.3, window=1000), easy)], [])
    store = RedisWindowStore(redis_url[0])
    a, b = StrongShareBudget(0.3, 0.3, window=1000), StrongShareBudget(0.3, 0.3, window=1000)
    syncs = [SharedWindowSync(a, store, "test:window"), SharedWindowSync(b, store, "test:window")]
    shared = _replay([(a, hard), (b, easy)], syncs)
    assert all(abs(d[1000:].mean() - 0.3) < 0.04 for d in alone)  # each holds its own slice
    global_share = np.concatenate([shared[0][1000:], shared[1][1000:]]).mean()
    assert abs(global_share - 0.3) < 0.03, global_share
    assert shared[0][1000:].mean() > 0.4 and shared[1][1000:].mean() < 0.2  # one threshold over both mixes
    for sync in (*syncs, syncs[0]):  # both have pushed and read everything
        sync.sync_once()
    assert a.threshold() == b.threshold() and a.state().window == b.state().window == 1000
    late = StrongShareBudget(0.3, 0.9, window=1000)  # a replica that starts (or restarts) later
    SharedWindowSync(late, store, "test:window").sync_once()
    assert late.threshold() == a.threshold()  # begins from the shared window, not its start threshold


def test_a_replica_that_loses_the_store_keeps_its_last_threshold_and_says_so(redis_url, caplog):
    from edgeroute.runtime.serving.budget_store import RedisWindowStore, SharedWindowSync

    budget = StrongShareBudget(0.3, 0.3, window=200)
    sync = SharedWindowSync(budget, RedisWindowStore(redis_url[0]), "test:down")
    rates = np.random.default_rng(6).uniform(0, 1, 300)
    for rate in rates:
        budget.admit(float(rate))
    sync.sync_once()
    assert sync.up is True
    kept = budget.threshold()
    redis_url[1].terminate()
    redis_url[1].wait(timeout=10)
    budget.admit(0.99)
    sync.sync_once()
    assert sync.up is False and budget.threshold() == kept
    assert budget.take_pending()[0] == []  # dropped: a timed-out exchange may have been applied (never counted twice)
    assert "budget store unreachable (ConnectionError): keeping the last shared threshold" in caplog.text


def test_two_servers_share_one_budget_and_report_the_store(upstream, redis_url):
    router = "static-distilled-gpt4-mixtral"
    config = server_config(upstream, strong_share=0.3, budget_window=200, budget_store=redis_url[0])
    with serving(create_app(config, RouterSet([router]))) as first, serving(create_app(config, RouterSet([router]))) as second:
        with httpx.Client(timeout=30) as client:
            for n, prompt in enumerate(realistic_prompts(240, seed=4)):
                body = {"model": "router-default", "messages": [{"role": "user", "content": prompt}]}
                assert client.post((first, second)[n % 2] + "/v1/chat/completions", json=body).status_code == 200
            deadline = time.time() + 30
            while True:  # both replicas' background exchanges have run since the last request
                metrics = [client.get(url + "/metrics").text for url in (first, second)]
                thresholds = [next(line for line in t.splitlines() if line.startswith("edgeroute_budget_threshold{")) for t in metrics]
                if thresholds[0] == thresholds[1] or time.time() > deadline:
                    break
                time.sleep(0.1)
    for text in metrics:
        assert f'edgeroute_budget_store_up{{router="{router}"}} 1\n' in text
    assert thresholds[0] == thresholds[1]  # one window, one threshold


def test_a_store_that_cannot_work_is_refused_at_start(upstream):
    free = free_port()
    with pytest.raises(ConfigurationError, match="^--budget-store: Redis at 127.0.0.1 does not answer"):
        pytest.importorskip("redis")
        create_app(
            server_config(upstream, strong_share=0.3, budget_store=f"redis://127.0.0.1:{free}/0"),
            RouterSet(["static-distilled-gpt4-mixtral"]),
        )
    refused = r"^--budget-store http://\.\.\.: give a redis:// \(or rediss://, unix://, ray-actor://NAME\) URL$"
    with pytest.raises(ConfigurationError, match=refused):
        create_app(server_config(upstream, strong_share=0.3, budget_store="http://x"), RouterSet(["static-distilled-gpt4-mixtral"]))


def test_shared_drift_resets_keep_working_with_a_small_window():
    """After a shared-window reset the next drift test waits for a probe of new decisions, never for more entries
    than the window can hold (with window 120 it waited for 150: one reset, then none)."""
    from edgeroute.runtime.serving.budget_store import MemoryWindowStore, SharedWindowSync

    rng = np.random.default_rng(8)
    stream = np.concatenate([rng.beta(2, 6, 800), rng.beta(2, 14, 800), rng.beta(6, 4, 800), rng.beta(2, 14, 800)])
    budget = StrongShareBudget(0.3, 0.3, window=120)
    sync = SharedWindowSync(budget, MemoryWindowStore(), "small")
    for n, rate in enumerate(stream):
        budget.admit(float(rate))
        if n % 10 == 0:
            sync.sync_once()
    assert budget.resets >= 3  # one per shift at least
