"""The Ray cluster a command runs on (runtime/serving/ray_cluster.py): without an address, a private local
cluster, even when another one runs on the machine, whose session folder is removed afterwards. Marked ``ray``;
skipped with a message without the ray extra."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROUTER = "static-distilled-gpt4-mixtral"


@pytest.fixture
def running_head():
    """A Ray head started with ``ray start`` (as a team's shared cluster would be), stopped after the test."""
    pytest.importorskip("ray", reason="the Ray engine needs the ray extra: pip install '.[ray]'")
    pytest.importorskip("ray.data", reason="the Ray engine needs Ray Data: pip install '.[ray]'")
    ray_cli = shutil.which("ray")
    if ray_cli is None:
        pytest.skip("the ray command is not on PATH")
    from servers import free_port

    # Ray's default folder: where a plain ray.init() looks for a cluster to join (/tmp/ray/ray_current_cluster).
    marker = Path("/tmp/ray/ray_current_cluster")
    started = time.time()
    command = [ray_cli, "start", "--head", "--block", "--num-cpus=1", "--include-dashboard=false", f"--port={free_port()}"]
    head = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
    )
    try:
        deadline = time.time() + 90
        while not (marker.exists() and marker.stat().st_mtime >= started - 1):
            if head.poll() is not None or time.time() > deadline:
                pytest.fail("ray start --head did not come up")
            time.sleep(0.5)
        time.sleep(3)
        yield head
    finally:
        address = marker.read_text() if marker.exists() else None
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)
        if marker.exists() and marker.read_text() == address:
            marker.unlink()  # a killed head leaves its address behind: a plain ray.init() would try to join it


@pytest.mark.ray
def test_score_runs_on_a_private_cluster_beside_a_running_one_and_leaves_no_folder(running_head, tmp_path, monkeypatch):
    from edgeroute.runtime.serving.ray_batch import score_file_ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    source = tmp_path / "log.jsonl"
    source.write_text("".join(json.dumps({"prompt": f"What is {i} plus {i}?"}) + "\n" for i in range(20)), encoding="utf-8")

    def folders() -> set[Path]:
        return set(Path("/tmp").glob("edgeroute-ray-*")) | set(Path("/tmp/ray").glob("session_2*"))

    before = folders()
    summary = score_file_ray(ROUTER, source, tmp_path / "out.jsonl", actors=1, num_cpus=2, progress=False)
    assert summary.n_prompts == 20 and len((tmp_path / "out.jsonl").read_text().splitlines()) == 20
    assert folders() == before  # the private cluster's folder is gone, and it never wrote into Ray's default one
    assert running_head.poll() is None  # and the cluster that was running is untouched
