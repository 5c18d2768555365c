"""Charge an order once its stock is reserved; refund it when asked to compensate.

Every charge and refund is a row of the payment ledger, written in the
delivery's transaction: at most one charge and one refund per order, so
charges minus refunds is what customers paid.
"""

from datetime import timedelta

from contracts.inventory import InventoryReserved
from contracts.payment import PaymentCharged, PaymentFailed, PaymentRefunded, RefundPayment
from saga.circuit import CircuitBreaker
from saga.retry import RetryPolicy
from saga.service import Service, StepContext, StepFailure
from services.payment.bank import Bank, CardDeclined

SCHEMA = """
CREATE TABLE IF NOT EXISTS payment_ledger (
    order_id text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('charge', 'refund')),
    amount_cents integer NOT NULL,
    charge_id text NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, kind)
)"""

bank = Bank()
bank_circuit = CircuitBreaker("bank", failure_threshold=5, reset_timeout=timedelta(seconds=10))
service = Service(
    "payment",
    store="postgres",
    schema=(SCHEMA,),
    retry=RetryPolicy(initial_interval=timedelta(milliseconds=200)),
)


@service.on(
    InventoryReserved, fails_with=PaymentFailed, uses=[bank_circuit], timeout=timedelta(seconds=5)
)
async def charge(reserved: InventoryReserved, ctx: StepContext) -> PaymentCharged:
    try:
        charge_id = await bank.charge(ctx.idempotency_key, reserved.order_id, reserved.amount_cents)
    except CardDeclined as declined:
        raise StepFailure(str(declined), error_type="CardDeclined") from declined
    await ctx.db.execute(
        "INSERT INTO payment_ledger (order_id, kind, amount_cents, charge_id)"
        " VALUES ($1, 'charge', $2, $3)",
        reserved.order_id,
        reserved.amount_cents,
        charge_id,
    )
    return PaymentCharged(
        order_id=reserved.order_id, amount_cents=reserved.amount_cents, charge_id=charge_id
    )


@service.compensate(RefundPayment)
async def refund(command: RefundPayment, ctx: StepContext) -> PaymentRefunded:
    charged = await ctx.db.fetchrow(
        "SELECT amount_cents, charge_id FROM payment_ledger"
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
    await bank.refund(command.order_id)
    return PaymentRefunded(order_id=command.order_id, refunded=True)
