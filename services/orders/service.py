"""Take orders, start an order saga for each, and keep each order's status.

``POST /orders`` stores the order as ``pending`` and starts its saga in the same
transaction (the ``OrderPlaced`` event goes through the outbox), so an order
is never stored without its saga or the other way round. Sending the same
``order_id`` again returns the order as it is: placing is idempotent (the same id
with different data is refused with 409).

The coordinator announces each saga's outcome on ``saga.events``; this service
turns it into the order's status: ``confirmed``, ``cancelled`` (compensated),
``needs attention`` (parked for an operator) or ``resolved``.
``POST /orders/{order_id}/cancel`` asks the coordinator to cancel a pending order's
saga (``OrderCancelled``); once the confirmation is on its way it is refused.

Who may do what comes from the caller's token: a customer places orders as themselves
and sees and cancels only their own (another's order is not found); staff with the
``viewer`` role see every order, and an ``operator`` places (for the customer the body
names) and cancels any.
"""

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from contracts.orders import OrderCancelled, OrderPlaced
from saga import HttpRequest, HttpResponse, RequestContext, SagaFinished, Service, StepContext

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    order_id text PRIMARY KEY,
    customer_id text NOT NULL,
    sku text NOT NULL,
    quantity integer NOT NULL,
    amount_cents integer NOT NULL,
    currency text NOT NULL,
    status text NOT NULL DEFAULT 'pending',
    reason text,
    placed_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
)"""
# Pay-by-bank orders carry the handle of the customer's bank connection (payment's vault).
ADD_PAYMENT_CONNECTION = "ALTER TABLE orders ADD COLUMN IF NOT EXISTS payment_connection text"

service = Service("orders", store="postgres", schema=(SCHEMA, ADD_PAYMENT_CONNECTION))

STATUS = {
    "completed": "confirmed",
    "compensated": "cancelled",
    "parked": "needs attention",
    "resolved": "resolved",
}
MAX_INT = 2**31 - 1  # the columns are PostgreSQL integers
_SELECT = (
    "SELECT order_id, customer_id, sku, quantity, amount_cents, currency, payment_connection,"
    " status, reason, placed_at, updated_at FROM orders"
)


class PlaceOrder(BaseModel):
    """The body of ``POST /orders``."""

    model_config = ConfigDict(extra="forbid")

    #: Chosen by the caller to make a retried request harmless; made up when absent.
    order_id: str = Field(
        default_factory=lambda: f"order-{uuid.uuid4().hex[:12]}",
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9._:-]+$",
    )
    #: Whom the order is for: the caller themselves (a customer's token), or, for an
    #: operator placing it on a customer's behalf, the customer named here.
    customer_id: str | None = Field(default=None, min_length=1, max_length=100)
    amount_cents: int = Field(gt=0, le=MAX_INT)
    currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$")
    sku: str = Field(default="sku-1", min_length=1, max_length=100)
    quantity: int = Field(default=1, gt=0, le=MAX_INT)
    #: Pay from the customer's bank account: the handle ``POST /connections`` of the
    #: payment service returned when they connected their bank. Absent: pay by card.
    payment_connection: str | None = Field(
        default=None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_-]+$"
    )


@service.route("POST", "/orders")
async def place(request: HttpRequest, ctx: RequestContext) -> HttpResponse:
    order = PlaceOrder.model_validate(request.json())
    caller = ctx.principal
    if caller.can("operator"):
        if order.customer_id is None:
            return HttpResponse(400, {"error": "customer_id: whom the order is for"})
    elif order.customer_id not in (None, caller.subject):
        return HttpResponse(403, {"error": "a customer places orders as themselves"})
    else:
        order = order.model_copy(update={"customer_id": caller.subject})
    inserted = await ctx.db.fetchval(
        "INSERT INTO orders (order_id, customer_id, sku, quantity, amount_cents, currency,"
        " payment_connection) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        " ON CONFLICT (order_id) DO NOTHING RETURNING order_id",
        order.order_id,
        order.customer_id,
        order.sku,
        order.quantity,
        order.amount_cents,
        order.currency,
        order.payment_connection,
    )
    if inserted is None:  # placed before: the same order again, or a clash of ids
        existing = await _order(ctx, order.order_id)
        if existing is None or any(
            existing[name] != value for name, value in order.model_dump().items()
        ):
            return HttpResponse(409, {"error": f"order {order.order_id} exists, with other data"})
        return HttpResponse(200, existing)
    ctx.start_saga("order", OrderPlaced(**order.model_dump()), saga_id=order.order_id)
    return HttpResponse(202, {**order.model_dump(), "status": "pending", "saga_id": order.order_id})


class CancelOrder(BaseModel):
    """The body of ``POST /orders/{order_id}/cancel``."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=1000)


@service.route("POST", "/orders/{order_id}/cancel")
async def cancel(request: HttpRequest, ctx: RequestContext) -> HttpResponse:
    """Ask for the order's saga to be cancelled; its outcome arrives as usual (a refused
    cancel is announced as ``saga.CancelRefused``, and the order goes on)."""
    body = CancelOrder.model_validate(request.json())
    found = await _order(ctx, request.params["order_id"], changing=True)
    if found is None:
        return HttpResponse(404, {"error": "no such order"})
    if found["status"] != "pending":
        return HttpResponse(409, {"error": f"order is {found['status']} already"})
    order_id = found["order_id"]
    asked = OrderCancelled(
        order_id=order_id, reason=body.reason, requested_by=ctx.principal.subject
    )
    ctx.cancel_saga("order", asked, saga_id=order_id)
    return HttpResponse(202, {**found, "cancel": "requested"})


@service.route("GET", "/orders/{order_id}")
async def show(request: HttpRequest, ctx: RequestContext) -> HttpResponse:
    found = await _order(ctx, request.params["order_id"])
    return HttpResponse(200, found) if found else HttpResponse(404, {"error": "no such order"})


@service.route("GET", "/orders")
async def listing(request: HttpRequest, ctx: RequestContext) -> HttpResponse:
    """The caller's orders; every order for a viewer (staff)."""
    everyone = ctx.principal.can("viewer")
    rows = await ctx.db.fetch(
        _SELECT + " WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR"
        " customer_id = $2) ORDER BY placed_at DESC LIMIT 100",
        request.query.get("status"),
        None if everyone else ctx.principal.subject,
    )
    return HttpResponse(200, [dict(row) for row in rows])


@service.on(SagaFinished)
async def record_outcome(finished: SagaFinished, ctx: StepContext) -> None:
    if finished.saga_type == "order":
        await ctx.db.execute(
            "UPDATE orders SET status = $2, reason = $3, updated_at = now() WHERE order_id = $1",
            ctx.saga_id,
            STATUS[finished.status],
            finished.reason,
        )


async def _order(
    ctx: RequestContext, order_id: str, *, changing: bool = False
) -> dict[str, Any] | None:
    """The order, if the caller may see it (``changing``: act on it): its customer, or
    staff (a viewer sees, an operator acts). Another customer's order is not found."""
    row = await ctx.db.fetchrow(_SELECT + " WHERE order_id = $1", order_id)
    if row is None:
        return None
    staff = ctx.principal.can("operator" if changing else "viewer")
    return dict(row) if staff or row["customer_id"] == ctx.principal.subject else None
