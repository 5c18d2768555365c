"""A decision that raises holds up neither its batch, nor the timers, nor the partition.

A decision that raises is retried for a while (the saga's events read on other
partitions may change it); one that keeps raising is a defect (of a definition or of
the coordinator), not a passing trouble. The fact is set aside (refused), noted in the
saga log, and everything else goes on; an event is dead-lettered with the reason, and
decided normally if it is sent again after a fix.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest
from pydantic import SecretStr

from saga.coordinator import apply
from saga.coordinator.apply import REFUSED_TIMER_DELAY, Coordinator, DecisionError
from saga.coordinator.decide import DEADLINE, Decision, Incoming, decide
from saga.coordinator.runtime import CoordinatorRuntime
from saga.coordinator.state import SagaState
from saga.definition.saga import SagaDefinition
from saga.kafka.provisioning import ensure_topics
from saga.kafka.publisher import Publisher
from saga.messages import headers as h
from saga.messages.codec import encode
from saga.messages.topics import dead_letter_topic
from saga.outbox.store import PostgresServiceStore
from saga.settings import Settings
from tests.conftest import Infra
from tests.integration.sagas import relaxed
from tests.kafka_helpers import committed_offsets, eventually, read_records
from tests.system_helpers import fresh_database, happy_events

BROKEN = "broken"


@pytest.fixture
def defect(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Deciding raises for the sagas named in the returned set (a defect in deciding)."""
    broken: set[str] = set()

    def deciding(
        state: SagaState | None,
        incoming: Incoming,
        definition: SagaDefinition,
        now: datetime,
        **options: Any,
    ) -> Decision:
        if incoming.saga_id in broken:
            raise KeyError(f"no step for {incoming.type}")
        return decide(state, incoming, definition, now, **options)

    monkeypatch.setattr(apply, "decide", deciding)
    return broken


async def _log(database: str, saga_id: str) -> list[tuple[str, str, str | None]]:
    db = await asyncpg.connect(database)
    try:
        rows = await db.fetch(
            "SELECT kind, type, detail->>'why' AS why FROM saga_log WHERE saga_id = $1 ORDER BY id",
            saga_id,
        )
    finally:
        await db.close()
    return [(row["kind"], row["type"], row["why"]) for row in rows]


@pytest.fixture
async def deciding(infra: Infra) -> AsyncIterator[tuple[Coordinator, str]]:
    """A coordinator on a database of its own, and that database's URL."""
    database = fresh_database(infra.database_url)
    outbox = PostgresServiceStore(database, "coordinator", components=("coordinator",))
    await outbox.start()
    try:
        coordinator = Coordinator(relaxed(), outbox)
        coordinator.refuse_after_s = 0  # refused the first time it raises
        yield coordinator, database
    finally:
        await outbox.stop()


async def test_an_event_whose_decision_raises_is_refused_and_the_rest_of_its_batch_is_decided(
    deciding: tuple[Coordinator, str], defect: set[str]
) -> None:
    coordinator, database = deciding
    good = [e for _, e in happy_events("good")]
    bad = [e for _, e in happy_events(BROKEN)]
    defect.add(BROKEN)
    coordinator.refuse_after_s = 60
    with pytest.raises(DecisionError):  # not refused yet: retried, the saga may change
        await coordinator.apply_events([good[0], bad[0], good[1]])
    coordinator.refuse_after_s = 0

    applied = await coordinator.apply_events([good[0], bad[0], good[1]])

    assert set(applied.refused) == {bad[0].id}
    reason = str(applied.refused[bad[0].id])
    assert reason == (
        f"deciding on orders.OrderPlaced for saga {BROKEN} failed:"
        " KeyError: 'no step for orders.OrderPlaced'"
    )
    assert [kind for kind, _, _ in await _log(database, "good")] == [
        "event",
        "event",
        "decision",
        "decision",
    ]
    assert await _log(database, BROKEN) == [("refused", "orders.OrderPlaced", reason)]

    # Fixed (and the event sent again from its dead-letter topic): decided as any other.
    defect.clear()
    again = await coordinator.apply_events([bad[0]])
    assert again.refused == {}
    assert [kind for kind, _, _ in await _log(database, BROKEN)] == [
        "refused",
        "event",
        "decision",
    ]


async def test_a_timer_whose_decision_raises_is_put_off_and_the_other_timers_fire(
    deciding: tuple[Coordinator, str], defect: set[str]
) -> None:
    coordinator, database = deciding
    started = [happy_events(saga)[0][1] for saga in ("late", BROKEN)]
    assert (await coordinator.apply_events(started)).refused == {}
    async with coordinator.pool.acquire() as db:
        await db.execute(
            "UPDATE saga_timers SET due_at = now() - interval '1 second' WHERE name = $1",
            DEADLINE,
        )
    defect.add(BROKEN)

    fired, _ = await coordinator.fire_due_timers()

    assert fired == 2
    async with coordinator.pool.acquire() as db:
        status = await db.fetchval("SELECT status FROM saga_instances WHERE saga_id = 'late'")
        put_off = await db.fetchval(
            "SELECT due_at - now() FROM saga_timers WHERE saga_id = $1 AND name = $2",
            BROKEN,
            DEADLINE,
        )
    assert status == "compensating", "the other saga's deadline fired"
    assert REFUSED_TIMER_DELAY - timedelta(seconds=10) < put_off <= REFUSED_TIMER_DELAY
    assert await _log(database, BROKEN) == [
        ("event", "orders.OrderPlaced", None),
        ("decision", "orders.OrderPlaced", None),
        (
            "refused",
            DEADLINE,
            f"deciding on {DEADLINE} for saga {BROKEN} failed: KeyError: 'no step for deadline'",
        ),
    ]
    assert await coordinator.fire_due_timers() == (0, []), "not due again before its delay"


async def test_a_timer_that_raised_and_then_fired_is_no_longer_counted_as_raising(
    deciding: tuple[Coordinator, str], defect: set[str]
) -> None:
    coordinator, _ = deciding
    coordinator.refuse_after_s = 60
    assert (await coordinator.apply_events([happy_events(BROKEN)[0][1]])).refused == {}
    async with coordinator.pool.acquire() as db:
        due = await db.fetchval(
            "WITH due AS (UPDATE saga_timers SET due_at = now() - interval '1 second'"
            " RETURNING 1) SELECT count(*) FROM due"
        )
    defect.add(BROKEN)
    with pytest.raises(DecisionError):
        await coordinator.fire_due_timers()
    assert len(coordinator._raising) == 1

    defect.clear()  # (the saga's state changed, or a fix was deployed)
    fired, _ = await coordinator.fire_due_timers()

    assert fired == due
    assert coordinator._raising == {}, "its first failure is forgotten: nothing held"


async def test_the_coordinator_dead_letters_a_refused_event_and_moves_on(
    settings: Settings, infra: Infra, unique: Callable[[str], str], defect: set[str]
) -> None:
    database = fresh_database(infra.database_url)
    mine = settings.model_copy(
        update={
            "topic_prefix": unique("c") + ".",
            "database_url": SecretStr(database),
            "health_port": None,
        }
    )
    prefix = mine.topic_prefix
    topic = f"{prefix}orders.events"
    await ensure_topics(mine, [topic], partitions=1)
    defect.add(BROKEN)
    placed = {saga: happy_events(saga)[0][1] for saga in (BROKEN, "after")}
    async with Publisher(mine) as publisher:
        for envelope in placed.values():
            await publisher.publish(topic, envelope)
    runtime = CoordinatorRuntime(relaxed(), mine)
    runtime.coordinator.refuse_after_s = 0.5  # retried until then, refused after
    await runtime.start()
    serving = asyncio.create_task(runtime.run())
    try:

        async def decided_after() -> bool:
            return ("decision", "orders.OrderPlaced", None) in await _log(database, "after")

        await eventually(decided_after, what="the event after the refused one decided")

        async def committed() -> bool:
            return await committed_offsets(mine, f"{prefix}saga-coordinator", topic) == {0: 2}

        await eventually(committed, what="offsets committed past both events")
    finally:
        runtime.consumer.stop()
        await serving
    [letter] = await read_records(mine, dead_letter_topic(topic), 1)
    headers = dict(letter.headers)
    assert letter.value == encode(placed[BROKEN]).value
    assert headers[h.DLQ_ERROR_TYPE] == b"DecisionError"
    assert headers[h.DLQ_REASON].decode() == (
        f"DecisionError: deciding on orders.OrderPlaced for saga {BROKEN} failed:"
        " KeyError: 'no step for orders.OrderPlaced'"
    )
    assert [kind for kind, _, _ in await _log(database, BROKEN)] == ["refused"]
