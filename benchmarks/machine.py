"""Facts about the machine a benchmark ran on: CPU model and ISA flags, and CPU time stolen by the hypervisor.

Every benchmark's report records them beside its figures (these machines differ between sessions);
kept apart from any one benchmark so that the benchmarks import it and never each other both ways.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def machine_flags() -> dict[str, Any]:
    """CPU model, the ISA flags that matter to int8 and fp32 kernels, and the core count (no heavy imports)."""
    flags: list[str] = []
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = sorted(
                    set(line.split(":", 1)[1].split()) & {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "fma"}
                )
                break
    except OSError:
        pass
    return {"cpu": model, "cpu_flags": flags, "vnni": any("vnni" in f for f in flags), "cores": os.cpu_count()}


def cpu_clock() -> tuple[int, int] | None:
    """(steal, total) CPU time of all cores in clock ticks, from /proc/stat; None where there is none."""
    try:
        ticks = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    except (OSError, ValueError, IndexError):
        return None
    return (ticks[7], sum(ticks)) if len(ticks) == 8 else None


def steal_share(start: tuple[int, int] | None, end: tuple[int, int] | None) -> float | None:
    """The share of CPU time the hypervisor gave to other guests between two ``cpu_clock`` readings
    (stolen time stalls whatever runs here: it shows in tail latencies first)."""
    if start is None or end is None or end[1] <= start[1]:
        return None
    return (end[0] - start[0]) / (end[1] - start[1])


def steal_note(share: float | None) -> str:
    """The report's sentence on stolen CPU time, or nothing where it was not measured."""
    return "" if share is None else f" The hypervisor took {share:.1%} of CPU time (steal) during the run."
