"""``saga demo``: a real saga system on the embedded broker and PostgreSQL.

Starts a throw-away embedded stack, then the coordinator and the inventory,
payment and shipping services, each as its own process. Places three orders:
one that completes, one whose payment is declined (the stock reservation is
released) and one that cannot be shipped (the payment is refunded and the
stock released, in reverse order). Prints each saga's timeline from the saga
log, stops every process it started and checks that none is left.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg

from contracts.envelope import Envelope
from contracts.messages import Message
from contracts.order_saga import ORDER_SAGA
from contracts.orders import OrderPlaced
from saga.coordinator.state import SagaState
from saga.dev import DevStack
from saga.dev.system import PROCESSES, LocalSystem
from saga.operator_cli import render_timeline
from saga.publisher import Publisher
from saga.settings import Settings

ORDERS = (
    ("order-ok", 4_200, "should complete"),
    ("order-declined", 60_000, "payment will be declined: stock released"),
    ("nowhere-order", 2_500, "no carrier: payment refunded, then stock released"),
)


def _say(text: str = "") -> None:
    print(text, flush=True)


async def run_demo() -> int:
    with tempfile.TemporaryDirectory(prefix="saga-demo-") as tmp:
        workdir = Path(tmp)
        stack = DevStack(workdir, detached=False)
        _say("starting the embedded Kafka-protocol broker and PostgreSQL ...")
        info = stack.up(kafka_port=None, postgres_port=None)
        system: LocalSystem | None = None
        pids = [info.broker.pid, info.postgres.pid]
        try:
            _say(f"  broker      pid {info.broker.pid:<7} {info.bootstrap_servers}")
            _say(f"  postgres    pid {info.postgres.pid:<7} {info.database_url}")
            env = {**os.environ, **info.environment(), "SAGA_COMMIT_INTERVAL_MS": "50"}
            system = LocalSystem(env, workdir)
            for name in PROCESSES:
                pid = system.start(name)  # from this thread: children die with it (Linux)
                pids.append(pid)
                _say(f"  {name:<11} pid {pid:<7} (its own process)")
            await _place_and_show(info.bootstrap_servers, info.database_url)
        finally:
            if system is not None:
                system.stop_all()
            stopped = stack.down()
            _say(f"\nstopped the services, the coordinator, {', '.join(stopped)}")
        left = [pid for pid in pids if _alive(pid)]
    if left:
        _say(f"still running: {left}")
        return 1
    _say("demo finished; nothing left running")
    return 0


async def _place_and_show(bootstrap: str, database_url: str) -> None:
    settings = Settings(bootstrap_servers=bootstrap, enable_idempotence=False, fetch_max_wait_ms=5)
    run = uuid.uuid4().hex[:4]
    sagas = []
    async with Publisher(settings) as publisher:
        _say()
        for name, amount, expected in ORDERS:
            saga_id = f"{name}-{run}"
            sagas.append(saga_id)
            placed: Envelope[Message] = Envelope(
                payload=OrderPlaced(order_id=saga_id, customer_id="alice", amount_cents=amount),
                saga_id=saga_id,
                saga_type="order",
                source="/services/orders",
            )
            await publisher.publish("orders.events", placed)
            _say(f"placed {saga_id} ({amount / 100:.2f} EUR): {expected}")
    states = await _wait_finished(database_url, sagas)
    for saga_id in sagas:
        _say()
        _say(render_timeline(states[saga_id], [s.name for s in ORDER_SAGA.steps]))


async def _wait_finished(database_url: str, sagas: list[str]) -> dict[str, SagaState]:
    db = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + 90
        while True:
            rows = await db.fetch(
                "SELECT saga_id, state, version FROM saga_instances"
                " WHERE saga_id = ANY($1::text[])",
                sagas,
            )
            states = {
                r["saga_id"]: SagaState.from_json(json.loads(r["state"]), r["version"])
                for r in rows
            }
            if len(states) == len(sagas) and all(s.finished for s in states.values()):
                return states
            if time.monotonic() > deadline:
                raise TimeoutError(f"sagas not finished: {[s.status for s in states.values()]}")
            await asyncio.sleep(0.2)
    finally:
        await db.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie of ours is not running
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True
