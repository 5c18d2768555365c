"""Producer safety settings and topic provisioning, against the real broker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from saga.errors import IdempotenceUnsupported, MessageTooLarge
from saga.kafka.consumer import Consumer
from saga.kafka.provisioning import ensure_topics
from saga.kafka.publisher import Publisher
from saga.messages.base import Message
from saga.messages.codec import encode
from saga.messages.envelope import Envelope
from saga.messages.lifecycle import SagaFinished
from saga.messages.registry import MessageRegistry
from saga.settings import Settings
from tests.conftest import Infra
from tests.kafka_helpers import running


def cancel(reason: str) -> Envelope[SagaFinished]:
    return Envelope(
        payload=SagaFinished(saga_type="order", status="parked", reason=reason),
        saga_id="o-big",
        source="/coordinator",
    )


async def test_idempotent_producer_rejected_by_the_broker_names_the_setting(
    infra: Infra, settings: Settings
) -> None:
    if not infra.embedded_broker:
        pytest.skip("only the embedded broker rejects idempotent producers")
    strict = settings.model_copy(update={"enable_idempotence": True})
    with pytest.raises(IdempotenceUnsupported, match="SAGA_ENABLE_IDEMPOTENCE=false"):
        async with Publisher(strict):
            pass


async def test_producer_waits_for_all_replicas_compresses_and_is_idempotent_by_default(
    infra: Infra, settings: Settings, unique: Callable[[str], str]
) -> None:
    default = Publisher(settings.model_copy(update={"enable_idempotence": True}))
    off = Publisher(settings.model_copy(update={"enable_idempotence": False}))
    assert Settings().enable_idempotence is True
    for publisher in (default, off):
        assert publisher._producer._sender._acks == -1  # acks=all
        assert publisher._producer._compression_type == "gzip"
    assert default._producer._txn_manager is not None  # idempotent
    assert off._producer._txn_manager is None
    await default.stop()
    await off.stop()
    if not infra.embedded_broker:
        # A broker that supports it (Apache Kafka) takes the idempotent producer.
        topic = unique("orders.commands")
        await ensure_topics(settings, [topic])
        async with Publisher(settings.model_copy(update={"enable_idempotence": True})) as strict:
            await strict.publish(topic, cancel("idempotent"))


async def test_oversized_record_fails_on_publish_with_a_clear_error_and_is_not_sent(
    settings: Settings, unique: Callable[[str], str]
) -> None:
    topic = unique("orders.commands")
    await ensure_topics(settings, [topic], partitions=1)
    small = settings.model_copy(update={"max_message_bytes": 4096})
    async with Publisher(small) as publisher:
        with pytest.raises(MessageTooLarge, match="over the limit of 4096 bytes") as caught:
            await publisher.publish(topic, cancel("x" * 10_000))
        assert "SAGA_MAX_MESSAGE_BYTES" in str(caught.value)
        await publisher.publish(topic, cancel("fits"))
    reader = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
    )
    await reader.start()
    try:
        batches = await reader.getmany(timeout_ms=3000)
        records = [r for batch in batches.values() for r in batch]
    finally:
        await reader.stop()
    assert len(records) == 1, "only the record that fits was sent"


async def test_a_record_larger_than_our_limit_is_not_skipped_silently_on_consume(
    settings: Settings, unique: Callable[[str], str], registry: MessageRegistry
) -> None:
    """A foreign producer writes past our limit: we still read and handle it."""
    topic = unique("orders.commands")
    await ensure_topics(settings, [topic], partitions=1)
    big = cancel("y" * 40_000)
    record = encode(big)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, max_request_size=200_000
    )
    await producer.start()
    try:
        await producer.send_and_wait(topic, record.value, key=record.key, headers=record.headers)
    finally:
        await producer.stop()
    received: asyncio.Queue[Envelope[Message]] = asyncio.Queue()
    small = settings.model_copy(update={"max_message_bytes": 8192})
    consumer = Consumer(
        small, topics=[topic], group_id=unique("g"), handler=received.put, registry=registry
    )
    async with running(consumer):
        got = await asyncio.wait_for(received.get(), 30)
    assert got == big


async def test_missing_topics_and_their_dead_letter_topics_are_created_once(
    settings: Settings, unique: Callable[[str], str]
) -> None:
    events, commands = unique("inventory.events"), unique("inventory.commands")
    created = await ensure_topics(settings, [events, commands], partitions=4)
    assert sorted(created) == sorted([events, f"{events}.dlq", commands, f"{commands}.dlq"])
    assert await ensure_topics(settings, [events, commands]) == []
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_topics([events, f"{commands}.dlq"])
    finally:
        await admin.close()
    assert [len(t["partitions"]) for t in described] == [4, 4]
