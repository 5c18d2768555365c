"""Publishing envelopes to Kafka: ``acks=all``, compression, idempotence on by default.

>>> async def place(settings: Settings, envelope: Envelope[Message]) -> None:
...     async with Publisher(settings) as publisher:
...         await publisher.publish("orders.events", envelope)

``publish`` returns once the broker acknowledged the record on all in-sync
replicas. A broker that rejects idempotent producers makes ``start`` fail with
:class:`~saga.errors.IdempotenceUnsupported`, which names the setting to change;
the framework never silently downgrades.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    KafkaConnectionError,
    MessageSizeTooLargeError,
    UnknownError,
    UnsupportedVersionError,
)
from opentelemetry.trace import Span

from saga.errors import IdempotenceUnsupported, MessageTooLarge
from saga.kafka.config import client_kwargs
from saga.messages.base import Message
from saga.messages.codec import EncodedRecord, Headers, encode
from saga.messages.envelope import Envelope
from saga.observability import tracing
from saga.security.signing import Signer
from saga.settings import Settings

# Record framing that counts against the broker's size limit on top of key,
# value and headers (record batch header and varints); see Kafka's DefaultRecord.
_RECORD_OVERHEAD = 128
#: The four signature headers, at most (an Ed25519 signature in base64, a key id, a nonce).
_SIGNATURE_BYTES = 320


@dataclass(frozen=True, slots=True)
class Published:
    """Where an acknowledged record landed."""

    topic: str
    partition: int
    offset: int


class Publisher:
    """A started aiokafka producer with the framework's safety settings."""

    def __init__(self, settings: Settings, *, client_id: str | None = None) -> None:
        self._settings = settings
        #: Signs every record sent (``SAGA_SIGNING_KEY_ID``), see :mod:`saga.security.signing`.
        self._signer = (
            Signer(settings.all_signing_keys(), settings.signing_key_id)
            if settings.signing_key_id
            else None
        )
        self._producer = AIOKafkaProducer(
            **client_kwargs(settings, client_id or f"{settings.client_id}-producer"),
            acks="all",
            enable_idempotence=settings.enable_idempotence,
            compression_type=(
                None if settings.compression_type == "none" else settings.compression_type
            ),
            linger_ms=settings.linger_ms,
            max_request_size=settings.max_message_bytes,
        )

    async def start(self) -> None:
        try:
            await self._producer.start()
        except KafkaConnectionError:
            await self._producer.stop()
            raise
        except (UnknownError, UnsupportedVersionError) as exc:
            await self._producer.stop()
            if self._settings.enable_idempotence:
                raise IdempotenceUnsupported(
                    self._settings.bootstrap_servers, f"{type(exc).__name__}: {exc}"
                ) from exc
            raise

    async def stop(self) -> None:
        """Flush what is pending and close."""
        await self._producer.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def publish(self, topic: str, envelope: Envelope[Message]) -> Published:
        """Send ``envelope`` (key = saga id) and wait for the broker's acknowledgement."""
        return await self.publish_record(topic, encode(envelope), message_type=envelope.type)

    async def publish_many(self, items: Sequence[tuple[str, Envelope[Message]]]) -> list[Published]:
        """Send several envelopes in one go; returns once all are acknowledged.

        Sizes are checked for all before any is sent: a too-large item fails the
        call with nothing sent.
        """
        outgoing = []
        for topic, envelope in items:
            record = encode(envelope)
            outgoing.append(
                _Outgoing.of(topic, record.key, record.value, record.headers, envelope.type)
            )
        return await self._publish_all(outgoing)

    async def publish_raw_many(
        self, records: Sequence[tuple[str, bytes | None, bytes | None, Headers]]
    ) -> list[Published]:
        """Send ``(topic, key, value, headers)`` records in this order; all or nothing sent."""
        return await self._publish_all(
            [
                _Outgoing.of(topic, key, value, headers, "<raw>")
                for topic, key, value, headers in records
            ]
        )

    async def _publish_all(self, outgoing: list[_Outgoing]) -> list[Published]:
        for item in outgoing:
            self._check_size(item)
        # Enqueued one after the other: per partition, the broker gets them in order.
        pending = []
        try:
            for item in outgoing:
                pending.append(await self._send(item))
        except BaseException as exc:
            tracing.end_spans([span for _, _, span in pending], exc)
            raise
        return list(await asyncio.gather(*(self._settle(*sent) for sent in pending)))

    async def publish_record(
        self, topic: str, record: EncodedRecord, *, message_type: str = "<raw>"
    ) -> Published:
        """Send an already encoded record and wait for its acknowledgement."""
        item = _Outgoing.of(topic, record.key, record.value, record.headers, message_type)
        return await self._publish(item)

    async def publish_raw(
        self, topic: str, *, key: bytes | None, value: bytes | None, headers: Headers
    ) -> Published:
        """Send bytes as they are, nulls included (used to dead-letter any record)."""
        return await self._publish(_Outgoing.of(topic, key, value, headers, "<raw>"))

    async def _publish(self, item: _Outgoing) -> Published:
        self._check_size(item)
        return await self._settle(*await self._send(item))

    def _check_size(self, item: _Outgoing) -> None:
        limit = usable_record_bytes(self._settings)  # a signature comes on top
        if item.size > limit:
            raise item.too_large(limit)

    async def _send(self, item: _Outgoing) -> tuple[_Outgoing, asyncio.Future[Any], Span]:
        span, headers = tracing.start_send_span(item.topic, item.headers)
        if self._signer is not None:
            headers = self._signer.sign(item.topic, item.key, item.value, headers)
        try:
            future: asyncio.Future[Any] = await self._producer.send(
                item.topic, value=item.value, key=item.key, headers=headers
            )
        except MessageSizeTooLargeError as exc:
            error = item.too_large(self._settings.max_message_bytes)
            tracing.end_spans([span], error)
            raise error from exc
        except BaseException as exc:
            tracing.end_spans([span], exc)
            raise
        return item, future, span

    async def _settle(self, item: _Outgoing, future: asyncio.Future[Any], span: Span) -> Published:
        try:
            meta = await future
        except MessageSizeTooLargeError as exc:
            # The broker's (or the topic's) limit is below ours.
            error = item.too_large(self._settings.max_message_bytes, by_broker=True)
            tracing.end_spans([span], error)
            raise error from exc
        except BaseException as exc:
            tracing.end_spans([span], exc)
            raise
        if span.is_recording():
            span.set_attribute("messaging.destination.partition.id", str(meta.partition))
            span.set_attribute("messaging.kafka.offset", meta.offset)
        span.end()
        return Published(topic=meta.topic, partition=meta.partition, offset=meta.offset)


def usable_record_bytes(settings: Settings) -> int:
    """What a record may take of ``SAGA_MAX_MESSAGE_BYTES`` (room is kept for a signature)."""
    return settings.max_message_bytes - (_SIGNATURE_BYTES if settings.signing_key_id else 0)


def record_size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """Bytes a record counts against the size limit (an estimate that errs high)."""
    return (
        len(key or b"")
        + len(value or b"")
        + sum(len(name) + len(v or b"") for name, v in headers)
        + _RECORD_OVERHEAD
    )


@dataclass(frozen=True, slots=True)
class _Outgoing:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    message_type: str
    size: int

    @classmethod
    def of(
        cls,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        message_type: str,
    ) -> _Outgoing:
        size = record_size(key, value, headers)
        return cls(topic, key, value, list(headers), message_type, size)

    def too_large(self, limit: int, *, by_broker: bool = False) -> MessageTooLarge:
        return MessageTooLarge(self.topic, self.message_type, self.size, limit, by_broker=by_broker)
