"""What a dead-lettered record looks like: decided here, sent by the consumer.

A record that cannot be handled goes to ``<topic>.dlq`` unchanged (same key,
same value bytes, every original header) plus headers saying why and where it
came from, so an operator can inspect, fix and replay it. Reasons are short,
single-line descriptions of the error; never a stack trace or the payload.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from saga.errors import MessageTooLarge
from saga.messages import headers as h
from saga.messages.codec import RawRecord
from saga.messages.topics import dead_letter_topic
from saga.security.redaction import redact

if TYPE_CHECKING:
    from saga.kafka.publisher import Publisher

#: Longest reason kept in a dead-letter header.
MAX_REASON_CHARS = 1000


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record to publish on the dead-letter topic."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    reason: str


def shrink(letter: DeadLetter, size: int) -> DeadLetter | None:
    """A smaller dead letter when ``letter`` (``size`` bytes) is over the size limit.

    First the value is left out, then the original headers; the provenance
    headers always stay, so the record can be found at its original offset.
    ``None`` when nothing is left to drop.
    """
    provenance = [(n, v) for n, v in letter.headers if n.startswith("dlq_")]
    if letter.value:
        note = f"value of {size} bytes left out: over the size limit"
        return DeadLetter(
            topic=letter.topic,
            key=letter.key,
            value=None,
            headers=[(n, v) for n, v in letter.headers if n != h.DLQ_VALUE_OMITTED]
            + [(h.DLQ_VALUE_OMITTED, note.encode())],
            reason=note,
        )
    if len(provenance) < len(letter.headers):
        return DeadLetter(
            topic=letter.topic,
            key=letter.key,
            value=None,
            headers=provenance,
            reason="original headers left out: over the size limit",
        )
    return None


def describe_error(error: BaseException) -> str:
    """``Type: message`` on one line, bounded, secrets redacted, for headers and logs."""
    text = redact(" ".join(str(error).split()))
    return f"{type(error).__name__}: {text}"[:MAX_REASON_CHARS] if text else type(error).__name__


def dead_letter(
    record: RawRecord, *, reason: str, error_type: str, group: str, now: datetime | None = None
) -> DeadLetter:
    """The dead letter for ``record`` that failed with ``reason``."""
    reason = " ".join(reason.split())[:MAX_REASON_CHARS]
    added = {
        h.DLQ_REASON: reason,
        h.DLQ_ERROR_TYPE: error_type,
        h.DLQ_TOPIC: record.topic,
        h.DLQ_PARTITION: str(record.partition),
        h.DLQ_OFFSET: str(record.offset),
        h.DLQ_GROUP: group,
        h.DLQ_TIME: (now or datetime.now(UTC)).isoformat(),
    }
    # Drop stale dead-letter headers (a replayed record that failed again).
    kept = [(name, value) for name, value in record.headers if name not in added]
    return DeadLetter(
        topic=dead_letter_topic(record.topic),
        key=record.key,
        value=record.value,
        headers=kept + [(name, value.encode()) for name, value in added.items()],
        reason=reason,
    )


async def send(publisher: Publisher, letter: DeadLetter) -> None:
    """Publish ``letter``; returns once the broker has it. Over the broker's size limit
    it is shrunk (:func:`shrink`) and sent again; any other failure is the caller's."""
    while True:
        try:
            await publisher.publish_raw(
                letter.topic, key=letter.key, value=letter.value, headers=letter.headers
            )
            return
        except MessageTooLarge as exc:
            smaller = shrink(letter, exc.size)
            if smaller is None:
                raise
            logging.getLogger("saga.kafka.consumer").warning(
                "dead letter to %s too large: %s", letter.topic, smaller.reason
            )
            letter = smaller
