"""Graceful shutdown on SIGTERM and SIGINT, the same way for every process."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def serve_until_signalled(
    start: Callable[[], Awaitable[None]],
    run: Callable[[], Awaitable[None]],
    stop: Callable[[], None],
) -> None:
    """``start()`` then ``run()``; SIGTERM/SIGINT call ``stop()`` so ``run`` can finish."""
    loop = asyncio.get_running_loop()
    for sig in SIGNALS:
        loop.add_signal_handler(sig, stop)
    try:
        await start()
        await run()
    finally:
        for sig in SIGNALS:
            loop.remove_signal_handler(sig)
