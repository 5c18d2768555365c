"""Give the heap memory a process has freed back to the operating system.

Freed memory stays with the C allocator: glibc returns the top of its heap, but
free pages below a block still in use stay resident. A service that handles
bursts (a large fetch, a batch of records decoded at once) keeps the high-water
mark as its RSS, creeping up over hours. ``malloc_trim(0)`` hands every free
page back. It exists only in glibc; elsewhere (musl, macOS) there is nothing
to call and :func:`trim_every` returns at once.
"""

from __future__ import annotations

import asyncio
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


async def trim_every(interval_s: float, trim: Callable[[], bool] | None = None) -> None:
    """Trim every ``interval_s`` seconds until cancelled (0: never)."""
    trim = trim or malloc_trim()
    if interval_s <= 0 or trim is None:
        return
    while True:
        await asyncio.sleep(interval_s)
        trim()
