"""The example system's processes: what ``python -m`` runs for each, and the settings they share.

The demo, the tests and ``docker-compose.yml`` start the same processes the same way.
"""

from __future__ import annotations

#: What ``python -m`` runs for each process name.
PROCESSES: dict[str, list[str]] = {
    "coordinator": ["saga.cli", "coordinator"],
    "orders": ["services.orders"],
    "inventory": ["services.inventory"],
    "payment": ["services.payment"],
    "shipping": ["services.shipping"],
    "notification": ["services.notification"],
    "console": ["saga.cli", "console"],
}

#: Where the coordinator finds the example's saga definitions.
DEFINITIONS = "contracts.catalog:saga_definitions"

#: Settings every process of the example gets on top of the stack's.
ENVIRONMENT: dict[str, str] = {"SAGA_DEFINITIONS": DEFINITIONS}
