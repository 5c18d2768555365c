"""Topic naming: the one place topic names are derived.

Each service owns two topics: ``<service>.events`` (what it announces, past
tense) and ``<service>.commands`` (what it is asked to do, imperative). Any
consumed topic has a dead-letter companion ``<topic>.dlq``.

>>> events_topic("inventory")
'inventory.events'
>>> dead_letter_topic("inventory.events")
'inventory.events.dlq'

A message type is named ``<owner>.<Name>``: an event's owner is the service
that announces it, a command's owner is the service that carries it out. So
the topic of any message follows from its type:

>>> topic_for_type("inventory.InventoryReserved", "event")
'inventory.events'
>>> topic_for_type("inventory.ReleaseInventory", "command")
'inventory.commands'
"""

from __future__ import annotations

import re
from typing import Final

EVENTS_SUFFIX: Final = ".events"
COMMANDS_SUFFIX: Final = ".commands"
DLQ_SUFFIX: Final = ".dlq"

# Kafka's own rule for topic names (legal characters and length).
_LEGAL = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")


#: Owner of the events the coordinator itself publishes (outcomes, joins, approvals):
#: they travel on ``saga.events``.
COORDINATOR_OWNER = "saga"


def validate_topic(name: str) -> str:
    """Return ``name`` if Kafka accepts it as a topic name, else raise ``ValueError``."""
    if not _LEGAL.fullmatch(name) or name in {".", ".."}:
        raise ValueError(f"invalid topic name {name!r}: use 1-249 characters from [a-zA-Z0-9._-]")
    return name


def events_topic(service: str) -> str:
    """The topic on which ``service`` publishes its events."""
    return validate_topic(f"{service}{EVENTS_SUFFIX}")


def commands_topic(service: str) -> str:
    """The topic on which ``service`` receives commands (e.g. compensations)."""
    return validate_topic(f"{service}{COMMANDS_SUFFIX}")


def prefixed(prefix: str, topic: str) -> str:
    """``topic`` in a deployment namespace (``SAGA_TOPIC_PREFIX``), e.g. ``staging.``."""
    return validate_topic(f"{prefix}{topic}")


def owner_of(message_type: str) -> str:
    """The owning service named by ``message_type`` (``"inventory.ReleaseInventory"``)."""
    owner, dot, name = message_type.rpartition(".")
    if not dot or not owner or not name:
        raise ValueError(f"message type {message_type!r} must be '<owner>.<Name>'")
    return owner


def topic_for_type(message_type: str, kind: str) -> str:
    """Where messages of ``message_type`` travel: the owner's events or commands topic."""
    owner = owner_of(message_type)
    return events_topic(owner) if kind == "event" else commands_topic(owner)


def dead_letter_topic(topic: str) -> str:
    """The dead-letter topic for records that could not be handled from ``topic``.

    A consumer of a dead-letter topic (a replay tool) gets ``<topic>.dlq.dlq``:
    never its own input, which would loop.
    """
    return validate_topic(f"{topic}{DLQ_SUFFIX}")


#: Records refused for their signature (see ``saga.security.signing``), from every topic.
SECURITY_DEAD_LETTERS: Final = "saga.security.dlq"
