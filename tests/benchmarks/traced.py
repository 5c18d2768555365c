"""Run ``python -m MODULE ARGS`` with tracemalloc, writing where memory grew each minute.

Tracing makes every allocation slower: drive a traced system well below its
normal rate, or the growth shown is a backlog of unread work, not a leak.

``python -m tests.benchmarks.traced REPORT MODULE [ARGS...]``: the first snapshot
is taken after ``SAGA_TRACE_SETTLE_S`` seconds (default 60, the soak's warm-up); then every
minute REPORT is rewritten with the lines whose live allocations grew most
since that snapshot. Used by ``make soak`` with ``--trace-memory``.
"""

from __future__ import annotations

import os
import runpy
import sys
import threading
import time
import tracemalloc
from pathlib import Path

FRAMES = 8
TOP = 20


def _snapshot() -> tracemalloc.Snapshot:
    """Live allocations, not counting this watcher's own."""
    return tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__)]
    )


def _watch(report: Path, settle_s: float, every_s: float) -> None:
    time.sleep(settle_s)
    first = _snapshot()
    started = time.monotonic()
    while True:
        time.sleep(every_s)
        now = _snapshot()
        stats = now.compare_to(first, "traceback")
        current, _ = tracemalloc.get_traced_memory()
        lines = [
            f"after {(time.monotonic() - started) / 60:.1f} min: traced {current / 2**20:.1f} MB",
            f"growth since the first snapshot, top {TOP} by size:",
        ]
        for stat in stats[:TOP]:
            lines.append(f"{stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks")
            lines.extend(f"      {frame}" for frame in stat.traceback.format()[-2 * FRAMES :])
        report.write_text("\n".join(lines) + "\n")


def main() -> None:
    report, module, *args = sys.argv[1:]
    settle_s = float(os.environ.get("SAGA_TRACE_SETTLE_S", "60"))
    tracemalloc.start(FRAMES)
    threading.Thread(target=_watch, args=(Path(report), settle_s, 60.0), daemon=True).start()
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
