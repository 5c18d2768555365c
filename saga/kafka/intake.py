"""Where a fetched record is read: accepted, its signature checked, decoded, or dead-lettered.

A record of a type the consumer does not handle is skipped unread: a shared
topic carries types for other readers. Unless the consumer answers for the
record's topic (the only reader of a service's commands topic; the coordinator,
which reads every saga events topic): then no one else would handle it, and it
is dead-lettered (``UnknownMessageType``). One that fails its signature check
goes to the security dead letters; one that is not a valid envelope goes to
``<topic>.dlq``. Either way the partition goes on with the next record, once
the dead letter is durable.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Collection, Mapping

from aiokafka import ConsumerRecord

from saga.errors import MessageTooLarge
from saga.kafka.dead_letter import DeadLetter, dead_letter, describe_error
from saga.kafka.dead_letter import send as send_dead_letter
from saga.kafka.partitions import Abandoned
from saga.kafka.publisher import Publisher
from saga.messages import headers as h
from saga.messages.base import Message
from saga.messages.codec import RawRecord, decode, header_map
from saga.messages.envelope import Envelope
from saga.messages.errors import InvalidMessage, UnknownMessageType
from saga.messages.registry import MessageRegistry
from saga.observability import metrics
from saga.security.signing import SignatureError, Verifier

# The consumer's records share one logger name whichever of its modules logs them.
log = logging.getLogger("saga.kafka.consumer")


class Intake:
    """Reads records for consumer group ``group_id`` and dead-letters what it cannot read.

    ``accepts(ce_type)`` false: the record is skipped, or dead-lettered when its topic
    is one of ``answers_for`` (no other consumer handles it there). ``only_from``: types
    taken from one topic only, skipped elsewhere (a step the coordinator starts reads
    its trigger from its commands topic, not from the event's own). ``verifier``: refuses
    records not signed by their topic's owner, to ``security_topic``.
    ``stopping()`` true: a dead letter that cannot be sent is given up
    (:class:`~saga.kafka.partitions.Abandoned`) instead of retried.
    """

    def __init__(
        self,
        *,
        group_id: str,
        registry: MessageRegistry,
        accepts: Callable[[str], bool] | None,
        answers_for: Collection[str] = (),
        only_from: Mapping[str, str] | None = None,
        verifier: Verifier | None,
        security_topic: str,
        publisher: Publisher,
        stopping: Callable[[], bool],
    ) -> None:
        self._group_id = group_id
        self._registry = registry
        self._accepts = accepts
        self._answers_for = frozenset(answers_for)
        self._only_from = dict(only_from or {})
        self._verifier = verifier
        self._security_topic = security_topic
        self._publisher = publisher
        self._stopping = stopping

    async def read(self, record: ConsumerRecord) -> tuple[Envelope[Message] | None, RawRecord]:
        """The record as an envelope; ``None`` if skipped or dead-lettered."""
        raw = RawRecord(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            headers=tuple(record.headers or ()),
            timestamp_ms=record.timestamp,
        )
        unknown: str | None = None
        if self._accepts is not None:
            message_type = header_map(raw.headers).get(h.TYPE)
            if message_type:
                kind = message_type.decode(errors="replace")
                if self._only_from.get(kind, raw.topic) != raw.topic:
                    return None, raw  # taken from another topic only
                if not self._accepts(kind):
                    if raw.topic not in self._answers_for:
                        return None, raw  # another consumer's
                    unknown = message_type.decode(errors="backslashreplace")
        if self._verifier is not None:
            try:
                self._verifier.check(
                    raw.topic, raw.partition, raw.offset, raw.key, raw.value, raw.headers
                )
            except SignatureError as refused:
                await self._refuse(raw, refused)
                return None, raw
        if unknown is not None:
            error = UnknownMessageType(unknown)
            reason = f"{error.reason}: {self._group_id} handles no such type on {raw.topic}"
            await self.dead_letter(raw, reason, type(error).__name__)
            return None, raw
        try:
            return decode(raw, self._registry), raw
        except InvalidMessage as exc:
            await self.dead_letter(raw, exc.reason, type(exc).__name__)
        except Exception as exc:  # e.g. a faulty upcaster: still this record's problem
            await self.dead_letter(
                raw, f"record could not be read: {describe_error(exc)}", type(exc).__name__
            )
        return None, raw

    async def dead_letter(self, raw: RawRecord, reason: str, error_type: str) -> None:
        """Send ``raw`` to its topic's dead letters; returns once the broker has it."""
        letter = dead_letter(raw, reason=reason, error_type=error_type, group=self._group_id)
        metrics.dead_letters.add(
            1, {"messaging.destination.name": raw.topic, "error.type": error_type}
        )
        log.warning(
            "dead-lettering %s[%d]@%d to %s: %s",
            raw.topic,
            raw.partition,
            raw.offset,
            letter.topic,
            letter.reason,
        )
        await self._send(letter)

    async def _refuse(self, raw: RawRecord, refused: SignatureError) -> None:
        """A record that failed its signature check: to the security dead letters."""
        reason = str(refused)
        letter = dead_letter(raw, reason=reason, error_type="SignatureError", group=self._group_id)
        letter = dataclasses.replace(letter, topic=self._security_topic)
        metrics.security_rejected.add(
            1, {"messaging.destination.name": raw.topic, "error.type": refused.kind}
        )
        log.warning(
            "refusing %s[%d]@%d (%s) to %s",
            raw.topic,
            raw.partition,
            raw.offset,
            reason,
            letter.topic,
        )
        await self._send(letter)

    async def _send(self, letter: DeadLetter) -> None:
        # The offset must not be committed before the dead letter is durable:
        # keep trying (this partition only) until it is, or until shutdown.
        delay = 0.1
        while True:
            try:
                await send_dead_letter(self._publisher, letter)
                return
            except MessageTooLarge:
                raise  # too large even when shrunk: not a thing to retry
            except Exception as exc:
                if self._stopping():
                    raise Abandoned(describe_error(exc)) from exc
                log.error(
                    "dead letter to %s failed (%s); retrying", letter.topic, describe_error(exc)
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
