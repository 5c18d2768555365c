"""Graceful shutdown on SIGTERM and SIGINT, the same way for every process."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from saga.errors import SagaError

if TYPE_CHECKING:
    from saga.settings import Settings

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)

#: Longest a graceful stop may take (e.g. with the broker gone) before it is cut short.
GRACE_S = 45.0


async def serve_until_signalled(
    start: Callable[[], Awaitable[None]],
    run: Callable[[], Awaitable[None]],
    stop: Callable[[], None],
    *,
    grace_s: float = GRACE_S,
) -> None:
    """``start()`` then ``run()``; SIGTERM/SIGINT call ``stop()`` so ``run`` can finish.

    If finishing takes longer than ``grace_s`` (a broker or database that does
    not answer any more), the work is cancelled: what was not committed is
    read again after a restart.
    """
    loop = asyncio.get_running_loop()
    work = asyncio.current_task()
    assert work is not None
    cutoff: asyncio.TimerHandle | None = None

    def on_signal() -> None:
        nonlocal cutoff
        stop()
        if cutoff is None:
            cutoff = loop.call_later(grace_s, _cut_short, work, grace_s)

    for sig in SIGNALS:
        loop.add_signal_handler(sig, on_signal)
    try:
        await start()
        await run()
    finally:
        if cutoff is not None:
            cutoff.cancel()
        for sig in SIGNALS:
            loop.remove_signal_handler(sig)


def run_process(serve: Callable[[], Coroutine[Any, Any, None]], settings: Settings) -> int:
    """The body of a ``saga`` process: logging, telemetry, the event loop (its heap
    trimmed every ``memory_trim_interval_ms``, its socket reads limited to
    ``socket_read_bytes``: :mod:`saga.observability.memory`), an exit code.

    1 when the graceful stop was cut short (logged), or when a setting does not fit
    (:class:`~saga.errors.SagaError`: one line on stderr, e.g. a port in use), else 0.
    """
    from saga.observability import telemetry
    from saga.observability.health import check_port_free
    from saga.observability.logs import configure_logging
    from saga.observability.memory import limit_socket_reads, trim_every

    async def serve_trimmed() -> None:
        trimming = asyncio.create_task(trim_every(settings.memory_trim_interval_ms / 1000))
        try:
            await serve()
        finally:
            trimming.cancel()

    try:
        if settings.health_port:
            check_port_free(settings.health_host, settings.health_port)
        configure_logging()
        limit_socket_reads(settings.socket_read_bytes)
        exporting = telemetry.configure(settings)
        try:
            asyncio.run(serve_trimmed())
        except asyncio.CancelledError:
            return 1
        finally:
            exporting.shutdown()
    except SagaError as exc:
        print(f"saga: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _cut_short(work: asyncio.Task[object], grace_s: float) -> None:
    log.error("graceful stop did not finish in %ss; stopping now", grace_s)
    work.cancel()
