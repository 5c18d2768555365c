"""A team's own saga system, outside this repository, on the public API alone.

``tests/external_system`` is copied to a folder of its own: its packages are named
``contracts`` and ``services`` (like the framework's example, which must not get
in the way) and its ``payment.PaymentCharged`` has a schema of its own. Its
processes are real: ``saga coordinator`` and ``saga run services.<name>`` run from
the folder holding the packages, on the tests' broker and PostgreSQL. One signup
completes, one fails at the charge and is compensated, one charge never answers
and the saga is undone the way its definition says (``on_timeout``).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from saga.dev import LocalSystem
from tests.conftest import Infra
from tests.kafka_helpers import eventually
from tests.system_helpers import commands_sent, fresh_database, saga_states

TEMPLATE = Path(__file__).resolve().parents[1] / "external_system"
REPOSITORY = Path(__file__).resolve().parents[2]
PROCESSES = {
    "coordinator": ["saga.cli", "coordinator"],
    "accounts": ["saga.cli", "run", "services.accounts"],
    "payment": ["saga.cli", "run", "services.payment"],
    "mail": ["saga.cli", "run", "services.mail"],
}
#: A charge that is taken and never answered, so the coordinator's reply timeout acts.
SILENT_CHARGES = [{"step": "charge", "action": "never_answer", "when": {"account_id": "slow-*"}}]


class Signups:
    def __init__(self, folder: Path, env: dict[str, str], database_url: str) -> None:
        self.folder = folder
        self.env = env
        self.database_url = database_url

    def run(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``python -m ARGS`` in the system's folder, as its operators would run it."""
        return subprocess.run(
            [sys.executable, "-m", *args],
            cwd=self.folder,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    async def sagas(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        return await saga_states(self.database_url, ids)

    async def sent(self, saga_id: str) -> list[str]:
        """Types of the compensation commands the coordinator sent for ``saga_id``."""
        return await commands_sent(self.database_url, saga_id)

    async def accounts(self) -> dict[str, bool]:
        """Whether each account of the accounts service's own table is open."""
        connection = await asyncpg.connect(self.database_url)
        try:
            rows = await connection.fetch("SELECT account_id, open FROM accounts")
        finally:
            await connection.close()
        return {r["account_id"]: r["open"] for r in rows}


@pytest.fixture
def signups(infra: Infra, tmp_path: Path) -> Iterator[Signups]:
    folder = tmp_path / "signup-system"
    shutil.copytree(TEMPLATE, folder)
    assert not folder.resolve().is_relative_to(REPOSITORY)
    database_url = fresh_database(infra.database_url)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SAGA_", "PYTHON"))},
        "SAGA_BOOTSTRAP_SERVERS": infra.bootstrap_servers,
        "SAGA_DATABASE_URL": database_url,
        "SAGA_ENABLE_IDEMPOTENCE": str(not infra.embedded_broker).lower(),
        "SAGA_FETCH_MAX_WAIT_MS": "5",
        "SAGA_TOPIC_PREFIX": f"ext{uuid.uuid4().hex[:6]}.",
        "SAGA_COMMIT_INTERVAL_MS": "20",
        "SAGA_TIMER_INTERVAL_MS": "100",
        "SAGA_SESSION_TIMEOUT_MS": "6000",
        "SAGA_HEARTBEAT_INTERVAL_MS": "500",
        "SAGA_DEFINITIONS": "contracts.sagas:SAGAS",
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    system = LocalSystem(env, logs, cwd=folder, processes=PROCESSES)
    try:
        system.start("coordinator")
        system.start("accounts")
        system.start("payment", env={"SAGA_FAULTS": json.dumps(SILENT_CHARGES)})
        system.start("mail")
        yield Signups(folder, env, database_url)
    finally:
        system.stop_all()


async def test_a_system_of_its_own_completes_compensates_and_undoes_a_timeout(
    signups: Signups,
) -> None:
    run = uuid.uuid4().hex[:6]
    gold, declined, slow = f"gold-{run}", f"declined-{run}", f"slow-{run}"
    for account, plan in ((gold, "gold"), (declined, "declined"), (slow, "silver")):
        started = await asyncio.to_thread(
            signups.run, "services.web", account, f"{account}@example.com", plan
        )
        assert started.returncode == 0, started.stderr

    async def ended() -> bool:
        found = await signups.sagas([gold, declined, slow])
        return {k: v["status"] for k, v in found.items()} == {
            gold: "completed",
            declined: "compensated",
            slow: "compensated",
        }

    try:
        await eventually(ended, timeout_s=60, what="three signups ended")
    except AssertionError:
        found = await signups.sagas([gold, declined, slow])
        raise AssertionError({k: v["status"] for k, v in found.items()}) from None
    sagas = await signups.sagas([gold, declined, slow])

    # Its own payment.PaymentCharged (account_id, plan, charge_ref) was read as its own.
    assert sagas[gold]["steps"]["charge"]["data"]["charge_ref"].startswith("ch-")
    assert {s["status"] for s in sagas[gold]["steps"].values()} == {"completed"}
    accounts = await signups.accounts()
    assert await signups.sent(gold) == []
    assert accounts[gold] is True

    assert sagas[declined]["steps"]["charge"]["status"] == "failed"
    assert await signups.sent(declined) == ["accounts.CloseAccount"]
    assert accounts[declined] is False

    # The charge never answered: undone by the command its definition names for a timeout.
    assert "timed out" in (sagas[slow]["steps"]["charge"]["error"] or "")
    assert await signups.sent(slow) == ["payment.VoidCharges", "accounts.CloseAccount"]
    assert accounts[slow] is False
    assert sagas[slow]["steps"]["welcome"]["status"] == "pending", "never sent"


async def test_a_missing_module_a_port_in_use_and_no_definitions_are_one_line_errors(
    signups: Signups,
) -> None:
    missing = await asyncio.to_thread(signups.run, "saga.cli", "run", "services.billing")
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        f"saga: error: saga run: no module named 'services.billing' (from {signups.folder}):"
        " run it from the folder holding the package 'services', or install that package"
    ]

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = await asyncio.to_thread(
            signups.run,
            "saga.cli",
            "run",
            "services.mail",
            env={"SAGA_HEALTH_PORT": str(port), "SAGA_HEALTH_HOST": "127.0.0.1"},
        )
    assert busy.returncode == 1, busy.stderr
    assert busy.stderr.strip().splitlines()[-1] == (
        f"saga: error: port {port} on 127.0.0.1 is in use: set SAGA_HEALTH_PORT to a free port"
        " (each process of a system on one machine needs its own)"
    )

    unset = await asyncio.to_thread(
        signups.run, "saga.cli", "coordinator", env={"SAGA_DEFINITIONS": ""}
    )
    assert unset.returncode == 1
    assert unset.stderr.strip().splitlines() == [
        "saga: error: SAGA_DEFINITIONS is not set: name the module:attribute of your saga"
        " definitions, e.g. SAGA_DEFINITIONS=myapp.sagas:SAGAS"
    ]
