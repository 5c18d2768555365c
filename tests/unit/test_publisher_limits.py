"""Size errors, whoever detects them, reach the caller as MessageTooLarge."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import MessageSizeTooLargeError

from saga.errors import MessageTooLarge
from saga.kafka.publisher import Publisher
from saga.messages.envelope import Envelope
from saga.messages.lifecycle import SagaFinished
from saga.settings import Settings


class RecordingProducer:
    """Stands in for the aiokafka producer: records sends, fails acks on demand."""

    def __init__(self, ack_error: Exception | None = None) -> None:
        self.sent: list[dict[str, Any]] = []
        self.ack_error = ack_error

    async def send(self, topic: str, **kwargs: Any) -> asyncio.Future[Any]:
        self.sent.append({"topic": topic, **kwargs})
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.ack_error is not None:
            future.set_exception(self.ack_error)
        return future


def cancel(reason: str) -> Envelope[SagaFinished]:
    return Envelope(
        payload=SagaFinished(saga_type="order", status="parked", reason=reason),
        saga_id="o",
        source="/c",
    )


def publisher(producer: RecordingProducer, limit: int = 2048) -> Publisher:
    pub = Publisher(Settings(max_message_bytes=limit, enable_idempotence=False))
    pub._producer = producer
    return pub


async def test_broker_rejection_for_size_is_a_message_too_large_naming_the_limits() -> None:
    pub = publisher(RecordingProducer(ack_error=MessageSizeTooLargeError()))
    with pytest.raises(MessageTooLarge, match="rejected by the broker as too large") as caught:
        await pub.publish("orders.commands", cancel("fits our limit"))
    assert "SAGA_MAX_MESSAGE_BYTES=2048" in str(caught.value)
    assert "max.message.bytes" in str(caught.value)


async def test_publish_many_sends_nothing_when_one_item_is_too_large() -> None:
    producer = RecordingProducer()
    pub = publisher(producer)
    items = [("t", cancel("small")), ("t", cancel("x" * 5000)), ("t", cancel("small too"))]
    with pytest.raises(MessageTooLarge, match="over the limit of 2048 bytes"):
        await pub.publish_many(items)
    assert producer.sent == []
