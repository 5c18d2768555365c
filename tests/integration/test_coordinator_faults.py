"""The coordinator killed at random moments, and two coordinators sharing the work."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import uuid
from pathlib import Path

import asyncpg
import pytest

from contracts.catalog import default_registry
from saga.coordinator.apply import Coordinator
from saga.kafka.publisher import Publisher
from saga.messages.base import Message
from saga.messages.codec import RawRecord, decode
from saga.messages.envelope import Envelope
from saga.outbox.relay import OutboxRelay
from saga.outbox.store import PostgresServiceStore
from tests.conftest import Infra
from tests.integration.sagas import relaxed
from tests.integration.test_coordinator import ALL, launch, until
from tests.kafka_helpers import eventually, read_available
from tests.system_helpers import System, happy_events


async def effects(running: System, topic: str, field: str) -> dict[str, int]:
    """Per saga, how many confirmations say the compensation really undid something."""
    records = await read_available(running.settings, f"{running.prefix}{topic}")
    counts: dict[str, int] = {}
    for record in records:
        if json.loads(record.value).get(field) is True:
            key = record.key.decode()
            counts[key] = counts.get(key, 0) + 1
    return counts


async def test_coordinator_killed_again_and_again_loses_no_compensation_and_doubles_none(
    infra: Infra, tmp_path: Path
) -> None:
    # Long step timers: a restart must not pass for a silent step (see docs).
    with launch(infra, tmp_path, *ALL, relaxed=True) as running:
        run = uuid.uuid4().hex[:6]
        ok = [f"ok-{run}-{i}" for i in range(10)]
        declined = [f"declined-{run}-{i}" for i in range(10)]
        unshippable = [f"nowhere-{run}-{i}" for i in range(10)]
        rng = random.Random(7)
        kills = 0
        for batch in range(10):
            for group, amount in ((ok, 1200), (declined, 60_000), (unshippable, 1200)):
                await running.place(group[batch], amount)
            if batch % 3 == 1:  # mid-flight: decisions, commits and compensations under way
                await asyncio.sleep(rng.uniform(0.05, 0.6))
                running.kill("coordinator", signal.SIGKILL)
                kills += 1
                running.start("coordinator")
        assert kills == 3
        await until(running, ok, "completed", timeout_s=120)
        await until(running, declined + unshippable, "compensated", timeout_s=120)
        for saga_id in declined:
            assert list(dict.fromkeys(await running.commands_sent(saga_id))) == [
                "inventory.ReleaseInventory"
            ]
        for saga_id in unshippable:
            assert list(dict.fromkeys(await running.commands_sent(saga_id))) == [
                "payment.RefundPayment",
                "inventory.ReleaseInventory",
            ]
        released = await effects(running, "inventory.events", "released")
        refunded = await effects(running, "payment.events", "refunded")
    # Each compensation took effect exactly once (repeats, if any, found nothing to undo).
    assert {s: released.get(s) for s in declined + unshippable} == {
        s: 1 for s in declined + unshippable
    }
    assert {s: refunded.get(s) for s in unshippable} == {s: 1 for s in unshippable}
    assert not set(released) & set(ok)


async def test_two_coordinators_over_1000_sagas_never_decide_twice_on_one_event(
    infra: Infra, tmp_path: Path
) -> None:
    # The services' events are written directly: this is about the coordinators.
    # Step timers are long: rebalances must not look like silent steps here.
    with launch(infra, tmp_path, "coordinator", relaxed=True) as running:
        running.start("coordinator", instance="-2")
        run = uuid.uuid4().hex[:6]
        sagas = [f"pair-{run}-{i}" for i in range(1000)]
        async with Publisher(running.settings) as publisher:
            for start in range(0, len(sagas), 100):
                await publisher.publish_many(
                    [
                        (f"{running.prefix}{topic}", envelope)
                        for saga_id in sagas[start : start + 100]
                        for topic, envelope in happy_events(saga_id)
                    ]
                )
                if start == 500:  # a rebalance in the middle of the traffic
                    running.kill("coordinator-2", signal.SIGKILL)
                    running.start("coordinator", instance="-2")
        await until(running, sagas, "completed", timeout_s=150)
        connection = await asyncpg.connect(running.database_url)
        try:
            # A saga may complete before all its events are read (a later one
            # proves the earlier ones): wait until every event is in the log.
            async def all_logged() -> bool:
                logged: int = await connection.fetchval(
                    "SELECT count(*) FROM saga_log WHERE kind = 'event'"
                )
                return logged == 5 * len(sagas)

            await eventually(all_logged, what="every event in the saga log")
            doubled = await connection.fetch(
                "SELECT detail->>'cause' AS cause, count(*) FROM saga_log"
                " WHERE kind IN ('decision', 'ignored') GROUP BY 1 HAVING count(*) > 1"
            )
            events = await connection.fetchval("SELECT count(*) FROM saga_log WHERE kind = 'event'")
            decisions = await connection.fetchval(
                "SELECT count(*) FROM saga_log WHERE kind IN ('decision', 'ignored')"
            )
        finally:
            await connection.close()
    assert doubled == [], f"events decided twice: {doubled[:5]}"
    assert events == decisions == 5 * len(sagas)


@pytest.mark.parametrize(
    "crashed", ["after commit, before publish", "after publish, before offsets"]
)
async def test_a_coordinator_crash_state_is_recovered_by_a_real_restart(
    infra: Infra, tmp_path: Path, crashed: str
) -> None:
    """The exact state a crash leaves is produced first, then a real coordinator recovers.

    Events and the decision are committed in PostgreSQL, but either the
    compensation command was never published, or it was and the offsets were
    never committed. A coordinator process started afterwards must publish the
    command exactly once, decide nothing twice, and finish the saga.
    """
    with launch(
        infra, tmp_path, "inventory", "payment", "shipping", "notification", relaxed=True
    ) as running:
        saga_id = f"declined-{uuid.uuid4().hex[:6]}"
        await running.place(saga_id, 60_000)  # reserved, then declined; no coordinator yet
        events = await _saga_events(running, saga_id, count=3)
        # Decided and committed: one compensation command in the outbox.
        await _decide_offline(running, events, publish=crashed == "after publish, before offsets")
        # ... and here the coordinator died. A new one starts:
        running.start("coordinator")
        await until(running, [saga_id], "compensated", timeout_s=60)
        commands = [
            r
            for r in await read_available(running.settings, f"{running.prefix}inventory.commands")
            if r.key.decode() == saga_id
        ]
        assert len(commands) == 1, "the command went out exactly once"
        assert await running.commands_sent(saga_id) == ["inventory.ReleaseInventory"]
        released = await effects(running, "inventory.events", "released")
        assert released.get(saga_id) == 1


async def _decide_offline(
    running: System, events: list[Envelope[Message]], *, publish: bool
) -> None:
    """What a coordinator does for ``events`` up to the moment it dies.

    The batch is decided and committed (one command in the outbox); with
    ``publish`` the command is also sent and marked sent, as the relay's next pass
    does. Offsets are never committed.
    """
    store = PostgresServiceStore(running.database_url, "coordinator", components=("coordinator",))
    await store.start()
    try:
        coordinator = Coordinator(relaxed(), store, topic_prefix=running.prefix)
        ids = (await coordinator.apply_events(events)).written
        assert len(ids) == 1, "one compensation command decided"
        if publish:
            async with Publisher(running.settings) as publisher:
                relay = OutboxRelay(store, publisher)
                assert await relay.publish(ids) == 1
                assert await relay.mark_acknowledged() == 1
    finally:
        await store.stop()


async def _saga_events(
    running: System,
    saga_id: str,
    count: int,
    services: tuple[str, ...] = ("orders", "inventory", "payment"),
) -> list[Envelope[Message]]:
    registry = default_registry()
    found: list[Envelope[Message]] = []
    for _ in range(100):
        found = []
        for service in services:
            topic = f"{running.prefix}{service}.events"
            for r in await read_available(running.settings, topic, idle_s=0.3):
                if r.key.decode() == saga_id:
                    found.append(
                        decode(
                            RawRecord(
                                topic, r.partition, r.offset, r.key, r.value, list(r.headers)
                            ),
                            registry,
                        )
                    )
        if len(found) >= count:
            return found
        await asyncio.sleep(0.2)
    raise AssertionError(f"only {len(found)} events of {saga_id}")


async def test_a_coordinator_that_died_between_two_compensations_finishes_them_after_restart(
    infra: Infra, tmp_path: Path
) -> None:
    """Crash (c): the first undo went out and was confirmed; the coordinator is gone."""
    with launch(
        infra, tmp_path, "inventory", "payment", "shipping", "notification", relaxed=True
    ) as running:
        saga_id = f"nowhere-{uuid.uuid4().hex[:6]}"
        await running.place(saga_id)  # reserved, charged, then no carrier
        events = await _saga_events(running, saga_id, count=4, services=SERVICES)
        await _decide_offline(running, events, publish=True)  # decides: refund first
        seen = await _saga_events(running, saga_id, count=5, services=SERVICES)
        assert "payment.PaymentRefunded" in {e.type for e in seen}, "the first undo is done"
        # The coordinator died here, mid-compensation. A new one starts:
        running.start("coordinator")
        await until(running, [saga_id], "compensated", timeout_s=60)
        assert await running.commands_sent(saga_id) == [
            "payment.RefundPayment",
            "inventory.ReleaseInventory",
        ]
        assert (await effects(running, "payment.events", "refunded")).get(saga_id) == 1
        assert (await effects(running, "inventory.events", "released")).get(saga_id) == 1


SERVICES = ("orders", "inventory", "payment", "shipping")
