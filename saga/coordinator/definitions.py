"""The saga definitions a coordinator runs: every version of each, what they read, where.

One place answers, for the durable coordinator and the in-memory one alike: which
definition an event belongs to, which version a running saga keeps, which message
types the coordinator reads and writes, and which events topics it listens to.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from saga.coordinator.state import SagaState
from saga.definition.saga import DefinitionError, SagaDefinition
from saga.messages.lifecycle import TaskEscalated, TaskOpened
from saga.messages.registry import MessageRegistry
from saga.messages.topics import COORDINATOR_OWNER, events_topic, topic_for_type

log = logging.getLogger(__name__)


class LoadedDefinitions:
    """``definitions``, validated; a name and version given twice is an error."""

    def __init__(self, definitions: Sequence[SagaDefinition]) -> None:
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
        self.latest = {name: by[max(by)] for name, by in self.versions.items()}
        #: Every message type the coordinator reads and writes.
        self.registry = MessageRegistry([TaskOpened, TaskEscalated])
        for by_version in self.versions.values():
            for definition in by_version.values():
                for model in definition.models():
                    if model.message_type not in self.registry:
                        self.registry.register(model)
        self._by_type: dict[str, list[SagaDefinition]] = {}
        for definition in self.latest.values():
            for message_type in definition.message_types():
                self._by_type.setdefault(message_type, []).append(definition)

    def topics(self) -> list[str]:
        """Every events topic the loaded sagas listen to (without a prefix), once each."""
        names: list[str] = []
        for by_version in self.versions.values():
            for definition in by_version.values():
                start = definition.starts_with
                names.append(topic_for_type(start.message_type, start.kind))
                if definition.cancelled_by is not None:
                    cancel = definition.cancelled_by
                    names.append(topic_for_type(cancel.message_type, cancel.kind))
                names.extend(
                    events_topic(service)
                    for service in definition.services
                    if service != COORDINATOR_OWNER  # its own events: decided on at once
                )
        return list(dict.fromkeys(names))

    def definition_for(self, saga_type: str | None, message_type: str) -> SagaDefinition | None:
        """The definition an event belongs to: the one it names, or else the only one
        that reads its type; ``None`` when no saga of ours takes it."""
        if saga_type:
            # Named: that saga or none (never a guess from the event type).
            return self.latest.get(saga_type)
        candidates = self._by_type.get(message_type, [])
        return candidates[0] if len(candidates) == 1 else None

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
            return self.latest[state.saga_type]
        return found
