"""A whole saga system as real processes: coordinator and step services."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg

from contracts.envelope import Envelope
from contracts.messages import Message
from contracts.orders import OrderPlaced
from saga.dev.processes import free_port
from saga.publisher import Publisher
from saga.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
PROCESSES = {
    "coordinator": ["saga.cli", "coordinator"],
    "inventory": ["services.inventory"],
    "payment": ["services.payment"],
    "shipping": ["services.shipping"],
}


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
            "SAGA_HEALTH_HOST": "127.0.0.1",
            "SAGA_SESSION_TIMEOUT_MS": "6000",
            "SAGA_HEARTBEAT_INTERVAL_MS": "500",
            "SAGA_COMMIT_INTERVAL_MS": "20",
            "SAGA_RELAY_INTERVAL_MS": "100",
            "SAGA_TIMER_INTERVAL_MS": "100",
            "SAGA_DEFINITIONS": "tests.integration.sagas:definitions",
        }
        self.logdir = logdir
        self.running: dict[str, tuple[subprocess.Popen[bytes], int]] = {}

    def start(self, name: str, *, instance: str = "") -> None:
        key = name + instance
        port = free_port()
        log = open(self.logdir / f"{key}.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            [sys.executable, "-m", *PROCESSES[name]],
            cwd=ROOT,
            env={**self.env, "SAGA_HEALTH_PORT": str(port)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.running[key] = (proc, port)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"{key} exited: {(self.logdir / f'{key}.log').read_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"{key} not ready")

    def kill(self, key: str, sig: int = signal.SIGKILL) -> None:
        proc, _ = self.running.pop(key)
        proc.send_signal(sig)
        proc.wait(30)

    def stop_all(self) -> None:
        for key in list(self.running):
            proc, _ = self.running[key]
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            self.running.pop(key)

    async def place(self, order_id: str, amount_cents: int = 1200) -> Envelope[Message]:
        envelope: Envelope[Message] = Envelope(
            payload=OrderPlaced(order_id=order_id, customer_id="c", amount_cents=amount_cents),
            saga_id=order_id,
            saga_type="order",
            source="/services/orders",
        )
        async with Publisher(self.settings) as publisher:
            await publisher.publish(f"{self.prefix}orders.events", envelope)
        return envelope

    async def sagas(self, saga_ids: list[str]) -> dict[str, dict[str, Any]]:
        connection = await asyncpg.connect(self.database_url)
        try:
            rows = await connection.fetch(
                "SELECT saga_id, state FROM saga_instances WHERE saga_id = ANY($1::text[])",
                saga_ids,
            )
        finally:
            await connection.close()
        return {r["saga_id"]: json.loads(r["state"]) for r in rows}

    async def statuses(self, saga_ids: list[str]) -> dict[str, str]:
        return {k: v["status"] for k, v in (await self.sagas(saga_ids)).items()}

    async def commands_sent(self, saga_id: str) -> list[str]:
        connection = await asyncpg.connect(self.database_url)
        try:
            rows = await connection.fetch(
                "SELECT detail FROM saga_log WHERE saga_id = $1 AND kind = 'decision' ORDER BY id",
                saga_id,
            )
        finally:
            await connection.close()
        return [c["type"] for r in rows for c in json.loads(r["detail"])["commands"]]

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
    bootstrap: str, database_url: str, settings: Settings, logdir: Path, *names: str
) -> Iterator[System]:
    running = System(bootstrap, fresh_database(database_url), settings, logdir)
    try:
        for name in names:
            running.start(name)
        yield running
    finally:
        running.stop_all()
