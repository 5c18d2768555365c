"""Reserve stock when an order is placed; release it when asked to compensate.

Stock is a counter per SKU; a reservation moves units from it to a row per
order, and a release moves them back, in the delivery's transaction. So at
any time, for every SKU: available + reserved = what was stocked.
"""

from contracts.inventory import RESERVE, InventoryReleased, InventoryReserved, ReleaseInventory
from contracts.orders import OrderPlaced
from saga import Service, StepContext, StepFailure

#: Units each SKU of the example catalog starts with.
INITIAL_STOCK = {"sku-1": 1_000_000, "sku-2": 1_000_000, "sku-3": 1_000_000, "sku-rare": 3}

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS inventory_stock (
        sku text PRIMARY KEY, available integer NOT NULL CHECK (available >= 0)
    )""",
    """CREATE TABLE IF NOT EXISTS inventory_reservations (
        order_id text PRIMARY KEY, sku text NOT NULL, quantity integer NOT NULL
    )""",
    # Constants of this module, not input: the seed of the example catalog.
    "INSERT INTO inventory_stock VALUES "  # noqa: S608
    + ", ".join(f"('{sku}', {units})" for sku, units in INITIAL_STOCK.items())
    + " ON CONFLICT (sku) DO NOTHING",
)

service = Service("inventory", store="postgres", schema=SCHEMA)

#: Orders above this amount are refused: the warehouse takes no orders that large.
STOCK_LIMIT_CENTS = 100_000


@service.step(RESERVE)
async def reserve(order: OrderPlaced, ctx: StepContext) -> InventoryReserved:
    if order.amount_cents > STOCK_LIMIT_CENTS:
        raise StepFailure(
            f"order of {order.amount_cents} cents is too large", error_type="TooLarge"
        )
    taken = await ctx.db.fetchval(
        "UPDATE inventory_stock SET available = available - $2"
        " WHERE sku = $1 AND available >= $2 RETURNING available",
        order.sku,
        order.quantity,
    )
    if taken is None:
        raise StepFailure(f"{order.quantity} x {order.sku} not in stock", error_type="OutOfStock")
    await ctx.db.execute(
        "INSERT INTO inventory_reservations VALUES ($1, $2, $3)",
        order.order_id,
        order.sku,
        order.quantity,
    )
    return InventoryReserved(
        order_id=order.order_id,
        sku=order.sku,
        quantity=order.quantity,
        amount_cents=order.amount_cents,
        payment_connection=order.payment_connection,
        customer_id=order.customer_id,
    )


@service.compensation(RESERVE)
async def release(command: ReleaseInventory, ctx: StepContext) -> InventoryReleased:
    row = await ctx.db.fetchrow(
        "DELETE FROM inventory_reservations WHERE order_id = $1 RETURNING sku, quantity",
        command.order_id,
    )
    if row is not None:
        await ctx.db.execute(
            "UPDATE inventory_stock SET available = available + $2 WHERE sku = $1",
            row["sku"],
            row["quantity"],
        )
    return InventoryReleased(order_id=command.order_id, released=row is not None)
