"""Step services as real processes on the real broker and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import psutil
import pytest

from contracts.catalog import default_registry
from contracts.inventory import (
    InventoryReleased,
    InventoryReservationFailed,
    InventoryReserved,
    ReleaseInventory,
)
from contracts.orders import OrderPlaced
from saga.dev.broker import start_broker
from saga.dev.postgres import database_url, start_postgres
from saga.dev.processes import ServerProcess, free_port, stop
from saga.kafka.publisher import Publisher
from saga.messages.base import Message
from saga.messages.codec import RawRecord, decode
from saga.messages.envelope import Envelope
from saga.messages.topics import topic_for_type
from saga.settings import Settings
from tests.conftest import Infra
from tests.http_helpers import QuietHandler, serving
from tests.kafka_helpers import eventually, read_available, read_records
from tests.process_helpers import Child, child


@dataclass
class Deployment:
    """Where a service process runs and how to reach it."""

    name: str
    env: dict[str, str]
    settings: Settings
    infra: Infra

    @property
    def prefix(self) -> str:
        return self.env["SAGA_TOPIC_PREFIX"]

    def topic(self, name: str) -> str:
        return f"{self.prefix}{name}"

    @property
    def health(self) -> str:
        return f"http://127.0.0.1:{self.env['SAGA_HEALTH_PORT']}"

    async def send(self, message: Message, saga_id: str, **extra: object) -> Envelope[Message]:
        envelope: Envelope[Message] = Envelope(
            payload=message,
            saga_id=saga_id,
            source="/tests",
            saga_type="order",
            **extra,  # type: ignore[arg-type]
        )
        async with Publisher(self.settings) as publisher:
            await publisher.publish(
                self.topic(topic_for_type(message.message_type, message.kind)), envelope
            )
        return envelope

    async def events(self, count: int, timeout_s: float = 60) -> list[Envelope[Message]]:
        """The first ``count`` records of the service's events topic, duplicates included."""
        topic = self.topic(f"{self.name}.events")
        records = await read_records(self.settings, topic, count, timeout_s=timeout_s)
        registry = default_registry()
        return [
            decode(
                RawRecord(topic, r.partition, r.offset, r.key, r.value, list(r.headers)), registry
            )
            for r in records
        ]

    async def distinct_events(self, count: int) -> list[Envelope[Message]]:
        """The first ``count`` distinct events, by message id, as consumers count them: the
        relay may send a row again when its first publish is slow to be marked sent."""
        wanted = count
        while True:
            distinct = {e.id: e for e in await self.events(wanted)}
            if len(distinct) >= count:
                return list(distinct.values())[:count]
            wanted += count - len(distinct)

    async def records(self) -> list[Any]:
        return await read_available(self.settings, self.topic(f"{self.name}.events"))

    async def no_more_events(self, beyond: int) -> None:
        with pytest.raises(TimeoutError):
            await self.events(beyond + 1, timeout_s=3)

    async def query(self, sql: str, *args: object) -> list[asyncpg.Record]:
        connection = await asyncpg.connect(self.infra.database_url)
        try:
            return list(await connection.fetch(sql, *args))
        finally:
            await connection.close()

    def status(self, path: str = "/readyz") -> tuple[int, dict[str, object]]:
        try:
            with urllib.request.urlopen(self.health + path, timeout=2) as answer:  # noqa: S310
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())
        except OSError:
            return 0, {}


def deployment(
    infra: Infra, settings: Settings, name: str, bootstrap: str | None = None
) -> Deployment:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    bootstrap = bootstrap or infra.bootstrap_servers
    env = {
        "SAGA_BOOTSTRAP_SERVERS": bootstrap,
        "SAGA_DATABASE_URL": infra.database_url,
        "SAGA_ENABLE_IDEMPOTENCE": str(settings.enable_idempotence).lower(),
        "SAGA_FETCH_MAX_WAIT_MS": str(settings.fetch_max_wait_ms),
        "SAGA_TOPIC_PREFIX": prefix,
        "SAGA_TOPIC_PARTITIONS": "3",
        "SAGA_HEALTH_PORT": str(free_port()),
        "SAGA_HEALTH_HOST": "127.0.0.1",
        "SAGA_SESSION_TIMEOUT_MS": "6000",
        "SAGA_HEARTBEAT_INTERVAL_MS": "500",
        "SAGA_COMMIT_INTERVAL_MS": "20",
        "SAGA_RELAY_INTERVAL_MS": "100",
        "STEP_SERVICE": name,
    }
    local = settings.model_copy(update={"bootstrap_servers": bootstrap, "topic_prefix": prefix})
    return Deployment(name, env, local, infra)


@pytest.fixture
def steps(infra: Infra, settings: Settings) -> Deployment:
    return deployment(infra, settings, f"steps{uuid.uuid4().hex[:6]}")


@contextlib.asynccontextmanager
async def running(
    where: Deployment, module: str = "tests.integration.step_service", *args: str, **env: str
) -> AsyncIterator[Child]:
    async with child(module, *args, env={**where.env, **env}) as process:

        def ready() -> bool:
            if process.proc.returncode is not None:
                raise AssertionError(f"service exited with {process.proc.returncode}")
            return where.status()[0] == 200

        await eventually(ready, timeout_s=60, what="service ready")
        yield process


def order(saga_id: str, mode: str) -> OrderPlaced:
    return OrderPlaced(order_id=saga_id, customer_id=mode, amount_cents=1200)


async def test_the_same_message_delivered_twice_causes_one_effect_and_one_event(
    steps: Deployment,
) -> None:
    async with running(steps):
        sent = await steps.send(order("dup-1", "ok"), "dup-1")
        async with Publisher(steps.settings) as publisher:  # the very same message again
            await publisher.publish(steps.topic("orders.events"), sent)
        [event] = await steps.events(1)
        await steps.no_more_events(1)
    assert event.payload == InventoryReserved(
        order_id="dup-1", sku="sku", quantity=1, amount_cents=1200
    )
    assert event.causation_id == sent.id
    effects = await steps.query("SELECT * FROM step_effects WHERE saga_id = 'dup-1'")
    calls = await steps.query("SELECT * FROM step_calls WHERE saga_id = 'dup-1'")
    assert len(effects) == 1
    assert len(calls) == 1, "the duplicate did not run the handler"


async def test_transient_error_twice_then_success_gives_one_completion_at_attempt_three(
    steps: Deployment,
) -> None:
    async with running(steps):
        await steps.send(order("flaky-1", "flaky-2"), "flaky-1")
        [event] = await steps.events(1)
        await steps.no_more_events(1)
    assert isinstance(event.payload, InventoryReserved)
    assert event.attempt == 3
    [inbox] = await steps.query(
        "SELECT outcome, attempts FROM saga_inbox WHERE service = $1", steps.name
    )
    assert (inbox["outcome"], inbox["attempts"]) == ("completed", 3)
    calls = await steps.query("SELECT attempt FROM step_calls WHERE saga_id = 'flaky-1'")
    assert sorted(r["attempt"] for r in calls) == [1, 2, 3]


async def test_a_non_retryable_error_emits_one_failure_event_without_retry(
    steps: Deployment,
) -> None:
    async with running(steps):
        await steps.send(order("refuse-1", "refuse"), "refuse-1")
        [event] = await steps.events(1)
        await steps.no_more_events(1)
    assert event.payload == InventoryReservationFailed(
        error_type="PermissionError", error_message="account frozen", attempts=1
    )
    assert len(await steps.query("SELECT * FROM step_calls WHERE saga_id = 'refuse-1'")) == 1
    assert await steps.query("SELECT * FROM step_effects WHERE saga_id = 'refuse-1'") == []


async def test_a_handler_over_its_timeout_is_retried_then_failed(steps: Deployment) -> None:
    async with running(steps):
        await steps.send(order("slow-1", "slow"), "slow-1")
        [event] = await steps.events(1)
    assert event.payload == InventoryReservationFailed(
        error_type="StepTimeout", error_message="step exceeded its timeout of 1.5s", attempts=4
    )
    calls = await steps.query("SELECT attempt FROM step_calls WHERE saga_id = 'slow-1'")
    assert sorted(r["attempt"] for r in calls) == [1, 2, 3, 4]


class Downstream:
    """A real HTTP dependency whose health the test switches."""

    def __init__(self) -> None:
        self.healthy = False
        self.hits = 0


@pytest.fixture
def downstream() -> Iterator[tuple[Downstream, str]]:
    state = Downstream()

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            state.hits += 1
            self.send_response(200 if state.healthy else 503)
            self.send_header("Content-Length", "0")
            self.end_headers()

    with serving(Handler) as port:
        yield state, f"http://127.0.0.1:{port}/charge"


async def test_circuit_opens_fails_fast_while_open_and_closes_after_a_good_probe(
    steps: Deployment, downstream: tuple[Downstream, str]
) -> None:
    dependency, url = downstream
    async with running(steps, STEP_DOWNSTREAM=url):
        await steps.send(order("cb-1", "downstream"), "cb-1")
        [failed] = await steps.events(1)
        # Threshold 2: attempts 1 and 2 call the dependency and open the circuit;
        # attempt 3 fails fast without a call and waits for the reset timeout;
        # attempt 4 is the half-open probe, which fails and opens the circuit again.
        assert dependency.hits == 3
        payload = failed.payload
        assert isinstance(payload, InventoryReservationFailed)
        assert (payload.error_type, payload.attempts) == ("HTTPError", 4)
        assert steps.status()[1]["circuits"] == {"downstream": "open"}
        calls = await steps.query("SELECT attempt FROM step_calls WHERE saga_id = 'cb-1'")
        assert sorted(r["attempt"] for r in calls) == [1, 2, 4], "attempt 3 never ran"

        dependency.healthy = True
        await eventually(
            lambda: steps.status()[1]["circuits"] == {"downstream": "half_open"},
            what="reset timeout to pass",
        )
        await steps.send(order("cb-2", "downstream"), "cb-2")
        events = await steps.distinct_events(2)
        assert isinstance(events[1].payload, InventoryReserved)
        assert dependency.hits == 4, "one probe, which closed the circuit"
        assert steps.status()[1]["circuits"] == {"downstream": "closed"}


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[ServerProcess]:
    """A broker for one test only (to freeze or kill it); stopped by pid after."""
    broker = start_broker(tmp_path, free_port(), detached=False)
    try:
        yield broker
    finally:
        stop(broker)


def on_broker(infra: Infra, settings: Settings, broker: ServerProcess) -> Deployment:
    return deployment(infra, settings, f"steps{uuid.uuid4().hex[:6]}", f"127.0.0.1:{broker.port}")


async def test_service_killed_after_its_write_but_before_publishing_publishes_once_on_restart(
    infra: Infra, settings: Settings, own_broker: ServerProcess
) -> None:
    # A broker of its own: this test freezes it to hold the publish back.
    broker = own_broker
    steps = on_broker(infra, settings, broker)
    async with running(steps) as first:
        sent = await steps.send(order("kill-1", "pause"), "kill-1")

        async def started() -> bool:
            return bool(await steps.query("SELECT 1 FROM step_calls WHERE saga_id='kill-1'"))

        await eventually(started, what="the handler to start")
        broker_process = psutil.Process(broker.pid)
        broker_process.suspend()  # SIGSTOP: nothing can be published any more
        try:

            async def committed() -> bool:
                return bool(
                    await steps.query("SELECT 1 FROM saga_outbox WHERE service = $1", steps.name)
                )

            await eventually(committed, what="the delivery's transaction to commit")
            await first.signal(signal.SIGKILL)
            assert await first.wait() == -signal.SIGKILL
        finally:
            broker_process.resume()
    [row] = await steps.query("SELECT sent_at FROM saga_outbox WHERE service = $1", steps.name)
    assert row["sent_at"] is None, "killed between commit and publish"

    async with running(steps):
        [event] = await steps.events(1)
        await steps.no_more_events(1)
        assert event.causation_id == sent.id
    effects = await steps.query("SELECT * FROM step_effects WHERE saga_id = 'kill-1'")
    assert len(effects) == 1, "the effect happened once"
    left = await steps.query("SELECT 1 FROM saga_outbox WHERE service = $1", steps.name)
    assert left == [], "the row is deleted once the broker has it"


async def test_compensating_a_step_that_never_ran_succeeds_as_a_no_op(
    infra: Infra, settings: Settings
) -> None:
    inventory = deployment(infra, settings, "inventory")
    async with running(inventory, "services.inventory"):
        await inventory.send(ReleaseInventory(order_id=f"never-{uuid.uuid4().hex[:6]}"), "n-1")
        [event] = await inventory.events(1)
    assert isinstance(event.payload, InventoryReleased)
    assert event.payload.released is False
    assert event.step == "release"


async def test_saga_run_serves_health_and_stops_gracefully_on_sigterm(
    infra: Infra, settings: Settings
) -> None:
    payment = deployment(infra, settings, "payment")
    async with running(payment, "saga.cli", "run", "services.payment") as process:
        alive, body = payment.status("/healthz")
        assert (alive, body["status"], body["service"]) == (200, "alive", "payment")
        ready, body = payment.status("/readyz")
        assert (ready, body["circuits"]) == (200, {"bank": "closed"})
        assert body["partitions"] == 6, "3 partitions each of inventory.events, payment.commands"
        await process.signal(signal.SIGTERM)
        assert await process.wait() == 0
    assert payment.status("/healthz")[0] == 0, "endpoint gone with the process"


async def test_a_database_restart_mid_traffic_loses_nothing_and_doubles_nothing(
    infra: Infra, settings: Settings, tmp_path: Path
) -> None:
    # A PostgreSQL of its own, killed and restarted on the same data and port.
    port = free_port()
    database = start_postgres(tmp_path, port, detached=False)
    local = Infra(infra.bootstrap_servers, database_url(port), infra.embedded_broker, tmp_path)
    steps = deployment(local, settings, f"steps{uuid.uuid4().hex[:6]}")
    try:
        async with running(steps):
            await steps.send(order("db-0", "ok"), "db-0")
            await steps.events(1)
            psutil.Process(database.pid).kill()  # SIGKILL the postmaster
            psutil.Process(database.pid).wait(10)
            sagas = [f"db-{i}" for i in range(1, 6)]
            for saga_id in sagas:
                await steps.send(order(saga_id, "ok"), saga_id)
            await asyncio.sleep(1.0)  # the service meets the outage
            database = start_postgres(tmp_path, port, detached=False)
            await steps.events(6, timeout_s=90)
            await asyncio.sleep(3)  # time for anything more to show up
            events = await steps.events(len(await steps.records()))
        # The outbox is at-least-once on the wire: a row published just before the
        # kill, but not yet marked sent, goes out again with the same message id
        # (consumers drop it by id). What must not happen is a second event.
        distinct = {e.id: e for e in events}.values()
        assert sorted(e.saga_id for e in distinct) == ["db-0", *sagas], "one event per saga"
        effects = await steps.query("SELECT saga_id FROM step_effects ORDER BY saga_id")
        assert [r["saga_id"] for r in effects] == ["db-0", *sagas], "each effect exactly once"
    finally:
        stop(database, sig=signal.SIGINT)


async def test_sigterm_after_the_broker_vanished_still_stops_the_service_in_bounded_time(
    infra: Infra, settings: Settings, own_broker: ServerProcess
) -> None:
    broker = own_broker
    steps = on_broker(infra, settings, broker)
    async with running(steps, SAGA_SHUTDOWN_GRACE_MS="3000") as process:
        stop(broker, sig=signal.SIGKILL)  # the broker is gone for good
        started = asyncio.get_running_loop().time()
        await process.signal(signal.SIGTERM)
        code = await process.wait(timeout_s=60)
        took = asyncio.get_running_loop().time() - started
    assert code in (0, 1)
    assert took < 30, f"stopping took {took:.1f}s"


async def test_a_write_the_database_refuses_for_its_data_fails_the_step_at_once(
    steps: Deployment,
) -> None:
    async with running(steps):
        await steps.send(order("overflow-1", "overflow"), "overflow-1")
        [event] = await steps.events(1)
        await steps.no_more_events(1)
    assert isinstance(event.payload, InventoryReservationFailed)
    assert event.payload.error_type == "NumericValueOutOfRangeError"
    assert "integer out of range" in event.payload.error_message
    assert (event.payload.attempts, event.attempt) == (1, 1)
    calls = await steps.query("SELECT * FROM step_calls WHERE saga_id = 'overflow-1'")
    assert len(calls) == 1, "never retried: it would be refused again"


async def test_a_record_the_store_refuses_is_dead_lettered_and_the_partition_goes_on(
    steps: Deployment,
) -> None:
    import secrets

    from saga.messages import headers as h
    from saga.messages.codec import encode

    poison = encode(
        Envelope(
            payload=order("refused-1", "ok"),
            saga_id="refused-1",
            saga_type="order",
            source="/tests",
            # Valid characters, but too long (and random, so not compressible) for the
            # inbox's index: PostgreSQL refuses the row whatever is tried.
            id=secrets.token_urlsafe(6000),
        )
    )
    topic = steps.topic("orders.events")
    async with running(steps):
        async with Publisher(steps.settings) as publisher:
            await publisher.publish_raw(
                topic, key=poison.key, value=poison.value, headers=poison.headers
            )
        after = await steps.send(order("refused-1", "ok"), "refused-1")  # same partition
        [event] = await steps.events(1)
        letters = await read_records(steps.settings, f"{topic}.dlq", 1, timeout_s=30)
        await asyncio.sleep(1)
        assert len(await read_available(steps.settings, f"{topic}.dlq")) == 1, "dead-lettered once"
        assert steps.status()[0] == 200
    assert event.causation_id == after.id
    [letter] = letters
    got = dict(letter.headers)
    assert got[h.DLQ_ERROR_TYPE] == b"ProgramLimitExceededError"
    assert got[h.DLQ_REASON].startswith(b"the database refuses this record's data: ")
    assert letter.value == poison.value


async def test_a_partition_that_makes_no_progress_shows_in_readyz_until_it_moves(
    steps: Deployment,
) -> None:
    async with running(steps, SAGA_STALL_AFTER_MS="1000"):
        # Four attempts of 1.5 s (the step's timeout), then the step fails: about six
        # seconds in which the partition's position does not move.
        await steps.send(order("stalled-1", "slow"), "stalled-1")

        seen: dict[str, Any] = {}

        def stalled() -> bool:
            status, seen["body"] = steps.status()
            return status == 503

        await eventually(stalled, timeout_s=10, what="/readyz 503 while the partition waits")
        body = seen["body"]
        [stall] = body["stalled"]
        assert stall["topic"] == steps.topic("orders.events")
        assert isinstance(stall["partition"], int) and stall["since"]
        assert body["status"] == "not ready"
        [event] = await steps.events(1)
        assert isinstance(event.payload, InventoryReservationFailed)

        def moving() -> bool:
            status, body = steps.status()
            return status == 200 and body["stalled"] == []

        await eventually(moving, timeout_s=10, what="/readyz 200 once the partition moves")
