"""Run ``python -m MODULE ARGS`` with tracemalloc, writing where memory grew each minute.

Tracing makes every allocation slower: drive a traced system well below its
normal rate, or the growth shown is a backlog of unread work, not a leak.

``python -m tests.benchmarks.traced REPORT MODULE [ARGS...]``: the first snapshot
is taken after ``SAGA_TRACE_SETTLE_S`` seconds (default 60, the soak's warm-up); then every
minute REPORT is rewritten with the lines whose live allocations grew most
since that snapshot, and the object types whose live count grew, with what holds
them. ``SAGA_TRACE_ALLOCATIONS=0``: the census only, without tracemalloc's slowdown.
Used by ``make soak`` with ``--trace-memory``.
"""

from __future__ import annotations

import gc
import linecache
import os
import runpy
import sys
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path

FRAMES = 8
TOP = 20


def _snapshot() -> tracemalloc.Snapshot:
    return tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )


def _ours(stat: tracemalloc.StatisticDiff) -> bool:
    """Allocated by this watcher (its reports, line cache), not by the process watched."""
    return any(frame.filename in (__file__, linecache.__file__) for frame in stat.traceback)


def _census() -> Counter[str]:
    """Live objects the collector tracks, by type."""
    return Counter(type(o).__qualname__ for o in gc.get_objects())


def _holders(type_name: str) -> list[str]:
    """What refers to a few live objects of ``type_name`` (types of the referrers)."""
    sample = [o for o in gc.get_objects() if type(o).__qualname__ == type_name][-5:]
    held: Counter[str] = Counter()
    for obj in sample:
        for referrer in gc.get_referrers(obj):
            if referrer is not sample:
                held[type(referrer).__qualname__] += 1
    return [f"{name} x{count}" for name, count in held.most_common(5)]


def _watch(report: Path, settle_s: float, every_s: float) -> None:
    time.sleep(settle_s)
    tracing = tracemalloc.is_tracing()
    first = _snapshot() if tracing else None
    first_census = _census()
    started = time.monotonic()
    while True:
        time.sleep(every_s)
        census = _census()
        census.subtract(first_census)
        grown = [(name, n) for name, n in census.most_common(8) if n > 0]
        current, _ = tracemalloc.get_traced_memory()
        lines = [
            f"after {(time.monotonic() - started) / 60:.1f} min: traced {current / 2**20:.1f} MB",
            "live objects grown since the first snapshot, by type:",
            *(f"  {n:+8d} {name}  held by: {', '.join(_holders(name))}" for name, n in grown),
        ]
        if first is None:
            report.write_text("\n".join(lines) + "\n")
            continue
        now = _snapshot()
        stats = [stat for stat in now.compare_to(first, "traceback") if not _ours(stat)]
        lines.append(f"growth since the first snapshot, top {TOP} by size:")
        for stat in stats[:TOP]:
            lines.append(f"{stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks")
            lines.extend(f"      {frame}" for frame in stat.traceback.format()[-2 * FRAMES :])
        report.write_text("\n".join(lines) + "\n")


def main() -> None:
    report, module, *args = sys.argv[1:]
    settle_s = float(os.environ.get("SAGA_TRACE_SETTLE_S", "60"))
    if os.environ.get("SAGA_TRACE_ALLOCATIONS", "1") != "0":
        tracemalloc.start(FRAMES)  # 0: the census of live objects only, at full speed
    threading.Thread(target=_watch, args=(Path(report), settle_s, 60.0), daemon=True).start()
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
