"""The coordinator of :class:`~saga.testing.InMemorySagaSystem`: the real decisions on
sagas kept in memory, publishing what they send as the coordinator's shell would.

It reads a message once per id, finds its saga's definition (the version the saga
started with), decides with :func:`~saga.coordinator.decide.decide`, keeps the
timers and tasks, holds an event read before its saga's start event (decided right
after it; an orphan once ``orphan_hold`` passes without it), and publishes commands,
its own events and ``saga.SagaFinished``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from opentelemetry.trace import INVALID_SPAN

from saga.coordinator import intake
from saga.coordinator.decide import (
    Decision,
    Incoming,
    TaskChange,
    decide,
)
from saga.coordinator.definitions import LoadedDefinitions
from saga.coordinator.orphans import ORPHAN_HOLD
from saga.coordinator.outgoing import SOURCE, Outgoing
from saga.coordinator.state import SagaState
from saga.definition.saga import SagaDefinition, SagaMode
from saga.messages.base import Message
from saga.messages.codec import EncodedRecord
from saga.messages.envelope import Envelope
from saga.messages.topics import (
    COORDINATOR_OWNER,
    events_topic,
)

#: Where the coordinator publishes its own events and the sagas' outcomes.
COORDINATOR_EVENTS = events_topic(COORDINATOR_OWNER)
COORDINATOR_SOURCE = SOURCE
_OUTCOMES = frozenset({"completed", "compensated", "parked", "resolved"})


class InMemoryCoordinator:
    """Decides on the sagas of ``definitions``; ``publish(topic, record)`` sends what it
    sends, ``clock()`` is the time it decides at."""

    def __init__(
        self,
        definitions: Sequence[SagaDefinition],
        *,
        mode: SagaMode,
        publish: Callable[[str, EncodedRecord], None],
        clock: Callable[[], datetime],
        orphan_hold: timedelta = ORPHAN_HOLD,
    ) -> None:
        self.mode: SagaMode = mode
        self._publish = publish
        self._clock = clock
        #: The shell's own bookkeeping of definitions, versions, types and topics.
        self.loaded = LoadedDefinitions(definitions)
        self.registry = self.loaded.registry
        self.topics = set(self.loaded.topics())
        self.definition_of = self.loaded.definition_of
        #: The shell's own record builder: the same envelopes as the real coordinator.
        self._outgoing = Outgoing(self.registry, prefix="")
        self.states: dict[str, SagaState] = {}
        self.timers: dict[tuple[str, str], datetime] = {}
        self.tasks: dict[str, list[TaskChange]] = {}
        self.decided: set[str] = set()
        self.orphan_hold = orphan_hold
        #: Events of sagas not started yet, by saga id, in the order read: until when.
        self.held: dict[str, list[tuple[Envelope[Message], datetime]]] = {}
        #: Held events whose start event never came (dead-lettered by the real one).
        self.orphans: list[Envelope[Message]] = []
        #: Every fact the coordinator decided on, with its decision, in order.
        self.decisions: list[tuple[Incoming, Decision]] = []

    def read(self, envelope: Envelope[Message]) -> None:
        """The coordinator reads ``envelope`` (once per message id)."""
        if envelope.id in self.decided or envelope.type not in self.registry:
            return  # read before, or a type the coordinator skips unread
        self.decided.add(envelope.id)
        definition = self.loaded.definition_for(envelope.saga_type, envelope.type)
        if definition is None:
            return  # no saga of ours: recorded and ignored
        state = self.states.get(envelope.saga_id)
        if state is not None:
            definition = self.definition_of(state)
        now = self._clock()
        decision = self.decide(intake.from_event(envelope, definition, now), definition)
        if decision.hold:  # no saga yet: kept for its start event, as the shell does
            self.held.setdefault(envelope.saga_id, []).append((envelope, now + self.orphan_hold))
        elif state is None and decision.state is not None:
            # The start event opened the saga: what was held is decided right after it.
            for held, _ in self.held.pop(envelope.saga_id, []):
                definition = self.definition_of(self.states[envelope.saga_id])
                self.decide(intake.from_event(held, definition, self._clock()), definition)

    def expire_held(self, now: datetime) -> list[Envelope[Message]]:
        """Held events whose hold ended by ``now``: dropped from the hold and added to
        ``orphans`` (the real coordinator dead-letters them); returns them."""
        expired: list[Envelope[Message]] = []
        for saga_id in list(self.held):
            kept = [(e, until) for e, until in self.held[saga_id] if until > now]
            expired += [e for e, until in self.held[saga_id] if until <= now]
            if kept:
                self.held[saga_id] = kept
            else:
                del self.held[saga_id]
        self.orphans += expired
        return expired

    def decide(self, incoming: Incoming, definition: SagaDefinition) -> Decision:
        saga_id = incoming.saga_id
        before = self.states.get(saga_id)
        decision = decide(before, incoming, definition, self._clock(), mode=self.mode)
        self.decisions.append((incoming, decision))
        after = decision.state
        if after is not None and decision.applied:
            self.states[saga_id] = after
            if after.status in _OUTCOMES and (before is None or before.status != after.status):
                self._publish(*self._outgoing.announce(incoming, INVALID_SPAN, after))
        for name in decision.cancel_timers:
            self.timers.pop((saga_id, name), None)
        for timer in decision.set_timers:
            self.timers[(saga_id, timer.name)] = timer.due
        if decision.tasks:
            self.tasks.setdefault(saga_id, []).extend(decision.tasks)
        for event in decision.events:
            self._publish(*self._outgoing.event(incoming, INVALID_SPAN, event))
        for command in decision.commands:
            self._publish(*self._outgoing.command(incoming, INVALID_SPAN, command))
        return decision
