"""One decision: the Decision type, the decide() rule, the threshold resolver, the fallback rule
and the server's error table, each in one place."""

from __future__ import annotations

import ast
import asyncio
import dataclasses
from pathlib import Path

import pytest

from edgeroute.runtime import Decision
from edgeroute.runtime.scoring.decision import check_threshold, decide, decision_for, resolve_threshold
from edgeroute.runtime.errors import BundleCorruptError, InvalidInputError, InvalidThresholdError
from edgeroute.runtime.serving.http_errors import HTTPFailure, error_reply
from edgeroute.runtime.serving.upstream import FALLBACK_KINDS, Fallback, UpstreamError

RUNTIME = Path(__file__).resolve().parents[1] / "runtime"
NAMES = {"strong": "big-llm", "weak": "small-llm"}
KEYS = ["router", "tier", "model", "win_rate", "threshold", "score_us", "fallback", "budget"]


def test_decide_is_routellm_rule_at_the_boundary():
    assert decide(0.3, 0.3) == "strong" and decide(0.2999, 0.3) == "weak"
    assert decide(0.0, 0.0) == "strong" and decide(1.0, 1.0) == "strong"


def test_decision_shape_is_one_json_shape():
    decision = decision_for("r", 0.61234567, 0.5, 12.345, NAMES)
    assert decision == Decision("r", "strong", "big-llm", 0.61234567, 0.5, 12.345)
    assert list(decision.to_dict()) == KEYS and decision.to_dict()["win_rate"] == 0.61234567
    assert decision.to_dict(rounded=True) == {
        "router": "r",
        "tier": "strong",
        "model": "big-llm",
        "win_rate": 0.612346,
        "threshold": 0.5,
        "score_us": 12.3,
        "fallback": None,
        "budget": None,
    }
    assert decision.headers() == {
        "x-edgeroute-router": "r",
        "x-edgeroute-tier": "strong",
        "x-edgeroute-model": "big-llm",
        "x-edgeroute-win-rate": "0.612346",
        "x-edgeroute-threshold": "0.5",
        "x-edgeroute-score-us": "12.3",
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.tier = "weak"  # type: ignore[misc]


def test_fallen_back_decision_names_the_failed_model():
    fallen = decision_for("r", 0.9, 0.5, 1.0, NAMES).fallen_back(NAMES, "upstream_timeout")
    assert (fallen.tier, fallen.model, fallen.fallback) == ("weak", "small-llm", "upstream_timeout on big-llm")
    assert (fallen.win_rate, fallen.threshold) == (0.9, 0.5)  # what the router said is kept


class _Calibrated:
    def threshold_for(self, strong_pct: float) -> float:
        return 1.0 - strong_pct

    def default_threshold(self) -> float:
        return 0.42


def test_threshold_resolver_order():
    router = _Calibrated()
    assert resolve_threshold(router, 0.2) == 0.2
    assert resolve_threshold(router, None, 0.3) == pytest.approx(0.7)
    assert resolve_threshold(router) == 0.42
    with pytest.raises(InvalidInputError, match="either threshold or strong_pct"):
        resolve_threshold(router, 0.2, 0.3)
    with pytest.raises(InvalidThresholdError):
        resolve_threshold(router, float("nan"))
    with pytest.raises(InvalidThresholdError):
        check_threshold(True)


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(0, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.level, node.module or ""))
    return found


def test_decision_module_imports_nothing_heavy():
    import subprocess
    import sys

    script = "import sys, edgeroute.runtime.scoring.decision; print(' '.join(sorted(sys.modules)))"
    loaded = set(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split())
    assert not {m.split(".")[0] for m in loaded} & {"onnxruntime", "tokenizers", "numpy", "torch", "transformers"}


def test_only_decide_compares_against_a_threshold():
    places = []
    for path in sorted(RUNTIME.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and any(isinstance(op, (ast.GtE, ast.Gt, ast.Lt, ast.LtE)) for op in node.ops):
                text = ast.unparse(node)
                if "threshold" in text and "win_rate" in text:
                    places.append(f"{path.name}: {text}")
    # curves.py keeps RouteLLM's evaluation sweep, strict at the top quantile edge only.
    assert sorted(places) == ["curves.py: win_rates > threshold", "decision.py: win_rate >= threshold"]


class _Failure(Exception):
    def __init__(self, kind: str | None) -> None:
        super().__init__(kind)
        self.kind = kind


def _rule(enabled: bool = True, counted: list | None = None) -> Fallback:
    counted = [] if counted is None else counted
    return Fallback(
        enabled,
        NAMES,
        lambda error: getattr(error, "kind", None),
        on_failure=lambda kind: counted.append(("error", kind)),
        on_fallback=lambda kind: counted.append(("fallback", kind)),
    )


@pytest.mark.parametrize("kind", sorted(FALLBACK_KINDS))
def test_fallback_rule_sync_and_async(kind):
    decision = decision_for("r", 0.9, 0.5, 1.0, NAMES)
    asked, counted = [], []

    def call(d: Decision) -> str:
        asked.append(d.model)
        if d.tier == "strong":
            raise _Failure(kind)
        return f"answer from {d.model}"

    fallen, answer = _rule(counted=counted).call(decision, call)
    assert answer == "answer from small-llm" and fallen.fallback == f"{kind} on big-llm"
    assert asked == ["big-llm", "small-llm"] and counted == [("error", kind), ("fallback", kind)]

    async def acall(d: Decision) -> str:
        return call(d)

    fallen, answer = asyncio.run(_rule().acall(decision, acall))
    assert answer == "answer from small-llm" and fallen.tier == "weak"


@pytest.mark.parametrize("enabled, kind", [(False, "upstream_error"), (True, "upstream_rejected"), (True, None)])
def test_fallback_rule_reraises_what_it_does_not_retry(enabled, kind):
    decision = decision_for("r", 0.9, 0.5, 1.0, NAMES)
    asked, counted = [], []

    def call(d: Decision) -> str:
        asked.append(d.model)
        raise _Failure(kind)

    with pytest.raises(_Failure):
        _rule(enabled, counted).call(decision, call)
    assert asked == ["big-llm"] and counted == ([("error", kind)] if kind else [])


def test_fallback_rule_reraises_the_second_failure():
    counted = []

    def call(d: Decision) -> str:
        raise _Failure("upstream_timeout" if d.tier == "strong" else "upstream_error")

    with pytest.raises(_Failure, match="upstream_error"):
        _rule(counted=counted).call(decision_for("r", 0.9, 0.5, 1.0, NAMES), call)
    assert counted == [("error", "upstream_timeout"), ("fallback", "upstream_timeout"), ("error", "upstream_error")]


@pytest.mark.parametrize(
    "error, status, kind",
    [
        (InvalidThresholdError("threshold must be a number"), 400, "invalid_request_error"),
        (TypeError("odd type"), 400, "invalid_request_error"),
        (OverflowError("too big"), 400, "invalid_request_error"),
        (BundleCorruptError("/secret/path broke"), 503, "router_error"),
        (HTTPFailure(413, "too large", "body_too_large"), 413, "body_too_large"),
        (UpstreamError("upstream_timeout", 504, "upstream x timed out"), 504, "upstream_timeout"),
    ],
)
def test_error_table(error, status, kind):
    reply = error_reply(error)
    assert reply is not None and (reply.status, reply.kind) == (status, kind)
    assert "/secret/path" not in reply.message


def test_unexpected_errors_are_not_in_the_table():
    assert error_reply(KeyError("prompt text")) is None and error_reply(RuntimeError()) is None
