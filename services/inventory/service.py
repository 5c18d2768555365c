"""Reserve stock when an order is placed; release it when asked to compensate."""

from contracts.inventory import (
    InventoryReleased,
    InventoryReservationFailed,
    InventoryReserved,
    ReleaseInventory,
)
from contracts.orders import OrderPlaced
from saga.service import Service, StepContext, StepFailure

SCHEMA = """
CREATE TABLE IF NOT EXISTS inventory_reservations (
    order_id text PRIMARY KEY, sku text NOT NULL, quantity integer NOT NULL
)"""

service = Service("inventory", store="postgres", schema=(SCHEMA,))

#: Orders above this amount are refused: a stand-in for "not enough stock".
STOCK_LIMIT_CENTS = 100_000


@service.on(OrderPlaced, fails_with=InventoryReservationFailed)
async def reserve(order: OrderPlaced, ctx: StepContext) -> InventoryReserved:
    if order.amount_cents > STOCK_LIMIT_CENTS:
        raise StepFailure(f"no stock for {order.amount_cents} cents", error_type="OutOfStock")
    await ctx.db.execute(
        "INSERT INTO inventory_reservations VALUES ($1, $2, $3)", order.order_id, "sku-1", 1
    )
    return InventoryReserved(
        order_id=order.order_id, sku="sku-1", quantity=1, amount_cents=order.amount_cents
    )


@service.compensate(ReleaseInventory)
async def release(command: ReleaseInventory, ctx: StepContext) -> InventoryReleased:
    status = await ctx.db.execute(
        "DELETE FROM inventory_reservations WHERE order_id = $1", command.order_id
    )
    return InventoryReleased(order_id=command.order_id, released=status != "DELETE 0")
