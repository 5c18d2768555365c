"""Charge the plan's first month; plans named "declined" are refused by the card."""

from saga import Service, StepContext, StepFailure

from contracts.accounts import AccountCreated
from contracts.payment import CHARGE, ChargeRefunded, PaymentCharged, RefundCharge, VoidCharges

service = Service("payment")
charged: dict[str, str] = {}  # account id -> charge reference (a real system asks its PSP)


@service.step(CHARGE)
async def charge(account: AccountCreated, ctx: StepContext) -> PaymentCharged:
    if account.plan == "declined":
        raise StepFailure("the card was declined", error_type="CardDeclined")
    reference = charged.setdefault(account.account_id, f"ch-{ctx.idempotency_key[:8]}")
    return PaymentCharged(account_id=account.account_id, plan=account.plan, charge_ref=reference)


@service.compensation(CHARGE)
async def refund(command: RefundCharge, ctx: StepContext) -> ChargeRefunded:
    refunded = charged.pop(command.account_id, None) == command.charge_ref
    return ChargeRefunded(account_id=command.account_id, refunded=refunded)


@service.compensation(CHARGE, command=VoidCharges)
async def void(command: VoidCharges, ctx: StepContext) -> ChargeRefunded:
    refunded = charged.pop(command.account_id, None) is not None
    return ChargeRefunded(account_id=command.account_id, refunded=refunded)
