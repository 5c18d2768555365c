"""Where handled offsets are committed: periodically, on revocation and on close.

Only what a :class:`~saga.kafka.partitions.PartitionWorker` handled is committed
(its work is durable by then), and one commit runs at a time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from saga.kafka.dead_letter import describe_error
from saga.kafka.partitions import PartitionWorker

# The consumer's records share one logger name whichever of its modules logs them.
log = logging.getLogger("saga.kafka.consumer")


class Commits:
    """Commits the offsets of a consumer's partitions on ``kafka``."""

    def __init__(self, kafka: AIOKafkaConsumer, *, interval_s: float, timeout_s: float) -> None:
        self._kafka = kafka
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._last = time.monotonic()
        # One commit at a time: a revocation's commit waits for (or outlives) a
        # periodic one, so no older offset can land after the partition moved on.
        self._lock = asyncio.Lock()

    @property
    def due(self) -> bool:
        """The commit interval passed since the last commit began."""
        return time.monotonic() - self._last >= self._interval_s

    async def commit(self, workers: Iterable[PartitionWorker]) -> None:
        """Commit what ``workers`` handled. One commit at a time, and what is due is
        read under the lock: a revocation's commit and a periodic one never
        interleave, and a revoked worker (gone from the consumer's workers, whose
        live view the periodic commit passes) is never committed late."""
        self._last = time.monotonic()
        async with self._lock:
            due = [w for w in workers if w.handled is not None and w.handled != w.committed]
            if not due:
                return
            offsets = {w.tp: w.handled for w in due}
            try:
                await asyncio.wait_for(self._kafka.commit(offsets), self._timeout_s)
            except TimeoutError:
                log.warning("commit of %s timed out; offsets stay due", offsets)
                return
            except (CommitFailedError, IllegalStateError) as exc:
                # The group moved on (rebalance); the new owner resumes from the last commit.
                log.warning("commit of %s skipped: %s", offsets, describe_error(exc))
                return
            except KafkaError as exc:
                # Coordinator moving or unreachable: the offsets stay due and are tried again.
                log.warning("commit of %s failed, will retry: %s", offsets, describe_error(exc))
                return
            for w in due:
                w.committed = offsets[w.tp]
