"""Bad input goes to <topic>.dlq with its reason, and the partition moves on."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest

from contracts.orders import OrderPlaced
from saga.kafka.consumer import Consumer
from saga.kafka.provisioning import ensure_topics
from saga.kafka.publisher import Publisher
from saga.messages import headers as h
from saga.messages.base import Message
from saga.messages.codec import encode
from saga.messages.envelope import Envelope
from saga.messages.registry import MessageRegistry
from saga.messages.topics import dead_letter_topic
from saga.settings import Settings
from tests.kafka_helpers import committed_offsets, eventually, read_records, running

SAGA = "order-dlq"


def good(amount: int = 100) -> Envelope[OrderPlaced]:
    return Envelope(
        payload=OrderPlaced(order_id=SAGA, customer_id="c", amount_cents=amount),
        saga_id=SAGA,
        source="/services/orders",
    )


def replaced(headers: list[tuple[str, bytes]], name: str, value: bytes) -> list[tuple[str, bytes]]:
    return [(n, value if n == name else v) for n, v in headers]


async def test_each_kind_of_bad_record_is_dead_lettered_and_the_next_good_one_handled(
    settings: Settings, unique: Callable[[str], str], registry: MessageRegistry
) -> None:
    topic = unique("orders.events")
    group = unique("inventory")
    await ensure_topics(settings, [topic], partitions=1)
    base = encode(good())
    bad = [
        ("not JSON", base.value[:-3] + b"<<<", base.headers, "NotJson", "record value is not JSON"),
        (
            "schema-invalid",
            json.dumps({"order_id": SAGA, "customer_id": "c", "amount_cents": -5}).encode(),
            base.headers,
            "PayloadValidationFailed",
            "amount_cents: Input should be greater than 0",
        ),
        (
            "unknown type",
            base.value,
            replaced(base.headers, h.TYPE, b"orders.OrderTeleported"),
            "UnknownMessageType",
            "unknown message type 'orders.OrderTeleported'",
        ),
        (
            "missing header",
            base.value,
            [(n, v) for n, v in base.headers if n != h.SAGA_ID],
            "MissingHeader",
            "missing required header 'ce_sagaid'",
        ),
        (
            "unknown version",
            base.value,
            replaced(base.headers, h.SCHEMA_VERSION, b"9"),
            "UnknownSchemaVersion",
            "schema version 9: newer than the newest known version 2",
        ),
        (
            "a NUL in the saga id",
            base.value,
            replaced(base.headers, h.SAGA_ID, SAGA.encode() + b"\x00"),
            "InvalidHeader",
            "invalid header 'ce_sagaid': holds a control character (U+0000)",
        ),
        (
            "a NUL in a payload string",
            json.dumps({"order_id": SAGA, "customer_id": "c\u0000", "amount_cents": 5}).encode(),
            base.headers,
            "PayloadValidationFailed",
            "a string of the payload holds a NUL character (U+0000)",
        ),
    ]
    handled: list[Envelope[Message]] = []

    async def handle(envelope: Envelope[Message]) -> None:
        handled.append(envelope)

    consumer = Consumer(settings, topics=[topic], group_id=group, handler=handle, registry=registry)
    after = good(amount=777)
    async with Publisher(settings) as publisher:
        for _, value, headers, _, _ in bad:
            await publisher.publish_raw(topic, key=SAGA.encode(), value=value, headers=headers)
        await publisher.publish(topic, after)
    async with running(consumer):
        await eventually(lambda: len(handled) == 1, what="the good record after the bad ones")

        async def all_committed() -> bool:
            return (await committed_offsets(settings, group, topic)) == {0: len(bad) + 1}

        await eventually(all_committed, what="offsets committed past every record")

    assert handled[0].id == after.id
    letters = await read_records(settings, dead_letter_topic(topic), len(bad))
    assert len(letters) == len(bad)
    for offset, (letter, (what, value, headers, error_type, reason)) in enumerate(
        zip(letters, bad, strict=True)
    ):
        got = dict(letter.headers)
        assert letter.key == SAGA.encode(), what
        assert letter.value == value, what
        assert got[h.DLQ_ERROR_TYPE].decode() == error_type, what
        assert reason in got[h.DLQ_REASON].decode(), what
        assert got[h.DLQ_TOPIC].decode() == topic
        assert got[h.DLQ_PARTITION] == b"0"
        assert got[h.DLQ_OFFSET] == str(offset).encode()
        assert got[h.DLQ_GROUP].decode() == group
        assert list(letter.headers)[: len(headers)] == headers, f"{what}: original headers kept"


async def test_a_handler_that_keeps_failing_is_dead_lettered_after_its_attempts(
    settings: Settings, unique: Callable[[str], str], registry: MessageRegistry
) -> None:
    topic = unique("orders.events")
    await ensure_topics(settings, [topic], partitions=1)
    attempts: dict[int, int] = {}
    handled: list[int] = []

    async def handle(envelope: Envelope[Message]) -> None:
        assert isinstance(envelope.payload, OrderPlaced)
        amount = envelope.payload.amount_cents
        attempts[amount] = attempts.get(amount, 0) + 1
        if amount == 1:
            raise ConnectionError("stock service unreachable")
        if amount == 2 and attempts[amount] < 3:
            raise TimeoutError("slow, then fine")
        handled.append(amount)

    consumer = Consumer(
        settings, topics=[topic], group_id=unique("g"), handler=handle, registry=registry
    )
    async with Publisher(settings) as publisher:
        for amount in (1, 2, 3):
            await publisher.publish(topic, good(amount))
    async with running(consumer):
        await eventually(lambda: handled == [2, 3], what="records after the failing one")
    assert attempts == {1: settings.handler_max_attempts, 2: 3, 3: 1}
    [letter] = await read_records(settings, dead_letter_topic(topic), 1)
    got = dict(letter.headers)
    assert got[h.DLQ_ERROR_TYPE] == b"ConnectionError"
    assert (
        got[h.DLQ_REASON]
        == (
            f"handler failed after {settings.handler_max_attempts} attempt(s): "
            "ConnectionError: stock service unreachable"
        ).encode()
    )


@pytest.mark.parametrize("partitions", [4])
async def test_a_stuck_partition_does_not_block_the_others(
    settings: Settings, unique: Callable[[str], str], registry: MessageRegistry, partitions: int
) -> None:
    topic = unique("orders.events")
    await ensure_topics(settings, [topic], partitions=partitions)
    release = asyncio.Event()
    handled: list[str] = []

    async def handle(envelope: Envelope[Message]) -> None:
        if envelope.saga_id == "stuck":
            await release.wait()
        handled.append(envelope.saga_id)

    consumer = Consumer(
        settings, topics=[topic], group_id=unique("g"), handler=handle, registry=registry
    )
    others = [f"saga-{i}" for i in range(12)]
    async with running(consumer), Publisher(settings) as publisher:
        stuck = await publisher.publish(topic, good().replace(saga_id="stuck"))
        placed = [await publisher.publish(topic, good().replace(saga_id=s)) for s in others]
        elsewhere = {
            s for s, p in zip(others, placed, strict=True) if p.partition != stuck.partition
        }
        assert elsewhere, "keys spread over partitions"
        await eventually(
            lambda: elsewhere <= set(handled), what="other partitions while one is stuck"
        )
        assert "stuck" not in handled
        release.set()
        await eventually(lambda: "stuck" in handled, what="the stuck record after release")


async def test_bad_record_too_large_to_dead_letter_whole_is_dead_lettered_without_its_value(
    settings: Settings, unique: Callable[[str], str], registry: MessageRegistry
) -> None:
    topic = unique("orders.events")
    await ensure_topics(settings, [topic], partitions=1)
    limit = 8192
    base = encode(good())
    # Just fits as produced (128 bytes of framing are counted too); the dead-letter
    # headers (about 250 bytes) push it over.
    framing = len(SAGA) + sum(len(n) + len(v) for n, v in base.headers) + 128
    huge_garbage = b"<" * (limit - framing - 50)
    handled: list[Envelope[Message]] = []

    async def handle(envelope: Envelope[Message]) -> None:
        handled.append(envelope)

    tight = settings.model_copy(update={"max_message_bytes": limit})
    async with Publisher(tight) as publisher:
        await publisher.publish_raw(
            topic, key=SAGA.encode(), value=huge_garbage, headers=base.headers
        )
        await publisher.publish(topic, good(5))
    consumer = Consumer(
        tight, topics=[topic], group_id=unique("g"), handler=handle, registry=registry
    )
    async with running(consumer):
        await eventually(lambda: len(handled) == 1, what="the record after the oversized one")
    [letter] = await read_records(settings, dead_letter_topic(topic), 1)
    got = dict(letter.headers)
    assert letter.value is None
    assert b"left out: over the size limit" in got[h.DLQ_VALUE_OMITTED]
    assert got[h.DLQ_OFFSET] == b"0"
    assert got[h.DLQ_ERROR_TYPE] == b"NotJson"


async def test_a_failing_handler_interrupted_by_shutdown_is_not_dead_lettered_nor_committed(
    settings: Settings, unique: Callable[[str], str], registry: MessageRegistry
) -> None:
    topic, group = unique("orders.events"), unique("g")
    await ensure_topics(settings, [topic], partitions=1)
    failing = asyncio.Event()

    async def handle(envelope: Envelope[Message]) -> None:
        failing.set()
        raise ConnectionError("database down")

    patient = settings.model_copy(
        update={"handler_max_attempts": 1000, "handler_retry_initial_ms": 50}
    )
    consumer = Consumer(patient, topics=[topic], group_id=group, handler=handle, registry=registry)
    async with Publisher(settings) as publisher:
        await publisher.publish(topic, good())
    async with running(consumer):
        await asyncio.wait_for(failing.wait(), 30)
    assert await committed_offsets(settings, group, topic) == {0: None}
    reader_settings = settings.model_copy(update={"fetch_max_wait_ms": 5})
    with pytest.raises(TimeoutError):
        await read_records(reader_settings, dead_letter_topic(topic), 1, timeout_s=2)
