"""Freed heap memory handed back to the operating system (glibc's malloc_trim and a
fixed mmap threshold)."""

from __future__ import annotations

import asyncio
import ctypes
import subprocess
import sys
from collections.abc import Callable

import pytest

from saga.memory import malloc_trim, set_mmap_threshold, trim_every

# Many blocks too large for Python's small-object allocator, so they come from the C
# heap; one in 200 stays alive, so the heap cannot shrink from its top alone.
_FRAGMENTED = """
import os, sys
from saga.memory import malloc_trim
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
blocks = [bytes(2048) for _ in range(40_000)]
kept = blocks[::200]
del blocks
before = rss()
trim = malloc_trim()
released = trim() if trim is not None else False
print(before, rss(), released)
"""


# How many blocks glibc has mapped on their own (mallinfo2's hblks) grows by one for a
# block of 2 MB allocated after a larger one was freed. (A block is mapped only when the
# heap has no room for it: the heap is trimmed first, and 2 MB is more than a fresh
# interpreter's heap has free.)
_MAPPED_ON_ITS_OWN = """
import ctypes, sys
from saga.memory import malloc_trim, set_mmap_threshold
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]
mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = Info
if sys.argv[1] != "0":
    assert set_mmap_threshold(int(sys.argv[1]))
large = b"x" * 16_000_000
del large  # glibc's sliding threshold moves up to this size
malloc_trim()()
before = mallinfo2().hblks
block = b"x" * 2_000_000
print(mallinfo2().hblks - before)
"""


def _counted(calls: list[int], third: asyncio.Event | None = None) -> Callable[[], bool]:
    def trim() -> bool:
        calls.append(1)
        if third is not None and len(calls) == 3:
            third.set()
        return True

    return trim


@pytest.mark.skipif(malloc_trim() is None, reason="no malloc_trim in this C library")
def test_trimming_hands_freed_heap_memory_back() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _FRAGMENTED], check=True, capture_output=True, text=True
    ).stdout.split()
    before, after, released = int(out[0]), int(out[1]), out[2]
    assert released == "True"
    assert before - after > 40 * 2**20, f"RSS {before / 2**20:.0f} -> {after / 2**20:.0f} MB"


async def test_the_heap_is_trimmed_again_and_again_until_cancelled() -> None:
    calls: list[int] = []
    third = asyncio.Event()
    task = asyncio.create_task(trim_every(0.01, _counted(calls, third)))
    await asyncio.wait_for(third.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    count = len(calls)
    await asyncio.sleep(0.05)
    assert len(calls) == count, "no trim after cancel"


async def test_an_interval_of_zero_never_trims() -> None:
    calls: list[int] = []
    await asyncio.wait_for(trim_every(0, _counted(calls)), 1)
    assert calls == []


def _has_mallinfo2() -> bool:
    return hasattr(ctypes.CDLL(None), "mallinfo2") if sys.platform.startswith("linux") else False


@pytest.mark.skipif(not _has_mallinfo2(), reason="not glibc 2.33 or later")
@pytest.mark.parametrize(("threshold", "mapped"), [(131_072, 1), (0, 0)])
def test_with_a_fixed_threshold_a_large_block_stays_out_of_the_heap_after_a_larger_one_was_freed(
    threshold: int, mapped: int
) -> None:
    # 0: glibc's sliding threshold, which the freed 16 MB block moved above 2 MB.
    out = subprocess.run(
        [sys.executable, "-c", _MAPPED_ON_ITS_OWN, str(threshold)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert int(out) == mapped


def test_a_threshold_of_zero_is_not_set() -> None:
    assert set_mmap_threshold(0) is False
