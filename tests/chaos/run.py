"""``make chaos``: thousands of order sagas while processes die, and proof nothing is lost.

On a broker and a PostgreSQL of its own, with the coordinator and the four step
services as processes, it places order sagas and meanwhile:

* fails 10% of forward step deliveries (``SAGA_FAULTS``, by message id, so a
  redelivery meets the same fate) and delays 2% by half a second;
* SIGKILLs a random step service every few seconds and starts it again;
* SIGKILLs the coordinator twice and restarts PostgreSQL once, mid-run;
* publishes 2% of the orders twice (the same message) and 1% poison records
  (not JSON, no CloudEvents headers, an order that breaks its contract).

Then it checks and prints: every saga terminal; none lost; no double effect
(payment ledger: charges minus refunds equals the totals of completed orders,
at most one charge and one refund per order; stock conserved and reserved
exactly for completed orders); every poison record in a dead-letter topic with
its reason. Exit status 1 on any violation.

``python -m tests.chaos.run`` is the full run (10,000 sagas); ``--short`` is
the version CI runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer

from contracts.orders import OrderPlaced
from saga.dev.broker import start_broker
from saga.dev.postgres import database_url, start_postgres
from saga.dev.processes import ServerProcess, free_port, stop
from saga.dev.system import LocalSystem
from saga.errors import DevStackError
from saga.kafka.provisioning import ensure_topics
from saga.kafka.publisher import Publisher
from saga.messages import headers as h
from saga.messages.base import Message
from saga.messages.envelope import Envelope
from saga.settings import Settings
from services.inventory.service import INITIAL_STOCK
from services.system import PROCESSES

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("inventory", "payment", "shipping", "notification")
SKUS = ("sku-1", "sku-2", "sku-3")
#: Forward steps fail for 10% of deliveries; 2% are delayed.
FAULTS = [
    {"step": step, "action": "fail", "rate": 0.10}
    for step in ("reserve", "charge", "ship", "notify")
] + [{"step": "*", "action": "delay", "delay_ms": 500, "rate": 0.02}]


@dataclass(frozen=True)
class Plan:
    sagas: int
    rate_per_s: float
    kill_every_s: float
    coordinator_kills: int = 2
    postgres_restarts: int = 1
    poison_share: float = 0.01
    duplicate_share: float = 0.02
    drain_timeout_s: float = 900


FULL = Plan(sagas=10_000, rate_per_s=80, kill_every_s=5)
SHORT = Plan(sagas=200, rate_per_s=12, kill_every_s=3, drain_timeout_s=240)


@dataclass
class Run:
    """What happened, for the checks."""

    placed: dict[str, int] = field(default_factory=dict)  # saga id -> amount
    poison: list[str] = field(default_factory=list)  # keys of poison records
    duplicates: int = 0
    kills: list[str] = field(default_factory=list)
    postgres_restarts: int = 0


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


class Chaos:
    def __init__(self, plan: Plan, workdir: Path, seed: int) -> None:
        self.plan = plan
        self.workdir = workdir
        self.random = random.Random(seed)
        self.run = Run()
        self.pg_port = free_port()
        self.broker: ServerProcess | None = None
        self.postgres: ServerProcess | None = None
        self.system: LocalSystem | None = None
        self.prefix = f"chaos{seed % 10_000}."
        self.db_ready = asyncio.Event()
        self.db_ready.set()
        self.placing_done = False
        self.summary: dict[str, int] = {}

    # --- infrastructure ---------------------------------------------------------------

    def start_infra(self) -> Settings:
        self.broker = start_broker(self.workdir, free_port(), detached=False)
        self.postgres = start_postgres(self.workdir, self.pg_port, detached=False)
        bootstrap = f"127.0.0.1:{self.broker.port}"
        env = {
            **os.environ,
            "SAGA_BOOTSTRAP_SERVERS": bootstrap,
            "SAGA_DATABASE_URL": database_url(self.pg_port),
            "SAGA_ENABLE_IDEMPOTENCE": "false",
            "SAGA_FETCH_MAX_WAIT_MS": "5",
            "SAGA_TOPIC_PREFIX": self.prefix,
            "SAGA_TOPIC_PARTITIONS": "6",
            "SAGA_SESSION_TIMEOUT_MS": "6000",
            "SAGA_HEARTBEAT_INTERVAL_MS": "500",
            "SAGA_TIMER_INTERVAL_MS": "200",
            "SAGA_DEFINITIONS": "tests.chaos.sagas:definitions",
            "SAGA_FAULTS": json.dumps(FAULTS),
        }
        logs = self.workdir / "logs"
        logs.mkdir(exist_ok=True)
        self.system = LocalSystem(env, logs, cwd=ROOT, processes=PROCESSES)
        return Settings(
            bootstrap_servers=bootstrap,
            database_url=database_url(self.pg_port),  # type: ignore[arg-type]
            enable_idempotence=False,
            fetch_max_wait_ms=5,
            topic_partitions=6,
            topic_prefix=self.prefix,
            health_port=None,
        )

    def stop_all(self) -> None:
        if self.system is not None:
            self.system.stop_all()
        for server in (self.postgres, self.broker):
            if server is not None:
                stop(server, sig=signal.SIGINT)

    async def start(self, name: str) -> None:
        """Start ``name`` as a supervisor would: a start that fails (PostgreSQL went
        away while the process came up) is tried again once the database is back."""
        assert self.system is not None
        for attempt in range(1, 6):
            try:
                await asyncio.to_thread(self.system.start, name, timeout_s=120)
                return
            except DevStackError as exc:
                if attempt == 5:
                    raise
                say(f"{name} did not come up ({exc}); starting it again")
                await asyncio.sleep(1)
                await self.db_ready.wait()

    def kill(self, name: str) -> None:
        assert self.system is not None
        self.system.kill(name, signal.SIGKILL)
        self.run.kills.append(name)

    # --- load -----------------------------------------------------------------------------

    async def place(self, settings: Settings) -> None:
        topic = f"{self.prefix}orders.events"
        async with Publisher(settings) as publisher:
            started = time.monotonic()
            for n in range(self.plan.sagas):
                due = started + n / self.plan.rate_per_s
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                saga_id = f"order-{n}"
                amount = 500 + self.random.randrange(2_000)
                envelope: Envelope[Message] = Envelope(
                    payload=OrderPlaced(
                        order_id=saga_id,
                        customer_id=f"c-{n % 50}",
                        amount_cents=amount,
                        sku=SKUS[n % len(SKUS)],
                    ),
                    saga_id=saga_id,
                    saga_type="order",
                    source="/services/orders",
                )
                await _until_sent(partial(publisher.publish, topic, envelope))
                self.run.placed[saga_id] = amount
                if self.random.random() < self.plan.duplicate_share:
                    await _until_sent(partial(publisher.publish, topic, envelope))
                    self.run.duplicates += 1
                if n % round(1 / self.plan.poison_share) == 50:  # exactly the share
                    key = f"poison-{n}"
                    value, headers = _poison(len(self.run.poison))
                    await _until_sent(
                        partial(
                            publisher.publish_raw,
                            topic,
                            key=key.encode(),
                            value=value,
                            headers=headers,
                        )
                    )
                    self.run.poison.append(key)
                if n and n % 1000 == 0:
                    say(f"placed {n}")
        self.placing_done = True
        say(
            f"placed {self.plan.sagas} sagas ({self.run.duplicates} twice, "
            f"{len(self.run.poison)} poison records)"
        )

    async def monkey(self) -> None:
        """Kill a random step service every few seconds (it restarts in the background);
        the coordinator and PostgreSQL at fixed shares of the placing (then at the latest,
        once placing is done)."""
        plan = self.plan
        coordinator_at = [
            (k + 1) / (plan.coordinator_kills + 1) for k in range(plan.coordinator_kills)
        ]
        postgres_at = [
            (k + 1.5) / (plan.postgres_restarts + 2) for k in range(plan.postgres_restarts)
        ]
        restarting: dict[str, asyncio.Task[None]] = {}
        while True:
            await asyncio.sleep(plan.kill_every_s)
            for name in [n for n, t in restarting.items() if t.done()]:
                restarting.pop(name).result()
            share = 1.0 if self.placing_done else len(self.run.placed) / plan.sagas
            if coordinator_at and share >= coordinator_at[0] and "coordinator" not in restarting:
                coordinator_at.pop(0)
                restarting["coordinator"] = asyncio.create_task(
                    self._kill_and_restart("coordinator")
                )
            elif postgres_at and share >= postgres_at[0]:
                postgres_at.pop(0)
                await self._restart_postgres()
            elif not self.placing_done:
                idle = [n for n in SERVICES if n not in restarting]
                if idle:
                    name = self.random.choice(idle)
                    restarting[name] = asyncio.create_task(self._kill_and_restart(name))
            if self.placing_done and not coordinator_at and not postgres_at:
                break
        for task in restarting.values():
            await task

    async def _kill_and_restart(self, name: str) -> None:
        say(f"SIGKILL {name}")
        self.kill(name)
        await asyncio.sleep(self.random.uniform(0.5, 2.0))
        await self.db_ready.wait()
        await self.start(name)

    async def _restart_postgres(self) -> None:
        assert self.postgres is not None
        say("SIGKILL PostgreSQL")
        self.db_ready.clear()
        stop(self.postgres, sig=signal.SIGKILL)
        await asyncio.sleep(3)
        self.postgres = await asyncio.to_thread(
            start_postgres, self.workdir, self.pg_port, detached=False
        )
        self.run.postgres_restarts += 1
        self.db_ready.set()
        say("PostgreSQL is back")

    async def drain(self) -> dict[str, str]:
        """Wait until every placed saga is finished (completed or compensated)."""
        deadline = time.monotonic() + self.plan.drain_timeout_s
        ids = list(self.run.placed)
        statuses: dict[str, str] = {}
        while time.monotonic() < deadline:
            statuses = await self.statuses(ids)
            done = sum(1 for s in statuses.values() if s in ("completed", "compensated"))
            if done == len(ids):
                break
            say(f"{done}/{len(ids)} sagas finished")
            await asyncio.sleep(5)
        return statuses

    async def statuses(self, ids: list[str]) -> dict[str, str]:
        rows = await self.query(
            "SELECT saga_id, status FROM saga_instances WHERE saga_id = ANY($1::text[])", ids
        )
        return {r["saga_id"]: r["status"] for r in rows}

    async def query(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        db = await asyncpg.connect(database_url(self.pg_port))
        try:
            return [dict(r) for r in await db.fetch(sql, *args)]
        finally:
            await db.close()

    # --- checks ---------------------------------------------------------------------------

    async def check(self, settings: Settings, statuses: dict[str, str]) -> list[str]:
        problems: list[str] = []
        placed = self.run.placed
        lost = [s for s in placed if s not in statuses]
        if lost:
            problems.append(f"{len(lost)} sagas lost (no saga row): {lost[:5]}")
        open_ = {s: st for s, st in statuses.items() if st not in ("completed", "compensated")}
        if open_:
            problems.append(f"{len(open_)} sagas not terminal: {list(open_.items())[:5]}")
        completed = {s for s, st in statuses.items() if st == "completed"}
        ledger = await self.query("SELECT order_id, kind, amount_cents FROM payment_ledger")
        charged = {r["order_id"]: r["amount_cents"] for r in ledger if r["kind"] == "charge"}
        refunded = {r["order_id"]: r["amount_cents"] for r in ledger if r["kind"] == "refund"}
        paid = sum(charged.values()) - sum(refunded.values())
        owed = sum(placed[s] for s in completed)
        if paid != owed:
            problems.append(f"ledger: charges - refunds = {paid}, completed orders total {owed}")
        for order_id in completed:
            if order_id not in charged or order_id in refunded:
                problems.append(
                    f"{order_id} completed but charged {order_id in charged}, "
                    f"refunded {order_id in refunded}"
                )
        for order_id in set(charged) - completed:
            if order_id not in refunded:
                problems.append(f"{order_id} charged, not completed, never refunded")
        stock = await self.query("SELECT sku, available FROM inventory_stock")
        reserved = await self.query("SELECT order_id, sku, quantity FROM inventory_reservations")
        for row in stock:
            held = sum(r["quantity"] for r in reserved if r["sku"] == row["sku"])
            if row["available"] + held != INITIAL_STOCK[row["sku"]]:
                problems.append(
                    f"stock of {row['sku']}: {row['available']} + {held} reserved"
                    f" != {INITIAL_STOCK[row['sku']]}"
                )
        holding = {r["order_id"] for r in reserved}
        if holding != completed:
            problems.append(
                f"reservations held for {len(holding)} orders, {len(completed)} completed"
                f" ({len(holding - completed)} extra, {len(completed - holding)} missing)"
            )
        letters = await _read_all(settings, f"{self.prefix}orders.events.dlq")
        reasons = {(r.key or b"").decode(): dict(r.headers).get(h.DLQ_REASON) for r in letters}
        missing = [k for k in self.run.poison if not reasons.get(k)]
        if missing:
            problems.append(f"poison records not dead-lettered with a reason: {missing[:5]}")
        self.summary = {
            "sagas": len(placed),
            "completed": len(completed),
            "compensated": sum(1 for st in statuses.values() if st == "compensated"),
            "charges": len(charged),
            "refunds": len(refunded),
            "poison": len(self.run.poison),
            "dead_lettered_poison": len(self.run.poison) - len(missing),
            "sent_twice": self.run.duplicates,
            "kills": len(self.run.kills),
            "coordinator_kills": self.run.kills.count("coordinator"),
            "postgres_restarts": self.run.postgres_restarts,
        }
        return problems


def _poison(n: int) -> tuple[bytes, list[tuple[str, bytes | None]]]:
    kind = n % 3
    if kind == 0:
        return b"\x00not json{", []
    if kind == 1:  # no CloudEvents headers at all
        return json.dumps({"order_id": f"p{n}"}).encode(), []
    # A known type whose payload breaks its contract.
    return json.dumps({"order_id": "", "customer_id": "c", "amount_cents": -1}).encode(), [
        (h.ID, f"poison-id-{n}".encode()),
        (h.TYPE, b"orders.OrderPlaced"),
        (h.SOURCE, b"/chaos"),
        (h.SPECVERSION, b"1.0"),
        (h.SAGA_ID, f"p{n}".encode()),
    ]


async def _until_sent(send: Callable[[], Awaitable[object]]) -> None:
    """Publishing is the client's job: retry until the broker took it."""
    while True:
        try:
            await send()
            return
        except Exception as exc:
            say(f"publish failed ({type(exc).__name__}); again")
            await asyncio.sleep(0.5)


async def _read_all(settings: Settings, topic: str) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=5,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        idle = time.monotonic()
        while time.monotonic() - idle < 3:
            batches = await consumer.getmany(timeout_ms=200)
            for batch in batches.values():
                records.extend(batch)
                idle = time.monotonic()
    finally:
        await consumer.stop()
    return records


async def main_async(plan: Plan, seed: int, workdir: Path) -> int:
    chaos = Chaos(plan, workdir, seed)
    try:
        settings = chaos.start_infra()
        await ensure_topics(settings, [f"{chaos.prefix}orders.events"])
        for name in ("coordinator", *SERVICES):
            await chaos.start(name)
        say(f"system up: coordinator and {', '.join(SERVICES)} (seed {seed})")
        monkey = asyncio.create_task(chaos.monkey())
        await chaos.place(settings)
        await monkey
        statuses = await chaos.drain()
        problems = await chaos.check(settings, statuses)
    finally:
        chaos.stop_all()
    print()
    for key, value in chaos.summary.items():
        print(f"{key:<22} {value}")
    print()
    if problems:
        for problem in problems:
            print(f"VIOLATION: {problem}")
        return 1
    print(
        "every saga terminal; none lost; no double effect; stock conserved;"
        " every poison record dead-lettered with its reason"
    )
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="the CI version")
    parser.add_argument("--sagas", type=int, help="override the plan's number of sagas")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    plan = SHORT if args.short else FULL
    if args.sagas:
        plan = Plan(**{**plan.__dict__, "sagas": args.sagas})
    with tempfile.TemporaryDirectory(prefix="saga-chaos-") as tmp:
        code = asyncio.run(main_async(plan, args.seed, Path(tmp)))
    sys.exit(code)


if __name__ == "__main__":
    main()
