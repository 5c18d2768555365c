"""Message contracts: the only code independent services share.

Envelope and payload models, the registry that reads any known schema version,
the CloudEvents-on-Kafka codec, header names and topic naming.
"""

from contracts.codec import EncodedRecord, RawRecord, decode, encode
from contracts.envelope import Envelope, new_message_id
from contracts.errors import (
    InvalidHeader,
    InvalidMessage,
    MissingHeader,
    NotJson,
    PayloadValidationFailed,
    UnknownMessageType,
    UnknownSchemaVersion,
)
from contracts.messages import Command, Event, Message, Upcaster
from contracts.registry import MessageRegistry
from contracts.topics import commands_topic, dead_letter_topic, events_topic

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
