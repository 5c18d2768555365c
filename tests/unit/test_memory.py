"""Freed heap memory handed back to the operating system (glibc's malloc_trim)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable

import pytest

from saga.observability.memory import malloc_trim, trim_every

# 100 KB written at once to one end of a socket pair, read by an asyncio protocol at the
# other after ``limit_socket_reads(argv[1])``: prints the largest read and the total.
_READS = """
import asyncio, socket, sys
from saga.observability.memory import limit_socket_reads
limit_socket_reads(int(sys.argv[1]))
class Reads(asyncio.Protocol):
    def __init__(self, done):
        self.sizes, self.done = [], done
    def data_received(self, data):
        self.sizes.append(len(data))
        if sum(self.sizes) == 100_000:
            self.done.set_result(None)
async def main():
    ours, theirs = socket.socketpair()
    theirs.sendall(bytes(100_000))
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    transport, reads = await loop.connect_accepted_socket(lambda: Reads(done), ours)
    await asyncio.wait_for(done, 10)
    transport.close()
    theirs.close()
    print(max(reads.sizes), sum(reads.sizes))
asyncio.run(main())
"""

# Many blocks too large for Python's small-object allocator, so they come from the C
# heap; one in 200 stays alive, so the heap cannot shrink from its top alone.
_FRAGMENTED = """
import os, sys
from saga.observability.memory import malloc_trim
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


def _reads(limit: int) -> tuple[int, int]:
    out = subprocess.run(
        [sys.executable, "-c", _READS, str(limit)], check=True, capture_output=True, text=True
    ).stdout.split()
    return int(out[0]), int(out[1])


def test_socket_reads_are_limited_to_the_size_asked_for() -> None:
    assert _reads(4096) == (4096, 100_000), "every byte read, 4 KB at most at a time"
    largest, total = _reads(0)
    assert total == 100_000 and largest > 4096, "0 leaves asyncio's own read size"
