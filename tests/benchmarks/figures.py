"""What every benchmark reports, and how percentiles are taken."""

from __future__ import annotations

import json
import statistics
import sys
from dataclasses import asdict, dataclass, field


@dataclass
class Figures:
    """One row of the comparison: a system doing 4 trivial steps."""

    name: str
    #: Completed chains (sagas, workflows) per second with many in flight.
    throughput: float | None = None
    #: One at a time, start to end.
    p50_ms: float | None = None
    p99_ms: float | None = None
    #: More figures of this row (failure-to-compensated latency, events/s, RSS...).
    extra: dict[str, float] = field(default_factory=dict)
    #: Why a figure is missing, or what to know about it.
    note: str = ""

    def print_json(self) -> None:
        """The last line a peer process prints: its figures, for the comparison."""
        print(json.dumps(asdict(self)), flush=True)
        sys.stdout.flush()


def latencies(name: str, seconds: list[float], throughput: float | None = None) -> Figures:
    ms = sorted(s * 1000 for s in seconds)
    return Figures(name, throughput, percentile(ms, 50), percentile(ms, 99))


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    if len(sorted_values) == 1:
        return sorted_values[0]
    return statistics.quantiles(sorted_values, n=100, method="inclusive")[int(p) - 1]
