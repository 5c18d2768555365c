"""Pivot steps and cancellation with real processes, on the real broker and database.

The order saga's pivot is ``notify`` (a sent mail stays sent): the coordinator
starts it itself, so it never runs for a saga that is compensating or finished.
Every step here times out after 3 s (``tests.integration.sagas:outage``).
"""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from saga.messages import headers as h
from tests.conftest import Infra
from tests.http_helpers import call_json
from tests.integration.test_coordinator import launch, until
from tests.integration.test_operator_actions import operator
from tests.kafka_helpers import eventually, read_available
from tests.system_helpers import System

OUTAGE = {"SAGA_DEFINITIONS": "tests.integration.sagas:outage"}
ALL = ("coordinator", "inventory", "payment", "shipping", "notification")


async def query(running: System, sql: str, *args: Any) -> list[dict[str, Any]]:
    connection = await asyncpg.connect(running.database_url)
    try:
        return [dict(r) for r in await connection.fetch(sql, *args)]
    finally:
        await connection.close()


async def terminal(running: System, saga_ids: list[str], timeout_s: float = 150) -> dict[str, str]:
    async def done() -> bool:
        found = await running.statuses(saga_ids)
        return len(found) == len(saga_ids) and set(found.values()) <= {"completed", "compensated"}

    try:
        await eventually(done, timeout_s=timeout_s, what="every saga terminal")
    except AssertionError:
        raise AssertionError(f"{await running.statuses(saga_ids)}") from None
    return await running.statuses(saga_ids)


async def test_payment_down_longer_than_its_timeout_never_notifies_a_cancelled_order(
    infra: Infra, tmp_path: Path
) -> None:
    with launch(infra, tmp_path, *ALL, env=OUTAGE) as running:
        run = uuid.uuid4().hex[:6]
        warm = [f"warm-{run}-{i}" for i in range(2)]
        for order_id in warm:
            await running.place(order_id)
        await until(running, warm, "completed")

        running.kill("payment", signal.SIGKILL)
        stale = [f"stale-{run}-{i}" for i in range(20)]
        for order_id in stale:
            await running.place(order_id)
        await asyncio.sleep(8)  # every charge times out (3 s): the sagas compensate
        running.start("payment")  # it charges its backlog; shipping ships what it charged

        statuses = await terminal(running, stale)
        assert set(statuses.values()) == {"compensated"}, statuses
        states = await running.sagas(stale)
        shipped_then_undone = [
            s for s in stale if states[s]["steps"]["ship"]["status"] != "pending"
        ]
        assert shipped_then_undone, "the stale chain ran: payment charged, shipping shipped"
        for saga_id in stale:
            assert states[saga_id]["steps"]["notify"]["status"] == "pending", saga_id
            assert "shipping.OrderShipped" not in await running.commands_sent(saga_id, "start")

        notified = {
            r["order_id"] for r in await query(running, "SELECT order_id FROM notifications")
        }
        assert notified == set(warm), "no confirmation for an order that did not complete"
        ledger = await query(running, "SELECT order_id, kind FROM payment_ledger")
        charged = {r["order_id"] for r in ledger if r["kind"] == "charge"}
        refunded = {r["order_id"] for r in ledger if r["kind"] == "refund"}
        assert charged - set(warm) <= refunded, "every stale charge refunded"
        assert charged & set(stale), "payment handled the stale charges when it came back"
        held = {
            r["order_id"]
            for r in await query(running, "SELECT order_id FROM inventory_reservations")
        }
        assert held == set(warm), "stock of every cancelled order released"


async def test_the_pivot_timing_out_parks_the_saga_undoing_nothing_and_its_late_answer_completes_it(
    infra: Infra, tmp_path: Path
) -> None:
    with launch(
        infra, tmp_path, "coordinator", "inventory", "payment", "shipping", env=OUTAGE
    ) as running:
        order_id = f"late-{uuid.uuid4().hex[:6]}"
        await running.place(order_id)
        await until(running, [order_id], "parked", timeout_s=60)
        [state] = (await running.sagas([order_id])).values()
        assert "notify timed out and cannot be undone: its outcome is unknown" in state["reason"]
        assert await running.commands_sent(order_id) == [], "nothing undone blindly"
        assert await running.commands_sent(order_id, "start") == ["shipping.OrderShipped"]

        running.start("notification")  # reads the coordinator's command, late
        await until(running, [order_id], "completed", timeout_s=60)
        notified = await query(running, "SELECT order_id FROM notifications")
        assert [r["order_id"] for r in notified] == [order_id]


async def test_cancel_before_the_pivot_compensates_and_after_it_is_refused_both_audited(
    infra: Infra, tmp_path: Path
) -> None:
    processes = ("coordinator", "orders", "inventory", "shipping")  # payment and notify: down
    with launch(infra, tmp_path, *processes, env=OUTAGE) as running:
        orders = running.local.url("orders")
        run = uuid.uuid4().hex[:6]
        by_customer, by_operator, too_late = f"cust-{run}", f"ops-{run}", f"late-{run}"
        for order_id in (by_customer, by_operator):
            body = {"order_id": order_id, "customer_id": "c", "amount_cents": 1200}
            status, answer = await asyncio.to_thread(call_json, f"{orders}/orders", "POST", body)
            assert status == 202, answer

        async def charging(order_id: str) -> bool:
            states = await running.sagas([order_id])
            return bool(states) and states[order_id]["steps"]["charge"]["status"] == "running"

        for order_id in (by_customer, by_operator):
            await eventually(lambda o=order_id: charging(o), what="the charge in flight")  # type: ignore[misc]

        # The customer cancels (an event of the orders service); an operator too (the CLI).
        status, answer = await asyncio.to_thread(
            call_json, f"{orders}/orders/{by_customer}/cancel", "POST", {"reason": "too slow"}
        )
        assert status == 202, answer
        cancelled = operator(running, "cancel", by_operator, "--reason", "fraud suspected")
        assert cancelled.returncode == 0, cancelled.stderr
        running.start("payment")
        await until(running, [by_customer, by_operator], "compensated", timeout_s=90)
        states = await running.sagas([by_customer, by_operator])
        assert states[by_customer]["reason"] == "cancelled by operator (too slow)"
        assert states[by_operator]["reason"] == "cancelled by alice (fraud suspected)"
        for order_id in (by_customer, by_operator):
            assert states[order_id]["steps"]["reserve"]["status"] == "compensated"

        async def order_cancelled() -> bool:
            _, order = await asyncio.to_thread(call_json, f"{orders}/orders/{by_customer}")
            return bool(order["status"] == "cancelled")

        await eventually(order_cancelled, what="the order marked cancelled")

        # Past the pivot: the saga waits for notify (down), a cancel is refused.
        await running.place(too_late)
        await eventually(
            lambda: _step_is(running, too_late, "notify", "running"), what="the pivot started"
        )
        refused = operator(running, "cancel", too_late, "--reason", "changed my mind")
        assert refused.returncode == 1
        assert "its pivot notify started (it cannot be undone)" in refused.stderr
        await running.place_cancel(too_late, "changed my mind")
        letters: list[dict[str, Any]] = []

        async def announced() -> bool:
            records = await read_available(running.settings, f"{running.prefix}saga.events")
            letters[:] = [
                json.loads(r.value or b"{}")
                for r in records
                if r.key == too_late.encode()
                and dict(r.headers).get(h.TYPE) == b"saga.CancelRefused"
            ]
            return bool(letters)

        await eventually(announced, what="saga.CancelRefused announced")
        assert letters[0]["reason"] == (
            "its pivot notify started (it cannot be undone): the saga only goes forward"
        )
        # Not cancelled: waiting for notify, or parked once its 3 s passed; nothing undone.
        assert (await running.statuses([too_late]))[too_late] in ("running", "parked")
        assert await running.commands_sent(too_late) == []

        # Each cancel is in the saga log, with who and why.
        log = await query(
            running,
            "SELECT saga_id, kind, type, actor, detail FROM saga_log"
            " WHERE saga_id = ANY($1::text[]) AND (type LIKE '%Cancel%' OR type = 'cancel')"
            " ORDER BY id",
            [by_customer, by_operator, too_late],
        )
        rows = {(r["saga_id"], r["kind"], r["type"], r["actor"]) for r in log}
        assert (by_customer, "event", "orders.OrderCancelled", "/services/orders") in rows, rows
        assert (by_operator, "operator", "cancel", "alice") in rows, rows
        assert (too_late, "operator", "cancel", "alice") in rows, rows
        assert (too_late, "event", "orders.OrderCancelled", "/services/orders") in rows, rows


async def _step_is(running: System, saga_id: str, step: str, status: str) -> bool:
    states = await running.sagas([saga_id])
    return bool(states) and states[saga_id]["steps"][step]["status"] == status
