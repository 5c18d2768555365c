"""Topics as in-memory logs: what the test kits publish to instead of a broker."""

from __future__ import annotations

from collections import defaultdict

from saga.messages.base import Message
from saga.messages.codec import EncodedRecord, RawRecord, decode
from saga.messages.envelope import Envelope
from saga.participant.service import Service


class InMemoryTransport:
    """Topics as in-memory logs of encoded records, read back as envelopes."""

    def __init__(self) -> None:
        self.topics: dict[str, list[EncodedRecord]] = defaultdict(list)

    def publish(self, topic: str, record: EncodedRecord) -> None:
        self.topics[topic].append(record)

    def read(self, topic: str, service: Service) -> list[Envelope[Message]]:
        """Every record on ``topic``, decoded exactly as a consumer would."""
        return [
            decode(RawRecord(topic, 0, offset, r.key, r.value, list(r.headers)), service.registry)
            for offset, r in enumerate(self.topics[topic])
        ]
