"""Operator actions in a system that requires signatures, with real processes.

Every process signs with its own key and refuses records not signed by their topic's
owner. The operator runs ``saga`` as a process of its own with the coordinator's
database and nothing else: no signing key, no broker. What an action decides is
written to the coordinator's outbox, and the running coordinator publishes it, signed
with its key; so a service obeys the compensation an operator asked for, and whoever
listens on ``saga.events`` takes the announcement of a resolved saga.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from saga.messages import headers as h
from saga.messages.topics import SECURITY_DEAD_LETTERS
from saga.security.signing import Verifier, parse_keys
from tests.conftest import Infra
from tests.http_helpers import call_json
from tests.integration.test_coordinator import launch, until
from tests.integration.test_signed_messages import keys_for_everyone, signing
from tests.kafka_helpers import eventually, read_available
from tests.system_helpers import ROOT, System

#: What the operator's shell lacks: keys, the broker.
NOT_FOR_OPERATORS = ("SAGA_SIGNING_KEYS", "SAGA_REQUIRE_SIGNATURES", "SAGA_BOOTSTRAP_SERVERS")


def operator(running: System, *args: str) -> subprocess.CompletedProcess[str]:
    """``saga ARGS`` as alice, with the coordinator's database and definitions only."""
    env = {k: v for k, v in running.env.items() if k not in NOT_FOR_OPERATORS}
    return subprocess.run(
        [sys.executable, "-m", "saga.cli", *args],
        cwd=ROOT,
        env={**env, "SAGA_OPERATOR": "alice"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def row(running: System, saga_id: str) -> tuple[int, dict[str, Any], int]:
    """The saga's version and state, and how many outbox rows it has."""
    connection = await asyncpg.connect(running.database_url)
    try:
        found = await connection.fetchrow(
            "SELECT version, state FROM saga_instances WHERE saga_id = $1", saga_id
        )
        outbox = await connection.fetchval(
            "SELECT count(*) FROM saga_outbox WHERE key = $1", saga_id.encode()
        )
    finally:
        await connection.close()
    assert found is not None
    return found["version"], json.loads(found["state"]), outbox


async def test_operator_actions_take_effect_and_are_announced_when_signatures_are_required(
    infra: Infra, tmp_path: Path
) -> None:
    keys = keys_for_everyone()
    # No payment service: charges time out and their refunds are never confirmed.
    processes = ("coordinator", "orders", "inventory", "shipping")
    with launch(infra, tmp_path, *processes, env=signing(keys)) as running:
        run = uuid.uuid4().hex[:6]
        skipped, resolved = f"skip-{run}", f"resolve-{run}"
        orders = running.local.url("orders")
        for order_id in (skipped, resolved):
            body = {"order_id": order_id, "customer_id": "c", "amount_cents": 1200}
            status, answer = await asyncio.to_thread(call_json, f"{orders}/orders", "POST", body)
            assert status == 202, answer
        await until(running, [skipped, resolved], "parked", timeout_s=90)

        # Skip: compensation goes on with the reservation, which inventory (requiring
        # signatures) releases only if the coordinator signed the command.
        skip = operator(running, "skip", skipped, "charge", "--reason", "refunded by hand")
        assert skip.returncode == 0, skip.stderr
        assert "1 message(s) published by the coordinator" in skip.stdout, skip.stdout
        await until(running, [skipped], "compensated")
        assert (await running.commands_sent(skipped))[-1] == "inventory.ReleaseInventory"

        # Retry: the refund goes out again, signed by the coordinator.
        before = await running.commands_sent(resolved)
        retried = operator(running, "retry", resolved)
        assert retried.returncode == 0, retried.stderr
        assert f"saga {resolved}: compensating" in retried.stdout
        assert await running.commands_sent(resolved) == [*before, "payment.RefundPayment"]

        # Resolve: announced on saga.events, and the orders service (requiring
        # signatures) marks the order resolved.
        done = operator(running, "resolve", resolved, "--reason", "settled with the customer")
        assert done.returncode == 0, done.stderr
        assert f"saga {resolved}: resolved" in done.stdout

        async def order_resolved() -> bool:
            _, order = await asyncio.to_thread(call_json, f"{orders}/orders/{resolved}")
            return bool(order["status"] == "resolved")

        await eventually(order_resolved, what="the order marked resolved from the announcement")
        _, order = await asyncio.to_thread(call_json, f"{orders}/orders/{resolved}")
        assert order["reason"] == "resolved by alice (settled with the customer)"

        verifier = Verifier(parse_keys(keys), topic_prefix=running.prefix)
        lifecycle = f"{running.prefix}saga.events"
        announced = []
        for record in await read_available(running.settings, lifecycle):
            verifier.check(*_position(record), record.key, record.value, list(record.headers))
            if record.key == resolved.encode():
                announced.append(json.loads(record.value or b"{}"))
        statuses = [a["status"] for a in announced]
        assert statuses[0] == "parked" and statuses[-1] == "resolved", statuses
        assert statuses.count("resolved") == 1, "resolved once"
        assert announced[-1]["reason"] == "resolved by alice (settled with the customer)"
        # Every command on the services' topics is the coordinator's, the operators' too.
        refunds = await read_available(running.settings, f"{running.prefix}payment.commands")
        releases = await read_available(running.settings, f"{running.prefix}inventory.commands")
        for record in (*refunds, *releases):
            verifier.check(*_position(record), record.key, record.value, list(record.headers))
        assert len([r for r in refunds if r.key == resolved.encode()]) > len(before)
        assert releases, "the skip's release reached inventory.commands"
        assert {r.key for r in releases} == {skipped.encode()}

        # Refused: resolving a finished saga changes nothing; unknown names are one line.
        unchanged = await row(running, skipped)
        again = operator(running, "resolve", skipped, "--reason", "rewrite history")
        assert (again.returncode, again.stdout) == (1, ""), again.stderr
        assert again.stderr == (
            "saga: error: resolve by alice (rewrite history):"
            " nothing to do, saga is compensated already\n"
        )
        assert await row(running, skipped) == unchanged, "no state change, nothing sent"
        teleport = operator(running, "skip", resolved, "teleport", "--reason", "x")
        assert teleport.returncode == 2
        assert teleport.stderr == (
            "saga: error: skip teleport by alice (x): saga order has no step 'teleport'\n"
        )
        nobody = operator(running, "retry", f"nobody-{run}")
        assert (nobody.returncode, nobody.stderr) == (2, f"saga: error: no saga 'nobody-{run}'\n")

        security = f"{running.prefix}{SECURITY_DEAD_LETTERS}"
        refused = await read_available(running.settings, security)
        assert [dict(r.headers).get(h.DLQ_REASON) for r in refused] == [], "nothing refused"


def _position(record: Any) -> tuple[str, int, int]:
    return record.topic, record.partition, record.offset
