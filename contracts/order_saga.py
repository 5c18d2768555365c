"""The order saga: reserve stock, charge the payment, ship the parcel, tell the customer.

It reads in the order it runs; each step's trigger is the previous step's
completion (see the contracts). Notifying is the last step and cannot be undone
(a sent e-mail stays sent): it is marked irreversible. Reply timeouts bound how
long the coordinator waits for a step's answer before it compensates; the
payment step's is longer because the payment service retries the bank itself.
"""

from datetime import timedelta

from contracts.inventory import RESERVE
from contracts.notification import NOTIFY
from contracts.orders import OrderPlaced
from contracts.payment import CHARGE
from contracts.shipping import SHIP
from saga import SagaDefinition, Step

ORDER_SAGA = SagaDefinition(
    name="order",
    description="reserve stock, charge the payment, ship the parcel, tell the customer",
    starts_with=OrderPlaced,
    deadline=timedelta(minutes=10),
    steps=[
        Step("reserve", RESERVE, reply_timeout=timedelta(seconds=10)),
        Step("charge", CHARGE, reply_timeout=timedelta(seconds=30)),
        Step("ship", SHIP, reply_timeout=timedelta(seconds=10)),
        Step("notify", NOTIFY, reply_timeout=timedelta(seconds=10), irreversible=True),
    ],
)
