"""Charge an order once its stock is reserved; refund it when asked to compensate.

Every charge and refund is a row of the payment ledger, written in the
delivery's transaction: at most one charge and one refund per order, so
charges minus refunds is what customers paid.

An order pays by card (the card processor), or from the customer's bank account
when it carries the handle of their bank connection: customers connect their
bank with ``POST /connections`` (the tokens go into the vault, encrypted; the
answer is the handle) and disconnect with ``DELETE /connections/{handle}``. An
order whose connection was revoked fails at this step and the saga compensates.
"""

import os
from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from contracts.inventory import InventoryReserved
from contracts.payment import CHARGE, PaymentCharged, PaymentRefunded, RefundPayment
from saga import (
    CircuitBreaker,
    Connection,
    HttpRequest,
    HttpResponse,
    RequestContext,
    RetryPolicy,
    Service,
    StepContext,
    StepFailure,
)
from saga.security import OAuthRefresh
from services.payment.bank import Bank, CardDeclined
from services.payment.bank_api import BankApi, BankRefusedToken

SCHEMA = """
CREATE TABLE IF NOT EXISTS payment_ledger (
    order_id text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('charge', 'refund')),
    amount_cents integer NOT NULL,
    charge_id text NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, kind)
)"""
# How the order was paid: 'card' (the card processor) or 'bank' (the customer's account).
ADD_VIA = "ALTER TABLE payment_ledger ADD COLUMN IF NOT EXISTS via text NOT NULL DEFAULT 'card'"

bank = Bank()
bank_api = BankApi.from_env()
bank_circuit = CircuitBreaker("bank", failure_threshold=5, reset_timeout=timedelta(seconds=10))
service = Service(
    "payment",
    store="postgres",
    schema=(SCHEMA, ADD_VIA),
    retry=RetryPolicy(initial_interval=timedelta(milliseconds=200)),
)
if os.environ.get("PAYMENT_BANK_TOKEN_URL"):  # refreshes customers' bank connections
    service.refreshers["bank"] = OAuthRefresh(
        os.environ["PAYMENT_BANK_TOKEN_URL"],
        os.environ["PAYMENT_BANK_CLIENT_ID"],
        os.environ["PAYMENT_BANK_CLIENT_SECRET"],
    )


@service.step(
    CHARGE,
    uses=[bank_circuit],
    attempt_timeout=timedelta(seconds=5),
    # The customer's own connection only: Mallory cannot pay with Alice's bank.
    connection=Connection(
        "bank", handle_field="payment_connection", required=False, owner_field="customer_id"
    ),
)
async def charge(reserved: InventoryReserved, ctx: StepContext) -> PaymentCharged:
    if reserved.payment_connection is None:
        via, charge_id = "card", await _card(reserved, ctx)
    else:
        via, charge_id = "bank", await _from_account(reserved, ctx)
    await ctx.db.execute(
        "INSERT INTO payment_ledger (order_id, kind, amount_cents, charge_id, via)"
        " VALUES ($1, 'charge', $2, $3, $4)",
        reserved.order_id,
        reserved.amount_cents,
        charge_id,
        via,
    )
    return PaymentCharged(
        order_id=reserved.order_id, amount_cents=reserved.amount_cents, charge_id=charge_id
    )


@service.compensation(CHARGE)
async def refund(command: RefundPayment, ctx: StepContext) -> PaymentRefunded:
    charged = await ctx.db.fetchrow(
        "SELECT amount_cents, charge_id, via FROM payment_ledger"
        " WHERE order_id = $1 AND kind = 'charge'",
        command.order_id,
    )
    if charged is None:
        return PaymentRefunded(order_id=command.order_id, refunded=False)
    status = await ctx.db.execute(
        "INSERT INTO payment_ledger (order_id, kind, amount_cents, charge_id)"
        " VALUES ($1, 'refund', $2, $3) ON CONFLICT DO NOTHING",
        command.order_id,
        charged["amount_cents"],
        charged["charge_id"],
    )
    if status == "INSERT 0 0":
        return PaymentRefunded(order_id=command.order_id, refunded=False)  # refunded before
    if charged["via"] == "bank":
        if bank_api is None:
            raise RuntimeError("a bank payment to refund, but PAYMENT_BANK_API_URL is not set")
        await bank_api.refund(charged["charge_id"], command.order_id, charged["amount_cents"])
    else:
        await bank.refund(command.order_id)
    return PaymentRefunded(order_id=command.order_id, refunded=True)


async def _card(reserved: InventoryReserved, ctx: StepContext) -> str:
    try:
        return await bank.charge(ctx.idempotency_key, reserved.order_id, reserved.amount_cents)
    except CardDeclined as declined:
        raise StepFailure(str(declined), error_type="CardDeclined") from declined


async def _from_account(reserved: InventoryReserved, ctx: StepContext) -> str:
    if bank_api is None:
        raise StepFailure("pay-by-bank is not set up here", error_type="BankNotConfigured")
    try:
        return await bank_api.pay(
            ctx.connection_token, ctx.idempotency_key, reserved.order_id, reserved.amount_cents
        )
    except BankRefusedToken as refused:
        raise StepFailure(str(refused), error_type="BankRefusedToken") from None


class ConnectBank(BaseModel):
    """The body of ``POST /connections``: the tokens the customer's bank granted."""

    model_config = ConfigDict(extra="forbid")

    #: Only the caller themselves: a connection is its customer's (the token's subject).
    customer_id: str | None = Field(default=None, min_length=1, max_length=100)
    access_token: SecretStr = Field(min_length=1, max_length=8192)
    refresh_token: SecretStr | None = Field(default=None, min_length=1, max_length=8192)
    expires_in: float = Field(gt=0, le=366 * 24 * 3600)


@service.route("POST", "/connections")
async def connect(request: HttpRequest, ctx: RequestContext) -> HttpResponse:
    grant = ConnectBank.model_validate(request.json())
    owner = ctx.principal.subject
    if grant.customer_id not in (None, owner):
        return HttpResponse(403, {"error": "a customer connects their own bank only"})
    handle = await ctx.vault.put(
        ctx.db,
        owner=owner,
        provider="bank",
        access_token=grant.access_token.get_secret_value(),
        refresh_token=grant.refresh_token.get_secret_value() if grant.refresh_token else None,
        expires_in=grant.expires_in,
    )
    return HttpResponse(201, {"handle": handle})


@service.route("DELETE", "/connections/{handle}")
async def disconnect(request: HttpRequest, ctx: RequestContext) -> HttpResponse:
    # Only its owner withdraws it (operators: `saga vault revoke HANDLE`); another
    # customer's handle is not found.
    if await ctx.vault.revoke(ctx.db, request.params["handle"], owner=ctx.principal.subject):
        return HttpResponse(200, {"revoked": True})
    return HttpResponse(404, {"error": "no such connection, or revoked before"})
