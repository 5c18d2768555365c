"""The operator's connection to the coordinator's database, and a saga read from it."""

from __future__ import annotations

import json

import asyncpg

from saga.coordinator.state import SagaState
from saga.settings import Settings


async def connect() -> asyncpg.Connection:
    """A connection to ``SAGA_DATABASE_URL``; the caller closes it."""
    return await asyncpg.connect(Settings().database_url.get_secret_value())


async def load_saga(saga_id: str) -> SagaState | None:
    """The saga's current state, ``None`` if there is no such saga."""
    connection = await connect()
    try:
        row = await connection.fetchrow(
            "SELECT state, version FROM saga_instances WHERE saga_id = $1", saga_id
        )
    finally:
        await connection.close()
    if row is None:
        return None
    return SagaState.from_json(json.loads(row["state"]), row["version"])
