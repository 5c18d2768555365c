"""``saga bulk`` and ``saga dead-letters`` with real processes: the operator's shell has the
coordinator's database and the broker, and acts as ``SAGA_OPERATOR``."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import asyncpg

from saga.kafka.publisher import Publisher
from tests.conftest import Infra
from tests.integration.test_coordinator import launch, until
from tests.kafka_helpers import eventually, read_available


async def test_bulk_retry_counts_first_then_acts_and_a_dead_letter_is_listed_and_redriven(
    infra: Infra, tmp_path: Path
) -> None:
    # No payment service: charges time out and their refunds are never confirmed.
    with launch(infra, tmp_path, "coordinator", "inventory", "shipping") as running:
        running.env["SAGA_OPERATOR"] = "olga"
        run = uuid.uuid4().hex[:6]
        sagas = [f"bulk-{run}-{n}" for n in range(3)]
        for saga_id in sagas:
            await running.place(saga_id)
        await until(running, sagas, "parked", timeout_s=90)

        dry = running.cli("bulk", "retry", "--state", "parked", "--step", "charge", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert "3 saga(s) match state parked, step charge" in dry.stdout
        assert set(sagas) <= set(dry.stdout.split())
        assert "dry run: nothing changed" in dry.stdout
        assert await running.statuses(sagas) == dict.fromkeys(sagas, "parked")

        moved = running.cli("bulk", "retry", "--state", "parked", "--yes", "--expect", "4")
        assert moved.returncode == 1, moved.stdout
        assert "the filter now finds 3 saga(s), not the 4 shown" in moved.stderr
        assert await running.statuses(sagas) == dict.fromkeys(sagas, "parked"), "nothing done"

        one = running.cli("bulk", "resolve", "--key", sagas[0], "--yes")
        assert one.returncode == 2 and "resolve needs a reason" in one.stderr
        done = running.cli(
            "bulk", "retry", "--state", "parked", "--key", f"order_id={sagas[0]}", "--yes"
        )
        assert done.returncode == 0, done.stderr
        assert f"retry: {sagas[0]}" in done.stdout
        assert "1 acted on, 0 refused, by olga" in done.stdout
        assert (await running.commands_sent(sagas[0]))[-1] == "payment.RefundPayment"
        nothing = running.cli("bulk", "retry", "--key", "no-such-order", "--dry-run")
        assert (nothing.returncode, nothing.stdout.splitlines()[0]) == (
            1,
            "0 saga(s) match key no-such-order",
        )

        # A record that is not JSON is dead-lettered, listed with its reason, redriven.
        topic = f"{running.prefix}inventory.events"
        bad = f"bad-{run}"
        async with Publisher(running.settings) as publisher:
            await publisher.publish_raw(topic, key=bad.encode(), value=b"{", headers=[])

        async def listed() -> list[dict[str, str]]:
            out = running.cli("dead-letters", "list", "--topic", f"{topic}.dlq", "--json")
            assert out.returncode == 0, out.stderr
            return [
                x for x in json.loads(out.stdout).get(f"{topic}.dlq", []) if x["saga_id"] == bad
            ]

        async def dead_lettered() -> bool:
            return bool(await listed())

        await eventually(dead_lettered, timeout_s=60, what="the record dead-lettered")
        [letter] = (await listed())[:1]
        assert letter["from"].startswith(f"{topic}[") and letter["reason"]
        again = running.cli("dead-letters", "redrive", letter["id"])
        assert again.returncode == 0, again.stderr
        assert f"redriven: {letter['id']}" in again.stdout
        copies = [r for r in await read_available(running.settings, topic) if r.key == bad.encode()]
        assert [r.value for r in copies] == [b"{", b"{"], "the original, then the redriven copy"
        missing = running.cli("dead-letters", "redrive", f"{topic}.dlq:0:999999")
        assert missing.returncode == 2 and "no dead letter" in missing.stderr

        connection = await asyncpg.connect(running.database_url)
        try:
            audit = [
                (r["actor"], r["action"], r["target"])
                for r in await connection.fetch("SELECT * FROM saga_audit ORDER BY id")
            ]
        finally:
            await connection.close()
        assert audit == [
            ("olga", "bulk retry", f"state parked, key order_id={sagas[0]}"),
            ("olga", "redrive", letter["id"]),
        ]
