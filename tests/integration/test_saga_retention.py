"""Finished sagas past their retention are deleted with their log, timers and tasks;
running, parked and recently finished ones stay. ``saga purge`` counts, refuses, deletes."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import uuid
from collections.abc import Coroutine
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from saga.cli import main
from saga.coordinator import retention, store
from saga.coordinator.retention import SagaRetention, prunable, prune_sagas
from saga.coordinator.state import SagaState, SagaStatus
from saga.outbox.schema import migrate
from tests.conftest import Infra
from tests.integration.test_coordinator import ALL, ids, launch, until
from tests.kafka_helpers import eventually
from tests.system_helpers import fresh_database

T = TypeVar("T")

RETENTION = SagaRetention(finished=timedelta(days=7), resolved=timedelta(days=30))

#: name -> (status, finished how long ago, last updated how long ago), None: not finished
SAGAS: dict[str, tuple[SagaStatus, timedelta | None, timedelta]] = {
    "completed long ago": ("completed", timedelta(days=8), timedelta(days=8)),
    "compensated long ago": ("compensated", timedelta(days=9), timedelta(days=9)),
    "completed lately": ("completed", timedelta(hours=1), timedelta(hours=1)),
    # Its row was last written long ago, but it finished lately: its state says so.
    "finished lately, row old": ("completed", timedelta(hours=1), timedelta(days=8)),
    "resolved a week ago": ("resolved", timedelta(days=8), timedelta(days=8)),
    "resolved long ago": ("resolved", timedelta(days=31), timedelta(days=31)),
    "running for months": ("running", None, timedelta(days=100)),
    "compensating for months": ("compensating", None, timedelta(days=100)),
    "parked for months": ("parked", None, timedelta(days=100)),
}
GONE = {"completed long ago", "compensated long ago", "resolved long ago"}


@pytest.fixture
def database(infra: Infra) -> str:
    """The URL of a database of its own, with the coordinator's tables."""
    url = fresh_database(infra.database_url)

    async def migrated() -> None:
        connection = await asyncpg.connect(url)
        try:
            await migrate(connection, "coordinator")
        finally:
            await connection.close()

    _run(migrated())
    return url


def _run(work: Coroutine[Any, Any, T]) -> T:
    """``work`` run to its end, from a test with an event loop running or not."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, work).result()


async def _sagas(connection: asyncpg.Connection, run: str) -> dict[str, str]:
    """The sagas of ``SAGAS``, written as the coordinator writes them, each with a
    log entry, an operator's entry, a timer and a task; their ids by name."""
    now: datetime = await connection.fetchval("SELECT now()")
    named = {name: f"{run}-{n}" for n, name in enumerate(SAGAS)}
    for name, (status, finished, updated) in SAGAS.items():
        saga_id = named[name]
        state = SagaState(
            saga_id=saga_id,
            saga_type="order",
            status=status,
            steps={},
            started_at=now - timedelta(days=100),
            finished_at=now - finished if finished is not None else None,
        )
        log = [
            store.LogEntry(saga_id, "event", "orders.OrderPlaced", "orders", {}, f"m-{saga_id}"),
            store.LogEntry(saga_id, "operator", "retry", "olga", {"reason": name}),
        ]
        async with connection.transaction():
            await store.persist(
                connection, [(state, None)], {(saga_id, "deadline"): now + timedelta(days=1)}, log
            )
        await connection.execute(
            "INSERT INTO saga_tasks (task_id, saga_id, saga_type, step, status)"
            " VALUES ($1, $2, 'order', 'approve', 'approved')",
            f"{saga_id}/approve",
            saga_id,
        )
        await connection.execute(
            "UPDATE saga_instances SET updated_at = now() - $2::interval,"
            " created_at = now() - interval '100 days' WHERE saga_id = $1",
            saga_id,
            updated,
        )
    return named


async def _left(connection: asyncpg.Connection, named: dict[str, str]) -> dict[str, set[str]]:
    """Per table, the names of the sagas that still have rows in it."""
    names = {saga_id: name for name, saga_id in named.items()}
    left = {}
    for table in ("saga_instances", "saga_log", "saga_timers", "saga_tasks"):
        rows = await connection.fetch(
            f"SELECT DISTINCT saga_id FROM {table} WHERE saga_id = ANY($1)",  # noqa: S608
            list(names),
        )
        left[table] = {names[r["saga_id"]] for r in rows}
    return left


async def test_one_pass_deletes_exactly_the_finished_sagas_past_their_retention(
    database: str,
) -> None:
    connection = await asyncpg.connect(database)
    pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
    try:
        named = await _sagas(connection, f"r{uuid.uuid4().hex[:6]}")
        assert await prunable(connection, RETENTION.by_status()) == {
            "compensated": 1,
            "completed": 1,
            "resolved": 1,
        }
        # Batches of one: the delete goes on until a batch comes back short.
        pruned = await prune_sagas(pool, RETENTION.by_status(), batch=1)
        again = await prune_sagas(pool, RETENTION.by_status())
        left = await _left(connection, named)
        audited = await connection.fetch(
            "SELECT actor, action, target, detail FROM saga_audit ORDER BY target"
        )
    finally:
        await pool.close()
        await connection.close()
    assert pruned == {"compensated": 1, "completed": 1, "resolved": 1}
    assert again == {"compensated": 0, "completed": 0, "resolved": 0}
    kept = set(SAGAS) - GONE
    assert left == {
        "saga_instances": kept,
        "saga_log": kept,
        "saga_timers": kept,
        "saga_tasks": kept,
    }
    # What people did to the deleted sagas is kept, in the audit.
    assert sorted((r["actor"], r["action"], r["target"]) for r in audited) == sorted(
        ("olga", "retry", named[name]) for name in GONE
    )
    assert {json.loads(r["detail"])["reason"] for r in audited} == GONE


async def test_a_saga_a_decision_holds_is_left_for_the_next_pass(database: str) -> None:
    connection = await asyncpg.connect(database)
    deciding = await asyncpg.connect(database)
    try:
        named = await _sagas(connection, f"h{uuid.uuid4().hex[:6]}")
        async with deciding.transaction():
            await store.lock_sagas(deciding, [named["completed long ago"]])
            pruned = await prune_sagas(connection, RETENTION.by_status())
        after = await prune_sagas(connection, RETENTION.by_status())
    finally:
        await deciding.close()
        await connection.close()
    assert pruned == {"compensated": 1, "completed": 0, "resolved": 1}
    assert after == {"compensated": 0, "completed": 1, "resolved": 0}


async def test_pruning_reads_a_range_of_the_status_index_not_every_saga(database: str) -> None:
    connection = await asyncpg.connect(database)
    try:
        # Many running sagas, a few old finished ones: a walk over the table would
        # cost what history costs.
        await connection.execute(
            "INSERT INTO saga_instances (saga_id, saga_type, status, version, state, created_at)"
            " SELECT 'run-' || n, 'order', 'running', 1, '{}', now() - interval '30 days'"
            " FROM generate_series(1, 20000) AS n"
        )
        await connection.execute(
            "INSERT INTO saga_instances (saga_id, saga_type, status, version, state, created_at)"
            " SELECT 'done-' || n, 'order', 'completed', 1, '{}', now() - n * interval '1 hour'"
            " FROM generate_series(1, 2000) AS n"
        )
        await connection.execute("ANALYZE saga_instances")
        plan = "\n".join(
            r[0]
            for r in await connection.fetch(
                "EXPLAIN " + retention._DELETE, "completed", timedelta(days=7).total_seconds(), 500
            )
        )
    finally:
        await connection.close()
    assert "saga_instances_status" in plan, plan
    assert "Seq Scan on saga_instances" not in plan, plan


def test_purge_counts_with_dry_run_refuses_without_yes_and_deletes_with_it(
    database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SAGA_DATABASE_URL", database)
    monkeypatch.setenv("SAGA_OPERATOR", "olga")

    async def written() -> dict[str, str]:
        connection = await asyncpg.connect(database)
        try:
            return await _sagas(connection, f"p{uuid.uuid4().hex[:6]}")
        finally:
            await connection.close()

    async def left() -> set[str]:
        connection = await asyncpg.connect(database)
        try:
            names = await _left(connection, named)
            assert len({frozenset(v) for v in names.values()}) == 1, names
            return names["saga_instances"]
        finally:
            await connection.close()

    named = _run(written())
    everything = set(SAGAS)

    assert main(["purge", "--older-than", "2d", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "4 saga(s) (1 compensated, 1 completed, 2 resolved) to purge" in out
    assert "finished more than 2d ago" in out
    assert "dry run: nothing deleted; --yes to delete them" in out
    assert _run(left()) == everything

    assert main(["purge", "--older-than", "2d"]) == 1
    assert "--dry-run to count them, --yes to delete them" in capsys.readouterr().err
    assert _run(left()) == everything

    assert main(["purge", "--older-than", "30d", "--status", "resolved", "--yes"]) == 0
    assert "purged 1 saga(s) (1 resolved): resolved, finished more than 30d ago, by olga" in (
        capsys.readouterr().out
    )
    assert _run(left()) == everything - {"resolved long ago"}

    assert main(["purge", "--older-than", "2d", "--yes"]) == 0
    out = capsys.readouterr().out
    assert "purged 3 saga(s) (1 compensated, 1 completed, 1 resolved)" in out
    gone = {"completed long ago", "compensated long ago", "resolved a week ago"}
    assert _run(left()) == everything - gone - {"resolved long ago"}

    assert main(["purge", "--older-than", "2d", "--yes"]) == 0
    assert "purged 0 saga(s): " in capsys.readouterr().out

    async def audited() -> list[tuple[str, str, dict[str, Any]]]:
        connection = await asyncpg.connect(database)
        try:
            rows = await connection.fetch(
                "SELECT actor, target, detail FROM saga_audit WHERE action = 'purge' ORDER BY id"
            )
        finally:
            await connection.close()
        return [(r["actor"], r["target"], json.loads(r["detail"])) for r in rows]

    first, second, _ = _run(audited())
    assert first == (
        "olga",
        "sagas resolved finished more than 30d ago",
        {"older_than": "30d", "statuses": ["resolved"], "purged": {"resolved": 1}},
    )
    assert second[2]["purged"] == {"compensated": 1, "completed": 1, "resolved": 1}


async def test_the_coordinator_prunes_what_it_finished(infra: Infra, tmp_path: Path) -> None:
    retention = {
        "SAGA_PRUNE_INTERVAL_MS": "500",
        "SAGA_FINISHED_SAGA_RETENTION_HOURS": str(2 / 3600),  # two seconds
    }
    with launch(infra, tmp_path, *ALL, env=retention) as running:
        sagas = ids("pruned", 3)
        for saga_id in sagas:
            await running.place(saga_id)
        await until(running, sagas, "completed")

        async def gone() -> bool:
            return not await running.statuses(sagas)

        await eventually(gone, timeout_s=30, what="the finished sagas pruned")
        connection = await asyncpg.connect(running.database_url)
        try:
            logged = await connection.fetchval(
                "SELECT count(*) FROM saga_log WHERE saga_id = ANY($1)", sagas
            )
        finally:
            await connection.close()
    assert logged == 0
    log = await asyncio.to_thread((tmp_path / "coordinator.log").read_text)
    assert "finished saga(s) past retention (" in log, log[-2000:]
