"""The coordinator of :class:`~saga.testing.InMemorySagaSystem`: the real decisions on
sagas kept in memory, publishing what they send as the coordinator's shell would.

It reads a message once per id, finds its saga's definition (the version the saga
started with), decides with :func:`~saga.coordinator.decide.decide`, keeps the
timers and tasks, and publishes commands, its own events and ``saga.SagaFinished``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from opentelemetry.trace import INVALID_SPAN

from saga.coordinator.decide import (
    Decision,
    Incoming,
    TaskChange,
    decide,
)
from saga.coordinator.outgoing import SOURCE, Outgoing
from saga.coordinator.state import SagaState
from saga.definition.saga import DefinitionError, SagaDefinition, SagaMode
from saga.messages.base import Message
from saga.messages.codec import EncodedRecord
from saga.messages.envelope import Envelope
from saga.messages.lifecycle import SagaFinished, TaskEscalated, TaskOpened
from saga.messages.registry import MessageRegistry
from saga.messages.topics import (
    COORDINATOR_OWNER,
    events_topic,
    topic_for_type,
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
    ) -> None:
        self.mode: SagaMode = mode
        self._publish = publish
        self._clock = clock
        #: name -> version -> definition; a saga keeps the version it started with.
        self.versions: dict[str, dict[int, SagaDefinition]] = {}
        for definition in definitions:
            by_version = self.versions.setdefault(definition.name, {})
            if definition.version in by_version:
                raise DefinitionError(
                    f"saga {definition.name!r} version {definition.version} is given twice"
                )
            by_version[definition.version] = definition.validate()
        self.latest = {name: by[max(by)] for name, by in self.versions.items()}
        #: Every type the coordinator reads and writes.
        self.registry = MessageRegistry([SagaFinished, TaskOpened, TaskEscalated])
        self.by_type: dict[str, list[SagaDefinition]] = {}
        self.topics: set[str] = set()
        for by_version in self.versions.values():
            for definition in by_version.values():
                for model in definition.models():
                    self.registry.register(model)
                start_event = definition.starts_with
                self.topics.add(topic_for_type(start_event.message_type, start_event.kind))
                self.topics.update(
                    events_topic(s) for s in definition.services if s != COORDINATOR_OWNER
                )
        for definition in self.latest.values():
            for message_type in definition.message_types():
                self.by_type.setdefault(message_type, []).append(definition)

        #: The shell's own record builder: the same envelopes as the real coordinator.
        self._outgoing = Outgoing(self.registry, prefix="")
        self.states: dict[str, SagaState] = {}
        self.timers: dict[tuple[str, str], datetime] = {}
        self.tasks: dict[str, list[TaskChange]] = {}
        self.decided: set[str] = set()
        #: Every fact the coordinator decided on, with its decision, in order.
        self.decisions: list[tuple[Incoming, Decision]] = []

    def read(self, envelope: Envelope[Message]) -> None:
        """The coordinator reads ``envelope`` (once per message id)."""
        if envelope.id in self.decided or envelope.type not in self.registry:
            return  # read before, or a type the coordinator skips unread
        self.decided.add(envelope.id)
        state = self.states.get(envelope.saga_id)
        if envelope.saga_type:
            definition = self.latest.get(envelope.saga_type)
        else:
            candidates = self.by_type.get(envelope.type, [])
            definition = candidates[0] if len(candidates) == 1 else None
        if definition is None:
            return  # no saga of ours: recorded and ignored
        if state is not None:
            definition = self.definition_of(state)
        source = envelope.source
        incoming = Incoming(
            kind="event",
            message_id=envelope.id,
            type=envelope.type,
            saga_id=envelope.saga_id,
            saga_type=definition.name,
            at=self._clock(),
            service=source.rsplit("/", 1)[-1] if source.startswith("/services/") else None,
            step_hint=envelope.step,
            attempt=envelope.attempt,
            payload=envelope.payload.model_dump(mode="json"),
            traceparent=envelope.traceparent,
            tracestate=envelope.tracestate,
        )
        self.decide(incoming, definition)

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

    def definition_of(self, state: SagaState) -> SagaDefinition:
        """The definition a saga started with (the latest if that version is gone)."""
        by_version = self.versions[state.saga_type]
        return by_version.get(state.definition_version) or self.latest[state.saga_type]
