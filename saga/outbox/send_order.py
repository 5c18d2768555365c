"""Which just-committed outbox rows may be sent now without overtaking an older one.

One saga's records (same key) must reach the broker in the order they were
written. The producer keeps the order of what it was handed in one go, per
partition; so a row may be sent at once if every older unsent row of its key
(``waits_for``, found when the row was written) was acknowledged by the broker,
or goes in the same handover, before it. A row whose predecessor is still in
flight in another handover waits for its acknowledgement: if that handover
failed, the row sent behind it would overtake it when the relay sends it
again. A held row goes with the next handover once it may, or is left to the
relay (:mod:`saga.outbox.relay`), which sends old unsent rows in id order.

Pure bookkeeping, no I/O: :class:`SendOrder` is told what was written, what
was handed over, and what the broker acknowledged.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from saga.messages.codec import EncodedRecord


@dataclass(frozen=True, slots=True)
class Written:
    """An outbox row as its transaction wrote it: what to publish after the commit.

    ``waits_for``: ids of older rows of the same key that were unsent when it
    was written (none for a record without a key: it has no order to keep).
    """

    id: int
    topic: str
    record: EncodedRecord
    waits_for: tuple[int, ...] = ()


class SendOrder:
    """Rows handed to the producer by this process, and rows held back.

    ``hold_s``: a held row is forgotten after this long; it is still unsent in
    the outbox, and the relay sends it once it is old enough.
    ``remember``: how many acknowledged ids are kept to answer ``waits_for``.
    """

    def __init__(
        self,
        *,
        hold_s: float = 10.0,
        remember: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._hold_s = hold_s
        self._remember = remember
        self._clock = clock
        self._in_flight: set[int] = set()
        self._sent: dict[int, None] = {}  # insertion-ordered: the oldest go first
        self._held: dict[int, tuple[Written, float]] = {}

    @property
    def in_flight(self) -> frozenset[int]:
        """Handed to the producer and not yet marked sent: the relay leaves them alone."""
        return frozenset(self._in_flight)

    @property
    def held(self) -> list[int]:
        return sorted(self._held)

    def admit(self, written: Iterable[Written] = ()) -> list[Written]:
        """Take just-committed rows; the ones to hand to the producer now, in order
        (held rows that may go now come along). They count as in flight from here.
        Without rows: the held rows that may go now (after an acknowledgement)."""
        now = self._clock()
        for row in written:
            self._held[row.id] = (row, now)
        ready: list[Written] = []
        here: set[int] = set()  # this handover's rows, in the order they go
        blocked: set[bytes] = set()  # keys with a row still held: later ones wait too
        for row_id in sorted(self._held):
            row, since = self._held[row_id]
            key = row.record.key
            if key is not None and key in blocked:
                pass
            elif all(older in self._sent or older in here for older in row.waits_for):
                del self._held[row_id]
                self._in_flight.add(row_id)
                here.add(row_id)
                ready.append(row)
                continue
            if now - since > self._hold_s:
                del self._held[row_id]  # the relay's now
            elif key is not None:
                blocked.add(key)
        return ready

    def taken(self, ids: Iterable[int]) -> None:
        """The relay handed these rows to the producer."""
        for row_id in ids:
            self._held.pop(row_id, None)
            self._in_flight.add(row_id)

    def sent(self, ids: Sequence[int]) -> None:
        """The broker acknowledged these (they are marked sent, or about to be)."""
        for row_id in ids:
            self._in_flight.discard(row_id)
            self._sent[row_id] = None
        while len(self._sent) > self._remember:
            del self._sent[next(iter(self._sent))]

    def unsent(self, ids: Iterable[int]) -> None:
        """Handing these over failed: they stay in the outbox for the relay."""
        for row_id in ids:
            self._in_flight.discard(row_id)
