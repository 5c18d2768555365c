"""The coordinator's I/O shell: facts in, one transaction, commands out.

For a batch of events (or due timers, or an operator action), in ONE
PostgreSQL transaction: append the events to the saga log (a message id seen
before is a duplicate and changes nothing), lock the sagas involved, run the
pure :func:`~saga.coordinator.decide.decide` for each fact in order, save the
saga rows with a version check, append the decisions to the log, set or cancel
timers and put the commands in the outbox. After commit the outbox is
published (by the caller, through the relay) and only then are Kafka offsets
committed. Time is the database's clock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

from opentelemetry import metrics, trace
from opentelemetry.trace import Span

from saga.coordinator import store
from saga.coordinator.decide import (
    CommandToSend,
    Decision,
    EventToPublish,
    Incoming,
    TaskChange,
    decide,
)
from saga.coordinator.observe import observe
from saga.coordinator.state import SagaState, evolve
from saga.definition.saga import DefinitionError, SagaDefinition, SagaMode
from saga.errors import SagaError
from saga.kafka.dead_letter import describe_error
from saga.messages.base import Message
from saga.messages.codec import EncodedRecord, encode
from saga.messages.envelope import Envelope
from saga.messages.lifecycle import SagaFinished, SagaOutcome, TaskEscalated, TaskOpened
from saga.messages.registry import MessageRegistry
from saga.messages.topics import (
    COORDINATOR_OWNER,
    commands_topic,
    events_topic,
    owner_of,
    prefixed,
    topic_for_type,
)
from saga.observability import tracing
from saga.outbox.send_order import Written
from saga.outbox.store import PostgresServiceStore

log = logging.getLogger(__name__)
_meter = metrics.get_meter("saga")
_ignored = _meter.create_counter(
    "saga.coordinator.ignored", description="Facts recorded but not acted on (unknown saga, ...)"
)
_decisions = _meter.create_counter("saga.coordinator.decisions", description="Decisions made")
_refusals = _meter.create_counter(
    "saga.coordinator.refused", description="Facts whose decision raised (set aside)"
)

COORDINATOR = "coordinator"
#: How many running sagas a coordinator keeps in memory (a few KB each).
KNOWN_SAGAS = 4096
SOURCE = "/coordinator"
#: Where saga outcomes are announced (:class:`~saga.messages.lifecycle.SagaFinished`).
LIFECYCLE_TOPIC = events_topic(owner_of(SagaFinished.message_type))
_OUTCOMES = frozenset({"completed", "compensated", "parked", "resolved"})
T = TypeVar("T")
#: A timer whose decision raised is tried again this much later (after a fix, say).
REFUSED_TIMER_DELAY = timedelta(minutes=1)
#: How long a fact's decision keeps raising before the fact is refused. Until then its
#: batch is retried: events of the saga read on other partitions may change the outcome.
REFUSE_AFTER_S = 30.0
#: A fact that raised and has not raised again for this long after its ``REFUSE_AFTER_S``
#: is forgotten (its partition went to another instance, say); seen once more, it starts
#: over.
RAISING_FORGOTTEN_S = 600.0


class DecisionError(SagaError):
    """Deciding on one fact raised: a defect of a definition or of the coordinator,
    not of the database. That fact is set aside (refused); the others of its batch
    are decided without it."""

    def __init__(self, incoming: Incoming, error: Exception) -> None:
        self.message_id = incoming.message_id
        super().__init__(
            f"deciding on {incoming.type} for saga {incoming.saga_id} failed:"
            f" {describe_error(error)}"
        )


@dataclass(frozen=True)
class Applied:
    """What a batch of events came to."""

    #: The outbox rows written, for the publish after commit.
    written: list[Written]
    #: Events not decided on, by message id: for the dead-letter topic.
    refused: dict[str, DecisionError]


def _from_coordinator(
    incoming: Incoming, span: Span, payload: Message, *, step: str | None, attempt: int = 1
) -> Envelope[Message]:
    """An envelope the coordinator sends because of ``incoming``, in ``span``'s trace."""
    traceparent, tracestate = tracing.context_headers(span)
    return Envelope(
        payload=payload,
        saga_id=incoming.saga_id,
        saga_type=incoming.saga_type,
        source=SOURCE,
        step=step,
        causation_id=incoming.message_id,
        attempt=attempt,
        traceparent=traceparent,
        tracestate=tracestate,
    )


def _outcome_changed(before: SagaState | None, after: SagaState) -> bool:
    return after.status in _OUTCOMES and (before is None or before.status != after.status)


@dataclass
class _Batch:
    """What one transaction accumulates."""

    states: dict[str, SagaState]
    read_versions: dict[str, int | None]
    changed: set[str] = field(default_factory=set)
    log: list[store.LogEntry] = field(default_factory=list)
    timers: dict[tuple[str, str], datetime | None] = field(default_factory=dict)
    outgoing: list[tuple[str, EncodedRecord]] = field(default_factory=list)
    decisions: list[tuple[Incoming, Decision]] = field(default_factory=list)
    #: Ended (so exported) only once the transaction committed.
    spans: list[Span] = field(default_factory=list)
    #: (state before, state after) per decision, for the metrics after commit.
    changes: list[tuple[SagaState | None, SagaState | None]] = field(default_factory=list)
    #: Events of no known saga (recorded, not decided on).
    ignored: int = 0
    #: Approval task changes: (saga id, saga type, changes).
    tasks: list[tuple[str, str, list[TaskChange]]] = field(default_factory=list)

    def committed(self) -> None:
        tracing.end_spans(self.spans)
        for before, after in self.changes:
            observe(before, after)
        for _, decision in self.decisions:
            _decisions.add(1, {"applied": str(decision.applied).lower()})
            if not decision.applied:
                _ignored.add(1, {"reason": "no effect"})
        if self.ignored:
            _ignored.add(self.ignored, {"reason": "unknown saga type"})


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
    ) -> None:
        #: name -> version -> definition; a saga keeps the version it started with.
        self.versions: dict[str, dict[int, SagaDefinition]] = {}
        for definition in definitions:
            definition = definition.validate()
            by_version = self.versions.setdefault(definition.name, {})
            if definition.version in by_version:
                raise DefinitionError(
                    f"saga {definition.name!r} version {definition.version} is loaded twice"
                )
            by_version[definition.version] = definition
        #: The latest version of each saga: what new sagas start with.
        self.definitions = {name: by[max(by)] for name, by in self.versions.items()}
        self.mode = mode
        self.outbox = outbox
        self.prefix = topic_prefix
        self.registry = MessageRegistry()
        self.registry.register(TaskOpened)
        self.registry.register(TaskEscalated)
        self._by_type: dict[str, list[SagaDefinition]] = {}
        for by_version in self.versions.values():
            for definition in by_version.values():
                for model in definition.models():
                    if model.message_type not in self.registry:
                        self.registry.register(model)
        for definition in self.definitions.values():
            for message_type in definition.message_types():
                self._by_type.setdefault(message_type, []).append(definition)
        #: Running sagas as last saved here, oldest first: loading one still at that
        #: version (no other instance or operator changed it) skips its state.
        self._known: dict[str, SagaState] = {}
        #: Facts whose decision raised, by message id: since when (monotonic seconds).
        self._raising: dict[str, float] = {}
        self.refuse_after_s = REFUSE_AFTER_S
        self.known_limit = cached_sagas

    def definition_of(self, state: SagaState) -> SagaDefinition:
        """The definition a saga started with (the latest if that version is gone)."""
        by_version = self.versions[state.saga_type]
        found = by_version.get(state.definition_version)
        if found is None:
            log.warning(
                "saga %s started on %s version %d, which is not loaded: using version %d",
                state.saga_id,
                state.saga_type,
                state.definition_version,
                max(by_version),
            )
            return self.definitions[state.saga_type]
        return found

    @property
    def pool(self) -> Any:
        return self.outbox.pool

    def topics(self) -> list[str]:
        """Every events topic the loaded sagas listen to (prefixed)."""
        names: list[str] = []
        for by_version in self.versions.values():
            for definition in by_version.values():
                start = definition.starts_with
                names.append(topic_for_type(start.message_type, start.kind))
                names.extend(
                    events_topic(service)
                    for service in definition.services
                    if service != COORDINATOR_OWNER  # its own events: decided on at once
                )
        return [prefixed(self.prefix, n) for n in dict.fromkeys(names)]

    def definition_for(self, saga_type: str | None, message_type: str) -> SagaDefinition | None:
        if saga_type:
            # Named: that saga or none (never a guess from the event type).
            return self.definitions.get(saga_type)
        candidates = self._by_type.get(message_type, [])
        return candidates[0] if len(candidates) == 1 else None

    # --- the three kinds of facts -----------------------------------------------------

    async def apply_events(self, envelopes: Sequence[Envelope[Message]]) -> Applied:
        """Decide on a batch of events. An event whose decision keeps raising (for
        ``refuse_after_s``) is refused: the batch is decided again without it, and the
        saga log notes it. Before that, :class:`DecisionError` goes to the caller."""
        written, refused = await self._setting_aside(lambda r: self._apply_events(envelopes, r))
        self._decided(envelope.id for envelope in envelopes)
        return Applied(written, refused)

    async def _apply_events(
        self, envelopes: Sequence[Envelope[Message]], refused: dict[str, DecisionError]
    ) -> list[Written]:
        async with self.pool.acquire() as connection, connection.transaction():
            unique = list({e.id: e for e in envelopes}.values())
            # A refused event is not logged as read: sent again (after a fix), it is decided.
            fresh = await store.append_events(
                connection, [self._event_entry(e) for e in unique if e.id not in refused]
            )
            # Every saga of the batch is locked (duplicates' too: they are rare).
            batch, now = await self._open(connection, [e.saga_id for e in unique])
            facts: list[tuple[Incoming, SagaDefinition]] = []
            ignored: list[store.LogEntry] = []
            for envelope in unique:
                if envelope.id in refused:
                    batch.log.append(
                        self._refused(envelope.saga_id, envelope.type, refused[envelope.id])
                    )
                    continue
                if envelope.id not in fresh:
                    continue  # a duplicate: already decided on
                definition = self.definition_for(envelope.saga_type, envelope.type)
                if definition is None:
                    ignored.append(self._ignored(envelope, "no saga definition for this event"))
                    continue
                facts.append((self._incoming(envelope, definition, now), definition))
            batch.log.extend(ignored)
            batch.ignored = len(ignored)
            written = await self._decide(connection, batch, facts, now)
        batch.committed()
        self._remember(batch)
        return written

    async def fire_due_timers(self, limit: int = 200) -> tuple[int, list[Written]]:
        """Fire timers due by the database clock; returns (fired, outbox rows). A timer
        whose decision raises is refused: put off by :data:`REFUSED_TIMER_DELAY`, noted
        in the saga log, and the others fire without it."""
        outcome, _ = await self._setting_aside(lambda r: self._fire_due_timers(limit, r))
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
                if state is None or state.saga_type not in self.versions:
                    continue
                definition = self.definition_of(state)
                incoming = Incoming(
                    kind="timer",
                    message_id=f"timer:{saga_id}:{name}:{due.isoformat()}",
                    type=name,
                    saga_id=saga_id,
                    saga_type=state.saga_type,
                    at=now,
                )
                ids.append(incoming.message_id)
                if incoming.message_id in refused:
                    batch.timers[(saga_id, name)] = now + REFUSED_TIMER_DELAY
                    batch.log.append(self._refused(saga_id, name, refused[incoming.message_id]))
                    continue
                batch.log.append(
                    store.LogEntry(
                        saga_id,
                        "timer",
                        name,
                        COORDINATOR,
                        {"due": due.isoformat()},
                        incoming.message_id,
                    )
                )
                facts.append((incoming, definition))
            written = await self._decide(connection, batch, facts, now)
        batch.committed()
        self._remember(batch)
        self._decided(ids)
        return len(fired), written

    async def operate(
        self, saga_id: str, action: str, *, actor: str, reason: str | None
    ) -> tuple[Decision | None, list[Written]]:
        """An operator's ``retry``, ``skip:<step>`` or ``resolve``, audited."""
        async with self.pool.acquire() as connection, connection.transaction():
            batch, now = await self._open(connection, [saga_id])
            state = batch.states.get(saga_id)
            if state is None:
                return None, []
            definition = self.definition_of(state)
            incoming = Incoming(
                kind="operator",
                message_id=f"operator:{saga_id}:{now.isoformat()}",
                type=action,
                saga_id=saga_id,
                saga_type=state.saga_type,
                at=now,
                actor=actor,
                reason=reason,
            )
            batch.log.append(
                store.LogEntry(
                    saga_id, "operator", action, actor, {"reason": reason}, incoming.message_id
                )
            )
            written = await self._decide(connection, batch, [(incoming, definition)], now)
        batch.committed()
        self._remember(batch)
        return batch.decisions[0][1] if batch.decisions else None, written

    def _remember(self, batch: _Batch) -> None:
        """After the commit: the changed sagas as saved (finished ones are let go)."""
        for saga_id in sorted(batch.changed):
            self._known.pop(saga_id, None)
            state = batch.states[saga_id]
            if not state.finished:
                saved = (batch.read_versions.get(saga_id) or 0) + 1
                self._known[saga_id] = evolve(state, version=saved)
        while len(self._known) > self.known_limit:
            del self._known[next(iter(self._known))]

    async def _setting_aside(
        self, run: Callable[[dict[str, DecisionError]], Awaitable[T]]
    ) -> tuple[T, dict[str, DecisionError]]:
        """``run(refused)`` until no decision raises. A fact whose decision has raised for
        ``refuse_after_s`` is added to ``refused`` (those ``run`` sets aside) and it runs
        again; before that, the error goes to the caller, who retries later."""
        refused: dict[str, DecisionError] = {}
        while True:
            try:
                return await run(refused), refused
            except DecisionError as error:
                if error.message_id in refused:
                    raise  # not set aside: running again would raise again
                now = time.monotonic()
                forgotten = now - self.refuse_after_s - RAISING_FORGOTTEN_S
                for message_id in [m for m, first in self._raising.items() if first < forgotten]:
                    del self._raising[message_id]
                since = self._raising.setdefault(error.message_id, now)
                if now - since < self.refuse_after_s:
                    raise
                del self._raising[error.message_id]
                log.error("%s; the fact is refused, the rest of its batch goes on", error)
                _refusals.add(1)
                refused[error.message_id] = error

    def _decided(self, message_ids: Iterable[str]) -> None:
        """These facts were decided (or refused) at last: no longer raising."""
        if self._raising:
            for message_id in message_ids:
                self._raising.pop(message_id, None)

    # --- inside the transaction -------------------------------------------------------

    async def _open(self, connection: Any, saga_ids: Sequence[str]) -> tuple[_Batch, datetime]:
        """Lock and load the sagas; with the transaction's time (the database clock)."""
        now = await store.lock_sagas(connection, saga_ids)
        states = await store.load_sagas(connection, saga_ids, self._known)
        batch = _Batch(states=states, read_versions={k: v.version for k, v in states.items()})
        return batch, now

    async def _decide(
        self,
        connection: Any,
        batch: _Batch,
        facts: Sequence[tuple[Incoming, SagaDefinition]],
        now: datetime,
    ) -> list[Written]:
        for incoming, latest in facts:
            state = batch.states.get(incoming.saga_id)
            definition = self.definition_of(state) if state is not None else latest
            try:
                decision = decide(state, incoming, definition, now, mode=self.mode)
                self._record(batch, incoming, decision)
            except Exception as exc:
                raise DecisionError(incoming, exc) from exc
            batch.decisions.append((incoming, decision))
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

    def _record(self, batch: _Batch, incoming: Incoming, decision: Decision) -> None:
        saga_id = incoming.saga_id
        before = batch.states.get(saga_id)
        span = self._decision_span(incoming, before, decision)
        batch.spans.append(span)
        if decision.state is not None and decision.applied:
            batch.states[saga_id] = decision.state
            batch.changed.add(saga_id)
            batch.changes.append((before, decision.state))
            if _outcome_changed(before, decision.state):
                batch.outgoing.append(self._announce(incoming, span, decision.state))
        for name in decision.cancel_timers:
            batch.timers[(saga_id, name)] = None
        for timer in decision.set_timers:
            batch.timers[(saga_id, timer.name)] = timer.due
        if decision.tasks:
            batch.tasks.append((saga_id, incoming.saga_type, decision.tasks))
        for event in decision.events:
            batch.outgoing.append(self._event(incoming, span, event))
        for command in decision.commands:
            compensate = tracing.tracer().start_span(
                f"{'dispatch' if command.purpose == 'start' else 'compensate'} {command.step}",
                context=trace.set_span_in_context(span),
                attributes={
                    "saga.id": saga_id,
                    "saga.type": incoming.saga_type,
                    "saga.step": command.step,
                    "saga.compensation.attempt": command.attempt,
                    "saga.message.type": command.message_type,
                },
            )
            batch.spans.append(compensate)
            batch.outgoing.append(self._command(incoming, compensate, command))
        kind = "decision" if decision.applied else "ignored"
        batch.log.append(
            store.LogEntry(
                saga_id,
                kind,
                incoming.type,
                COORDINATOR,
                {
                    "notes": decision.notes,
                    "commands": [
                        {
                            "type": c.message_type,
                            "step": c.step,
                            "attempt": c.attempt,
                            "payload": c.payload,
                            **(
                                {"purpose": "start", "to": c.service}
                                if c.purpose == "start"
                                else {}
                            ),
                        }
                        for c in decision.commands
                    ],
                    "events": [e.message_type for e in decision.events],
                    "tasks": [f"{t.change} {t.task_id} ({t.assignee})" for t in decision.tasks],
                    "status": decision.state.status if decision.state else None,
                    "cause": incoming.message_id,
                },
            )
        )

    @staticmethod
    def _decision_span(incoming: Incoming, before: SagaState | None, decision: Decision) -> Span:
        """``decide <saga type>``: child of the event, or of the saga's trace for
        a timer or an operator, so that what it sends stays in the saga's trace."""
        traceparent, tracestate = incoming.traceparent, incoming.tracestate
        if traceparent is None and before is not None:
            traceparent, tracestate = before.traceparent, before.tracestate
        after = decision.state
        return tracing.tracer().start_span(
            f"decide {incoming.saga_type}",
            context=tracing.context_of(traceparent, tracestate),
            attributes={
                "saga.id": incoming.saga_id,
                "saga.type": incoming.saga_type,
                "saga.trigger": incoming.kind,
                "saga.fact": incoming.type,
                "saga.applied": decision.applied,
                "saga.status": after.status if after is not None else "",
                "saga.decision.notes": list(decision.notes),
                **({"saga.step": incoming.step_hint} if incoming.step_hint else {}),
            },
        )

    def _event(
        self, incoming: Incoming, span: Span, event: EventToPublish
    ) -> tuple[str, EncodedRecord]:
        """A join, an approval outcome or an escalation, on ``saga.events``."""
        model = self.registry.model_for(event.message_type)
        envelope = _from_coordinator(
            incoming, span, model.model_validate(event.payload), step=event.step
        )
        return prefixed(self.prefix, LIFECYCLE_TOPIC), encode(envelope)

    def _command(
        self, incoming: Incoming, span: Span, command: CommandToSend
    ) -> tuple[str, EncodedRecord]:
        model = self.registry.model_for(command.message_type)
        # In the compensate (or dispatch) span: timers and restarts stay in the saga's trace.
        envelope = _from_coordinator(
            incoming,
            span,
            model.model_validate(command.payload),
            step=command.step,
            attempt=command.attempt,
        )
        service = command.service or owner_of(command.message_type)
        return prefixed(self.prefix, commands_topic(service)), encode(envelope)

    def _announce(
        self, incoming: Incoming, span: Span, state: SagaState
    ) -> tuple[str, EncodedRecord]:
        """``saga.SagaFinished`` on ``saga.events``, for whoever waits on the outcome."""
        traceparent, tracestate = tracing.context_headers(span)
        envelope: Envelope[Message] = Envelope(
            payload=SagaFinished(
                saga_type=state.saga_type,
                status=cast(SagaOutcome, state.status),
                reason=state.reason,
            ),
            saga_id=state.saga_id,
            saga_type=state.saga_type,
            source=SOURCE,
            causation_id=incoming.message_id,
            traceparent=traceparent,
            tracestate=tracestate,
        )
        return prefixed(self.prefix, LIFECYCLE_TOPIC), encode(envelope)

    def _event_entry(self, envelope: Envelope[Message]) -> store.LogEntry:
        return store.LogEntry(
            envelope.saga_id,
            "event",
            envelope.type,
            envelope.source,
            {
                "payload": envelope.payload.model_dump(mode="json"),
                "step": envelope.step,
                "attempt": envelope.attempt,
                "time": envelope.time.isoformat(),
                "traceparent": envelope.traceparent,
            },
            envelope.id,
        )

    def _ignored(self, envelope: Envelope[Message], why: str) -> store.LogEntry:
        return store.LogEntry(
            envelope.saga_id,
            "ignored",
            envelope.type,
            COORDINATOR,
            {"why": why, "message_id": envelope.id},
        )

    @staticmethod
    def _refused(saga_id: str, fact: str, error: DecisionError) -> store.LogEntry:
        return store.LogEntry(
            saga_id, "refused", fact, COORDINATOR, {"why": str(error), "cause": error.message_id}
        )

    @staticmethod
    def _incoming(
        envelope: Envelope[Message], definition: SagaDefinition, now: datetime
    ) -> Incoming:
        source = envelope.source
        service = source.rsplit("/", 1)[-1] if source.startswith("/services/") else None
        return Incoming(
            kind="event",
            message_id=envelope.id,
            type=envelope.type,
            saga_id=envelope.saga_id,
            saga_type=definition.name,
            at=now,
            service=service,
            step_hint=envelope.step,
            attempt=envelope.attempt,
            payload=envelope.payload.model_dump(mode="json"),
            traceparent=envelope.traceparent,
            tracestate=envelope.tracestate,
        )
