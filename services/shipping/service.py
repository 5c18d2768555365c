"""Ship paid orders; cancel the shipment when the saga compensates."""

from contracts.payment import PaymentCharged
from contracts.shipping import SHIP, CancelShipment, OrderShipped, ShipmentCancelled
from saga import Service, StepContext, StepFailure

SCHEMA = "CREATE TABLE IF NOT EXISTS shipments (order_id text PRIMARY KEY, parcel_id text NOT NULL)"
service = Service("shipping", store="postgres", schema=(SCHEMA,))


@service.step(SHIP)
async def ship(charged: PaymentCharged, ctx: StepContext) -> OrderShipped:
    if charged.order_id.startswith("nowhere"):
        raise StepFailure("no carrier for this address", error_type="NoCarrier")
    parcel = f"parcel-{ctx.idempotency_key[:8]}"
    await ctx.db.execute("INSERT INTO shipments VALUES ($1, $2)", charged.order_id, parcel)
    return OrderShipped(order_id=charged.order_id, parcel_id=parcel)


@service.compensation(SHIP)
async def cancel(command: CancelShipment, ctx: StepContext) -> ShipmentCancelled:
    status = await ctx.db.execute("DELETE FROM shipments WHERE order_id = $1", command.order_id)
    return ShipmentCancelled(order_id=command.order_id, cancelled=status != "DELETE 0")
