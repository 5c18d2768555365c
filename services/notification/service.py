"""Send the customer the final confirmation once the parcel is on its way.

The last step of the order saga; it cannot be undone (a sent message stays
sent), so its contract has no compensation: it is the saga's pivot, and this
service takes its trigger from ``notification.commands`` only, where the
coordinator sends it while the saga still goes forward. The
outbox makes "sent" and "recorded" one transaction: a redelivery finds the
inbox row and sends nothing twice.
"""

from contracts.notification import NOTIFY, CustomerNotified
from contracts.shipping import OrderShipped
from saga import Service, StepContext

SCHEMA = """
CREATE TABLE IF NOT EXISTS notifications (
    order_id text PRIMARY KEY,
    parcel_id text NOT NULL,
    channel text NOT NULL,
    notification_id text NOT NULL,
    sent_at timestamptz NOT NULL DEFAULT now()
)"""

service = Service("notification", store="postgres", schema=(SCHEMA,))


@service.step(NOTIFY)
async def notify(shipped: OrderShipped, ctx: StepContext) -> CustomerNotified:
    notification_id = f"n-{ctx.idempotency_key[:12]}"
    await ctx.db.execute(
        "INSERT INTO notifications (order_id, parcel_id, channel, notification_id)"
        " VALUES ($1, $2, 'email', $3) ON CONFLICT (order_id) DO NOTHING",
        shipped.order_id,
        shipped.parcel_id,
        notification_id,
    )
    ctx.log.info("confirmation for %s sent", shipped.order_id)
    return CustomerNotified(
        order_id=shipped.order_id, parcel_id=shipped.parcel_id, notification_id=notification_id
    )
