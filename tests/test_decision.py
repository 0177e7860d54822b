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
    with pytest.raises(InvalidInputError, match="either threshold or strong_share"):
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


def test_one_threshold_for_share_rule_is_numpys_quantile_to_the_last_bit():
    np = pytest.importorskip("numpy")
    from edgeroute.runtime.scoring.decision import threshold_for_share, threshold_from_table

    rng = np.random.default_rng(7)
    for trial in range(300):
        rates = rng.random(int(rng.integers(1, 300)))
        if trial % 2:
            rates = np.round(rates, 2)  # ties
        ordered = np.sort(rates)
        for share in (0.0, 0.1, 0.37, 0.5, 0.9, 1.0):
            assert threshold_for_share(ordered, share) == float(np.quantile(rates, 1.0 - share))
    shares, thresholds = [0.1, 0.3, 0.5, 0.9], [0.8, 0.55, 0.4, 0.05]
    for share in np.linspace(0.1, 0.9, 33):
        assert threshold_from_table(shares, thresholds, float(share)) == float(np.interp(share, shares, thresholds))
    with pytest.raises(InvalidInputError, match=r"^strong share must be in \[0, 1\], got 1.5$"):
        threshold_for_share([0.1, 0.2], 1.5)


def test_the_budget_calibration_and_parity_take_thresholds_by_the_one_rule():
    # No other quantile, rank or interpolation of win rates is left where a share becomes a threshold.
    sources = {name: (RUNTIME / name).read_text() for name in ("serving/budget.py", "evaluation/report.py", "scoring/router.py")}
    for name, source in sources.items():
        assert "np.quantile" not in source and "np.interp" not in source and "math.ceil" not in source, name
        assert "threshold_for_share" in source or "threshold_from_table" in source, name
    parity = (RUNTIME.parent / "export" / "parity.py").read_text()  # its other quantile is a p99 of differences
    assert "np.quantile(reference" not in parity and "threshold_for_share(ordered, t)" in parity


def test_the_budget_threshold_is_the_rule_on_its_window():
    np = pytest.importorskip("numpy")
    from edgeroute.runtime.scoring.decision import threshold_for_share
    from edgeroute.runtime.serving.budget import StrongShareBudget

    budget = StrongShareBudget(target=0.3, window=200, start_threshold=0.5)
    rates = np.random.default_rng(3).random(150)
    for rate in rates:
        budget.admit(float(rate))
    assert budget.threshold() == threshold_for_share(np.sort(rates), 0.3)


def test_strong_pct_is_strong_shares_old_name_still_accepted():
    from edgeroute.runtime.scoring.decision import old_share_name

    assert old_share_name(0.3, None) == 0.3
    with pytest.warns(DeprecationWarning, match="strong_pct is now called strong_share"):
        assert old_share_name(None, 0.2) == 0.2
    with pytest.raises(InvalidInputError, match="^give strong_share or its old name strong_pct, not both$"):
        old_share_name(0.3, 0.2)


def test_a_calibration_table_read_off_its_range_is_numpys_end_value():
    np = pytest.importorskip("numpy")
    from edgeroute.runtime.scoring.decision import threshold_from_table

    shares, thresholds = [0.1, 0.5, 0.9], [0.8, 0.4, 0.1]
    for share in (0.0, 0.05, 0.1, 0.9, 0.95, 1.0):
        assert threshold_from_table(shares, thresholds, share) == float(np.interp(share, shares, thresholds))
    assert np.isnan(threshold_from_table(shares, thresholds, float("nan")))
