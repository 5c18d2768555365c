"""The order saga: reserve stock, charge the payment, ship the parcel, tell the customer.

It reads in the order it runs; each step's trigger is the previous step's
completion (see the contracts). Notifying is the last step and cannot be undone
(a sent e-mail stays sent): its contract has no compensation, so it is the saga's
pivot. The coordinator starts it itself once it has checked that the saga still
goes forward; a cancel (``OrderCancelled``) is refused from then on. Reply timeouts bound how
long the coordinator waits for a step's answer before it compensates; the
payment step's is longer because the payment service retries the bank itself.
"""

from datetime import timedelta

from contracts.inventory import RESERVE
from contracts.notification import NOTIFY
from contracts.orders import OrderCancelled, OrderPlaced
from contracts.payment import CHARGE
from contracts.shipping import SHIP
from saga import SagaDefinition, Step

ORDER_SAGA = SagaDefinition(
    name="order",
    description="reserve stock, charge the payment, ship the parcel, tell the customer",
    starts_with=OrderPlaced,
    cancelled_by=OrderCancelled,
    deadline=timedelta(minutes=10),
    search=("order_id", "customer_id"),
    steps=[
        Step("reserve", RESERVE, reply_timeout=timedelta(seconds=10)),
        Step("charge", CHARGE, reply_timeout=timedelta(seconds=30)),
        Step("ship", SHIP, reply_timeout=timedelta(seconds=10)),
        Step("notify", NOTIFY, reply_timeout=timedelta(seconds=10)),
    ],
)
