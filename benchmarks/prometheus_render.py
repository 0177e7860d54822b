"""/metrics exposition cost: edgeroute's hand-written renderer against prometheus-client, same series.

    pip install prometheus-client && python benchmarks/prometheus_render.py

Fills both with the series a busy server holds (4 routers x 2 models of decisions, 5 endpoints x
6 statuses of requests, 8 error and 8 fallback kinds, scoring and upstream histograms of 17
buckets), then times rendering the whole page and one counter increment (best of 5 repeats).
prometheus-client runs without its ``_created`` series, so both pages hold the same lines.
"""

from __future__ import annotations

import timeit
from typing import Any, Callable

from edgeroute.runtime.serving.prometheus import _BUCKETS, Metrics

LABELS = {
    "edgeroute_decisions_total": ("router", "model"),
    "edgeroute_requests_total": ("endpoint", "status"),
    "edgeroute_errors_total": ("kind",),
    "edgeroute_fallbacks_total": ("reason",),
    "edgeroute_scoring_seconds": ("router",),
    "edgeroute_upstream_seconds": ("model",),
}


def fill(inc: Callable[..., None], observe: Callable[..., None]) -> None:
    """The series of a server that has seen a bit of everything."""
    for r in range(4):
        for m in range(2):
            inc("edgeroute_decisions_total", router=f"r{r}", model=f"m{m}")
        for i in range(50):
            observe("edgeroute_scoring_seconds", 0.0001 * i, router=f"r{r}")
    for e in range(5):
        for s in range(6):
            inc("edgeroute_requests_total", endpoint=f"/e{e}", status=str(200 + s))
    for k in range(8):
        inc("edgeroute_errors_total", kind=f"k{k}")
        inc("edgeroute_fallbacks_total", reason=f"k{k}")
    for m in range(2):
        observe("edgeroute_upstream_seconds", 0.5, model=f"m{m}")


def best_us(function: Callable[[], Any], number: int) -> float:
    return min(timeit.repeat(function, number=number, repeat=5)) / number * 1e6


def main() -> None:
    import prometheus_client as pc

    pc.disable_created_metrics()
    registry = pc.CollectorRegistry(auto_describe=False)
    client: dict[str, Any] = {
        name: (
            pc.Counter(name, "help", labels, registry=registry)
            if name.endswith("_total")
            else pc.Histogram(name, "help", labels, buckets=_BUCKETS, registry=registry)
        )
        for name, labels in LABELS.items()
    }
    fill(lambda name, **l: client[name].labels(**l).inc(), lambda name, v, **l: client[name].labels(**l).observe(v))
    ours = Metrics()
    fill(ours.inc, ours.observe)
    lines = (len(ours.render().splitlines()), len(pc.generate_latest(registry).splitlines()))
    print(f"lines: hand-written {lines[0]}, prometheus-client {lines[1]}")
    print(
        f"render: hand-written {best_us(ours.render, 2000):.0f} us, "
        f"prometheus-client {best_us(lambda: pc.generate_latest(registry), 2000):.0f} us"
    )
    counter = client["edgeroute_requests_total"]
    print(
        f"counter increment: hand-written "
        f"{best_us(lambda: ours.inc('edgeroute_requests_total', endpoint='/e1', status='200'), 20000):.2f} us, "
        f"prometheus-client {best_us(lambda: counter.labels(endpoint='/e1', status='200').inc(), 20000):.2f} us"
    )


if __name__ == "__main__":
    main()
