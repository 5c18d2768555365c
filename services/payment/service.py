"""Charge an order once its stock is reserved; refund it when asked to compensate."""

from datetime import timedelta

from contracts.inventory import InventoryReserved
from contracts.payment import PaymentCharged, PaymentFailed, PaymentRefunded, RefundPayment
from saga.circuit import CircuitBreaker
from saga.retry import RetryPolicy
from saga.service import Service, StepContext, StepFailure
from services.payment.bank import Bank, CardDeclined

bank = Bank()
bank_circuit = CircuitBreaker("bank", failure_threshold=5, reset_timeout=timedelta(seconds=10))
service = Service("payment", retry=RetryPolicy(initial_interval=timedelta(milliseconds=200)))


@service.on(
    InventoryReserved, fails_with=PaymentFailed, uses=[bank_circuit], timeout=timedelta(seconds=5)
)
async def charge(reserved: InventoryReserved, ctx: StepContext) -> PaymentCharged:
    try:
        charge_id = await bank.charge(ctx.idempotency_key, reserved.order_id, reserved.amount_cents)
    except CardDeclined as declined:
        raise StepFailure(str(declined), error_type="CardDeclined") from declined
    return PaymentCharged(
        order_id=reserved.order_id, amount_cents=reserved.amount_cents, charge_id=charge_id
    )


@service.compensate(RefundPayment)
async def refund(command: RefundPayment, ctx: StepContext) -> PaymentRefunded:
    return PaymentRefunded(order_id=command.order_id, refunded=await bank.refund(command.order_id))
