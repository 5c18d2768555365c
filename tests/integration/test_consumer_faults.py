"""Killed and stopped consumers: nothing handled is lost, nothing unhandled is committed."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Callable

import asyncpg

from contracts.orders import OrderPlaced
from saga.kafka.provisioning import ensure_topics
from saga.kafka.publisher import Publisher
from saga.messages.envelope import Envelope
from saga.settings import Settings
from tests.conftest import Infra
from tests.kafka_helpers import committed_offsets
from tests.process_helpers import child

MODULE = "tests.integration.consumer_process"


def order(saga_id: str) -> Envelope[OrderPlaced]:
    return Envelope(
        payload=OrderPlaced(order_id=saga_id, customer_id="c", amount_cents=1),
        saga_id=saga_id,
        source="/services/orders",
    )


def args(infra: Infra, topic: str, group: str, table: str, *extra: str) -> list[str]:
    return [
        "--bootstrap",
        infra.bootstrap_servers,
        "--database-url",
        infra.database_url,
        "--topic",
        topic,
        "--group",
        group,
        "--table",
        table,
        *extra,
    ]


async def handlings(infra: Infra, table: str, message_id: str) -> list[int]:
    db = await asyncpg.connect(infra.database_url)
    try:
        rows = await db.fetch(f"SELECT pid FROM {table} WHERE message_id = $1", message_id)  # noqa: S608
    finally:
        await db.close()
    return [row["pid"] for row in rows]


async def test_consumer_killed_after_handling_but_before_commit_gets_the_record_again(
    infra: Infra, settings: Settings, unique: Callable[[str], str]
) -> None:
    topic, group = unique("orders.events"), unique("inventory")
    table = f"handled_{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, [topic], partitions=1)
    sent = order("order-kill")
    async with Publisher(settings) as publisher:
        await publisher.publish(topic, sent)

    # Commits only every 10 minutes: the record is handled, never committed.
    async with child(
        MODULE, *args(infra, topic, group, table, "--commit-interval-ms", "600000")
    ) as first:
        await first.wait_for_line(f"handled {sent.id}")
        await first.signal(signal.SIGKILL)
        assert await first.wait() == -signal.SIGKILL
    assert await committed_offsets(settings, group, topic) == {0: None}

    async with child(MODULE, *args(infra, topic, group, table)) as second:
        await second.wait_for_line(f"handled {sent.id}")
        await second.signal(signal.SIGTERM)
        assert await second.wait() == 0

    pids = await handlings(infra, table, sent.id)
    assert pids == [first.pid, second.pid], "handled once by each consumer"
    assert await committed_offsets(settings, group, topic) == {0: 1}


async def test_sigterm_finishes_the_in_flight_record_commits_it_and_exits_cleanly(
    infra: Infra, settings: Settings, unique: Callable[[str], str]
) -> None:
    topic, group = unique("orders.events"), unique("inventory")
    table = f"handled_{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, [topic], partitions=1)
    sent = [order(f"order-{i}") for i in range(3)]
    async with Publisher(settings) as publisher:
        await publisher.publish_many([(topic, e) for e in sent])

    extra = ("--commit-interval-ms", "600000", "--handle-seconds", "1.0")
    async with child(MODULE, *args(infra, topic, group, table, *extra)) as consumer:
        await consumer.wait_for_line(f"started {sent[0].id}")
        await consumer.signal(signal.SIGTERM)
        assert await consumer.wait() == 0
    assert f"handled {sent[0].id}" in consumer.lines, "in-flight record finished"
    assert f"started {sent[1].id}" not in consumer.lines, "nothing new started after SIGTERM"
    assert consumer.lines[-1] == "stopped"
    assert await committed_offsets(settings, group, topic) == {0: 1}
    assert await handlings(infra, table, sent[0].id) == [consumer.pid]
