"""Keep a long-running process's heap from creeping.

Freed memory stays with the C allocator: glibc returns the top of its heap, but
free pages below a block still in use stay resident. A service that handles
bursts (a large fetch, a batch of records decoded at once) keeps the high-water
mark as its RSS, creeping up over hours. ``malloc_trim(0)`` hands every free
page back. It exists only in glibc; elsewhere (musl, macOS) there is nothing
to call and :func:`trim_every` returns at once.

Free space that is not whole pages stays, and asyncio makes much of it: each
socket read allocates a 256 KiB buffer and shrinks it to the bytes that
arrived, so the next read seldom fits the hole the last one left and the heap
grows in between. :func:`limit_socket_reads` makes those buffers small enough
to fit such holes more often (in ``make soak`` the coordinator's free heap
space grew at less than half the rate). Python's own arenas fragment too
(one is handed back only when all its blocks are free); nothing here helps that.
"""

from __future__ import annotations

import asyncio
import asyncio.selector_events
import ctypes
import sys
from collections.abc import Callable


def malloc_trim() -> Callable[[], bool] | None:
    """The C library's ``malloc_trim(0)`` (true: memory was released), if it has one."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: bool(trim(0))


def limit_socket_reads(size: int) -> None:
    """Read at most ``size`` bytes per socket read in asyncio's selector event loop
    (this process, every connection opened after; 0: leave asyncio's default).
    TLS connections read into a buffer they keep, and are left as they are."""
    transport = getattr(asyncio.selector_events, "_SelectorSocketTransport", None)
    if size > 0 and isinstance(getattr(transport, "max_size", None), int):
        transport.max_size = size  # type: ignore[union-attr]


async def trim_every(interval_s: float, trim: Callable[[], bool] | None = None) -> None:
    """Trim every ``interval_s`` seconds until cancelled (0: never)."""
    trim = trim or malloc_trim()
    if interval_s <= 0 or trim is None:
        return
    while True:
        await asyncio.sleep(interval_s)
        trim()
