"""Messages on the wire: payload base classes, the envelope, the codec, the registry.

Envelope and payload models, the registry that reads any known schema version,
the CloudEvents-on-Kafka codec, header names, topic naming, the failure and
lifecycle events every saga shares, and the errors of a record that cannot be read.
"""

from saga.messages.base import Command, Event, Message, Upcaster
from saga.messages.codec import EncodedRecord, RawRecord, decode, encode
from saga.messages.envelope import Envelope, new_message_id
from saga.messages.errors import (
    InvalidHeader,
    InvalidMessage,
    MissingHeader,
    NotJson,
    PayloadValidationFailed,
    UnknownMessageType,
    UnknownSchemaVersion,
)
from saga.messages.registry import MessageRegistry
from saga.messages.topics import commands_topic, dead_letter_topic, events_topic

__all__ = [
    "Command",
    "EncodedRecord",
    "Envelope",
    "Event",
    "InvalidHeader",
    "InvalidMessage",
    "Message",
    "MessageRegistry",
    "MissingHeader",
    "NotJson",
    "PayloadValidationFailed",
    "RawRecord",
    "UnknownMessageType",
    "UnknownSchemaVersion",
    "Upcaster",
    "commands_topic",
    "dead_letter_topic",
    "decode",
    "encode",
    "events_topic",
    "new_message_id",
]
