"""The order saga in orchestration mode: the coordinator sends each step its trigger.

The same service modules as in choreography run as processes with
``SAGA_MODE=orchestration``: they consume only their commands topics, and the
sagas reach the same outcomes with the same compensations as in
``test_coordinator.py`` (choreography).
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import Infra
from tests.integration.test_coordinator import ALL, ids, launch, until

CASES = {
    # prefix: (amount, outcome, compensations in order)
    "ok": (1_200, "completed", []),
    "fail-reserve": (200_000, "compensated", []),
    "fail-charge": (60_000, "compensated", ["inventory.ReleaseInventory"]),
    "nowhere": (1_200, "compensated", ["payment.RefundPayment", "inventory.ReleaseInventory"]),
}
TRIGGERS = [
    "orders.OrderPlaced",
    "inventory.InventoryReserved",
    "payment.PaymentCharged",
    "shipping.OrderShipped",
]


async def test_the_order_saga_reaches_the_same_outcomes_in_orchestration_mode(
    infra: Infra, tmp_path: Path
) -> None:
    with launch(infra, tmp_path, *ALL, env={"SAGA_MODE": "orchestration"}) as running:
        sagas = {prefix: ids(prefix, 1)[0] for prefix in CASES}
        for prefix, saga_id in sagas.items():
            await running.place(saga_id, CASES[prefix][0])
        for prefix, saga_id in sagas.items():
            await until(running, [saga_id], CASES[prefix][1])
        for prefix, saga_id in sagas.items():
            assert await running.commands_sent(saga_id) == CASES[prefix][2], prefix
        sent = await running.commands_sent(sagas["ok"], purpose="start")
        assert sent == TRIGGERS, "each step was started by the coordinator, in order"
        assert await running.commands_sent(sagas["fail-charge"], purpose="start") == TRIGGERS[:2]
    for service in ("inventory", "payment", "shipping", "notification"):
        log = (tmp_path / f"{service}.log").read_text()
        consuming = [line for line in log.splitlines() if f"service {service} consuming" in line]
        assert consuming and consuming[-1].endswith(f"{running.prefix}{service}.commands"), (
            f"{service} reads only its commands: {consuming}"
        )
