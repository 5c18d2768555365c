"""Where a partition that makes no progress is noticed.

A partition is **stalled** when records of it wait (fetched and not yet handled, or
held after a defect) and the offset it has handled up to has not moved for longer than
``SAGA_STALL_AFTER_MS``. A partition with nothing to read is idle, never stalled. The
decision is :func:`progress` and :func:`is_stalled`, pure functions of plain values;
:class:`StallWatch` feeds them what the consumer sees, logs a stall once when it
begins and once when it ends, and counts stalled partitions in the
``saga.partitions.stalled`` metric. ``/readyz`` answers 503 while one is stalled.

>>> before = progress(None, position=7, waiting=True, now=100.0)
>>> later = progress(before, position=7, waiting=True, now=200.0)
>>> is_stalled(later, waiting=True, now=200.0, after_s=60.0)
True
>>> is_stalled(progress(later, position=8, waiting=True, now=201.0), True, 201.0, 60.0)
False
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from saga.observability import metrics

# The consumer's records share one logger name whichever of its modules logs them.
log = logging.getLogger("saga.kafka.consumer")


@dataclass(frozen=True)
class Progress:
    """How far a partition got, and since when (monotonic seconds) it has been there
    with records waiting."""

    position: int | None
    since: float


def progress(before: Progress | None, position: int | None, waiting: bool, now: float) -> Progress:
    """The partition's progress at ``now``: the clock starts again when its position
    moved, and while nothing waits (an idle partition is not stalled)."""
    if before is None or before.position != position or not waiting:
        return Progress(position, now)
    return before


def is_stalled(at: Progress, waiting: bool, now: float, after_s: float) -> bool:
    """Records wait and the position has not moved for longer than ``after_s``."""
    return waiting and now - at.since > after_s


@dataclass(frozen=True)
class Stall:
    """A stalled partition, as ``/readyz`` shows it."""

    topic: str
    partition: int
    #: The offset it is stuck before (``None``: nothing handled since it was assigned).
    offset: int | None
    since: datetime

    def to_json(self) -> dict[str, object]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "since": self.since.isoformat(),
        }


#: A partition as the consumer sees it: (topic, partition, handled up to, records waiting).
Seen = tuple[str, int, int | None, bool]


class StallWatch:
    """Tracks the consumer group ``group``'s partitions; :meth:`check` with what is seen
    now returns the stalled ones."""

    def __init__(
        self,
        group: str,
        after_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._group = group
        self._after_s = after_s
        self._clock = clock
        self._wall = wall
        self._progress: dict[tuple[str, int], Progress] = {}
        self._stalled: dict[tuple[str, int], Stall] = {}

    @property
    def stalled(self) -> list[Stall]:
        return [self._stalled[key] for key in sorted(self._stalled)]

    def check(self, seen: Iterable[Seen]) -> list[Stall]:
        """Update from the partitions owned now (others are forgotten)."""
        now = self._clock()
        owned = set()
        for topic, partition, position, waiting in seen:
            key = (topic, partition)
            owned.add(key)
            at = self._progress[key] = progress(self._progress.get(key), position, waiting, now)
            stalled = is_stalled(at, waiting, now, self._after_s)
            if stalled and key not in self._stalled:
                since = datetime.fromtimestamp(self._wall() - (now - at.since), UTC)
                self._stalled[key] = Stall(topic, partition, position, since)
                self._count(topic, 1)
                log.warning(
                    "partition %s[%d] stalled: no progress at offset %s for %.0fs (since %s)",
                    topic,
                    partition,
                    position,
                    now - at.since,
                    since.isoformat(),
                )
            elif not stalled and key in self._stalled:
                self._recovered(key, "moves again")
        for key in [k for k in self._progress if k not in owned]:
            del self._progress[key]
            if key in self._stalled:
                self._recovered(key, "no longer assigned here")
        return self.stalled

    def _recovered(self, key: tuple[str, int], how: str) -> None:
        stall = self._stalled.pop(key)
        self._count(stall.topic, -1)
        log.info(
            "partition %s[%d] %s after a stall since %s",
            stall.topic,
            stall.partition,
            how,
            stall.since.isoformat(),
        )

    def _count(self, topic: str, change: int) -> None:
        metrics.partitions_stalled.add(
            change,
            {"messaging.consumer.group.name": self._group, "messaging.destination.name": topic},
        )
