"""Canonical win rates of the shipped routers, pinned (fastembed's canonical-values habit).

A change in tokenization, pooling, precision choice or head folding moves these numbers;
this test says so before a user does. After re-exporting a shipped bundle, refresh the
fixture on purpose with:

    python tests/test_shipped_golden.py --write
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeroute.runtime import Router, shipped_routers
from edgeroute.runtime.scoring.manifest import MANIFEST_NAME, sha256_of

pytestmark = pytest.mark.runtime_only

FIXTURE = Path(__file__).with_name("shipped_golden_scores.json")
REFRESH = "python tests/test_shipped_golden.py --write"
# Same machine kind as at writing: any drift past this is a change in the scoring path.
TOLERANCE = 1e-4
PROMPTS = [
    "hi",
    "What is 2 + 2?",
    "Prove that there are infinitely many primes.",
    "Write a Python function that merges two sorted lists in linear time.",
    "Übersetze bitte: Der schnelle braune Fuchs springt über den faulen Hund. 日本語も少し。",
    "Summarize the causes of the First World War. " * 40,  # past max_length: truncated
]


def current_scores(name: str) -> dict[str, Any]:
    """What the fixture records for one shipped router, computed now (default load options)."""
    router = Router.load(name)
    return {
        "manifest_sha256": sha256_of(router.manifest.folder / MANIFEST_NAME),
        "precision": router.precision,
        "win_rates": [round(router.strong_win_rate(prompt), 8) for prompt in PROMPTS],
    }


def _fixture() -> dict[str, Any]:
    if not FIXTURE.is_file():
        pytest.fail(f"{FIXTURE} is missing; write it with `{REFRESH}`")
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def test_fixture_covers_every_shipped_router():
    fixture = _fixture()
    assert fixture["prompts"] == PROMPTS, f"prompts changed; refresh with `{REFRESH}`"
    assert sorted(fixture["routers"]) == shipped_routers(), f"shipped routers changed; refresh with `{REFRESH}`"


@pytest.mark.parametrize("name", shipped_routers())
def test_shipped_router_scores_its_golden_prompts(name):
    expected = _fixture()["routers"].get(name)
    assert expected is not None, f"no golden scores for {name!r}; refresh with `{REFRESH}`"
    now = current_scores(name)
    assert now["manifest_sha256"] == expected["manifest_sha256"], (
        f"models/{name}/{MANIFEST_NAME} changed since the golden scores were written; "
        f"if it was re-exported on purpose, refresh them with `{REFRESH}`"
    )
    assert now["precision"] == expected["precision"]
    np.testing.assert_allclose(
        now["win_rates"], expected["win_rates"], rtol=0, atol=TOLERANCE, err_msg=f"{name}: win rates moved; the scoring path changed"
    )
    batch = Router.load(name).strong_win_rates(PROMPTS)  # batch scoring gives the same numbers
    np.testing.assert_allclose(batch, expected["win_rates"], rtol=0, atol=TOLERANCE)


def write_fixture() -> Path:
    """Recompute every shipped router's golden scores and write the fixture."""
    data = {"refresh": REFRESH, "prompts": PROMPTS, "routers": {name: current_scores(name) for name in shipped_routers()}}
    FIXTURE.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return FIXTURE


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(f"usage: {REFRESH}")
    print(f"wrote {write_fixture()}")
