"""Ship paid orders; cancel the shipment when the saga compensates."""

from contracts.payment import PaymentCharged
from contracts.shipping import CancelShipment, OrderShipped, ShipmentCancelled, ShippingFailed
from saga.service import Service, StepContext, StepFailure

service = Service("shipping")
parcels: dict[str, str] = {}  # order id -> parcel id (a real service keeps this in a database)


@service.on(PaymentCharged, fails_with=ShippingFailed)
async def ship(charged: PaymentCharged, ctx: StepContext) -> OrderShipped:
    if charged.order_id.startswith("nowhere"):
        raise StepFailure("no carrier for this address", error_type="NoCarrier")
    parcel = parcels.setdefault(charged.order_id, f"parcel-{ctx.idempotency_key[:8]}")
    return OrderShipped(order_id=charged.order_id, parcel_id=parcel)


@service.compensate(CancelShipment)
async def cancel(command: CancelShipment, ctx: StepContext) -> ShipmentCancelled:
    parcel = parcels.pop(command.order_id, None)
    return ShipmentCancelled(order_id=command.order_id, cancelled=parcel is not None)
