"""Where partitions leave this member: their in-flight records finish and are committed.

A revoked partition's records in progress run to the end (up to the drain
timeout), their offsets are committed while this member still owns the
partition, and its worker is dropped, so nothing is committed for it afterwards.
"""

from __future__ import annotations

import logging
from typing import Any

from aiokafka import TopicPartition
from aiokafka.abc import ConsumerRebalanceListener

from saga.kafka.commits import Commits
from saga.kafka.partitions import PartitionWorker, drain

# The consumer's records share one logger name whichever of its modules logs them.
log = logging.getLogger("saga.kafka.consumer")


class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """The consumer's rebalance listener. ``workers`` is the consumer's own table of
    partition workers: a revoked partition's worker is taken out of it."""

    def __init__(
        self,
        workers: dict[TopicPartition, PartitionWorker],
        commits: Commits,
        *,
        drain_timeout_s: float,
    ) -> None:
        self._workers = workers
        self._commits = commits
        self._drain_timeout_s = drain_timeout_s

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        workers = [w for tp in revoked if (w := self._workers.pop(tp, None)) is not None]
        await drain(workers, self._drain_timeout_s)
        # Still the owner until this callback returns: commit what was handled.
        await self._commits.commit(workers)
        for w in workers:
            w.cancel()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> Any:
        log.info("assigned %s", sorted(assigned))
