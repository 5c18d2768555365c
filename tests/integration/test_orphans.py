"""Stray step events, on the real broker and database with the real coordinator process:
an event of a saga never started opens nothing, and is dead-lettered after its hold; one
read before its saga's start event (within the hold) is decided right after it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import asyncpg
import pytest
from aiokafka.partitioner import murmur2

from saga.kafka.publisher import Publisher
from saga.messages import headers as h
from saga.messages.codec import encode
from tests.conftest import Infra
from tests.integration.test_coordinator import ids, launch, until
from tests.kafka_helpers import eventually, read_available
from tests.system_helpers import System, happy_events

HOLD_S = 2.0
PARTITIONS = 3  # SAGA_TOPIC_PARTITIONS of tests.system_helpers.System


@pytest.fixture(scope="module")
def coordinator(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """The coordinator alone (the test publishes the services' events), holding a
    stray event for 2 s."""
    logs = tmp_path_factory.mktemp("orphan-logs")
    env = {"SAGA_ORPHAN_HOLD_MS": str(int(HOLD_S * 1000))}
    with launch(infra, logs, "coordinator", env=env) as running:
        yield running


def partition_of(saga_id: str) -> int:
    """The partition a record keyed ``saga_id`` lands on (the client's default)."""
    return int(murmur2(saga_id.encode()) & 0x7FFFFFFF) % PARTITIONS


async def rows_of(database_url: str, saga_id: str) -> dict[str, int]:
    """How many rows each coordinator table holds for ``saga_id``."""
    connection = await asyncpg.connect(database_url)
    try:
        return {
            table: int(
                await connection.fetchval(
                    f"SELECT count(*) FROM {table} WHERE saga_id = $1",  # noqa: S608 (fixed names)
                    saga_id,
                )
            )
            for table in ("saga_instances", "saga_timers", "saga_held_events", "saga_log")
        }
    finally:
        await connection.close()


async def log_of(database_url: str, saga_id: str) -> list[str]:
    """``<kind> <type>`` of each entry of the saga log of ``saga_id``, in order."""
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT kind, type FROM saga_log WHERE saga_id = $1 ORDER BY id", saga_id
        )
    finally:
        await connection.close()
    return [f"{r['kind']} {r['type']}" for r in rows]


async def test_a_step_event_of_a_saga_never_started_is_dead_lettered_after_its_hold(
    coordinator: System,
) -> None:
    [orphan] = ids("orphan", 1)
    topic, charged = happy_events(orphan)[2]  # a valid PaymentCharged, no OrderPlaced ever
    payment_events = f"{coordinator.prefix}{topic}"
    record = encode(charged)
    async with Publisher(coordinator.settings) as publisher:
        sent = await publisher.publish_raw(
            payment_events, key=record.key, value=record.value, headers=record.headers
        )
        published_at = time.monotonic()
        # A later saga whose payment event shares the orphan's partition.
        later = next(
            f"{orphan}-after-{i}"
            for i in range(1000)
            if partition_of(f"{orphan}-after-{i}") == sent.partition
        )
        landed = [
            await publisher.publish(f"{coordinator.prefix}{t}", e) for t, e in happy_events(later)
        ]
    assert landed[2].partition == sent.partition, "the later saga reads the same partition"
    await until(coordinator, [later], "completed", timeout_s=30)
    assert time.monotonic() - published_at < HOLD_S + 30

    async def dead_lettered() -> bool:
        return any(
            dict(r.headers).get(h.ID) == charged.id.encode()
            for r in await read_available(coordinator.settings, f"{payment_events}.dlq", idle_s=1.5)
        )

    await eventually(dead_lettered, timeout_s=30, what="the orphan's dead letter")
    assert time.monotonic() - published_at >= HOLD_S, "held for its hold first"
    [letter] = [
        r
        for r in await read_available(coordinator.settings, f"{payment_events}.dlq")
        if dict(r.headers).get(h.ID) == charged.id.encode()
    ]
    headers = dict(letter.headers)
    assert headers[h.DLQ_ERROR_TYPE] == b"OrphanEvent"
    assert (
        headers[h.DLQ_REASON]
        .decode()
        .startswith(f"orphan: no saga {orphan} was started within 2s of this event")
    )
    assert (headers[h.DLQ_TOPIC], headers[h.DLQ_PARTITION], headers[h.DLQ_OFFSET]) == (
        payment_events.encode(),
        str(sent.partition).encode(),
        str(sent.offset).encode(),
    )
    assert headers[h.DLQ_GROUP] == f"{coordinator.prefix}saga-coordinator".encode()
    assert (letter.key, letter.value) == (record.key, record.value), "the record as it was"
    assert await rows_of(coordinator.database_url, orphan) == {
        "saga_instances": 0,
        "saga_timers": 0,
        "saga_held_events": 0,
        "saga_log": 0,
    }, "no saga, no timer, nothing held or logged is left of it"
    await asyncio.sleep(HOLD_S)
    again = [
        r
        for r in await read_available(coordinator.settings, f"{payment_events}.dlq")
        if dict(r.headers).get(h.ID) == charged.id.encode()
    ]
    assert len(again) == 1, "dead-lettered once"


async def test_a_step_event_read_before_its_start_event_is_decided_right_after_it(
    coordinator: System,
) -> None:
    [saga_id] = ids("early", 1)
    events = happy_events(saga_id)
    (orders_topic, placed), (inventory_topic, reserved) = events[0], events[1]
    async with Publisher(coordinator.settings) as publisher:
        await publisher.publish(f"{coordinator.prefix}{inventory_topic}", reserved)

        async def kept() -> bool:
            return (await rows_of(coordinator.database_url, saga_id))["saga_held_events"] == 1

        await eventually(kept, timeout_s=HOLD_S, what="the early event held")
        assert (await rows_of(coordinator.database_url, saga_id))["saga_instances"] == 0
        await publisher.publish(f"{coordinator.prefix}{orders_topic}", placed)
        for topic, event in events[2:]:
            await publisher.publish(f"{coordinator.prefix}{topic}", event)
    await until(coordinator, [saga_id], "completed", timeout_s=30)
    state = (await coordinator.sagas([saga_id]))[saga_id]
    assert state["steps"]["reserve"]["status"] == "completed"
    assert (await rows_of(coordinator.database_url, saga_id))["saga_held_events"] == 0
    decided = [
        e for e in await log_of(coordinator.database_url, saga_id) if not e.startswith("event ")
    ]
    # Every event read before the order (others may have been, from their topics) was
    # held, then decided right after the order, in the order held.
    start = decided.index("decision orders.OrderPlaced")
    held = [e.removeprefix("held ") for e in decided[:start]]
    assert held[0] == "inventory.InventoryReserved", decided
    assert all(e.startswith("held ") for e in decided[:start]), decided
    after = [e.removeprefix("decision ") for e in decided[start + 1 : start + 1 + len(held)]]
    assert after == held, decided
    await asyncio.sleep(HOLD_S + 0.5)
    letters = await read_available(
        coordinator.settings, f"{coordinator.prefix}{inventory_topic}.dlq", idle_s=1.5
    )
    assert not [r for r in letters if dict(r.headers).get(h.ID) == reserved.id.encode()]
