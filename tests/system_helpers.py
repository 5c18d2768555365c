"""A whole saga system as real processes: coordinator and step services."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg

from contracts.inventory import InventoryReserved
from contracts.notification import CustomerNotified
from contracts.orders import OrderCancelled, OrderPlaced
from contracts.payment import PaymentCharged
from contracts.shipping import OrderShipped
from saga.dev.system import LocalSystem
from saga.kafka.publisher import Publisher
from saga.messages.base import Event, Message
from saga.messages.envelope import Envelope
from saga.settings import Settings
from services.system import PROCESSES
from tests.http_helpers import AUTH_TOKENS

ROOT = Path(__file__).resolve().parents[1]


class System:
    """Processes sharing one topic prefix, one broker and one database."""

    def __init__(self, bootstrap: str, database_url: str, settings: Settings, logdir: Path) -> None:
        self.prefix = f"t{uuid.uuid4().hex[:8]}."
        self.database_url = database_url
        self.settings = settings.model_copy(
            update={"bootstrap_servers": bootstrap, "topic_prefix": self.prefix}
        )
        self.env = {
            **os.environ,
            "SAGA_BOOTSTRAP_SERVERS": bootstrap,
            "SAGA_DATABASE_URL": database_url,
            "SAGA_ENABLE_IDEMPOTENCE": str(settings.enable_idempotence).lower(),
            "SAGA_FETCH_MAX_WAIT_MS": str(settings.fetch_max_wait_ms),
            "SAGA_TOPIC_PREFIX": self.prefix,
            "SAGA_TOPIC_PARTITIONS": "3",
            "SAGA_SESSION_TIMEOUT_MS": "6000",
            "SAGA_HEARTBEAT_INTERVAL_MS": "500",
            "SAGA_COMMIT_INTERVAL_MS": "20",
            "SAGA_RELAY_INTERVAL_MS": "100",
            "SAGA_TIMER_INTERVAL_MS": "100",
            "SAGA_DEFINITIONS": "tests.integration.sagas:definitions",
            "SAGA_AUTH_TOKENS": AUTH_TOKENS,
        }
        self.local = LocalSystem(self.env, logdir, cwd=ROOT, processes=PROCESSES)

    def start(self, name: str, *, instance: str = "", module: list[str] | None = None) -> None:
        # With signing keys configured, each process signs with its own key:
        # "<principal>-key" (the coordinator's principal is "coordinator").
        own = {"SAGA_SIGNING_KEY_ID": f"{name}-key"} if "SAGA_SIGNING_KEYS" in self.env else {}
        self.local.start(name, instance=instance, env=own, module=module)

    def kill(self, key: str, sig: int = signal.SIGKILL) -> None:
        self.local.kill(key, sig)

    def stop_all(self) -> None:
        self.local.stop_all()

    async def place(
        self, order_id: str, amount_cents: int = 1200, *, customer_id: str = "c", **fields: Any
    ) -> Envelope[Message]:
        """Publish the ``OrderPlaced`` that starts saga ``order_id`` (``fields``: more of it)."""
        order = OrderPlaced(
            order_id=order_id, customer_id=customer_id, amount_cents=amount_cents, **fields
        )
        envelope: Envelope[Message] = Envelope(
            payload=order,
            saga_id=order_id,
            saga_type="order",
            source="/services/orders",
        )
        async with Publisher(self.settings) as publisher:
            await publisher.publish(f"{self.prefix}orders.events", envelope)
        return envelope

    async def place_cancel(self, order_id: str, reason: str) -> None:
        """Publish the ``OrderCancelled`` with which the orders service cancels a saga."""
        envelope: Envelope[Message] = Envelope(
            payload=OrderCancelled(order_id=order_id, reason=reason),
            saga_id=order_id,
            saga_type="order",
            source="/services/orders",
        )
        async with Publisher(self.settings) as publisher:
            await publisher.publish(f"{self.prefix}orders.events", envelope)

    async def sagas(self, saga_ids: list[str]) -> dict[str, dict[str, Any]]:
        return await saga_states(self.database_url, saga_ids)

    async def statuses(self, saga_ids: list[str]) -> dict[str, str]:
        return {k: v["status"] for k, v in (await self.sagas(saga_ids)).items()}

    async def commands_sent(self, saga_id: str, purpose: str = "compensate") -> list[str]:
        """Types of the commands the coordinator sent: compensations, or (``"start"``)
        the triggers it sent to run steps."""
        return await commands_sent(self.database_url, saga_id, purpose)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "saga.cli", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


async def saga_states(database_url: str, saga_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The coordinator's state of each saga of ``saga_ids`` it knows, by saga id."""
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT saga_id, state FROM saga_instances WHERE saga_id = ANY($1::text[])",
            saga_ids,
        )
    finally:
        await connection.close()
    return {r["saga_id"]: json.loads(r["state"]) for r in rows}


async def commands_sent(database_url: str, saga_id: str, purpose: str = "compensate") -> list[str]:
    """Types of the commands the coordinator sent for ``saga_id``, in order, from its saga
    log: compensations, or (``"start"``) the triggers it sent to run steps."""
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT detail FROM saga_log WHERE saga_id = $1 AND kind = 'decision' ORDER BY id",
            saga_id,
        )
    finally:
        await connection.close()
    return [
        c["type"]
        for r in rows
        for c in json.loads(r["detail"])["commands"]
        if c.get("purpose", "compensate") == purpose
    ]


def fresh_database(server_url: str) -> str:
    """A new, empty database on the server of ``server_url``; its URL.

    A topic prefix namespaces topics, not tables: each system gets its own
    database, as each deployment would.
    """
    name = f"sys_{uuid.uuid4().hex[:10]}"

    async def create() -> None:
        connection = await asyncpg.connect(server_url)
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # callable from async tests too
        pool.submit(asyncio.run, create()).result()
    base, _, _ = server_url.rpartition("/")
    return f"{base}/{name}"


@contextmanager
def system(
    bootstrap: str,
    database_url: str,
    settings: Settings,
    logdir: Path,
    *names: str,
    env: dict[str, str] | None = None,
) -> Iterator[System]:
    running = System(bootstrap, fresh_database(database_url), settings, logdir)
    running.env.update(env or {})
    try:
        for name in names:
            running.start(name)
        yield running
    finally:
        running.stop_all()


def happy_events(saga_id: str) -> list[tuple[str, Envelope[Message]]]:
    """The five events of a successful order saga, as the services would publish them."""
    chain: list[tuple[str, Event]] = [
        ("orders", OrderPlaced(order_id=saga_id, customer_id="c", amount_cents=900)),
        ("inventory", InventoryReserved(order_id=saga_id, sku="s", quantity=1, amount_cents=900)),
        ("payment", PaymentCharged(order_id=saga_id, amount_cents=900, charge_id="c")),
        ("shipping", OrderShipped(order_id=saga_id, parcel_id="p")),
        (
            "notification",
            CustomerNotified(order_id=saga_id, parcel_id="p", notification_id=f"n-{saga_id}"),
        ),
    ]
    return [
        (
            f"{service}.events",
            Envelope(
                payload=event, saga_id=saga_id, saga_type="order", source=f"/services/{service}"
            ),
        )
        for service, event in chain
    ]
