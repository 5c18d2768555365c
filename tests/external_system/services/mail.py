"""Send the welcome mail: the last step, irreversible (a sent mail stays sent)."""

from saga import Service, StepContext

from contracts.mail import WELCOME, WelcomeSent
from contracts.payment import PaymentCharged

service = Service("mail")


@service.step(WELCOME)
async def welcome(charged: PaymentCharged, ctx: StepContext) -> WelcomeSent:
    ctx.log.info("welcome mail for %s on plan %s sent", charged.account_id, charged.plan)
    return WelcomeSent(account_id=charged.account_id)
