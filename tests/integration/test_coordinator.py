"""The coordinator with real step services, as processes, on the real broker and database."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from saga.settings import Settings
from tests.conftest import Infra
from tests.kafka_helpers import eventually, read_available
from tests.system_helpers import System, system

ALL = ("coordinator", "inventory", "payment", "shipping", "notification")


def system_settings(infra: Infra) -> Settings:
    return Settings(
        bootstrap_servers=infra.bootstrap_servers,
        database_url=infra.database_url,  # type: ignore[arg-type]
        enable_idempotence=not infra.embedded_broker,
        fetch_max_wait_ms=5 if infra.embedded_broker else 100,
    )


@pytest.fixture(scope="module")
def full(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    logs = tmp_path_factory.mktemp("system-logs")
    with launch(infra, logs, *ALL) as running:
        yield running


def launch(
    infra: Infra,
    logdir: Path,
    *names: str,
    relaxed: bool = False,
    env: dict[str, str] | None = None,
) -> AbstractContextManager[System]:
    """A saga system of ``names`` on the tests' broker, with a database of its own.

    ``relaxed``: step timers long enough that restarts and rebalances never pass
    for a silent step. ``env``: more settings for every process.
    """
    env = {
        **(env or {}),
        **({"SAGA_DEFINITIONS": "tests.integration.sagas:relaxed"} if relaxed else {}),
    }
    return system(
        infra.bootstrap_servers,
        infra.database_url,
        system_settings(infra),
        logdir,
        *names,
        env=env,
    )


def ids(prefix: str, n: int) -> list[str]:
    run = uuid.uuid4().hex[:6]
    return [f"{prefix}-{run}-{i}" for i in range(n)]


async def until(running: System, saga_ids: list[str], status: str, timeout_s: float = 60) -> None:
    async def done() -> bool:
        found = await running.statuses(saga_ids)
        return len(found) == len(saga_ids) and set(found.values()) == {status}

    try:
        await eventually(done, timeout_s=timeout_s, what=f"sagas {status}")
    except AssertionError:
        raise AssertionError(f"{await running.statuses(saga_ids)}") from None


async def test_happy_path_every_saga_ends_completed(full: System) -> None:
    sagas = ids("happy", 10)
    for saga_id in sagas:
        await full.place(saga_id)
    await until(full, sagas, "completed")
    states = await full.sagas(sagas)
    for state in states.values():
        assert {s["status"] for s in state["steps"].values()} == {"completed"}
        assert await full.commands_sent(state["saga_id"]) == []


@pytest.mark.parametrize(
    ("failing", "amount", "undone"),
    [
        ("reserve", 200_000, []),
        ("charge", 60_000, ["inventory.ReleaseInventory"]),
        ("ship", 1_200, ["payment.RefundPayment", "inventory.ReleaseInventory"]),
    ],
)
async def test_a_failure_at_each_step_compensates_the_completed_steps_in_reverse(
    full: System, failing: str, amount: int, undone: list[str]
) -> None:
    [saga_id] = ids("nowhere" if failing == "ship" else f"fail-{failing}", 1)
    await full.place(saga_id, amount)
    await until(full, [saga_id], "compensated")
    state = (await full.sagas([saga_id]))[saga_id]
    assert state["steps"][failing]["status"] == "failed"
    assert await full.commands_sent(saga_id) == undone
    for step, data in state["steps"].items():
        if step != failing:
            assert data["status"] in ("compensated", "pending"), (step, data["status"])


async def test_every_event_delivered_twice_changes_no_state_and_sends_no_command(
    full: System,
) -> None:
    sagas = ids("twice", 3)
    for saga_id in sagas[:2]:
        await full.place(saga_id)
    await full.place(sagas[2], 60_000)  # this one compensates
    await until(full, sagas[:2], "completed")
    await until(full, sagas[2:], "compensated")
    before = await full.sagas(sagas)
    commands_before = {s: await full.commands_sent(s) for s in sagas}

    # Deliver again every event of these sagas, on every events topic.
    from saga.kafka.publisher import Publisher

    replayed = 0
    async with Publisher(full.settings) as publisher:
        for service in ("orders", "inventory", "payment", "shipping", "notification"):
            topic = f"{full.prefix}{service}.events"
            records = [
                r for r in await read_available(full.settings, topic) if r.key.decode() in sagas
            ]
            replayed += len(records)
            for record in records:
                await publisher.publish_raw(
                    topic, key=record.key, value=record.value, headers=list(record.headers)
                )
    assert replayed >= 5 * 2 + 4, "every event of the three sagas went out again"
    await asyncio.sleep(3)
    assert await full.sagas(sagas) == before
    assert {s: await full.commands_sent(s) for s in sagas} == commands_before


async def test_saga_show_prints_the_full_timeline_of_a_compensated_saga(full: System) -> None:
    [saga_id] = ids("nowhere-show", 1)
    await full.place(saga_id)
    await until(full, [saga_id], "compensated")
    shown = full.cli("show", saga_id)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert f"saga      {saga_id}" in out
    assert (
        "state     compensated  (step ship failed: NoCarrier: no carrier for this address)" in out
    )
    for step, state in (("reserve", "compensated"), ("charge", "compensated"), ("ship", "failed")):
        assert any(line.split()[:2] == [step, state] for line in out.splitlines()), out
    assert "STEP" in out and "DURATION" in out and "trace id" in out
    history = full.cli("history", saga_id)
    assert "payment.RefundPayment" in history.stdout
    assert "inventory.InventoryReleased" in history.stdout
    listed = full.cli("list", "--state", "compensated")
    assert saga_id in listed.stdout
    dry = full.cli("dry-run", saga_id, "--fail", "ship")
    assert dry.returncode == 0, dry.stderr
    migrated = full.cli("db", "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "coordinator: schema version 6" in migrated.stdout
    assert "service: schema version 4" in migrated.stdout
    shown_definition = full.cli("definition", "show", "order")
    assert "1. reserve (inventory)" in shown_definition.stdout
    assert "```mermaid\nflowchart LR" in shown_definition.stdout


async def test_dry_run_lists_the_compensations_a_failure_would_trigger(full: System) -> None:
    [saga_id] = ids("dry", 1)
    await full.place(saga_id)
    await until(full, [saga_id], "completed")
    dry = full.cli("dry-run", saga_id, "--fail", "ship")
    assert dry.returncode == 0, dry.stderr
    assert "1. shipping.CancelShipment (undo ship)" not in dry.stdout
    assert "1. payment.RefundPayment (undo charge)" in dry.stdout
    assert "2. inventory.ReleaseInventory (undo reserve)" in dry.stdout
    assert await full.statuses([saga_id]) == {saga_id: "completed"}, "nothing was changed"


async def test_events_of_an_unknown_saga_type_are_recorded_and_ignored(full: System) -> None:
    from contracts.orders import OrderPlaced
    from saga.kafka.publisher import Publisher
    from saga.messages.envelope import Envelope

    [saga_id] = ids("stranger", 1)
    envelope: Envelope[OrderPlaced] = Envelope(
        payload=OrderPlaced(order_id=saga_id, customer_id="c", amount_cents=5),
        saga_id=saga_id,
        saga_type="subscription",
        source="/services/orders",
    )
    async with Publisher(full.settings) as publisher:
        await publisher.publish(f"{full.prefix}orders.events", envelope)

    async def logged() -> bool:
        return "ignored" in full.cli("history", saga_id).stdout

    await eventually(logged, what="the ignored event in the saga log")
    assert await full.statuses([saga_id]) == {}


async def test_a_step_that_never_answers_times_out_and_is_compensated_across_a_restart(
    infra: Infra, tmp_path: Path
) -> None:
    # No shipping service at first: the ship step does not answer in time.
    with launch(infra, tmp_path, "coordinator", "inventory", "payment") as running:
        [saga_id] = ids("silent", 1)
        await running.place(saga_id)

        async def shipping_started() -> bool:
            state = (await running.sagas([saga_id])).get(saga_id)
            return state is not None and state["steps"]["ship"]["status"] == "running"

        await eventually(shipping_started, what="the ship step to start")
        running.kill("coordinator", signal.SIGKILL)
        await asyncio.sleep(4)  # past the 3 s step timeout, with no coordinator running
        running.start("coordinator")  # the timer is a row: it fires after the restart

        async def cancel_sent() -> bool:
            return "shipping.CancelShipment" in await running.commands_sent(saga_id)

        await eventually(cancel_sent, what="the timed-out step's compensation")
        state = (await running.sagas([saga_id]))[saga_id]
        assert state["steps"]["ship"]["error"] == "timed out: outcome unknown"
        # Shipping comes back: it may even ship late, which is undone as well.
        running.start("shipping")
        await until(running, [saga_id], "compensated", timeout_s=60)
        sent = list(dict.fromkeys(await running.commands_sent(saga_id)))
        assert sent == [
            "shipping.CancelShipment",
            "payment.RefundPayment",
            "inventory.ReleaseInventory",
        ]


async def test_a_compensation_that_keeps_failing_parks_the_saga_and_retry_completes_it(
    infra: Infra, tmp_path: Path
) -> None:
    # No payment service: the charge times out, and its refund is never confirmed.
    with launch(infra, tmp_path, "coordinator", "inventory", "shipping") as running:
        [saga_id] = ids("park", 1)
        await running.place(saga_id)
        try:
            await until(running, [saga_id], "parked", timeout_s=90)
        except AssertionError:
            print(running.cli("history", saga_id).stdout)
            raise
        state = (await running.sagas([saga_id]))[saga_id]
        assert state["steps"]["charge"]["status"] == "compensation_failed"
        assert state["steps"]["charge"]["compensation_attempts"] == 3, "sent 3 times, then parked"
        assert state["steps"]["reserve"]["status"] == "completed", "not undone past the parked step"
        retried = running.cli("retry", saga_id)
        assert retried.returncode == 0, retried.stderr
        assert f"saga {saga_id}: compensating" in retried.stdout
        running.start("payment")  # the cause is fixed
        await until(running, [saga_id], "compensated", timeout_s=60)
        assert (await running.sagas([saga_id]))[saga_id]["steps"]["reserve"]["status"] == (
            "compensated"
        )
        history = running.cli("history", saga_id).stdout
        assert "operator" in history


async def test_operators_skip_a_stuck_compensation_and_resolve_a_saga_with_an_audit_trail(
    infra: Infra, tmp_path: Path
) -> None:
    # No payment service: charges time out and their refunds are never confirmed.
    with launch(infra, tmp_path, "coordinator", "inventory", "shipping") as running:
        skipped, resolved = ids("skip", 1)[0], ids("resolve", 1)[0]
        await running.place(skipped)
        await running.place(resolved)
        await until(running, [skipped, resolved], "parked", timeout_s=90)
        running.env["SAGA_OPERATOR"] = "alice"
        skip = running.cli("skip", skipped, "charge", "--reason", "refunded by hand")
        assert skip.returncode == 0, skip.stderr
        await until(running, [skipped], "compensated")  # the reservation was then released
        state = (await running.sagas([skipped]))[skipped]
        assert state["steps"]["charge"]["status"] == "skipped"
        assert state["steps"]["reserve"]["status"] == "compensated"
        done = running.cli("resolve", resolved, "--reason", "settled with the customer")
        assert done.returncode == 0, done.stderr
        await until(running, [resolved], "resolved")
        history = running.cli("history", resolved).stdout
        assert "operator" in history and "alice" in history
        assert "resolved by alice (settled with the customer)" in history


async def test_a_nul_in_a_saga_id_or_a_payload_is_dead_lettered_once_and_the_partition_goes_on(
    full: System,
) -> None:
    import json

    from contracts.orders import OrderPlaced
    from saga.kafka.publisher import Publisher
    from saga.messages import headers as h
    from saga.messages.codec import encode
    from saga.messages.envelope import Envelope

    [after] = ids("after-poison", 1)
    template = encode(
        Envelope(
            payload=OrderPlaced(order_id=after, customer_id="c", amount_cents=900),
            saga_id=after,
            saga_type="order",
            source="/services/orders",
        )
    )
    nul_id = [(n, v + b"\x00" if n == h.SAGA_ID else v) for n, v in template.headers]
    nul_payload = json.dumps({"order_id": after, "customer_id": "c\u0000", "amount_cents": 9})
    topic = f"{full.prefix}orders.events"
    async with Publisher(full.settings) as publisher:
        # Keyed as the saga that follows: the same partition, read first.
        await publisher.publish_raw(topic, key=after.encode(), value=template.value, headers=nul_id)
        await publisher.publish_raw(
            topic, key=after.encode(), value=nul_payload.encode(), headers=template.headers
        )
    await full.place(after, 900)
    await until(full, [after], "completed")

    letters = await read_available(full.settings, f"{topic}.dlq")
    readers = {
        (dict(r.headers)[h.DLQ_GROUP].decode(), dict(r.headers)[h.DLQ_ERROR_TYPE].decode())
        for r in letters
    }
    groups = {group for group, _ in readers}
    assert {g.removeprefix(full.prefix) for g in groups} == {"inventory", "saga-coordinator"}
    assert {kind for _, kind in readers} == {"InvalidHeader", "PayloadValidationFailed"}
    assert len(letters) == 4, "each consumer dead-letters each record once, at once"


async def test_a_record_the_database_refuses_is_dead_lettered_once_by_each_reader(
    full: System,
) -> None:
    import secrets

    from contracts.inventory import InventoryReserved
    from saga.kafka.publisher import Publisher
    from saga.messages import headers as h
    from saga.messages.codec import encode
    from saga.messages.envelope import Envelope

    [after] = ids("after-refused", 1)
    poison = encode(
        Envelope(
            payload=InventoryReserved(order_id=after, sku="s", quantity=1, amount_cents=900),
            saga_id=after,
            saga_type="order",
            source="/services/inventory",
            # Valid characters, too long (and not compressible) for the saga log's and the
            # inbox's indexes: PostgreSQL refuses it whatever is tried.
            id=secrets.token_urlsafe(6000),
        )
    )
    topic = f"{full.prefix}inventory.events"
    async with Publisher(full.settings) as publisher:
        # Keyed as the saga that follows: the same partition, read first.
        await publisher.publish_raw(
            topic, key=poison.key, value=poison.value, headers=poison.headers
        )
    await full.place(after, 900)
    await until(full, [after], "completed")

    async def letters_of_poison() -> list[Any]:
        # A fresh reader's first fetch can take over a second on a loaded machine.
        found = await read_available(full.settings, f"{topic}.dlq", idle_s=2)
        return [r for r in found if r.key == poison.key]

    async def both() -> bool:
        return len(await letters_of_poison()) >= 2

    await eventually(both, timeout_s=60, what="a dead letter from payment and the coordinator")
    letters = await letters_of_poison()
    readers = sorted(
        dict(r.headers)[h.DLQ_GROUP].decode().removeprefix(full.prefix) for r in letters
    )
    assert readers == ["payment", "saga-coordinator"], "each reader dead-letters it once"
    for letter in letters:
        got = dict(letter.headers)
        assert got[h.DLQ_ERROR_TYPE] == b"ProgramLimitExceededError"
        assert got[h.DLQ_REASON].startswith(b"the database refuses this record's data: ")


async def test_a_type_no_one_handles_is_dead_lettered_once_on_events_and_commands_topics(
    full: System,
) -> None:
    from contracts.orders import OrderPlaced
    from saga.kafka.publisher import Publisher
    from saga.messages import headers as h
    from saga.messages.codec import encode
    from saga.messages.envelope import Envelope

    [saga_id] = ids("unknown-type", 1)
    template = encode(
        Envelope(
            payload=OrderPlaced(order_id=saga_id, customer_id="c", amount_cents=900),
            saga_id=saga_id,
            saga_type="order",
            source="/services/payment",
        )
    )
    unknown = {
        # Read by shipping (which handles other types of it) and the coordinator.
        f"{full.prefix}payment.events": b"payment.PaymentTeleported",
        # Read by inventory alone.
        f"{full.prefix}inventory.commands": b"inventory.MakeCoffee",
    }
    async with Publisher(full.settings) as publisher:
        for topic, message_type in unknown.items():
            headers = [(n, message_type if n == h.TYPE else v) for n, v in template.headers]
            await publisher.publish_raw(
                topic, key=template.key, value=template.value, headers=headers
            )
    for topic in unknown:

        async def dead_lettered(topic: str = topic) -> bool:
            found = await read_available(full.settings, f"{topic}.dlq", idle_s=1.5)
            return any(r.key == template.key for r in found)

        await eventually(dead_lettered, timeout_s=30, what=f"an unknown type on {topic}")
    await asyncio.sleep(1.5)  # any second dead letter would be there by now
    groups = {}
    for topic, message_type in unknown.items():
        letters = [
            r for r in await read_available(full.settings, f"{topic}.dlq") if r.key == template.key
        ]
        assert len(letters) == 1, f"{topic}: dead-lettered exactly once"
        got = dict(letters[0].headers)
        assert got[h.DLQ_ERROR_TYPE] == b"UnknownMessageType"
        assert message_type in got[h.DLQ_REASON]
        groups[topic] = got[h.DLQ_GROUP].decode().removeprefix(full.prefix)
    assert list(groups.values()) == ["saga-coordinator", "inventory"]
