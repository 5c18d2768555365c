"""Give the heap memory a process has freed back to the operating system.

Freed memory stays with the C allocator: glibc returns the top of its heap, but
free pages below a block still in use stay resident. A service that handles
bursts (a large fetch, a batch of records decoded at once) keeps the high-water
mark as its RSS, creeping up over hours. Two remedies, both glibc's (elsewhere,
musl or macOS, there is nothing to call and both do nothing):

* ``malloc_trim(0)`` hands every free page back (:func:`trim_every`).
* A fixed mmap threshold (:func:`set_mmap_threshold`): glibc gives blocks of
  128 KiB and more a mapping of their own, returned when freed, but after each
  such free it raises that threshold to the block's size (up to 32 MiB), so
  later large buffers (fetch responses, statements of a whole batch) land in the
  heap, among small blocks that outlive them: the free space between cannot be
  trimmed and RSS creeps. A fixed threshold keeps them out of the heap.
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


#: ``mallopt``'s parameter for the mmap threshold (glibc's ``M_MMAP_THRESHOLD``).
_M_MMAP_THRESHOLD = -3


def set_mmap_threshold(size: int) -> bool:
    """Blocks of ``size`` bytes or more get a mapping of their own, from now on and for
    good (glibc no longer moves the threshold). True: set; false: no glibc, or refused."""
    if not sys.platform.startswith("linux") or size <= 0:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, size))


async def trim_every(interval_s: float, trim: Callable[[], bool] | None = None) -> None:
    """Trim every ``interval_s`` seconds until cancelled (0: never)."""
    trim = trim or malloc_trim()
    if interval_s <= 0 or trim is None:
        return
    while True:
        await asyncio.sleep(interval_s)
        trim()
