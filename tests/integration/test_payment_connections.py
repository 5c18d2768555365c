"""Payment's connection routes in-process on the real broker and PostgreSQL."""

from __future__ import annotations

import asyncio
import functools
import json
import uuid

import asyncpg
import pytest
from pydantic import SecretStr

from saga.participant.request_runner import RequestRunner
from saga.participant.runtime import ServiceRuntime
from saga.security.vault import VaultKeys
from saga.settings import Settings
from services.payment import service
from tests.http_helpers import call_json, customer
from tests.system_helpers import fresh_database

TOKEN = f"at-{uuid.uuid4().hex}"


async def test_customers_connect_and_disconnect_their_bank(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAGA_VAULT_KEYS", json.dumps({"v1": VaultKeys.new_key()}))
    monkeypatch.setenv("SAGA_VAULT_KEY_ID", "v1")
    database = fresh_database(settings.database_url.get_secret_value())
    config = settings.model_copy(
        update={
            "topic_prefix": f"p{uuid.uuid4().hex[:6]}.",
            "health_port": 0,
            "health_host": "127.0.0.1",
            "database_url": SecretStr(database),
        }
    )
    runtime = ServiceRuntime(service, config)
    await runtime.start()
    task = asyncio.create_task(runtime.run())
    try:
        assert runtime.health is not None
        connections = f"http://127.0.0.1:{runtime.health.port}/connections"
        as_alice = functools.partial(call_json, token=customer("alice"))
        as_mallory = functools.partial(call_json, token=customer("mallory"))
        grant = {"access_token": TOKEN, "expires_in": 3600}
        bad = await asyncio.to_thread(as_alice, connections, "POST", {**grant, "expires_in": -1})
        assert bad[0] == 400 and "expires_in" in json.dumps(bad[1])
        assert TOKEN not in json.dumps(bad[1]), "a refused body is not echoed"
        for_alice = {**grant, "customer_id": "alice"}
        refused = await asyncio.to_thread(as_mallory, connections, "POST", for_alice)
        assert refused[0] == 403, "Mallory cannot connect a bank in Alice's name"
        assert (await asyncio.to_thread(call_json, connections, "POST", grant, token=None))[
            0
        ] == 401
        status, answer = await asyncio.to_thread(as_alice, connections, "POST", for_alice)
        assert status == 201 and answer["handle"].startswith("conn_")
        handle = answer["handle"]
        db = await asyncpg.connect(database)
        try:
            row = await db.fetchrow("SELECT * FROM saga_connections WHERE handle = $1", handle)
        finally:
            await db.close()
        assert row["owner"] == "alice" and TOKEN.encode() not in row["access_ct"]
        gone = f"{connections}/{handle}"
        assert (await asyncio.to_thread(as_mallory, gone, "DELETE"))[0] == 404, "not hers"
        assert (await asyncio.to_thread(call_json, gone, "DELETE"))[0] == 404, "nor staff's"
        assert (await asyncio.to_thread(as_alice, gone, "DELETE"))[0] == 200
        assert (await asyncio.to_thread(as_alice, gone, "DELETE"))[0] == 404
    finally:
        runtime.stop()
        await task


async def test_without_vault_keys_connecting_is_refused_clearly() -> None:
    async def emit(records: object) -> None:
        raise AssertionError("nothing to publish")

    requests = RequestRunner(service, store=None, emit=emit, after_commit=None)
    body = json.dumps({"access_token": TOKEN, "expires_in": 60}).encode()
    status, answer = await requests("POST", "/connections", {}, body)
    assert status == 503 and "SAGA_VAULT_KEYS" in answer["error"]
