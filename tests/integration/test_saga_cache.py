"""The coordinator keeps running sagas as it saved them, and never decides on a stale one."""

from __future__ import annotations

import json

import asyncpg
import pytest

from saga.coordinator.apply import Coordinator
from saga.coordinator.state import SagaState
from saga.outbox.store import PostgresServiceStore
from tests.conftest import Infra
from tests.integration.sagas import relaxed
from tests.system_helpers import fresh_database, happy_events


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The saga ids whose state was read from its JSON."""
    seen: list[str] = []
    original = SagaState.from_json

    def counting(data: dict[str, object], version: int) -> SagaState:
        seen.append(str(data["saga_id"]))
        return original(data, version)

    monkeypatch.setattr(SagaState, "from_json", staticmethod(counting))
    return seen


async def test_a_saga_changed_by_another_coordinator_is_read_again_and_one_saved_here_is_not(
    infra: Infra, parsed: list[str]
) -> None:
    database = fresh_database(infra.database_url)
    stores = [
        PostgresServiceStore(database, "coordinator", components=("coordinator",)) for _ in range(2)
    ]
    for store in stores:
        await store.start()
    try:
        here, elsewhere = (Coordinator(relaxed(), store) for store in stores)
        placed, reserved, charged, shipped, notified = (e for _, e in happy_events("s-1"))

        await here.apply_events([placed])
        assert parsed == [], "a new saga has no row to read"
        await elsewhere.apply_events([reserved])  # another instance (or an operator)
        assert parsed == ["s-1"], "the other instance had not seen it"
        parsed.clear()

        await here.apply_events([charged])
        assert parsed == ["s-1"], "changed elsewhere since saved here: read again"
        parsed.clear()
        await here.apply_events([shipped])
        assert parsed == [], "as saved here: not read again"
        await here.apply_events([notified])

        db = await asyncpg.connect(database)
        try:
            row = await db.fetchrow(
                "SELECT status, version, state FROM saga_instances WHERE saga_id = 's-1'"
            )
        finally:
            await db.close()
    finally:
        for store in stores:
            await store.stop()
    assert (row["status"], row["version"]) == ("completed", 5)
    state = SagaState.from_json(json.loads(row["state"]), row["version"])
    assert {name: step.status for name, step in state.steps.items()} == {
        name: "completed" for name in state.steps
    }
    assert here._known == {}, "a finished saga is let go"


async def test_with_no_cache_every_saga_is_read_from_its_row(
    infra: Infra, parsed: list[str]
) -> None:
    store = PostgresServiceStore(
        fresh_database(infra.database_url), "coordinator", components=("coordinator",)
    )
    await store.start()
    try:
        coordinator = Coordinator(relaxed(), store, cached_sagas=0)
        placed, reserved, charged, *_ = (e for _, e in happy_events("s-2"))
        for event in (placed, reserved, charged):
            await coordinator.apply_events([event])
    finally:
        await store.stop()
    assert parsed == ["s-2", "s-2"]
