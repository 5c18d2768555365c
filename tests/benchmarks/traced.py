"""Run ``python -m MODULE ARGS`` with tracemalloc, writing where memory grew each minute.

Tracing makes every allocation slower: drive a traced system well below its
normal rate, or the growth shown is a backlog of unread work, not a leak.

``python -m tests.benchmarks.traced REPORT MODULE [ARGS...]``: the first snapshot
is taken after ``SAGA_TRACE_SETTLE_S`` seconds (default 60, the soak's warm-up); then every
minute REPORT is rewritten with where the resident memory is (the C heap's bytes
in use and free, Python's arenas and their live blocks: fragmentation shows as free
space or arenas growing while live bytes do not), the lines whose live allocations
grew most since that snapshot, and the object types whose live count grew, with
what holds them. ``SAGA_TRACE_ALLOCATIONS=0``: the census only, without tracemalloc's slowdown.
Used by ``make soak`` with ``--trace-memory``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import linecache
import os
import re
import runpy
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import Counter, deque
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


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _pymalloc(libc: ctypes.CDLL) -> str:
    """Python's small-object allocator: its arenas, and the bytes of live blocks in them."""
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    stats = ctypes.pythonapi._PyObject_DebugMallocStats
    stats.argtypes = [ctypes.c_void_p]
    with tempfile.NamedTemporaryFile("r") as out:
        stream = libc.fopen(out.name.encode(), b"w")
        stats(stream)
        libc.fclose(stream)
        text = out.read()
    arenas = re.search(r"# arenas allocated current\s*=\s*([\d,]+)", text)
    used = re.search(r"# bytes in allocated blocks\s*=\s*([\d,]+)", text)
    if arenas is None or used is None:
        return "pymalloc: no statistics"
    count = int(arenas.group(1).replace(",", ""))
    live = int(used.group(1).replace(",", "")) / 2**20
    return f"pymalloc: {count} arenas of 1 MB, {live:.1f} MB in live blocks"


def _allocators() -> str:
    """Where the resident memory is: the process's RSS, the C heap (glibc's
    ``mallinfo2``: in use, free, mmapped), and Python's small-object arenas."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    rss = {k: int(status[k].split()[0]) / 1024 for k in ("VmRSS", "RssAnon") if k in status}
    figures = [f"rss {rss.get('VmRSS', 0):.1f} MB (anonymous {rss.get('RssAnon', 0):.1f})"]
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    mallinfo2 = getattr(libc, "mallinfo2", None)
    if mallinfo2 is not None:
        mallinfo2.restype = _MallInfo2
        info = mallinfo2()
        figures.append(
            f"C heap: in use {info.uordblks / 2**20:.1f} MB, free {info.fordblks / 2**20:.1f},"
            f" mmapped {info.hblkhd / 2**20:.1f}"
        )
    if libc is not None and hasattr(ctypes.pythonapi, "_PyObject_DebugMallocStats"):
        figures.append(_pymalloc(libc))
    figures.append(f"gc objects {len(gc.get_objects())}")
    return "; ".join(figures)


def _holders(type_name: str) -> list[str]:
    """What refers to a few live objects of ``type_name``: the referrers' types, with the
    size of a container (a cache that grows shows as one large dict, list or deque)."""
    sample = [o for o in gc.get_objects() if type(o).__qualname__ == type_name][-5:]
    held: Counter[str] = Counter()
    for obj in sample:
        for referrer in gc.get_referrers(obj):
            if referrer is not sample:
                name = type(referrer).__qualname__
                if isinstance(referrer, dict | list | set | deque) and len(referrer) > 100:
                    name = f"{name} of {len(referrer)}"
                held[name] += 1
    return [f"{name} x{count}" for name, count in held.most_common(5)]


def _watch(report: Path, settle_s: float, every_s: float) -> None:
    time.sleep(settle_s)
    tracing = tracemalloc.is_tracing()
    first = _snapshot() if tracing else None
    first_census = _census()
    started = time.monotonic()
    history = [f"at the first snapshot: {_allocators()}"]
    while True:
        time.sleep(every_s)
        census = _census()
        census.subtract(first_census)
        grown = [(name, n) for name, n in census.most_common(8) if n > 0]
        current, _ = tracemalloc.get_traced_memory()
        minutes = (time.monotonic() - started) / 60
        history.append(f"after {minutes:.1f} min: {_allocators()}")
        lines = [
            *history,
            f"traced {current / 2**20:.1f} MB",
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
