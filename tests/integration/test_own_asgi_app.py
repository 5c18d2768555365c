"""A team's own Starlette app starts sagas in its request's transaction (the outbox) and
relays them from its lifespan: a saga starts only if the request's transaction commits."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from saga.http.outbox import outbox_relay, saga_transaction
from saga.http.server import HttpServer
from saga.kafka.provisioning import ensure_topics
from saga.settings import Settings
from tests.http_helpers import call_json
from tests.kafka_helpers import read_available, read_records
from tests.system_helpers import fresh_database
from tests.trips.messages import TripRequested


def team_app(settings: Settings) -> Starlette:
    """What a team writes: its own table, its own endpoint, a saga started in it."""
    pool: Any = None

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal pool
        async with outbox_relay(settings, service="trips"):
            pool = await asyncpg.create_pool(settings.database_url.get_secret_value())
            await pool.execute("CREATE TABLE IF NOT EXISTS trips (trip_id text PRIMARY KEY)")
            try:
                yield
            finally:
                await pool.close()

    async def book(request: Request) -> JSONResponse:
        trip_id = request.path_params["trip_id"]
        try:
            async with pool.acquire() as connection, connection.transaction():
                await connection.execute("INSERT INTO trips VALUES ($1)", trip_id)
                async with saga_transaction(
                    connection, service="trips", topic_prefix=settings.topic_prefix
                ) as ctx:
                    ctx.start_saga("trip", TripRequested(trip_id=trip_id), saga_id=trip_id)
                if request.query_params.get("fail"):
                    raise RuntimeError("the request fails after starting its saga")
        except RuntimeError as exc:
            return JSONResponse({"error": str(exc)}, status_code=500)
        return JSONResponse({"trip_id": trip_id}, status_code=202)

    return Starlette(routes=[Route("/trips/{trip_id}", book, methods=["POST"])], lifespan=lifespan)


async def test_a_saga_started_from_a_teams_own_app_starts_only_if_its_transaction_commits(
    settings: Settings,
) -> None:
    prefix = f"a{uuid.uuid4().hex[:6]}."
    config = settings.model_copy(
        update={
            "topic_prefix": prefix,
            "relay_interval_ms": 100,
            "database_url": SecretStr(fresh_database(settings.database_url.get_secret_value())),
        }
    )
    topic = f"{prefix}trips.events"
    await ensure_topics(config, [topic])
    app = team_app(config)
    # Served as the team would (uvicorn), lifespan included.
    async with app.router.lifespan_context(app):
        server = HttpServer(app, host="127.0.0.1", port=0)
        await server.start()
        try:
            base = f"http://127.0.0.1:{server.port}/trips"
            kept = await asyncio.to_thread(call_json, f"{base}/t-kept", "POST", {})
            failed = await asyncio.to_thread(call_json, f"{base}/t-failed?fail=1", "POST", {})
        finally:
            await server.stop()
        assert kept == (202, {"trip_id": "t-kept"})
        assert failed[0] == 500
        [record] = await read_records(config, topic, 1, timeout_s=20)
    assert record.key == b"t-kept" and json.loads(record.value)["trip_id"] == "t-kept"
    headers = {k: v.decode() for k, v in record.headers}
    assert headers["ce_type"] == "trips.TripRequested" and headers["ce_sagatype"] == "trip"
    others = await read_available(config, topic)
    assert [r.key for r in others] == [b"t-kept"], "the rolled-back request started nothing"
    connection = await asyncpg.connect(config.database_url.get_secret_value())
    try:
        rows = await connection.fetch("SELECT trip_id FROM trips")
        unsent = await connection.fetchval("SELECT count(*) FROM saga_outbox WHERE sent_at IS NULL")
    finally:
        await connection.close()
    assert [r["trip_id"] for r in rows] == ["t-kept"] and unsent == 0
