"""Where one partition's records are handled: in order, one batch at a time.

A :class:`PartitionWorker` queues what the fetch loop hands it, handles it in
order and keeps the partition's progress: how far it handled (``handled``, the
next offset to read), what was committed of that, and whether the partition is
paused or stalled. The consumer decides when to pause, resume and commit.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from aiokafka import ConsumerRecord, TopicPartition

# The consumer's records share one logger name whichever of its modules logs them.
log = logging.getLogger("saga.kafka.consumer")

#: Handles a partition's records (one, or a batch) in order; raises :class:`Abandoned`
#: to leave them for redelivery.
HandleRecords = Callable[[list[ConsumerRecord]], Awaitable[None]]
#: Pauses or resumes fetching the worker's partition.
Flow = Callable[["PartitionWorker"], None]


class Abandoned(Exception):
    """A record given up on shutdown, left uncommitted so that it is read again."""


class PartitionWorker:
    """Handles one partition's records in order and tracks how far it got.

    Records are queued as they are fetched; the partition is paused only when
    its backlog reaches ``backlog_limit`` (so fetching runs ahead of handling)
    and resumed once half of that is worked off. ``batched``: each turn takes up
    to ``backlog_limit`` records at once, else one. ``slots`` bounds how many
    partitions are handled at the same time.
    """

    def __init__(
        self,
        tp: TopicPartition,
        *,
        backlog_limit: int,
        batched: bool,
        handle: HandleRecords,
        slots: asyncio.Semaphore,
        pause: Flow,
        resume: Flow,
    ) -> None:
        self.tp = tp
        self.backlog_limit = backlog_limit
        self.task: asyncio.Task[None] | None = None
        #: Next offset to read: everything below it is handled (durably).
        self.handled: int | None = None
        #: Offset of the first record being handled now, if any.
        self.current: int | None = None
        self.committed: int | None = None
        self.paused = False
        #: Set on a defect: nothing after the failed record may be handled.
        self.stalled = False
        self._batched = batched
        self._handle = handle
        self._slots = slots
        self._pause = pause
        self._resume = resume
        self._queue: deque[ConsumerRecord] = deque()

    @property
    def waiting(self) -> bool:
        """Records of it wait: queued, being handled, or held after a defect."""
        running = self.task is not None and not self.task.done()
        return self.stalled or running or bool(self._queue)

    @property
    def position(self) -> int | None:
        """The offset it is at: the next to handle (``None`` before any record)."""
        return self.handled if self.handled is not None else self.current

    @property
    def backlogged(self) -> bool:
        return len(self._queue) >= self.backlog_limit

    def feed(self, records: list[ConsumerRecord]) -> None:
        if self.stalled:
            return
        self._queue.extend(records)
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run(), name=f"partition {self.tp}")

    def finish_current_only(self) -> None:
        """Drop records not yet started; they stay uncommitted and are read again."""
        self._queue.clear()

    def cancel(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()

    async def _run(self) -> None:
        while self._queue:
            if self._batched:
                take = min(len(self._queue), self.backlog_limit)
                records = [self._queue.popleft() for _ in range(take)]
            else:
                records = [self._queue.popleft()]
            first, last = records[0], records[-1]
            self.current = first.offset
            try:
                async with self._slots:
                    await self._handle(records)
            except Abandoned as exc:
                # Shutting down: the offset stays uncommitted, the record is read again.
                log.warning("record %s@%d left for redelivery: %s", self.tp, first.offset, exc)
                self._queue.clear()
                return
            except Exception:
                # A defect, not bad input. Skipping would lose the record, so this
                # partition stays paused (others go on) until the process restarts.
                log.critical(
                    "partition %s stalled at offset %d", self.tp, first.offset, exc_info=True
                )
                self.stalled = True
                self._queue.clear()
                self._pause(self)
                return
            self.handled = last.offset + 1
            if self.paused and len(self._queue) <= self.backlog_limit // 2:
                self._resume(self)


async def drain(workers: Sequence[PartitionWorker], timeout_s: float) -> None:
    """Let the records in progress finish (up to ``timeout_s``); drop the rest."""
    for w in workers:
        w.finish_current_only()
    tasks = [w.task for w in workers if w.task is not None and not w.task.done()]
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        if pending:
            log.warning("%d partition(s) still busy after %ss", len(pending), timeout_s)
