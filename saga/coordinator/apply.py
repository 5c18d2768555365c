"""The coordinator's I/O shell: facts in, one transaction, commands out.

For a batch of events (or due timers, or an operator action), in ONE
PostgreSQL transaction: append the events to the saga log (a message id seen
before is a duplicate and changes nothing), lock the sagas involved, run the
pure :func:`~saga.coordinator.decide.decide` for each fact in order, save the
saga rows with a version check, append the decisions to the log, set or cancel
timers and put the commands in the outbox. After commit the outbox is
published (by the caller, through the relay) and only then are Kafka offsets
committed. Time is the database's clock.

Only a saga's start event opens it: another event of a saga not started yet is
held in the same transaction (its record as read), and decided right after the
start event when it comes; when the hold passes, :meth:`Coordinator.dead_letter_orphans`
sends it to its topic's dead letters (see :mod:`~saga.coordinator.orphans`).

Around it: :mod:`~saga.coordinator.intake` (facts in), :mod:`~saga.coordinator.batch`
(what a transaction accumulates), :mod:`~saga.coordinator.outgoing` (records out),
:mod:`~saga.coordinator.saga_log` (log entries), :mod:`~saga.coordinator.refusals`
(facts whose decision keeps raising) and :mod:`~saga.coordinator.store` (SQL).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from saga.coordinator import intake, refusals, saga_log, store
from saga.coordinator.batch import Batch
from saga.coordinator.decide import decide
from saga.coordinator.decision import Decision, Incoming
from saga.coordinator.definitions import LoadedDefinitions
from saga.coordinator.orphans import ORPHAN_EVENT, ORPHAN_HOLD, HeldEvent, orphan_letter
from saga.coordinator.outgoing import COORDINATOR, LIFECYCLE_TOPIC, Outgoing
from saga.coordinator.refusals import REFUSE_AFTER_S, DecisionError
from saga.coordinator.state import SagaState, evolve
from saga.definition.saga import SagaDefinition, SagaMode
from saga.kafka.dead_letter import DeadLetter, describe_error
from saga.messages import headers as h
from saga.messages.base import Message
from saga.messages.codec import RawRecord, decode, encode, header_map
from saga.messages.envelope import Envelope
from saga.messages.topics import prefixed, topic_for_type
from saga.observability import metrics, tracing
from saga.outbox.send_order import Written
from saga.outbox.store import PostgresServiceStore

__all__ = [
    "COORDINATOR",
    "KNOWN_SAGAS",
    "LIFECYCLE_TOPIC",
    "REFUSED_TIMER_DELAY",
    "Applied",
    "Coordinator",
    "DecisionError",
]

log = logging.getLogger(__name__)

#: How many running sagas a coordinator keeps in memory (a few KB each).
KNOWN_SAGAS = 4096
#: A timer whose decision raised is tried again this much later (after a fix, say).
REFUSED_TIMER_DELAY = timedelta(minutes=1)


@dataclass(frozen=True)
class Applied:
    """What a batch of events came to."""

    #: The outbox rows written, for the publish after commit.
    written: list[Written]
    #: Events not decided on, by message id: for the dead-letter topic.
    refused: dict[str, DecisionError]
    #: Where the transaction's time went: span events (name, wall clock ns) for the
    #: events' ``process`` spans (see :mod:`saga.observability.tracing`).
    marks: tuple[tuple[str, int], ...] = ()


class Coordinator:
    """Applies facts to sagas of the given definitions, durably."""

    def __init__(
        self,
        definitions: Sequence[SagaDefinition],
        outbox: PostgresServiceStore,
        *,
        topic_prefix: str = "",
        mode: SagaMode = "choreography",
        cached_sagas: int = KNOWN_SAGAS,
        orphan_hold: timedelta = ORPHAN_HOLD,
    ) -> None:
        self.loaded = LoadedDefinitions(definitions)
        #: The latest version of each saga: what new sagas start with.
        self.definitions = self.loaded.latest
        self.registry = self.loaded.registry
        self.definition_of = self.loaded.definition_of
        self.definition_for = self.loaded.definition_for
        self.mode = mode
        self.outbox = outbox
        self.prefix = topic_prefix
        self._outgoing = Outgoing(self.registry, topic_prefix)
        #: Running sagas as last saved here, oldest first: loading one still at that
        #: version (no other instance or operator changed it) skips its state.
        self._known: dict[str, SagaState] = {}
        #: Facts whose decision raised, by message id: since when (monotonic seconds).
        self._raising: dict[str, float] = {}
        self.refuse_after_s = REFUSE_AFTER_S
        self.known_limit = cached_sagas
        #: How long an event of a saga not started yet waits for its start event.
        self.orphan_hold = orphan_hold

    @property
    def pool(self) -> Any:
        return self.outbox.pool

    def topics(self) -> list[str]:
        """Every events topic the loaded sagas listen to (prefixed)."""
        return [prefixed(self.prefix, name) for name in self.loaded.topics()]

    # --- the three kinds of facts -----------------------------------------------------

    async def apply_events(
        self,
        envelopes: Sequence[Envelope[Message]],
        records: Sequence[RawRecord] | None = None,
    ) -> Applied:
        """Decide on a batch of events (``records``: each one's record as read, what an
        event held for its saga's start event keeps for its dead letter). An event whose
        decision keeps raising (for ``refuse_after_s``) is refused: the batch is decided
        again without it, and the saga log notes it. Before that, :class:`DecisionError`
        goes to the caller."""
        raw = {e.id: r for e, r in zip(envelopes, records or (), strict=False)}
        marks: list[tuple[str, int]] = []
        written, refused = await refusals.setting_aside(
            lambda r: self._apply_events(envelopes, r, raw, marks),
            self._raising,
            self.refuse_after_s,
        )
        refusals.decided(self._raising, (envelope.id for envelope in envelopes))
        return Applied(written, refused, tuple(marks))

    async def _apply_events(
        self,
        envelopes: Sequence[Envelope[Message]],
        refused: dict[str, DecisionError],
        records: Mapping[str, RawRecord],
        marks: list[tuple[str, int]],
    ) -> list[Written]:
        """``marks``: set to where the (last) transaction's time went."""
        async with self.pool.acquire() as connection, connection.transaction():
            unique = list({e.id: e for e in envelopes}.values())
            # A refused event is not logged as read: sent again (after a fix), it is decided.
            fresh = await store.append_events(
                connection, [saga_log.event(e) for e in unique if e.id not in refused]
            )
            # Every saga of the batch is locked (duplicates' too: they are rare).
            batch, now = await self._open(connection, [e.saga_id for e in unique])
            batch.marks.append((tracing.LOADED, time.time_ns()))
            facts: list[tuple[Incoming, SagaDefinition]] = []
            ignored: list[store.LogEntry] = []
            for envelope in unique:
                if envelope.id in refused:
                    batch.log.append(
                        saga_log.refused(envelope.saga_id, envelope.type, refused[envelope.id])
                    )
                    continue
                if envelope.id not in fresh:
                    continue  # a duplicate: already decided on
                definition = self.definition_for(envelope.saga_type, envelope.type)
                if definition is None:
                    ignored.append(saga_log.ignored(envelope, "no saga definition for this event"))
                    continue
                facts.append((intake.from_event(envelope, definition, now), definition))
            batch.log.extend(ignored)
            batch.ignored = len(ignored)
            by_id = {e.id: e for e in unique}
            written = await self._decide(
                connection,
                batch,
                facts,
                now,
                held=lambda i: self._held(by_id[i.message_id], records, now),
                refused=refused,
            )
            batch.marks.append((tracing.WRITTEN, time.time_ns()))
        batch.marks.append((tracing.COMMITTED, time.time_ns()))
        marks[:] = batch.marks
        batch.committed()
        self._remember(batch)
        return written

    async def fire_due_timers(self, limit: int = 200) -> tuple[int, list[Written]]:
        """Fire timers due by the database clock; returns (fired, outbox rows). A timer
        whose decision raises is refused: put off by :data:`REFUSED_TIMER_DELAY`, noted
        in the saga log, and the others fire without it."""
        outcome, _ = await refusals.setting_aside(
            lambda r: self._fire_due_timers(limit, r), self._raising, self.refuse_after_s
        )
        return outcome

    async def _fire_due_timers(
        self, limit: int, refused: dict[str, DecisionError]
    ) -> tuple[int, list[Written]]:
        async with self.pool.acquire() as connection, connection.transaction():
            fired = await store.due_timers(connection, limit)
            if not fired:
                return 0, []
            batch, now = await self._open(connection, [saga_id for saga_id, _, _ in fired])
            await store.delete_timers(connection, fired)
            facts: list[tuple[Incoming, SagaDefinition]] = []
            ids: list[str] = []
            for saga_id, name, due in fired:
                state = batch.states.get(saga_id)
                if state is None or state.saga_type not in self.definitions:
                    continue
                definition = self.definition_of(state)
                incoming = intake.from_timer(saga_id, state.saga_type, name, due, now)
                ids.append(incoming.message_id)
                if incoming.message_id in refused:
                    batch.timers[(saga_id, name)] = now + REFUSED_TIMER_DELAY
                    batch.log.append(saga_log.refused(saga_id, name, refused[incoming.message_id]))
                    continue
                batch.log.append(saga_log.timer(incoming, due))
                facts.append((incoming, definition))
            written = await self._decide(connection, batch, facts, now)
        batch.committed()
        self._remember(batch)
        refusals.decided(self._raising, ids)
        return len(fired), written

    async def operate(
        self,
        saga_id: str,
        action: str,
        *,
        actor: str,
        reason: str | None,
        precondition: Callable[[SagaState], None] | None = None,
    ) -> tuple[Decision | None, list[Written]]:
        """An operator's ``retry``, ``skip:<step>`` or ``resolve``, audited.
        ``precondition``: checked on the saga as locked (raising refuses, nothing done),
        so that nothing decided meanwhile slips between the check and the action."""
        async with self.pool.acquire() as connection, connection.transaction():
            batch, now = await self._open(connection, [saga_id])
            state = batch.states.get(saga_id)
            if state is None:
                return None, []
            if precondition is not None:
                precondition(state)
            definition = self.definition_of(state)
            incoming = intake.from_operator(
                saga_id, state.saga_type, action, actor=actor, reason=reason, now=now
            )
            batch.log.append(saga_log.operator(incoming))
            written = await self._decide(connection, batch, [(incoming, definition)], now)
        batch.committed()
        self._remember(batch)
        return batch.decisions[0][1] if batch.decisions else None, written

    def _remember(self, batch: Batch) -> None:
        """After the commit: the changed sagas as saved (finished ones are let go)."""
        for saga_id in sorted(batch.changed):
            self._known.pop(saga_id, None)
            state = batch.states[saga_id]
            if not state.finished:
                saved = (batch.read_versions.get(saga_id) or 0) + 1
                self._known[saga_id] = evolve(state, version=saved)
        while len(self._known) > self.known_limit:
            del self._known[next(iter(self._known))]

    # --- inside the transaction -------------------------------------------------------

    async def _open(self, connection: Any, saga_ids: Sequence[str]) -> tuple[Batch, datetime]:
        """Lock and load the sagas; with the transaction's time (the database clock)."""
        now = await store.lock_sagas(connection, saga_ids)
        states = await store.load_sagas(connection, saga_ids, self._known)
        batch = Batch(states=states, read_versions={k: v.version for k, v in states.items()})
        return batch, now

    async def _decide(
        self,
        connection: Any,
        batch: Batch,
        facts: Sequence[tuple[Incoming, SagaDefinition]],
        now: datetime,
        *,
        held: Callable[[Incoming], HeldEvent] | None = None,
        refused: Mapping[str, DecisionError] | None = None,
    ) -> list[Written]:
        # Events held for sagas this batch may open, read in one statement for the batch.
        waiting = await store.held_for(
            connection, [i.saga_id for i, _ in facts if i.saga_id not in batch.states]
        )
        taken: list[HeldEvent] = []
        for incoming, latest in facts:
            before = batch.states.get(incoming.saga_id)
            decision = self._decide_one(batch, incoming, latest, now)
            if decision.hold and held is not None:
                batch.held.append(held(incoming))
            elif before is None and decision.state is not None:
                released = waiting.pop(incoming.saga_id, [])
                taken += released
                self._release_held(batch, incoming.saga_id, released, now, refused or {})
        await store.drop_taken(connection, taken)
        batch.marks.append((tracing.DECIDED, time.time_ns()))
        await store.hold_events(connection, batch.held)
        await store.persist(
            connection,
            [(batch.states[s], batch.read_versions.get(s)) for s in sorted(batch.changed)],
            batch.timers,
            batch.log,
        )
        for saga_id, saga_type, changes in batch.tasks:
            await store.apply_tasks(connection, saga_id, saga_type, changes, now)
        if not batch.outgoing:
            return []
        return await self.outbox.write_outbox(connection, batch.outgoing)

    def _decide_one(
        self, batch: Batch, incoming: Incoming, latest: SagaDefinition, now: datetime
    ) -> Decision:
        state = batch.states.get(incoming.saga_id)
        definition = self.definition_of(state) if state is not None else latest
        try:
            decision = decide(state, incoming, definition, now, mode=self.mode)
            batch.record(incoming, decision, self._outgoing)
        except Exception as exc:
            raise DecisionError(incoming, exc) from exc
        batch.decisions.append((incoming, decision))
        return decision

    # --- events held for their saga's start event -------------------------------------

    def _held(
        self, envelope: Envelope[Message], records: Mapping[str, RawRecord], now: datetime
    ) -> HeldEvent:
        """``envelope`` held from ``now``, with its record as read (built from the
        envelope when the caller has none, as in tests)."""
        record = records.get(envelope.id)
        if record is None:
            encoded = encode(envelope)
            topic = prefixed(self.prefix, topic_for_type(envelope.type, "event"))
            record = RawRecord(topic, -1, -1, encoded.key, encoded.value, tuple(encoded.headers))
        return HeldEvent(
            saga_id=envelope.saga_id,
            message_id=envelope.id,
            record=record,
            held_at=now,
            held_until=now + self.orphan_hold,
            traceparent=envelope.traceparent,
            tracestate=envelope.tracestate,
        )

    def _release_held(
        self,
        batch: Batch,
        saga_id: str,
        stored: list[HeldEvent],
        now: datetime,
        refused: Mapping[str, DecisionError],
    ) -> None:
        """Saga ``saga_id`` was opened by its start event: the events held for it
        (``stored``, then those held earlier in this batch) are decided right after it,
        in the order they were held. One whose decision is refused, or that cannot be
        read any more, goes to its dead letters with why."""
        waiting = stored + [kept for kept in batch.held if kept.saga_id == saga_id]
        batch.held = [kept for kept in batch.held if kept.saga_id != saga_id]
        for held in waiting:
            error = refused.get(held.message_id)
            if error is not None:
                fact = header_map(held.record.headers).get(h.TYPE) or b"?"
                batch.log.append(saga_log.refused(saga_id, fact.decode(errors="replace"), error))
                batch.held.append(
                    replace(
                        held,
                        held_until=now,
                        reason=describe_error(error),
                        error_type=type(error).__name__,
                    )
                )
                continue
            try:
                envelope = decode(held.record, self.registry)
            except Exception as exc:  # the types changed since it was held
                reason = f"held for its saga's start event, then unreadable: {describe_error(exc)}"
                batch.held.append(
                    replace(held, held_until=now, reason=reason, error_type=type(exc).__name__)
                )
                continue
            envelope = envelope.replace(traceparent=held.traceparent, tracestate=held.tracestate)
            definition = self.definition_of(batch.states[saga_id])
            incoming = intake.from_event(envelope, definition, now)
            self._decide_one(batch, incoming, definition, now)

    async def dead_letter_orphans(
        self, send: Callable[[DeadLetter], Awaitable[None]], *, group: str, limit: int = 100
    ) -> int:
        """Send each held event whose hold has passed (no start event came for its saga)
        to its topic's dead letters, then forget it; how many. ``send`` returns once the
        broker has the dead letter: the held rows are deleted only after, in the same
        transaction, so a crash in between sends it again rather than losing it."""
        async with self.pool.acquire() as connection, connection.transaction():
            expired = await store.expired_held(connection, limit)
            letters = [orphan_letter(held, group) for held in expired]
            for letter in letters:
                await send(letter)
            await store.drop_orphans(connection, expired)
        for held, letter in zip(expired, letters, strict=True):
            error_type = held.error_type if held.reason is not None else ORPHAN_EVENT
            topic = {"messaging.destination.name": held.record.topic}
            metrics.dead_letters.add(1, {**topic, "error.type": error_type or "DecisionError"})
            if held.reason is None:
                metrics.orphans.add(1, topic)
            log.warning(
                "dead-lettered %s[%d]@%d (event %s of saga %s) to %s: %s",
                held.record.topic,
                held.record.partition,
                held.record.offset,
                held.message_id,
                held.saga_id,
                letter.topic,
                letter.reason,
            )
        return len(expired)
