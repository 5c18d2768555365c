"""A step service for fault tests, run as its own process.

Start it with ``python -m tests.integration.step_service``.

What the handler does depends on the order's ``customer_id``:

* ``ok``: reserve and complete;
* ``flaky-N``: fail N times with ConnectionError, then complete;
* ``refuse``: raise a non-retryable PermissionError;
* ``slow``: sleep past the 1.5 s timeout;
* ``downstream``: call the HTTP dependency at $STEP_DOWNSTREAM (behind a breaker);
* ``pause``: note the start, sleep 0.7 s, then complete (for kill tests);
* ``overflow``: write an amount its INTEGER column cannot hold (the database
  refuses the data).

Every call is counted in ``step_calls`` (autocommit, so even rolled-back
attempts are counted); the business write goes to ``step_effects`` inside the
delivery's transaction.
"""

from __future__ import annotations

import asyncio
import os
import urllib.error
import urllib.request
from datetime import timedelta

import asyncpg

from contracts.inventory import InventoryReservationFailed, InventoryReserved
from contracts.orders import OrderPlaced
from saga import run_service
from saga.participant.service import Service, StepContext
from saga.resilience.circuit import CircuitBreaker
from saga.resilience.retry import RetryPolicy

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS step_calls (saga_id text, attempt int, pid int)",
    "CREATE TABLE IF NOT EXISTS step_effects (saga_id text, message_id text)",
    "CREATE TABLE IF NOT EXISTS step_amounts (saga_id text, amount integer)",
)

downstream = CircuitBreaker(
    "downstream",
    failure_threshold=2,
    window=timedelta(seconds=30),
    reset_timeout=timedelta(seconds=2),
    # Only the dependency's own errors count, not the other modes' test failures.
    counts_as_failure=lambda error: isinstance(error, urllib.error.URLError),
)
service = Service(
    os.environ.get("STEP_SERVICE", "steps"),
    store="postgres",
    schema=SCHEMA,
    retry=RetryPolicy(
        initial_interval=timedelta(milliseconds=50),
        maximum_attempts=4,
        non_retryable_error_types=(PermissionError,),
    ),
)


async def _count(saga_id: str, attempt: int) -> None:
    connection = await asyncpg.connect(os.environ["SAGA_DATABASE_URL"])
    try:
        await connection.execute(
            "INSERT INTO step_calls VALUES ($1, $2, $3)", saga_id, attempt, os.getpid()
        )
    finally:
        await connection.close()


def _call_downstream() -> None:
    with urllib.request.urlopen(os.environ["STEP_DOWNSTREAM"], timeout=2) as answer:  # noqa: S310
        answer.read()


@service.on(
    OrderPlaced,
    fails_with=InventoryReservationFailed,
    uses=[downstream],
    attempt_timeout=timedelta(milliseconds=1500),
)
async def reserve(order: OrderPlaced, ctx: StepContext) -> InventoryReserved:
    await _count(ctx.saga_id, ctx.attempt)
    mode = order.customer_id
    if mode.startswith("flaky-") and ctx.attempt <= int(mode.removeprefix("flaky-")):
        raise ConnectionError(f"flaky attempt {ctx.attempt}")
    if mode == "refuse":
        raise PermissionError("account frozen")
    if mode == "slow":
        await asyncio.sleep(60)
    if mode == "downstream":
        await asyncio.to_thread(_call_downstream)
    if mode == "pause":
        await asyncio.sleep(0.7)
    if mode == "overflow":
        await ctx.db.execute(
            "INSERT INTO step_amounts VALUES ($1, $2::bigint)", ctx.saga_id, 10**12
        )
    await ctx.db.execute("INSERT INTO step_effects VALUES ($1, $2)", ctx.saga_id, ctx.message_id)
    return InventoryReserved(
        order_id=order.order_id, sku="sku", quantity=1, amount_cents=order.amount_cents
    )


if __name__ == "__main__":
    raise SystemExit(run_service(service))
