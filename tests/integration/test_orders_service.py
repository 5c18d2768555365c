"""The orders service in-process on the real broker and PostgreSQL: HTTP in, saga out."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request
import uuid
from typing import Any

from pydantic import SecretStr

from saga.kafka.publisher import Publisher
from saga.messages.base import Message
from saga.messages.envelope import Envelope
from saga.messages.lifecycle import SagaFinished
from saga.participant.runtime import ServiceRuntime
from saga.settings import Settings
from services.orders import service
from tests.http_helpers import OPERATOR, customer
from tests.kafka_helpers import eventually, read_available, read_records
from tests.system_helpers import fresh_database


def call(
    url: str, body: dict[str, Any] | None = None, token: str = OPERATOR, **headers: str
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {token}", **headers}
    request = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310 (loopback)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


BAD_LENGTH = b"POST /orders HTTP/1.1\r\nContent-Length: -5\r\n\r\n"


def raw_request(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(data)
        return connection.recv(200)


async def test_placing_an_order_stores_it_starts_its_saga_once_and_shows_its_outcome(
    settings: Settings,
) -> None:
    prefix = f"o{uuid.uuid4().hex[:6]}."
    config = settings.model_copy(
        update={
            "topic_prefix": prefix,
            "health_port": 0,
            "health_host": "127.0.0.1",
            "database_url": SecretStr(fresh_database(settings.database_url.get_secret_value())),
        }
    )
    runtime = ServiceRuntime(service, config)
    await runtime.start()
    task = asyncio.create_task(runtime.run())
    try:
        assert runtime.health is not None
        base = f"http://127.0.0.1:{runtime.health.port}"
        caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        order = {"order_id": "o-1", "customer_id": "alice", "amount_cents": 4200, "sku": "sku-2"}
        status, placed = await asyncio.to_thread(call, f"{base}/orders", order, traceparent=caller)
        assert (status, placed["status"], placed["saga_id"]) == (202, "pending", "o-1")
        again = await asyncio.to_thread(call, f"{base}/orders", order)
        assert again[0] == 200 and again[1]["order_id"] == "o-1", "placing is idempotent"
        clash = await asyncio.to_thread(call, f"{base}/orders", {**order, "amount_cents": 1})
        assert clash[0] == 409, "the same id with other data is refused"
        bad = await asyncio.to_thread(call, f"{base}/orders", {"customer_id": "x"})
        assert bad[0] == 400 and "amount_cents" in json.dumps(bad[1])
        huge = {**order, "order_id": "o-2", "quantity": 2**40}
        assert (await asyncio.to_thread(call, f"{base}/orders", huge))[0] == 400
        assert (await asyncio.to_thread(raw_request, runtime.health.port, BAD_LENGTH)).startswith(
            b"HTTP/1.1 400"
        )
        assert (await asyncio.to_thread(call, f"{base}/orders/nope"))[0] == 404

        records = await read_records(config, f"{prefix}orders.events", 1, timeout_s=20)
        await asyncio.sleep(1)
        assert len(await read_available(config, f"{prefix}orders.events")) == 1, "one saga"
        headers = {k: v.decode() for k, v in records[0].headers}
        assert headers["ce_type"] == "orders.OrderPlaced"
        assert headers["ce_sagatype"] == "order" and records[0].key == b"o-1"
        assert json.loads(records[0].value)["sku"] == "sku-2"
        assert headers["traceparent"].split("-")[1] == caller.split("-")[1], "caller's trace"

        finished: Envelope[Message] = Envelope(
            payload=SagaFinished(saga_type="order", status="compensated", reason="no stock"),
            saga_id="o-1",
            saga_type="order",
            source="/coordinator",
        )
        async with Publisher(config) as publisher:
            await publisher.publish(f"{prefix}saga.events", finished)

        async def cancelled() -> bool:
            _, shown = await asyncio.to_thread(call, f"{base}/orders/o-1")
            return bool(shown["status"] == "cancelled" and shown["reason"] == "no stock")

        await eventually(cancelled, what="the order cancelled")
        listed = await asyncio.to_thread(call, f"{base}/orders?status=cancelled")
        assert [o["order_id"] for o in listed[1]] == ["o-1"]

        # Customers act as themselves, and see and cancel their own orders only.
        alice, mallory = customer("alice"), customer("mallory")
        mine = {"order_id": "o-3", "amount_cents": 500}
        status, placed = await asyncio.to_thread(call, f"{base}/orders", mine, alice)
        assert (status, placed["customer_id"]) == (202, "alice"), "the customer from the token"
        as_bob = {"order_id": "o-4", "amount_cents": 500, "customer_id": "bob"}
        assert (await asyncio.to_thread(call, f"{base}/orders", as_bob, mallory))[0] == 403
        assert (await asyncio.to_thread(call, f"{base}/orders/o-3", None, mallory))[0] == 404
        assert (await asyncio.to_thread(call, f"{base}/orders/o-3", None, alice))[0] == 200
        _, hers = await asyncio.to_thread(call, f"{base}/orders", None, mallory)
        assert hers == [], "no one else's orders, nor their connection handles"
        _, own = await asyncio.to_thread(call, f"{base}/orders", None, alice)
        assert [o["order_id"] for o in own] == ["o-3", "o-1"], "hers: o-1 was placed for her"
        stop = {"reason": "not mine to stop"}
        url = f"{base}/orders/o-3/cancel"
        assert (await asyncio.to_thread(call, url, stop, mallory))[0] == 404
        assert (await asyncio.to_thread(call, url, stop, "not-a-token"))[0] == 401
        _, everyone = await asyncio.to_thread(call, f"{base}/orders", None, "test-viewer")
        assert {o["order_id"] for o in everyone} == {"o-1", "o-3"}, "staff see every order"
        assert (await asyncio.to_thread(call, url, stop, "test-viewer"))[0] == 404, "sees only"
        assert (await asyncio.to_thread(call, url, {"reason": "changed my mind"}, alice))[0] == 202
    finally:
        runtime.stop()
        await asyncio.wait_for(task, 30)
